package node

// The named preflight checks across nodes, on the in-process 8-node job of
// multinode_test.go: the GPUs come from the simulation's stand-in
// nvidia-smi, the fabric from a fake sysroot.

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/launcher/exitcode"
	"github.com/wideep/wideep-launch/launcher/preflight"
)

// withEnv makes every node's launcher see vars (WIDEEP_SIM_GPU_*).
func (c *cluster) withEnv(vars map[string]string) {
	for _, n := range c.nodes {
		n.LookupEnv = func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	}
}

// requirePreflightVerdict checks that every node exits 2 with the same
// report, which has want, and that nothing was started.
func (c *cluster) requirePreflightVerdict(failing string, want ...string) {
	t := c.t
	t.Helper()
	for i, err := range c.wait(time.Minute) {
		require.Error(t, err, "node %d", i)
		assert.Equal(t, exitcode.Input, exitCode(err), "node %d exits 2", i)
		assert.Contains(t, err.Error(), "preflight failed on "+failing+" of 8 nodes", "node %d", i)
		for _, w := range want {
			assert.Contains(t, err.Error(), w, "node %d", i)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(c.work, "records"))
	assert.Empty(t, entries, "nothing was started")
	assert.Empty(t, ourChildren(t))
}

const simH200 = "8 × NVIDIA H200, 143771 MiB"

// Node 3 (node4) has other GPUs than the rest of prefill worker 0: only
// node 0, which sees every node's answer, can tell.
func TestMultiNodePreflightMixedGPUModels(t *testing.T) {
	c := newCluster(t)
	c.withEnv(map[string]string{preflight.SimGPUOverridesEnv: "node4=" + simH200})
	c.start()
	c.requirePreflightVerdict("1", "\n  node 3 (node4): gpu-model: prefill worker 0 mixes GPU models: NVIDIA H200, 143771 MiB here; "+
		"NVIDIA H100 80GB HBM3, 81559 MiB on node 0 (node1), node 1 (node2), node 2 (node3)")
	for i := range c.nodes {
		assert.True(t, hasLine(c.logs[i].String(), "GPUs (nvidia-smi)"), "node %d logs its GPUs", i)
	}
}

// Waived, the same job gets to READY.
func TestMultiNodePreflightMixedGPUModelsWaived(t *testing.T) {
	c := newCluster(t)
	c.withEnv(map[string]string{preflight.SimGPUOverridesEnv: "node4=" + simH200})
	for _, n := range c.nodes {
		n.Options.SkipChecks = []string{preflight.CheckGPUModel}
	}
	c.start()
	require.Eventually(t, func() bool { _, err := os.Stat(c.endpointFile()); return err == nil },
		time.Minute, 20*time.Millisecond, "node 0 publishes the endpoint")
	for _, s := range c.sigs {
		s <- syscall.SIGTERM
	}
	for i, err := range c.wait(time.Minute) {
		var st *StoppedError
		require.ErrorAs(t, err, &st, "node %d", i)
	}
}

// Per-node GPU findings (a leftover process on node 5, a wrong count on
// node 6) and a fabric problem in node 2's fake sysroot all reach every
// node in one report.
func TestMultiNodePreflightGPUAndFabric(t *testing.T) {
	c := newCluster(t)
	c.withEnv(map[string]string{preflight.SimGPUOverridesEnv: "node6=apps:4242 python3 70000MiB;node7=4 × NVIDIA H100 80GB HBM3, 81559 MiB"})
	root := filepath.Join(c.work, "sysroot")
	port := filepath.Join(root, "sys", "class", "infiniband", "mlx5_0", "ports", "1")
	require.NoError(t, os.MkdirAll(port, 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "sys", "module", "nvidia_peermem"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "dev", "shm"), 0o755))
	for name, v := range map[string]string{"state": "1: DOWN\n", "link_layer": "Ethernet\n", "rate": "100 Gb/sec (4X EDR)\n"} {
		require.NoError(t, os.WriteFile(filepath.Join(port, name), []byte(v), 0o644))
	}
	c.nodes[2].Options.PreflightSysroot = root
	// This machine's own RLIMIT_MEMLOCK is not the test's business.
	c.nodes[2].Options.SkipChecks = []string{preflight.CheckMemlock}
	c.start()
	c.requirePreflightVerdict("3",
		"\n  node 2 (node3): ib-ports: no ACTIVE InfiniBand/RoCE port (mlx5_0 port 1: 1: DOWN, Ethernet, 100 Gb/sec (4X EDR)); "+
			"NIXL and DeepEP need RDMA",
		"\n  node 5 (node6): gpu-free: GPU memory held by PID 4242 (python3, 70000 MiB); leftovers of an earlier job are the usual cause",
		"\n  node 6 (node7): gpu-model: nvidia-smi shows 4 GPUs (4 × NVIDIA H100 80GB HBM3, 81559 MiB); the plan needs 8 on this node")
}
