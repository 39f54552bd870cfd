package main

// A job is a gang: one failure ends the whole job, by the launchers
// themselves — these jobs run WITHOUT srun --kill-on-bad-exit, on the real
// 8-node Slurm.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/slurm/slurmtest"
)

// gangTarget bounds, on a loaded CI machine, how long after the failure the
// last launcher may exit: the 2 s beyond the grace (3 s in these
// jobs), with room for Slurm's own bookkeeping in the measurement.
const gangTarget = 3*time.Second + 2*time.Second

// logLine is what the tests read of a launcher's JSON log line.
type logLine struct {
	Time     time.Time `json:"time"`
	Message  string    `json:"message"`
	ExitCode *int      `json:"exit_code"`
}

func (j *e2eJob) logLines(host string) []logLine {
	var out []logLine
	for _, l := range strings.Split(j.launcherLog(host), "\n") {
		var ll logLine
		if json.Unmarshal([]byte(l), &ll) == nil {
			out = append(out, ll)
		}
	}
	return out
}

// lastExit is when the launcher on host logged its exit code, and the code.
func (j *e2eJob) lastExit(host string) (time.Time, int, bool) {
	lines := j.logLines(host)
	for i := len(lines) - 1; i >= 0; i-- {
		if lines[i].ExitCode != nil && strings.Contains(lines[i].Message, "node ") {
			return lines[i].Time, *lines[i].ExitCode, true
		}
	}
	return time.Time{}, 0, false
}

// launcherPID finds the wideep-launch run process on host.
func launcherPID(t *testing.T, c *slurmtest.Cluster, host string) int {
	t.Helper()
	procs, err := c.NodeProcesses(host)
	require.NoError(t, err)
	for _, p := range procs {
		// Not srun, whose command line names the launcher too (on node 0,
		// where the batch script runs).
		if p.Comm == "wideep-launch" && strings.Contains(p.Cmdline, " run ") {
			return p.Pid
		}
	}
	require.FailNowf(t, "no launcher", "no wideep-launch run on %s: %v", host, procs)
	return 0
}

