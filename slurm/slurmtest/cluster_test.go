package slurmtest

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests run a real cluster: they need root (they skip otherwise; CI
// runs as root, so there they always run). The limits are generous because
// the machine has 2 shared cores; the usual durations are logged.
const jobLimit = 60 * time.Second

func TestCluster(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	c := Start(t, Options{})
	t.Logf("Start: %d nodes idle in %v", len(c.Nodes()), time.Since(t0).Round(time.Millisecond))
	require.Equal(t, []string{"node1", "node2", "node3", "node4", "node5", "node6", "node7", "node8"}, c.Nodes())

	t.Run("one task per node, each with its own hostname and address", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), jobLimit)
		defer cancel()
		out := t.TempDir()
		script := writeScript(t, `#!/bin/bash
set -e
srun --ntasks-per-node=1 bash -c \
  'echo "$SLURM_PROCID $SLURM_NODEID $SLURMD_NODENAME $(hostname) $(hostname -I)" > "$OUT/task.$SLURM_PROCID"'
`)
		t0 := time.Now()
		id, err := c.SbatchEnv(ctx, []string{"OUT=" + out}, script, "-N", "8", "--ntasks-per-node=1")
		require.NoError(t, err)
		job, err := c.WaitJob(ctx, id)
		require.NoError(t, err)
		t.Logf("sbatch -N 8 (srun step on every node): submit to end in %v", time.Since(t0).Round(time.Millisecond))
		require.Equal(t, "COMPLETED", job.State, "job %+v", job)
		assert.Equal(t, 0, job.ExitCode)
		assert.Equal(t, 0, job.Signal)

		procIDs, nodeIDs, names, addrs := map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}
		for i := range 8 {
			data, err := os.ReadFile(filepath.Join(out, "task."+strconv.Itoa(i)))
			require.NoError(t, err, "task %d wrote nothing", i)
			f := strings.Fields(string(data))
			require.Len(t, f, 5, "task %d wrote %q: want procid nodeid nodename hostname address", i, data)
			procID, nodeID, name, host, addr := f[0], f[1], f[2], f[3], f[4]
			assert.Equal(t, strconv.Itoa(i), procID)
			assert.Equal(t, name, host, "hostname of the task on %s", name)
			assert.Equal(t, c.NodeAddr(name), addr, "address of %s", name)
			procIDs[procID], nodeIDs[nodeID], names[name], addrs[addr] = true, true, true, true
		}
		assert.Len(t, procIDs, 8)
		assert.Len(t, nodeIDs, 8, "distinct SLURM_NODEIDs")
		assert.Len(t, names, 8, "distinct nodes")
		assert.Len(t, addrs, 8, "distinct addresses")
	})

	t.Run("node addresses are reachable from the test process", func(t *testing.T) {
		// every slurmd listens on SlurmdPort (ctld port + 1) in its own namespace
		for _, n := range c.Nodes() {
			conn, err := net.DialTimeout("tcp", net.JoinHostPort(c.NodeAddr(n), strconv.Itoa(c.slot.port+1)), 10*time.Second)
			if assert.NoError(t, err, "slurmd of %s", n) {
				conn.Close()
			}
		}
	})

	t.Run("a job that exits 3 is FAILED with exit code 3", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), jobLimit)
		defer cancel()
		id, err := c.Sbatch(ctx, writeScript(t, "#!/bin/bash\nexit 3\n"), "-N", "1")
		require.NoError(t, err)
		job, err := c.WaitJob(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, "FAILED", job.State)
		assert.Equal(t, 3, job.ExitCode)
		assert.Equal(t, 0, job.Signal)
	})

	t.Run("cancel ends the job and leaves no process on any node", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), jobLimit)
		defer cancel()
		out := t.TempDir()
		id, err := c.SbatchEnv(ctx, []string{"OUT=" + out}, sleeperScript(t), "-N", "8", "--ntasks-per-node=1")
		require.NoError(t, err)
		require.NoError(t, c.WaitState(ctx, id, "RUNNING"))
		waitReady(t, out, 8)
		for _, n := range c.Nodes() {
			procs, err := c.NodeProcesses(n)
			require.NoError(t, err)
			assert.True(t, hasTask(procs), "no task on %s: %v", n, procs)
		}

		require.NoError(t, c.Cancel(id))
		job, err := c.WaitJob(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, "CANCELLED", job.State)
		left, err := c.Leftovers()
		require.NoError(t, err)
		assert.Empty(t, left)
	})

	t.Run("Stop leaves no lab process, namespace, bridge or cgroup", func(t *testing.T) {
		netns := make([]string, 0, len(c.nodes))
		for _, n := range c.nodes {
			netns = append(netns, n.netns)
		}
		require.NotEmpty(t, markedProcs(t, c.Dir()), "the running lab's daemons carry the marker")
		cgroups, err := os.ReadFile(filepath.Join(c.Dir(), "cgroups"))
		require.NoError(t, err)
		require.Contains(t, string(cgroups), "/sys/fs/cgroup/freezer/slurm-lab-"+c.slot.net+"-")

		t0 := time.Now()
		require.NoError(t, c.Stop())
		t.Logf("Stop: %v", time.Since(t0).Round(time.Millisecond))

		assert.Empty(t, markedProcs(t, c.Dir()))
		for node, pid := range c.slurmd {
			_, state, err := readProc(pid)
			assert.True(t, err != nil || state == "Z", "slurmd of %s (pid %d) still running", node, pid)
		}
		for _, ns := range netns {
			assert.NoFileExists(t, filepath.Join("/run/netns", ns))
		}
		_, err = net.InterfaceByName(c.slot.net + "-br")
		assert.Error(t, err, "bridge still there")
		for _, line := range strings.Split(strings.TrimSpace(string(cgroups)), "\n") {
			assert.NoDirExists(t, strings.TrimPrefix(line, "cgroup "))
		}
		assert.NoError(t, c.Stop(), "a second Stop")
	})
}

