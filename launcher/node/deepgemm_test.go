package node

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/launcher/deploy"
	"github.com/wideep/wideep-launch/launcher/dgcache"
)

// runUntilReady starts the cluster, waits for node 0's endpoint, then stops
// the job as scancel does and waits for every node.
func (c *cluster) runUntilReady() {
	c.t.Helper()
	c.start()
	require.Eventually(c.t, func() bool { _, err := os.Stat(c.endpointFile()); return err == nil },
		time.Minute, 20*time.Millisecond, "node 0 publishes the endpoint")
	for _, s := range c.sigs {
		s <- syscall.SIGTERM
	}
	c.wait(time.Minute)
}

// precompiledOn lists the hosts whose precompile stand-in ran.
func (c *cluster) precompiledOn() []string {
	var hosts []string
	for _, h := range c.hosts {
		if _, err := os.Stat(filepath.Join(c.work, "records", h+".precompile.json")); err == nil {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// 3P×2 + 1D×2: on a cold cache only the first worker of each layout
// compiles (nodes 0-1 for prefill, 6-7 for decode) while prefill workers 1
// and 2 wait; every worker then reads its kernels from node-local storage,
// through both variable names. A second job on the same cache compiles
// nothing.
func TestMultiNodeDeepGEMMColdThenWarm(t *testing.T) {
	shared := t.TempDir()
	// The model path is part of the key: the jobs share it, as on a cluster.
	model := filepath.Join(shared, "model")
	require.NoError(t, os.MkdirAll(model, 0o755))
	layout := func(s *deploy.Spec) {
		s.PrefillWorkers, s.PrefillNodesPerWorker = 3, 2
		s.DecodeWorkers, s.DecodeNodesPerWorker = 1, 2
		s.CacheDir, s.ModelPath = filepath.Join(shared, "cache"), model
	}
	cold := newClusterWith(t, "81", layout, "WIDEEP_SIM_PRECOMPILE_DELAY=300ms")
	cold.runUntilReady()
	assert.Equal(t, []string{"node1", "node2", "node7", "node8"}, cold.precompiledOn())

	plan, err := deploy.NewPlan(cold.nodes[0].Spec, "81", cold.hosts, nil)
	require.NoError(t, err)
	require.Len(t, plan.DeepGEMM, 2)
	for _, set := range plan.DeepGEMM {
		comp, err := dgcache.ReadComplete(set.Entry)
		require.NoError(t, err, "%s published", set.Name())
		assert.Equal(t, "81", comp.JobID)
		assert.Equal(t, cold.hosts[set.CompilerNodes[0]], comp.Host, "the compiling worker's node rank 0 publishes")
		assert.Equal(t, 3, comp.Kernels)
		assert.Equal(t, "test GPU", comp.Inputs["gpu_model"])
	}
	for i, host := range cold.hosts {
		role, set := "prefill", plan.DeepGEMM[0]
		if i >= 6 {
			role, set = "decode", plan.DeepGEMM[1]
		}
		rec := readRecord(t, filepath.Join(cold.work, "records"), host, role)
		local := filepath.Join(cold.work, "dg-"+host, set.Name())
		assert.Equal(t, local, rec.Env["SGLANG_DG_CACHE_DIR"], host)
		assert.Equal(t, local, rec.Env["SGL_DG_CACHE_DIR"], host)
		assert.Len(t, rec.Kernels, 3, "%s: the worker found every kernel in its node-local copy", host)
	}
	assert.True(t, hasLine(cold.logs[2].String(), "DeepGEMM kernels ready on this node", `"kernels_here":3`, `"files_copied":6`),
		"prefill worker 1 compiled nothing: it copied worker 0's kernels from the shared cache")

	warm := newClusterWith(t, "82", layout)
	warm.runUntilReady()
	assert.Empty(t, warm.precompiledOn(), "a warm cache starts no compile at all")
	for i, host := range warm.hosts {
		role := "prefill"
		if i >= 6 {
			role = "decode"
		}
		rec := readRecord(t, filepath.Join(warm.work, "records"), host, role)
		assert.Len(t, rec.Kernels, 3, "%s: seeded from the shared cache", host)
		assert.True(t, hasLine(warm.logs[i].String(), "DeepGEMM cache hit"), host)
	}

	// A kernel-relevant flag is another layout: decode compiles again,
	// prefill does not.
	again := newClusterWith(t, "83", func(s *deploy.Spec) {
		layout(s)
		s.DecodeArgs = []string{"--cuda-graph-bs 1 2 4"}
	})
	again.runUntilReady()
	assert.Equal(t, []string{"node7", "node8"}, again.precompiledOn())
}

// The known compile_deep_gemm failure that leaves every kernel compiled:
// published with a warning, or, with --precompile-strict, the job fails
// naming the node.
func TestMultiNodeDeepGEMMSyncFailure(t *testing.T) {
	t.Run("lenient", func(t *testing.T) {
		c := newClusterWith(t, "84", nil, "WIDEEP_SIM_FAIL=node1/precompile:syncfail")
		c.runUntilReady()
		plan, err := deploy.NewPlan(c.nodes[0].Spec, "84", c.hosts, nil)
		require.NoError(t, err)
		comp, err := dgcache.ReadComplete(plan.DeepGEMM[0].Entry)
		require.NoError(t, err)
		assert.Contains(t, comp.Warning, "Sync request failed")
	})
	t.Run("strict", func(t *testing.T) {
		// The decode compile's node rank 0 (node 4) fails.
		c := newClusterWith(t, "85", func(s *deploy.Spec) { s.PrecompileStrict = true }, "WIDEEP_SIM_FAIL=node5/precompile:syncfail")
		c.start()
		errs := c.wait(time.Minute)
		for i, err := range errs {
			require.Error(t, err, "node %d", i)
			assert.Contains(t, err.Error(), "node 4 (node5): DeepGEMM compile decode-", "node %d", i)
			assert.Contains(t, err.Error(), "Sync request failed", "node %d", i)
			assert.Equal(t, 125, exitCode(err), "node %d: a failure, not bad input", i)
		}
		plan, err := deploy.NewPlan(c.nodes[0].Spec, "85", c.hosts, nil)
		require.NoError(t, err)
		assert.NoDirExists(t, plan.DeepGEMM[1].Entry, "nothing published")
		s, err := ReadSummary(filepath.Join(c.work, "logs", c.jobID))
		require.NoError(t, err)
		assert.Equal(t, OutcomeFailed, s.Outcome, "a failed barrier is a failure, not a refusal")
		require.NotNil(t, s.FirstFailure)
		assert.Equal(t, 4, s.FirstFailure.Node, "the node that failed, not node 0")
		assert.Equal(t, "node5", s.FirstFailure.Host)
		assert.Contains(t, s.FirstFailure.Message, "DeepGEMM compile decode-")
		entries, _ := os.ReadDir(filepath.Dir(plan.DeepGEMM[1].Entry))
		names := []string{}
		for _, e := range entries {
			names = append(names, e.Name())
		}
		assert.False(t, slices.ContainsFunc(names, func(n string) bool { return filepath.Ext(n) == ".lock" }),
			"node 0 released its locks: %v", names)
		assert.Empty(t, ourChildren(t))
	})
}

// A compile that outlives --precompile-timeout fails the job clearly,
// publishes nothing and leaves no lock for the next job.
func TestMultiNodeDeepGEMMTimeout(t *testing.T) {
	c := newClusterWith(t, "86", func(s *deploy.Spec) { s.PrecompileTimeout = 2 * time.Second },
		"WIDEEP_SIM_PRECOMPILE_DELAY=60s")
	c.start()
	for i, err := range c.wait(time.Minute) {
		require.Error(t, err, "node %d", i)
		assert.Contains(t, err.Error(), "did not finish within its timeout (2s)", "node %d", i)
	}
	plan, err := deploy.NewPlan(c.nodes[0].Spec, "86", c.hosts, nil)
	require.NoError(t, err)
	dir := filepath.Dir(plan.DeepGEMM[0].Entry)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "no entry, no staging directory, no lock")
	assert.Empty(t, ourChildren(t))
}

// Prefill and decode nodes with different GPUs: each role's kernels are
// keyed with the GPU of the nodes that build them, on every node, not with
// node 0's.
func TestMultiNodeDeepGEMMKeyedByEachRolesGPU(t *testing.T) {
	c := newClusterWith(t, "86", nil)
	for i := 4; i < 8; i++ {
		c.nodes[i].Spec.GPUModel = "other GPU" // the decode nodes
	}
	c.runUntilReady()

	spec := c.nodes[0].Spec
	spec.RoleGPUModels = map[deploy.Role]string{deploy.RolePrefill: "test GPU", deploy.RoleDecode: "other GPU"}
	plan, err := deploy.NewPlan(spec, "86", c.hosts, nil)
	require.NoError(t, err)
	require.Len(t, plan.DeepGEMM, 2)
	for _, set := range plan.DeepGEMM {
		comp, err := dgcache.ReadComplete(set.Entry)
		require.NoError(t, err, "%s published under the key of its own GPU", set.Name())
		assert.Equal(t, spec.RoleGPUModels[set.Role], comp.Inputs["gpu_model"], set.Name())
	}
	for i, host := range c.hosts {
		role, set := "prefill", plan.DeepGEMM[0]
		if i >= 4 {
			role, set = "decode", plan.DeepGEMM[1]
		}
		rec := readRecord(t, filepath.Join(c.work, "records"), host, role)
		assert.Equal(t, filepath.Join(c.work, "dg-"+host, set.Name()), rec.Env["SGLANG_DG_CACHE_DIR"], host)
	}
}

// The precompile's own port (compile_deep_gemm's HTTP server, --port) is
// bound only on a cache miss: a holder of it on a compiling node fails the
// compile, naming node and port, and refuses nothing when the cache hits.
func TestMultiNodePrecompilePortOnlyOnAMiss(t *testing.T) {
	shared := t.TempDir()
	model := filepath.Join(shared, "model")
	require.NoError(t, os.MkdirAll(model, 0o755))
	layout := func(s *deploy.Spec) { s.CacheDir, s.ModelPath = filepath.Join(shared, "cache"), model }

	cold := newClusterWith(t, "87", layout)
	port := cold.nodes[0].Spec.SGLangPort
	ln, err := net.Listen("tcp", net.JoinHostPort(nodeAddr(1), strconv.Itoa(port)))
	require.NoError(t, err)
	cold.start()
	for i, err := range cold.wait(time.Minute) {
		require.Error(t, err, "node %d", i)
		assert.Contains(t, err.Error(), "node 1 (node2): DeepGEMM compile prefill-", "node %d", i)
		assert.Contains(t, err.Error(), fmt.Sprintf("port %d", port), "node %d", i)
	}
	assert.NotContains(t, cold.precompiledOn(), "node2", "its compile never started")
	require.NoError(t, ln.Close())

	// The same cache, now warm (another job compiles it), and the port
	// taken again: nothing binds it, the job comes up.
	newClusterWith(t, "88", layout).runUntilReady()
	warm := newClusterWith(t, "89", layout)
	ln, err = net.Listen("tcp", net.JoinHostPort(nodeAddr(1), strconv.Itoa(warm.nodes[0].Spec.SGLangPort)))
	require.NoError(t, err)
	defer ln.Close()
	warm.runUntilReady()
	assert.Empty(t, warm.precompiledOn())
}