func TestE2EGangWithoutKillOnBadExit(t *testing.T) {
	c := slurmtest.Start(t, slurmtest.Options{})
	nodes := c.Nodes()
	noKill := map[string]string{"KILL_ON_BAD_EXIT": "0"}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range noKill {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}

	t.Run("worker_exit_3_on_node6_after_ready", func(t *testing.T) {
		j := submit(t, c, with(map[string]string{"WIDEEP_SIM_FAIL": "node6:serve=3s:3"}))
		j.waitReady(90 * time.Second)
		job := j.wait(60 * time.Second)
		assert.Equal(t, "FAILED", job.State)
		assert.NotContains(t, []int{0, 143}, job.ExitCode, "a failure, not a cancellation")
		want := "NODE FAILED: node 5 (node6): process decode exited with code 3"
		assert.Contains(t, j.stdout(), want, "the job output names the node")
		var failedAt, lastAt time.Time
		for _, l := range j.logLines("node6") {
			if strings.Contains(l.Message, "process exited: stopping this node") {
				failedAt = l.Time
			}
		}
		require.False(t, failedAt.IsZero(), "node6 logged its worker's exit")
		for _, h := range nodes {
			at, code, ok := j.lastExit(h)
			require.True(t, ok, "%s logged its end", h)
			assert.Contains(t, j.launcherLog(h), want, "%s names node 5 and why", h)
			if h == "node6" {
				assert.Equal(t, 3, code)
			} else {
				assert.Equal(t, 125, code, "%s exits with a failure code", h)
			}
			if at.After(lastAt) {
				lastAt = at
			}
		}
		t.Logf("failure → last launcher exit: %s", lastAt.Sub(failedAt))
		assert.Less(t, lastAt.Sub(failedAt), gangTarget, "every launcher exited within the target")
		assert.NoFileExists(t, filepath.Join(j.logDir(), "endpoint"))
		assertNoLeftovers(t, c)
	})

	// A launcher killed outright: its node 0 connection closes, node 0
	// declares it lost and tells everybody. (Slurm also ends a step one of
	// whose tasks was killed by a signal, with or without --kill-on-bad-exit:
	// a node may get that SIGTERM first and then says "stopped".)
	for _, tc := range []struct{ name, victim, lost string }{
		{"launcher_sigkilled_on_node5", "node5", "node 4 (node5) lost"},
		{"node0_launcher_sigkilled", "node1", "node 0 (node1) lost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := submit(t, c, noKill)
			j.waitReady(90 * time.Second)
			killedAt := time.Now()
			require.NoError(t, syscall.Kill(launcherPID(t, c, tc.victim), syscall.SIGKILL))
			job := j.wait(60 * time.Second)
			assert.Equal(t, "FAILED", job.State)
			var lastAt time.Time
			named := 0
			for _, h := range nodes {
				if h == tc.victim {
					continue
				}
				at, code, ok := j.lastExit(h)
				require.True(t, ok, "%s logged its end", h)
				log := j.launcherLog(h)
				if strings.Contains(log, "NODE FAILED: "+tc.lost) {
					named++
					assert.Equal(t, 125, code, h)
				} else {
					// Stopped by Slurm's SIGTERM first: its last line still
					// says what ended the job.
					assert.Contains(t, log, "did not fail; the job was ending: "+tc.lost, "%s: told about %s, or stopped by Slurm", h, tc.victim)
				}
				if at.After(lastAt) {
					lastAt = at
				}
			}
			t.Logf("SIGKILL of %s's launcher → last launcher exit: %s; %d of 7 nodes learned it from the rendezvous first", tc.victim, lastAt.Sub(killedAt), named)
			assert.Less(t, lastAt.Sub(killedAt), gangTarget)
			assertNoLeftovers(t, c)
		})
	}

	// A network cut: node5's launcher and its processes live on but reach
	// nobody; Slurm sees nothing end. Both sides declare the other lost after
	// the peer timeout, and every launcher ends, node5's too.
	t.Run("network_cut_on_node5", func(t *testing.T) {
		const peerTimeout = 2 * time.Second
		j := submit(t, c, with(map[string]string{"WIDEEP_PEER_TIMEOUT": peerTimeout.String()}))
		j.waitReady(90 * time.Second)
		cutAt := time.Now()
		require.NoError(t, c.SetLink("node5", false))
		restored := false
		restore := func() {
			if !restored {
				restored = true
				assert.NoError(t, c.SetLink("node5", true))
			}
		}
		defer restore()
		require.Eventually(t, func() bool {
			_, _, ok := j.lastExit("node5")
			return ok
		}, 60*time.Second, 100*time.Millisecond, "node5's launcher ends by itself")
		// Slurm's own traffic with node5 was cut too: restore it so the job
		// can be seen ending.
		restore()
		job := j.wait(60 * time.Second)
		assert.Equal(t, "FAILED", job.State)
		var lastAt time.Time
		for _, h := range nodes {
			at, code, ok := j.lastExit(h)
			require.True(t, ok, "%s logged its end", h)
			assert.Equal(t, 125, code, h)
			want := "NODE FAILED: node 4 (node5) lost: silent for "
			if h == "node5" {
				want = "NODE FAILED: node 0 (node1) lost: no word from it for "
			}
			assert.Contains(t, j.launcherLog(h), want, h)
			if at.After(lastAt) {
				lastAt = at
			}
		}
		t.Logf("network cut → last launcher exit: %s (peer timeout %s)", lastAt.Sub(cutAt), peerTimeout)
		assert.Less(t, lastAt.Sub(cutAt), peerTimeout+gangTarget)
		assertNoLeftovers(t, c)
	})

	t.Run("worker_deregisters_after_ready", func(t *testing.T) {
		j := submit(t, c, with(map[string]string{
			"WIDEEP_SIM_FAIL": "node5/decode:deregister=2s", "WIDEEP_SIM_LEASE_TTL": "2",
			"WIDEEP_HEALTH_INTERVAL": "500ms", "WIDEEP_HEALTH_LOST_TIMEOUT": "3s",
		}))
		j.waitReady(90 * time.Second)
		job := j.wait(60 * time.Second)
		assert.Equal(t, "FAILED", job.State)
		want := "deployment lost after READY"
		for _, h := range nodes {
			log := j.launcherLog(h)
			assert.Contains(t, log, want, h)
			assert.Contains(t, log, "no longer registered: decode worker 0 (head node 4, node5)", h)
		}
		_, err := os.Stat(filepath.Join(j.logDir(), "endpoint"))
		assert.True(t, os.IsNotExist(err), "the endpoint file is gone")
		assertNoLeftovers(t, c)
	})
}
