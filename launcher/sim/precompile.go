package sim

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// precompileKernels is how many placeholder kernels one precompile writes.
const precompileKernels = 3

// runPrecompile stands in for sglang.compile_deep_gemm: it accepts exactly
// the SGLang server flags (Dynamo-only flags are an error, as for the real
// tool), "compiles" for WIDEEP_SIM_PRECOMPILE_DELAY and writes placeholder
// kernels in DeepGEMM's cache layout, <dir>/cache/kernel.<hash>/kernel.cubin.
// The hashes depend on the kernel-relevant flags, so prefill and decode
// layouts produce different kernels and a rerun finds them cached.
func (s *standIn) runPrecompile(argv []string) int {
	const prog = "python3 -m " + ModulePrecompile
	a, err := parseArgs(argv, precompileFlags, "model-path")
	if code, done := s.argsDone(prog, precompileFlags, err); done {
		return code
	}
	names := s.nodeNames()
	s.prefix = fmt.Sprintf("sim precompile [%s]: ", names[0])
	fails, _, err := s.commonEnv()
	if err != nil {
		s.logf("%v", err)
		return exitUsage
	}
	delay, err := s.durationEnv(EnvPrecompileDelay, 0)
	if err != nil {
		s.logf("%v", err)
		return exitUsage
	}
	dir := s.cacheDir()
	rec := s.newRecord(rolePrecompile, ModulePrecompile)
	rec.NodeRank, rec.NNodes, rec.DistInitAddr = a.int("node-rank", 0), a.int("nnodes", 1), a.str("dist-init-addr", "")
	rec.Model, rec.CacheDir = a.str("served-model-name", a.str("model-path", "")), dir
	if fl, ok := findFailure(fails, names, rolePrecompile, StageStartup); ok {
		s.logf("injected failure %s: exiting with code %d at startup", fl, fl.Code)
		return s.finish(rec, fl.Code, "injected failure at startup")
	}

	ctx, stop := s.terminated()
	defer stop()
	s.logf("compiling DeepGEMM kernels into %s (%v)", dir, delay)
	if !sleepCtx(ctx, delay) {
		return s.finish(rec, exitTerm, terminationReason(ctx)+" while compiling")
	}
	written, cached := 0, 0
	for i := 0; i < precompileKernels; i++ {
		hash := kernelHash(a, i)
		path := filepath.Join(dir, "cache", "kernel."+hash, "kernel.cubin")
		rec.Kernels = append(rec.Kernels, path)
		if _, err := os.Stat(path); err == nil {
			cached++
			continue
		}
		src := fmt.Sprintf("// wideep-launch simulated DeepGEMM kernel %s\n", hash)
		if err := writeFileAtomic(filepath.Join(filepath.Dir(path), "kernel.cu"), []byte(src)); err != nil {
			s.logf("%v", err)
			return s.finish(rec, exitError, err.Error())
		}
		if err := writeFileAtomic(path, []byte("WIDEEP-SIM-CUBIN "+hash+"\n")); err != nil {
			s.logf("%v", err)
			return s.finish(rec, exitError, err.Error())
		}
		written++
	}
	s.logf("done: %d kernel(s) compiled, %d already cached", written, cached)
	return s.finish(rec, 0, "done")
}

// cacheDir is where SGLang points DeepGEMM: SGLANG_DG_CACHE_DIR (older
// releases: SGL_DG_CACHE_DIR), else ~/.cache/deep_gemm.
func (s *standIn) cacheDir() string {
	for _, name := range []string{"SGLANG_DG_CACHE_DIR", "SGL_DG_CACHE_DIR"} {
		if v := s.getenv(name); v != "" {
			return v
		}
	}
	return filepath.Join(s.getenv("HOME"), ".cache", "deep_gemm")
}

// kernelHash derives kernel i's name from the flags that change kernel
// shapes (see the DeepGEMM notes: TP/DP/EP layout, DP attention, DeepEP
// mode, chunked prefill size).
func kernelHash(a *args, i int) string {
	var b strings.Builder
	for _, name := range []string{
		"tp-size", "dp-size", "ep-size", "nnodes", "enable-dp-attention", "moe-dense-tp-size",
		"deepep-mode", "moe-a2a-backend", "chunked-prefill-size", "enable-two-batch-overlap",
		"disaggregation-mode", "cuda-graph-bs",
	} {
		fmt.Fprintf(&b, "%s=%s;", name, a.str(name, ""))
	}
	fmt.Fprintf(&b, "kernel=%d", i)
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:16])
}
