package main

// --runtime enroot on the real 8-node Slurm, with the strict enroot stand-in
// (enroot cannot be installed here): `wideep-launch sim-enroot`, behind a
// two-line wrapper named enroot. The stand-in follows enroot 4.1.2's
// grammar, writes real squashfs files and exec's the command of `start`,
// so signals and exit codes are the program's own.

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/enroot"
	"github.com/wideep/wideep-launch/enroot/standin"
	"github.com/wideep/wideep-launch/slurm/slurmtest"
)

// enrootLab is the stand-in's setup shared by the jobs of a test.
type enrootLab struct {
	dir, wrapper, records, images string
}

func newEnrootLab(t *testing.T) enrootLab {
	t.Helper()
	dir := t.TempDir()
	l := enrootLab{dir: dir, wrapper: filepath.Join(dir, "enroot"), records: filepath.Join(dir, "enroot.jsonl"),
		images: filepath.Join(dir, "images")}
	require.NoError(t, os.WriteFile(l.wrapper, []byte("#!/bin/sh\nexec "+launcherBin+" sim-enroot \"$@\"\n"), 0o755))
	return l
}

// env is what a job needs to run in enroot containers of image.
func (l enrootLab) env(image string, extra map[string]string) map[string]string {
	m := map[string]string{
		"WIDEEP_RUNTIME": "enroot", "WIDEEP_IMAGE": image, "WIDEEP_ENROOT": l.wrapper,
		"WIDEEP_IMAGE_CACHE": l.images, "WIDEEP_ENROOT_RECORD": l.records,
		// The lab's nodes share one /tmp; a real node's would be its own.
		"WIDEEP_ENROOT_DATA_PATH": filepath.Join(l.dir, "data", "%h"),
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

func (l enrootLab) calls(t *testing.T, command string) []standin.Record {
	t.Helper()
	all, err := standin.ReadRecords(l.records)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	var out []standin.Record
	for _, r := range all {
		if r.Command == command {
			out = append(out, r)
		}
	}
	return out
}

// containers lists the containers left on the nodes.
func (l enrootLab) containers(t *testing.T) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(l.dir, "data", "*", "wideep-*"))
	require.NoError(t, err)
	return matches
}