// Two clusters with the same node names run a job each, at the same time and
// with the same job id: cancelling one must not touch the other (they would
// share /sys/fs/cgroup/freezer/slurm_node1/uid_0/job_<id> without the lab's
// per-cluster cgroup subtrees).
func TestClustersCoexist(t *testing.T) {
	t.Parallel()
	a := Start(t, Options{Nodes: 2})
	b := Start(t, Options{Nodes: 2})
	require.Equal(t, a.Nodes(), b.Nodes())
	require.NotEqual(t, a.CtlAddr(), b.CtlAddr())

	ctx, cancel := context.WithTimeout(context.Background(), jobLimit)
	defer cancel()
	outA, outB := t.TempDir(), t.TempDir()
	idA, err := a.SbatchEnv(ctx, []string{"OUT=" + outA}, sleeperScript(t), "-N", "2", "--ntasks-per-node=1")
	require.NoError(t, err)
	idB, err := b.SbatchEnv(ctx, []string{"OUT=" + outB}, sleeperScript(t), "-N", "2", "--ntasks-per-node=1")
	require.NoError(t, err)
	t.Logf("job ids: %s and %s", idA, idB)
	waitReady(t, outA, 2)
	waitReady(t, outB, 2)

	require.NoError(t, a.Cancel(idA))
	jobA, err := a.WaitJob(ctx, idA)
	require.NoError(t, err)
	assert.Equal(t, "CANCELLED", jobA.State)

	jobB, err := b.Job(ctx, idB)
	require.NoError(t, err)
	assert.Equal(t, "RUNNING", jobB.State)
	for _, n := range b.Nodes() {
		procs, err := b.NodeProcesses(n)
		require.NoError(t, err)
		assert.True(t, hasTask(procs), "the other cluster's task on %s is gone: %v", n, procs)
	}
	require.NoError(t, b.Cancel(idB))
	jobB, err = b.WaitJob(ctx, idB)
	require.NoError(t, err)
	assert.Equal(t, "CANCELLED", jobB.State)
}

func TestProctrackOption(t *testing.T) {
	t.Parallel()
	c := Start(t, Options{Nodes: 2, Proctrack: "proctrack/pgid", KillWait: 3})
	ctx, cancel := context.WithTimeout(context.Background(), jobLimit)
	defer cancel()
	out, err := c.Command(ctx, "scontrol", "show", "config").Output()
	require.NoError(t, err)
	assert.Regexp(t, `(?m)^ProctrackType\s+= proctrack/pgid$`, string(out))
	assert.Regexp(t, `(?m)^KillWait\s+= 3 sec$`, string(out))

	id, err := c.Sbatch(ctx, "", "-N", "2", "--wrap=srun true")
	require.NoError(t, err)
	job, err := c.WaitJob(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, "COMPLETED", job.State)
}

func BenchmarkStart(b *testing.B) {
	for b.Loop() {
		c := Start(b, Options{})
		b.StopTimer()
		require.NoError(b, c.Stop())
		b.StartTimer()
	}
}

// BenchmarkSbatch8 is a trivial 8-node job, submit to end: sbatch -N 8 whose
// script runs `srun true` on every node.
func BenchmarkSbatch8(b *testing.B) {
	c := Start(b, Options{})
	ctx := context.Background()
	for b.Loop() {
		id, err := c.Sbatch(ctx, "", "-N", "8", "--ntasks-per-node=1", "--wrap=srun true")
		require.NoError(b, err)
		job, err := c.WaitJob(ctx, id)
		require.NoError(b, err)
		require.Equal(b, "COMPLETED", job.State)
	}
}

func writeScript(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "job.sh")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o755))
	return path
}

// sleeperScript's tasks write $OUT/ready.<procid> and then become `sleep`.
func sleeperScript(t *testing.T) string {
	return writeScript(t, `#!/bin/bash
srun --ntasks-per-node=1 bash -c 'touch "$OUT/ready.$SLURM_PROCID"; exec sleep 300'
`)
}

func waitReady(t *testing.T, dir string, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		files, _ := filepath.Glob(filepath.Join(dir, "ready.*"))
		return len(files) == n
	}, jobLimit, 50*time.Millisecond, "%d tasks never got ready in %s", n, dir)
}

// hasTask: the sleeper task, as bash before its exec or as sleep after
func hasTask(procs []Proc) bool {
	for _, p := range procs {
		if strings.Contains(p.Cmdline, "sleep 300") {
			return true
		}
	}
	return false
}

// markedProcs lists the live processes carrying up.sh's marker for the lab in dir.
func markedProcs(t *testing.T, dir string) []int {
	t.Helper()
	marker := "SLURM_LAB_ID=" + dir
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !contains(strings.Split(string(env), "\x00"), marker) {
			continue
		}
		if _, state, err := readProc(pid); err == nil && state != "Z" {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
