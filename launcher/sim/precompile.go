package sim

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
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
	a, err := parseArgs(precompileGrammar(), argv)
	if code, done := s.argsDone(precompileGrammar(), err); done {
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
	rec.NodeRank, rec.NNodes, rec.DistInitAddr = a.int("--node-rank", 0), a.int("--nnodes", 1), a.str("--dist-init-addr", "")
	rec.Model, rec.CacheDir = a.str("--served-model-name", a.str("--model-path", "")), dir
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
	if fl, ok := findFailure(fails, names, rolePrecompile, StageSyncFail); ok {
		// compile_deep_gemm's own words (python/sglang/compile_deep_gemm.py
		// @06c48ca8); what follows the colon is the server's answer.
		fmt.Fprintf(s.stderr, "Traceback (most recent call last):\n  File \"compile_deep_gemm.py\", line 160, in run_compile\n"+
			"RuntimeError: Sync request failed: {\"error\":{\"message\":\"bootstrap_room is required\"}}\n")
		s.logf("injected failure %s: %d kernel(s) compiled, then the sync request failed", fl, written)
		return s.finish(rec, fl.Code, "sync request failed after compiling")
	}
	s.logf("done: %d kernel(s) compiled, %d already cached", written, cached)
	if err := s.linger(a); err != nil {
		s.logf("%s: %v", EnvPrecompileLinger, err)
		return s.finish(rec, exitUsage, err.Error())
	}
	return s.finish(rec, 0, "done")
}

// linger leaves behind, on node rank 0, a child that holds the dist-init
// port for WIDEEP_SIM_PRECOMPILE_LINGER after the precompile exits, as a
// scheduler of compile_deep_gemm's server still shutting down does; "forever"
// holds it until killed.
func (s *standIn) linger(a *args) error {
	v := s.getenv(EnvPrecompileLinger)
	if v == "" || a.int("--node-rank", 0) != 0 || !a.has("--dist-init-addr") {
		return nil
	}
	if v != "forever" {
		if _, err := time.ParseDuration(v); err != nil {
			return fmt.Errorf("want a duration or forever, got %q", v)
		}
	}
	_, port, err := net.SplitHostPort(a.str("--dist-init-addr", ""))
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer null.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	addr := net.JoinHostPort(s.bindHost(""), port)
	p, err := os.StartProcess(self, []string{self, "sim", lingerArg, addr, v}, &os.ProcAttr{
		Env: os.Environ(), Files: []*os.File{null, w, null},
	})
	w.Close()
	if err != nil {
		return err
	}
	// Exit only once the child holds the port, as the real race has it.
	if _, err := r.Read(make([]byte, 1)); err != nil {
		return fmt.Errorf("the lingering child did not bind %s", addr)
	}
	s.logf("a child (pid %d) keeps %s for %s after this precompile exits", p.Pid, addr, v)
	return p.Release()
}

// lingerArg is argv[1] of the lingering child: `wideep-launch sim linger ADDR DURATION`.
const lingerArg = "linger"

// runLinger binds addr, says so on stdout, and holds it for d (or forever).
func runLinger(args []string) int {
	if len(args) != 2 {
		return exitUsage
	}
	ln, err := net.Listen("tcp", args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return exitError
	}
	defer ln.Close()
	os.Stdout.Write([]byte("!"))
	if args[1] == "forever" {
		signal.Ignore(syscall.SIGTERM, syscall.SIGINT)
		select {}
	}
	d, _ := time.ParseDuration(args[1])
	time.Sleep(d)
	return 0
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
		// Keyed by the names the stand-ins always used, so hashes (and the
		// kernels of earlier simulated runs) stay what they were.
		fmt.Fprintf(&b, "%s=%s;", name, a.text("--"+name))
	}
	fmt.Fprintf(&b, "kernel=%d", i)
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:16])
}
