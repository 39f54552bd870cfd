package main

// DeepGEMM, rank 0 leads: on the real 8-node Slurm with the simulated
// compile_deep_gemm, which writes kernels in DeepGEMM's cache layout.

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/launcher/dgcache"
	"github.com/wideep/wideep-launch/slurm/slurmtest"
)

// compiledOn lists the nodes where a compile process ran, from the
// stand-ins' records.
func (j *e2eJob) compiledOn() []string {
	recs, _ := filepath.Glob(filepath.Join(j.recordDir(), "*.precompile.json"))
	var hosts []string
	for _, r := range recs {
		hosts = append(hosts, strings.TrimSuffix(filepath.Base(r), ".precompile.json"))
	}
	slices.Sort(hosts)
	return hosts
}

// entries lists the published DeepGEMM cache entries of work, and whatever
// else is in the cache directory (locks, staging directories).
func entries(t *testing.T, work string) (published, other []string) {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(work, "cache", dgcache.Subdir))
	if os.IsNotExist(err) {
		return nil, nil
	}
	require.NoError(t, err)
	for _, de := range des {
		if _, err := dgcache.ReadComplete(filepath.Join(work, "cache", dgcache.Subdir, de.Name())); err == nil {
			published = append(published, de.Name())
		} else {
			other = append(other, de.Name())
		}
	}
	return published, other
}

func (j *e2eJob) readyThenCancel(timeout time.Duration) {
	j.t.Helper()
	j.waitReady(timeout)
	require.NoError(j.t, j.c.Cancel(j.id))
	assert.Equal(j.t, "CANCELLED", j.wait(60*time.Second).State)
}

