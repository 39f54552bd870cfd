package deploy

import (
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/wideep/wideep-launch/launcher/dgcache"
)

// KernelSet is the DeepGEMM kernels of one distinct worker layout: every
// worker of a role has the same layout, so a plan has at most two. On a
// cache miss the nodes of worker Compiler compile them together
// (compile_deep_gemm starts a whole multi-node SGLang server, so a worker
// spanning two nodes compiles on both); every other node waits.
type KernelSet struct {
	Role Role   `json:"role"`
	Key  string `json:"key"`
	// Entry is the set's directory in the shared cache,
	// <cache-dir>/deepgemm/<role>-<key>.
	Entry string `json:"entry"`
	// Compiler is the index (within its role) of the worker that compiles
	// on a miss, and CompilerNodes its nodes by node rank.
	Compiler      int   `json:"compiler_worker"`
	CompilerNodes []int `json:"compiler_nodes"`
	// Workers is how many workers run these kernels.
	Workers int `json:"workers"`
	// Inputs is what the key was computed from (dgcache.KeyInputs.Describe).
	Inputs map[string]string `json:"inputs"`
}

// Name is the set's entry name, <role>-<key>.
func (k KernelSet) Name() string { return dgcache.EntryName(string(k.Role), k.Key) }

// Environment variables that point SGLang at a DeepGEMM cache. SGLang
// overwrites DG_JIT_CACHE_DIR from them at import, so that one is never set.
const (
	// EnvDGCacheDir is the name SGLang reads since its October 2025 rename
	// (0.5.4).
	EnvDGCacheDir = "SGLANG_DG_CACHE_DIR"
	// EnvDGCacheDirOld is the name images before the rename read.
	EnvDGCacheDirOld = "SGL_DG_CACHE_DIR"
)

// DGCacheRoot is the shared DeepGEMM cache, dgcache.Cache's Dir.
func (s Spec) DGCacheRoot() string { return path.Join(s.CacheDir, dgcache.Subdir) }

// DGDir is the DeepGEMM cache directory the processes of kernel set name
// use on host: its node-local copy, or the shared entry itself with
// --dg-cache-mode shared.
func (s Spec) DGDir(jobID, host, name string) string {
	if s.DGCacheMode == DGCacheShared {
		return path.Join(s.DGCacheRoot(), name)
	}
	return path.Join(s.JobDGLocalDir(jobID, host), name)
}

// CompileDir is where a compiling node's compile_deep_gemm writes: always
// node-local, never the shared cache (DeepGEMM writing one NFS directory
// from many nodes at once is DeepEP #683's crash).
func (s Spec) CompileDir(jobID, host, name string) string {
	return path.Join(s.JobDGLocalDir(jobID, host), name)
}

// gpuModelOf is the GPU role's kernels are built on.
func (s Spec) gpuModelOf(role Role) string {
	if m := s.RoleGPUModels[role]; m != "" {
		return m
	}
	return s.GPUModel
}

// kernelKeyInputs are what a role's kernels depend on. precompileArgs is
// compile_deep_gemm's argument list without --timeout.
func (s Spec) kernelKeyInputs(t *roleTemplate, precompileArgs []string) dgcache.KeyInputs {
	env := make(map[string]string, len(s.KernelEnv))
	for k, v := range s.KernelEnv {
		env[k] = v
	}
	roleEnv := make([]string, len(t.env))
	for i, kv := range t.env {
		roleEnv[i] = kv[0] + "=" + kv[1]
	}
	// The role's own --prefill-env/--decode-env win, as they do in the
	// processes' environment.
	for k, v := range dgcache.KernelEnv(roleEnv) {
		env[k] = v
	}
	return dgcache.KeyInputs{
		Role: string(t.role), Image: s.Image, ImageDigest: s.ImageDigest, GPUModel: s.gpuModelOf(t.role),
		ModelID: s.ModelPath, Args: withoutSecrets(precompileArgs), Env: env,
	}
}

// withoutSecrets drops secret flags (--api-key, --hf-token) with their
// values: they change no kernel, and the key's inputs are written to the
// plan and to COMPLETE.json on the shared cache.
func withoutSecrets(args []string) []string {
	out := make([]string, 0, len(args))
	skipping := false
	for _, a := range args {
		if strings.HasPrefix(a, "-") && len(a) > 1 && !(a[1] >= '0' && a[1] <= '9') {
			flag, _, _ := strings.Cut(a, "=")
			skipping = isSecretFlag(flag)
		}
		if !skipping {
			out = append(out, a)
		}
	}
	return out
}

// timeoutArg is compile_deep_gemm's own --timeout (whole seconds: it is an
// argparse int), which also replaces the server's watchdog while compiling.
func (s Spec) timeoutArg() []string {
	secs := int((s.PrecompileTimeout + time.Second - 1) / time.Second)
	return []string{"--timeout", strconv.Itoa(secs)}
}

// describeCompiler is "worker 0 (nodes 0-1)" for tables and logs.
func (k KernelSet) describeCompiler() string {
	nodes := make([]string, len(k.CompilerNodes))
	for i, n := range k.CompilerNodes {
		nodes[i] = strconv.Itoa(n)
	}
	word := "node "
	if len(nodes) > 1 {
		word = "nodes "
	}
	return "worker " + strconv.Itoa(k.Compiler) + " (" + word + strings.Join(nodes, ",") + ")"
}
