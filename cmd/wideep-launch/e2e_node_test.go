package main

// What a node's processes get, on the real 8-node Slurm: SGLang's ports
// checked free before anything heavy starts, the precompile's ports handed
// over to the worker, and the CPUs.

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/slurm/slurmtest"
)

func TestE2ENode(t *testing.T) {
	c := slurmtest.Start(t, slurmtest.Options{})
	nodes := c.Nodes()
	require.Len(t, nodes, 8)

	t.Run("tokenizer_port_held_on_a_non_head_decode_node", func(t *testing.T) {
		// Node index 6 (node7) is decode worker 0's node rank 2: SGLang
		// test-binds the head's P..P+5 there too, so 29501 held by anyone
		// would kill the worker after its weights started loading.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		holder := c.NodeCommand(ctx, "node7", launcherBin, "sim", "linger", "0.0.0.0:29501", "forever")
		out, err := holder.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, holder.Start())
		defer func() { _ = holder.Process.Kill() }()
		buf := make([]byte, 1)
		_, err = io.ReadFull(out, buf) // "!" once it listens
		require.NoError(t, err)

		j := submit(t, c, nil)
		job := j.wait(60 * time.Second)
		assert.Equal(t, "FAILED", job.State)
		want := fmt.Sprintf("node 6 (node7): port 29501 (SGLang tokenizer, from --dist-init-addr node5:29500): "+
			"already in use on this node by PID %d (", holder.Process.Pid)
		for _, h := range nodes {
			log := j.launcherLog(h)
			if !assert.Contains(t, log, want, "%s reports node 6's holder", h) {
				continue
			}
			assert.Contains(t, log, `"exit_code":2`, "%s exits 2", h)
		}
		assert.Empty(t, j.compiledOn(), "nothing heavy started")
		_ = holder.Process.Kill() // the test's own process, not the job's
		_ = holder.Wait()
		assertNoLeftovers(t, c)
	})

	t.Run("precompile_hands_its_port_over", func(t *testing.T) {
		// Node rank 0's compile_deep_gemm leaves a child on the dist-init
		// port for 2 s after it exits: the worker starts once it is gone,
		// and nothing is killed.
		j := submit(t, c, map[string]string{"WIDEEP_SIM_PRECOMPILE_LINGER": "2s"})
		j.waitReady(90 * time.Second)
		assert.NotContains(t, j.launcherLog("node1"), "still running after it ended")
		require.NoError(t, c.Cancel(j.id))
		j.wait(60 * time.Second)
		assertNoLeftovers(t, c)

		// One that never lets go (it ignores SIGTERM) is killed after the
		// grace, with a line naming it, and the worker still starts.
		k := submit(t, c, map[string]string{"WIDEEP_SIM_PRECOMPILE_LINGER": "forever"})
		k.waitReady(90 * time.Second)
		log := k.launcherLog("node1")
		assert.Contains(t, log, "processes of precompile still running after it ended; killing them (SIGKILL)")
		assert.Contains(t, log, "sim linger", "the line names the leftover")
		require.NoError(t, c.Cancel(k.id))
		k.wait(60 * time.Second)
		assertNoLeftovers(t, c)
	})

	t.Run("launcher_pinned_to_one_cpu", func(t *testing.T) {
		// As Slurm's task binding may leave it: the workers still get every
		// CPU the job may use, and the log says so with the numbers.
		wrapper := filepath.Join(t.TempDir(), "pinned-launcher")
		require.NoError(t, os.WriteFile(wrapper, []byte("#!/bin/sh\nexec taskset -c 0 "+launcherBin+" \"$@\"\n"), 0o755))
		j := submit(t, c, map[string]string{"LAUNCHER": wrapper})
		j.waitReady(90 * time.Second)
		allowed := runtime.NumCPU()
		require.GreaterOrEqual(t, allowed, 2, "the lab machine has 2 CPUs")
		for i, h := range nodes {
			role := "prefill"
			if i >= 4 {
				role = "decode"
			}
			assert.Equal(t, allowed, readRecord(t, j.recordDir(), h, role).CPUs, "%s's worker runs on every CPU", h)
			assert.Contains(t, j.launcherLog(h), fmt.Sprintf("the launcher is bound to 1 of the %d CPUs the job may use", allowed), h)
		}
		require.NoError(t, c.Cancel(j.id))
		j.wait(60 * time.Second)
		assertNoLeftovers(t, c)
	})

	t.Run("stalled_worker", func(t *testing.T) {
		// node5 (decode head) goes silent during its start-up: with
		// --stall-timeout 5s the job ends a few seconds later (not at the
		// health timeout), every node naming node 4, its worker and what it
		// last said; summary.json and `wideep-launch summary` say so too.
		j := submit(t, c, map[string]string{"WIDEEP_SIM_FAIL": "node5:hang", "WIDEEP_STALL_TIMEOUT": "5s"})
		job := j.wait(90 * time.Second)
		assert.Equal(t, "FAILED", job.State)
		const want = "node 4 (node5): decode worker 0 stalled: no output for "
		for _, h := range nodes {
			log := j.launcherLog(h)
			if !strings.Contains(log, want) {
				assert.Contains(t, log, "did not fail", "%s names node 4 or was stopped", h)
			}
		}
		log5 := j.launcherLog("node5")
		assert.Contains(t, log5, want)
		assert.Contains(t, log5, "Load weight begin", "the worker's last lines")
		out, err := exec.Command(launcherBin, "summary", j.logDir()).CombinedOutput()
		require.NoError(t, err, "%s", out)
		t.Logf("wideep-launch summary:\n%s", out)
		assert.Contains(t, string(out), "summary: STALLED")
		assert.Contains(t, string(out), "first failure: node 4 (node5), process decode")
		assert.Contains(t, string(out), "| sim decode worker [node5 node-rank 0/4]: Load weight begin")
		assert.Regexp(t, `deepgemm prefill-[0-9a-f]+: miss, compiled on nodes 0,1,2,3; 3 kernels published \(job [0-9]+ on node1\)`, string(out))
		assertNoLeftovers(t, c)
	})

	t.Run("slow_but_printing_is_not_stalled", func(t *testing.T) {
		j := submit(t, c, map[string]string{"WIDEEP_SIM_STARTUP_DELAY": "12s", "WIDEEP_STALL_TIMEOUT": "5s"})
		j.waitReady(90 * time.Second)
		require.NoError(t, c.Cancel(j.id))
		j.wait(60 * time.Second)
		out, err := exec.Command(launcherBin, "summary", j.logDir()).CombinedOutput()
		require.NoError(t, err, "%s", out)
		assert.Contains(t, string(out), "summary: READY, THEN STOPPED")
		assertNoLeftovers(t, c)
	})
}