func TestE2EDeepGEMM(t *testing.T) {
	c := slurmtest.Start(t, slurmtest.Options{})
	nodes := c.Nodes()
	require.Len(t, nodes, 8)
	// 3P×2 + 1D×2: prefill workers on node1-2, node3-4, node5-6; decode on node7-8.
	layout := map[string]string{"WIDEEP_PREFILL_WORKERS": "3", "WIDEEP_PREFILL_NODES_PER_WORKER": "2",
		"WIDEEP_DECODE_NODES_PER_WORKER": "2", "WIDEEP_PROGRESS_INTERVAL": "1s"}
	with := func(base map[string]string, kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}

	t.Run("cold_then_warm_then_new_key", func(t *testing.T) {
		work := t.TempDir()
		cold := submit(t, c, with(layout, "WIDEEP_SIM_WORK", work, "WIDEEP_SIM_PRECOMPILE_DELAY", "4s"))
		cold.readyThenCancel(120 * time.Second)
		assert.Equal(t, []string{"node1", "node2", "node7", "node8"}, cold.compiledOn(),
			"one compile per layout, on the nodes of its first worker only")
		published, other := entries(t, work)
		require.Len(t, published, 2, "a prefill and a decode entry")
		assert.Empty(t, other, "no lock or staging directory left")
		for _, h := range []string{"node3", "node4", "node5", "node6"} {
			assert.Contains(t, cold.launcherLog(h), "waiting for the compile of DeepGEMM kernels prefill-",
				"%s, in prefill worker 1 or 2, said what it waits for", h)
		}
		for i, h := range nodes {
			role := "prefill"
			if i >= 6 {
				role = "decode"
			}
			rec := readRecord(t, cold.recordDir(), h, role)
			local := filepath.Join(work, "local", h, "deepgemm")
			assert.True(t, strings.HasPrefix(rec.Env["SGLANG_DG_CACHE_DIR"], local+"/"+role+"-"), "%s: %s", h, rec.Env["SGLANG_DG_CACHE_DIR"])
			assert.Equal(t, rec.Env["SGLANG_DG_CACHE_DIR"], rec.Env["SGL_DG_CACHE_DIR"], "%s: both names", h)
			assert.Len(t, rec.Kernels, 3, "%s: its worker found every kernel in its node-local copy", h)
			assert.Contains(t, published, filepath.Base(rec.Env["SGLANG_DG_CACHE_DIR"]), "%s: a copy of a published entry", h)
		}

		warm := submit(t, c, with(layout, "WIDEEP_SIM_WORK", work, "WIDEEP_SIM_PRECOMPILE_DELAY", "4s"))
		warm.readyThenCancel(60 * time.Second)
		assert.Empty(t, warm.compiledOn(), "a warm cache starts no compile process at all")
		assert.Contains(t, warm.launcherLog("node1"), "DeepGEMM cache hit")
		assert.Contains(t, warm.launcherLog("node1"), "precompile=", "the timeline shows the phase")
		assert.Contains(t, warm.launcherLog("node1"), "(prefill hit, decode hit; 3 kernels here", "and what it did")

		// --cuda-graph-bs changes decode's kernels; --served-model-name is a
		// label and changes nothing.
		changed := submit(t, c, with(layout, "WIDEEP_SIM_WORK", work, "WIDEEP_DECODE_ARG", "--cuda-graph-bs 1 2 4",
			"WIDEEP_SERVED_MODEL_NAME", "r1"))
		changed.readyThenCancel(60 * time.Second)
		assert.Equal(t, []string{"node7", "node8"}, changed.compiledOn())
		published, _ = entries(t, work)
		assert.Len(t, published, 3, "one more decode entry")
		assertNoLeftovers(t, c)
	})

	t.Run("two_jobs_one_cache", func(t *testing.T) {
		// Two 4-node jobs (1P×2 + 1D×2) at once on one cache: one compiles,
		// the other waits for it and reuses its kernels.
		work := t.TempDir()
		small := map[string]string{"WIDEEP_SIM_WORK": work, "WIDEEP_PREFILL_NODES_PER_WORKER": "2",
			"WIDEEP_DECODE_NODES_PER_WORKER": "2", "WIDEEP_SIM_PRECOMPILE_DELAY": "5s", "WIDEEP_PROGRESS_INTERVAL": "1s"}
		a, b := submitN(t, c, 4, small), submitN(t, c, 4, small)
		a.waitReady(120 * time.Second)
		b.waitReady(120 * time.Second)
		compiles := [][]string{a.compiledOn(), b.compiledOn()}
		var compiler, waiter *e2eJob
		switch {
		case len(compiles[0]) == 4 && len(compiles[1]) == 0:
			compiler, waiter = a, b
		case len(compiles[1]) == 4 && len(compiles[0]) == 0:
			compiler, waiter = b, a
		default:
			require.Failf(t, "want one job compiling on its 4 nodes, the other none", "%v", compiles)
		}
		head := waiter.nodeZero()
		assert.Contains(t, waiter.launcherLog(head), "another job compiled these kernels while we waited",
			"job %s waited for job %s", waiter.id, compiler.id)
		published, other := entries(t, work)
		assert.Len(t, published, 2)
		assert.Empty(t, other)
		require.NoError(t, c.Cancel(a.id))
		require.NoError(t, c.Cancel(b.id))
		a.wait(60 * time.Second)
		b.wait(60 * time.Second)
		assertNoLeftovers(t, c)
	})

	t.Run("scancel_during_compile_then_sigkill_node0", func(t *testing.T) {
		work := t.TempDir()
		slow := with(layout, "WIDEEP_SIM_WORK", work, "WIDEEP_SIM_PRECOMPILE_DELAY", "60s")
		j := submit(t, c, slow)
		j.waitCompiling()
		require.NoError(t, c.Cancel(j.id))
		assert.Equal(t, "CANCELLED", j.wait(60*time.Second).State)
		published, other := entries(t, work)
		assert.Empty(t, published, "no entry under a final name")
		assert.Empty(t, other, "no staging directory, and node 0 released its locks")
		assertNoLeftovers(t, c)

		// Node 0's launcher is killed outright during the compile: every
		// other node ends promptly naming node 0, instead of waiting for the
		// precompile timeout; its locks stay behind.
		k := submit(t, c, with(slow, "KILL_ON_BAD_EXIT", "0"))
		k.waitCompiling()
		killed := time.Now()
		require.NoError(t, syscall.Kill(launcherPID(t, c, "node1"), syscall.SIGKILL))
		k.wait(60 * time.Second)
		for _, h := range nodes[1:] {
			at, code, ok := k.lastExit(h)
			require.True(t, ok, "%s logged its exit", h)
			assert.Equal(t, 125, code, h)
			assert.Contains(t, k.launcherLog(h), "node 0 (node1)", "%s names node 0", h)
			assert.Less(t, at.Sub(killed), 30*time.Second, "%s did not wait for the 60 s compile", h)
		}
		_, other = entries(t, work)
		assert.NotEmpty(t, other, "the killed node 0's locks are still there")
		assertNoLeftovers(t, c)

		// The next job finds the locks of a job squeue no longer knows,
		// breaks them and compiles.
		n := submit(t, c, with(layout, "WIDEEP_SIM_WORK", work, "WIDEEP_SIM_PRECOMPILE_DELAY", "1s"))
		n.readyThenCancel(120 * time.Second)
		assert.Equal(t, []string{"node1", "node2", "node7", "node8"}, n.compiledOn())
		assert.Contains(t, n.launcherLog("node1"), "broke the stale lock of a DeepGEMM cache entry")
		published, other = entries(t, work)
		assert.Len(t, published, 2)
		assert.Empty(t, other)
		assertNoLeftovers(t, c)
	})

	t.Run("sync_request_failure", func(t *testing.T) {
		// Node rank 0 of the prefill compile fails as compile_deep_gemm does
		// on images without the bootstrap fix, after compiling everything.
		work := t.TempDir()
		fail := with(layout, "WIDEEP_SIM_WORK", work, "WIDEEP_SIM_FAIL", "node1/precompile:syncfail")
		j := submit(t, c, fail)
		j.readyThenCancel(120 * time.Second)
		published, _ := entries(t, work)
		require.Len(t, published, 2, "published with a warning")
		for _, e := range published {
			comp, err := dgcache.ReadComplete(filepath.Join(work, "cache", dgcache.Subdir, e))
			require.NoError(t, err)
			if strings.HasPrefix(e, "prefill-") {
				assert.Contains(t, comp.Warning, "Sync request failed")
			} else {
				assert.Empty(t, comp.Warning)
			}
		}

		strictWork := t.TempDir()
		s := submit(t, c, with(fail, "WIDEEP_SIM_WORK", strictWork, "WIDEEP_PRECOMPILE_STRICT", "true"))
		assert.Equal(t, "FAILED", s.wait(60*time.Second).State)
		const verdict = "node 0 (node1): DeepGEMM compile prefill-"
		assert.Contains(t, s.launcherLog("node1"), verdict)
		for _, h := range nodes[1:] {
			// Told by node 0, or stopped by Slurm's --kill-on-bad-exit first.
			if log := s.launcherLog(h); !strings.Contains(log, verdict) {
				assert.Contains(t, log, "did not fail", "%s names node 0 or says it was stopped", h)
			}
		}
		assert.Contains(t, s.launcherLog("node1"), "RuntimeError: Sync request failed", "the log's tail")
		published, other := entries(t, strictWork)
		assert.False(t, slices.ContainsFunc(published, func(e string) bool { return strings.HasPrefix(e, "prefill-") }),
			"nothing published for prefill")
		assert.False(t, slices.ContainsFunc(other, func(e string) bool { return strings.HasSuffix(e, ".lock") }),
			"node 0 released its locks: %v", other)
		assertNoLeftovers(t, c)
	})
}

// nodeZero is the first node of the job's allocation.
func (j *e2eJob) nodeZero() string {
	j.t.Helper()
	logs, err := filepath.Glob(filepath.Join(j.logDir(), "*.launcher.log"))
	require.NoError(j.t, err)
	require.NotEmpty(j.t, logs)
	hosts := make([]string, len(logs))
	for i, l := range logs {
		hosts[i] = strings.TrimSuffix(filepath.Base(l), ".launcher.log")
	}
	// The lab's node names sort as Slurm orders them (node1..node8).
	slices.Sort(hosts)
	return hosts[0]
}

// waitCompiling waits until the compiling nodes have started their precompile.
func (j *e2eJob) waitCompiling() {
	j.t.Helper()
	require.Eventually(j.t, func() bool {
		logs, _ := filepath.Glob(filepath.Join(j.logDir(), "*.precompile.log"))
		return len(logs) == 4
	}, 90*time.Second, 50*time.Millisecond, "the compiling nodes started their precompile")
}