func TestE2EEnroot(t *testing.T) {
	c := slurmtest.Start(t, slurmtest.Options{})
	nodes := c.Nodes()
	const image = "docker://registry.lab#wideep/sim:1"

	t.Run("ready_in_containers_then_scancel", func(t *testing.T) {
		l := newEnrootLab(t)
		j := submit(t, c, l.env(image, map[string]string{
			// Set in the job's environment, as an image's ENV or the
			// PyTorch hook would: none may reach a worker.
			"NATS_SERVER": "nats://stale:4222", "MASTER_ADDR": "node8", "SLURM_CPU_BIND": "quiet,mask_cpu:0x1",
		}))
		j.waitReady(90 * time.Second)
		assert.Len(t, l.calls(t, "import"), 1, "node 0 imported the image once")
		creates := l.calls(t, "create")
		assert.Len(t, creates, len(nodes), "one container per node")
		container := enroot.ContainerName(j.id)
		for _, cr := range creates {
			assert.Contains(t, cr.Args, container)
		}
		starts := l.calls(t, "start")
		require.NotEmpty(t, starts)
		for _, st := range starts {
			assert.Contains(t, st.Args, container, "every process ran in the job's container")
			assert.Empty(t, st.EnvInline, "environment passed by name only, never NAME=value")
		}
		for _, pn := range offlinePlan(t, "node[1-8]") {
			r := readRecord(t, j.recordDir(), pn.Host, pn.Role)
			for _, name := range []string{"NATS_SERVER", "MASTER_ADDR", "SLURM_CPU_BIND", "WIDEEP_SECRET"} {
				if name == "NATS_SERVER" {
					assert.Equal(t, "nats://"+c.NodeAddr("node1")+":4222", r.Env[name], "%s: the plan's, not the stale one", pn.Host)
					continue
				}
				assert.NotContains(t, r.Env, name, "%s sees no %s", pn.Host, name)
			}
		}
		require.NoError(t, c.Cancel(j.id))
		assert.Equal(t, "CANCELLED", j.wait(60*time.Second).State)
		assert.Empty(t, l.containers(t), "every container removed after scancel")
		assert.Len(t, l.calls(t, "remove"), len(nodes), "each node removes its container at the teardown")
		assertNoLeftovers(t, c)
	})

	t.Run("worker_failure_removes_the_containers", func(t *testing.T) {
		l := newEnrootLab(t)
		j := submit(t, c, l.env(image, map[string]string{"WIDEEP_SIM_FAIL": "node6:serve=1s:3"}))
		job := j.wait(60 * time.Second)
		assert.Equal(t, "FAILED", job.State)
		assert.Contains(t, j.launcherLog("node6"), "NODE FAILED: node 5 (node6): process decode exited with code 3")
		assert.Empty(t, l.containers(t))
		assertNoLeftovers(t, c)
	})

	t.Run("two_jobs_one_import", func(t *testing.T) {
		// Two 4-node jobs at the same moment, one image, one cache: one
		// import; the other job waits and reuses it.
		l := newEnrootLab(t)
		small := l.env(image, map[string]string{"WIDEEP_PREFILL_NODES_PER_WORKER": "2", "WIDEEP_DECODE_NODES_PER_WORKER": "2",
			"WIDEEP_ENROOT_IMPORT_DELAY": "3s", "WIDEEP_PROGRESS_INTERVAL": "1s"})
		final := filepath.Join(l.images, mustImage(t, image).CacheName())
		var partial []string
		var mu sync.Mutex
		stop := make(chan struct{})
		go func() {
			// Whenever the final name exists, it is a whole squashfs file.
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := os.Stat(final); err == nil {
					if out, err := exec.Command("unsquashfs", "-s", final).CombinedOutput(); err != nil {
						mu.Lock()
						partial = append(partial, string(out))
						mu.Unlock()
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
		a, b := submitN(t, c, 4, small), submitN(t, c, 4, small)
		a.waitReady(90 * time.Second)
		b.waitReady(90 * time.Second)
		close(stop)
		assert.Len(t, l.calls(t, "import"), 1, "exactly one import for the two jobs")
		// The nodes that wait for the 3 s import say so every second.
		for _, j := range []*e2eJob{a, b} {
			said := 0
			for _, h := range nodes {
				if strings.Contains(j.launcherLog(h), `waiting for every node at the enroot runtime's \"image\" step`) {
					said++
				}
			}
			assert.Positive(t, said, "job %s: the nodes waiting for the image say so", j.id)
		}
		mu.Lock()
		assert.Empty(t, partial, "no partial file was ever visible under the final name")
		mu.Unlock()
		require.NoError(t, c.Cancel(a.id))
		require.NoError(t, c.Cancel(b.id))
		a.wait(60 * time.Second)
		b.wait(60 * time.Second)
		assertNoLeftovers(t, c)
	})

	t.Run("import_killed_half_way", func(t *testing.T) {
		// Node 0's launcher dies in the middle of the import: a staging
		// file and a lock stay behind, no final file. The next job breaks
		// the lock (its holder's job is gone) and imports cleanly.
		l := newEnrootLab(t)
		j := submit(t, c, l.env(image, map[string]string{"WIDEEP_ENROOT_IMPORT_DELAY": "30s", "KILL_ON_BAD_EXIT": "0"}))
		require.Eventually(t, func() bool { return len(l.calls(t, "import")) == 1 }, 60*time.Second, 50*time.Millisecond)
		pid := launcherPID(t, c, "node1")
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
		j.wait(60 * time.Second)
		final := filepath.Join(l.images, mustImage(t, image).CacheName())
		assert.NoFileExists(t, final, "no final file after a killed import")

		next := submit(t, c, l.env(image, nil))
		next.waitReady(90 * time.Second)
		assert.Len(t, l.calls(t, "import"), 2, "the next job imported")
		assert.FileExists(t, final)
		log := next.launcherLog("node1")
		assert.True(t, strings.Contains(log, "stale") || strings.Contains(log, "broke"), "the broken lock is said: %s", log)
		staging, _ := filepath.Glob(filepath.Join(l.images, ".*tmp*"))
		assert.Empty(t, staging, "the killed import's staging file is gone")
		require.NoError(t, c.Cancel(next.id))
		next.wait(60 * time.Second)
		assertNoLeftovers(t, c)
	})

	t.Run("plan_shows_the_enroot_commands", func(t *testing.T) {
		out, err := exec.Command(launcherBin, "plan", "--nodelist", "node[1-8]", "--runtime", "enroot",
			"--image", image, "--show-commands", "--job-id", "9").CombinedOutput()
		require.NoError(t, err, "%s", out)
		text := string(out)
		for _, want := range []string{"runtime enroot  image " + image, "enroot import --output ", "enroot create --name wideep-9",
			"enroot start --rw --mount", "-- wideep-9 python3 -m dynamo.sglang", "enroot remove --force -- wideep-9"} {
			assert.Contains(t, text, want)
		}
		assert.True(t, slices.ContainsFunc(strings.Split(text, "\n"), func(s string) bool {
			return strings.Contains(s, "--env ETCD_ENDPOINTS") && !strings.Contains(s, "--env ETCD_ENDPOINTS=")
		}), "variables by name")
	})
}

func mustImage(t *testing.T, ref string) enroot.Image {
	t.Helper()
	im, err := enroot.ParseImage(ref)
	require.NoError(t, err)
	return im
}
