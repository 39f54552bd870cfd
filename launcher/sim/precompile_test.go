package sim

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// precompileArgv is the worker's command line as the plan gives it to the
// precompile: same server flags, other module, plus --timeout.
func precompileArgv(role string, extra ...string) []string {
	argv := workerArgv(role, 4, 0, "gpu01:29500")
	return append(append([]string{"python3", "-m", "sglang.compile_deep_gemm", "--timeout", "3600"}, argv[3:]...), extra...)
}

func TestPrecompileWritesKernels(t *testing.T) {
	cache := filepath.Join(t.TempDir(), "dgcache")
	records := t.TempDir()
	env := envMap("SGLANG_DG_CACHE_DIR", cache, EnvRecordDir, records, "SLURMD_NODENAME", "gpu01", EnvPrecompileDelay, "1ms")

	code, r := run(t, precompileArgv("prefill"), env)
	require.Equal(t, 0, code, r.stderr.String())
	kernels, err := filepath.Glob(filepath.Join(cache, "cache", "kernel.*", "kernel.cubin"))
	require.NoError(t, err)
	assert.Len(t, kernels, precompileKernels)
	rec := readRecord(t, records, "gpu01", "precompile")
	assert.ElementsMatch(t, kernels, rec.Kernels)
	assert.Equal(t, cache, rec.CacheDir)
	for _, k := range kernels {
		assert.FileExists(t, filepath.Join(filepath.Dir(k), "kernel.cu"))
	}
	var leftovers []string
	filepath.WalkDir(cache, func(path string, d os.DirEntry, err error) error {
		if strings.HasPrefix(d.Name(), ".") {
			leftovers = append(leftovers, path)
		}
		return nil
	})
	assert.Empty(t, leftovers, "temporary files are renamed into place")

	code, r = run(t, precompileArgv("prefill"), env)
	require.Equal(t, 0, code)
	assert.Contains(t, r.stderr.String(), "0 kernel(s) compiled, 3 already cached")

	code, _ = run(t, precompileArgv("decode"), env)
	require.Equal(t, 0, code)
	all, err := filepath.Glob(filepath.Join(cache, "cache", "kernel.*", "kernel.cubin"))
	require.NoError(t, err)
	assert.Len(t, all, 2*precompileKernels, "decode's layout compiles other kernels")
}

func TestPrecompileFailures(t *testing.T) {
	tests := map[string]struct {
		argv     []string
		env      map[string]string
		sigterm  bool
		wantCode int
		want     string
	}{
		"dynamo-only flag": {
			argv:     precompileArgv("decode", "--endpoint", "dyn://dynamo.backend.generate"),
			wantCode: 2, want: "python3 -m sglang.compile_deep_gemm: error: unrecognized arguments: --endpoint dyn://dynamo.backend.generate",
		},
		"bad delay": {
			argv: precompileArgv("decode"), env: envMap(EnvPrecompileDelay, "-3"),
			wantCode: 2, want: "WIDEEP_SIM_PRECOMPILE_DELAY",
		},
		"injected": {
			argv: precompileArgv("decode"), env: envMap(EnvFail, "*/precompile:startup:6"),
			wantCode: 6, want: "injected failure */precompile:startup:6",
		},
		"terminated while compiling": {
			argv: precompileArgv("decode"), env: envMap(EnvPrecompileDelay, "1h"), sigterm: true,
			wantCode: 143, want: "received SIGTERM",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cache := t.TempDir()
			env := map[string]string{"SGLANG_DG_CACHE_DIR": cache}
			for k, v := range tc.env {
				env[k] = v
			}
			r := startStandIn(t, tc.argv, env)
			if tc.sigterm {
				r.sigs <- syscall.SIGTERM // buffered: read once the stand-in watches
			}
			assert.Equal(t, tc.wantCode, r.wait())
			assert.Contains(t, r.stderr.String(), tc.want)
			kernels, _ := filepath.Glob(filepath.Join(cache, "cache", "*"))
			assert.Empty(t, kernels)
		})
	}
}
