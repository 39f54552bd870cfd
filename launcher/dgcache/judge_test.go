package dgcache

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// syncFailure is how an image without the bootstrap fix ends a PD compile.
const syncFailure = `Traceback (most recent call last):
  File "/sgl-workspace/sglang/python/sglang/compile_deep_gemm.py", line 143, in run_compile
    raise RuntimeError(f"Sync request failed: {res.text}")
RuntimeError: Sync request failed: {"error":{"message":"bootstrap_room is required"}}`

// numbered is lines "line 1" to "line n".
func numbered(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	return b.String()
}

func TestJudge(t *testing.T) {
	for name, tc := range map[string]struct {
		r           Result
		publish     bool
		warning     []string // substrings
		errContains []string
		errLacks    []string
	}{
		"clean exit": {
			r:       Result{ExitCode: 0, KernelsBefore: 0, KernelsAfter: 40},
			publish: true,
		},
		"clean exit on a warm cache": {
			r:       Result{ExitCode: 0, KernelsBefore: 40, KernelsAfter: 40},
			publish: true,
		},
		"clean exit without kernels": {
			r:           Result{ExitCode: 0},
			errContains: []string{"exited 0 but no kernels", "SGL_DG_CACHE_DIR"},
		},
		"known failure after compiling": {
			r:       Result{ExitCode: 1, LogTail: "compiling\n" + syncFailure + "\n", KernelsBefore: 3, KernelsAfter: 40},
			publish: true,
			warning: []string{"code 1", "37 new kernel(s)", "RuntimeError: Sync request failed:", "published anyway"},
		},
		"known failure far above the end of the log": {
			r:       Result{ExitCode: 1, LogTail: syncFailure + "\n" + numbered(60), KernelsAfter: 5},
			publish: true,
			warning: []string{"Sync request failed"},
		},
		"known failure in strict mode": {
			r:           Result{ExitCode: 1, LogTail: syncFailure, KernelsAfter: 40, Strict: true},
			errContains: []string{"code 1", "Sync request failed", "strict"},
		},
		"known failure without new kernels": {
			r:           Result{ExitCode: 1, LogTail: syncFailure, KernelsBefore: 40, KernelsAfter: 40},
			errContains: []string{"code 1", "no new kernels", "RuntimeError: Sync request failed"},
		},
		"the guide's wording is not SGLang's": {
			r:           Result{ExitCode: 1, LogTail: "error: missing bootstrap information\n", KernelsAfter: 40},
			errContains: []string{"exited with code 1", "missing bootstrap information"},
		},
		"other failure": {
			r:           Result{ExitCode: 2, LogTail: numbered(50)},
			errContains: []string{"exited with code 2", "line 31\n", "line 50"},
			errLacks:    []string{"line 30\n"},
		},
		"killed by a signal": {
			r:           Result{ExitCode: -1, LogTail: "Killed\n", KernelsAfter: 12},
			errContains: []string{"code -1", "Killed"},
		},
		"timed out": {
			r:           Result{ExitCode: -1, TimedOut: true, Timeout: time.Hour, LogTail: syncFailure, KernelsAfter: 40},
			errContains: []string{"timeout (1h0m0s)", "40 kernel(s)", "not published"},
		},
		"timed out although it exited 0": {
			r:           Result{ExitCode: 0, TimedOut: true, Timeout: 90 * time.Second, KernelsAfter: 40},
			errContains: []string{"timeout (1m30s)"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			publish, warning, err := Judge(tc.r)
			assert.Equal(t, tc.publish, publish)
			if tc.errContains == nil {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
				assert.Empty(t, warning, "no warning without publishing")
			}
			for _, s := range tc.errContains {
				assert.Contains(t, err.Error(), s)
			}
			for _, s := range tc.errLacks {
				assert.NotContains(t, err.Error(), s)
			}
			if tc.warning == nil {
				assert.Empty(t, warning)
			}
			for _, s := range tc.warning {
				assert.Contains(t, warning, s)
			}
		})
	}
}

func TestTailLines(t *testing.T) {
	big := numbered(200_000) // ~2.4 MB: many read chunks, more than maxTailBytes
	for name, tc := range map[string]struct {
		content string
		n       int
		want    string
	}{
		"last lines":               {content: "a\nb\nc\nd\n", n: 2, want: "c\nd"},
		"no final newline":         {content: "a\nb\nc", n: 2, want: "b\nc"},
		"fewer lines than asked":   {content: "a\nb\n", n: 5, want: "a\nb"},
		"empty":                    {content: "", n: 3, want: ""},
		"nothing asked":            {content: "a\n", n: 0, want: ""},
		"blank lines count":        {content: "a\n\nb\n", n: 2, want: "\nb"},
		"progress bar":             {content: "start\nwarmup:  10%\rwarmup:  50%\rwarmup: 100%\nend\r\n", n: 2, want: "warmup: 100%\nend"},
		"large log":                {content: big, n: 3, want: "line 199998\nline 199999\nline 200000"},
		"large log, many lines":    {content: big, n: 1000, want: strings.TrimSuffix(strings.Join(strings.SplitAfter(big, "\n")[199_000:], ""), "\n")},
		"one line across a chunk":  {content: "x\n" + strings.Repeat("y", 100_000) + "\n", n: 1, want: strings.Repeat("y", 100_000)},
		"two lines across a chunk": {content: "x\n" + strings.Repeat("y", 100_000) + "\nz\n", n: 3, want: "x\n" + strings.Repeat("y", 100_000) + "\nz"},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "compile.log")
			require.NoError(t, os.WriteFile(path, []byte(tc.content), 0o644))
			assert.Equal(t, tc.want, TailLines(path, tc.n))
		})
	}
}

// The tail of a log that grows beyond maxTailBytes in one line (a progress
// bar that never ends its line) is bounded, not the whole file.
func TestTailLinesBoundsOneHugeLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "compile.log")
	require.NoError(t, os.WriteFile(path, []byte("first\n"+strings.Repeat("z", 3*maxTailBytes)), 0o644))
	got := TailLines(path, 2)
	assert.LessOrEqual(t, len(got), maxTailBytes+64<<10)
	assert.NotContains(t, got, "first")
	assert.True(t, strings.HasSuffix(got, "zzz"))
}

func TestTailLinesNamesAMissingLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing.log")
	got := TailLines(path, 5)
	assert.Contains(t, got, "no log")
	assert.Contains(t, got, path)
}
