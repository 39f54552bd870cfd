package dgcache

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

const (
	// LogTailLines is how much of the compile's log Judge should be given
	// (TailLines(log, LogTailLines)): after compile_deep_gemm's traceback
	// its still-running server keeps logging until it is killed, so the
	// failure line may be well above the last line.
	LogTailLines = 200
	// errorTailLines is how much of the log an error shows.
	errorTailLines = 20
	// maxTailBytes bounds what TailLines reads: a tqdm progress bar without
	// newlines must not pull a whole multi-gigabyte log into memory.
	maxTailBytes = 1 << 20
)

// knownFailures are the log lines of compile_deep_gemm failures that still
// leave every kernel compiled.
//
// "RuntimeError: Sync request failed:" is compile_deep_gemm's own text
// (python/sglang/compile_deep_gemm.py @06c48ca8), raised when its final
// /generate request is refused. On images without the FAKE_BOOTSTRAP_HOST
// fix a PD server refuses it for lack of bootstrap fields, after the
// warmup has compiled the kernels (research facts §2.1). What follows the
// colon comes from the server's validation and differs by version, so only
// this prefix is matched.
//
// The Dynamo WideEP guide's note ("the compile request may fail due to
// missing bootstrap information, but the kernels are still successfully
// cached") points to sgl-project/sglang issue 9867, comment 3336551174.
// Looked up (Sept 2026): the stored thread of 9867 is "Long DeepGEMM v2
// warmup time in latest SGLang leading to NCCL timeout" and none of it that
// we could read contains "missing bootstrap information"; the phrase is the
// guide's paraphrase, not a message SGLang prints (the only sources found
// printing it are other projects). It is therefore not matched: matching
// words SGLang never logs could only ever accept some other failure.
var knownFailures = []string{"RuntimeError: Sync request failed:"}

// Result is what a compile_deep_gemm run left.
type Result struct {
	ExitCode int
	// LogTail is the end of its log (TailLines(log, LogTailLines)).
	LogTail string
	// KernelsBefore and KernelsAfter are CountKernels of its cache root
	// before and after the run.
	KernelsBefore, KernelsAfter int
	// Strict refuses to publish after a known failure.
	Strict bool
	// TimedOut says the launcher stopped the run at Timeout.
	TimedOut bool
	Timeout  time.Duration
}

// Judge is the success rule of a compile run: whether its kernels may be
// published, with a warning to record in COMPLETE.json when they are
// published despite a known failure, or an error saying why not.
//
//   - timed out: an error, whatever the rest says (the kernels of an
//     interrupted compile are incomplete);
//   - exit 0: publish, provided there are kernels (none means SGLang wrote
//     them elsewhere);
//   - non-zero, a known failure in the log and new kernels: publish with a
//     warning, or an error when Strict;
//   - otherwise: an error with the exit code and the log's last lines.
func Judge(r Result) (publish bool, warning string, err error) {
	tail := lastLines(r.LogTail, errorTailLines)
	if r.TimedOut {
		return false, "", fmt.Errorf("compile_deep_gemm did not finish within its timeout (%v); %d kernel(s) compiled so far "+
			"are kept on this node but not published (rerunning resumes); last lines of its log:\n%s",
			r.Timeout, r.KernelsAfter, tail)
	}
	if r.ExitCode == 0 {
		if r.KernelsAfter == 0 {
			return false, "", fmt.Errorf("compile_deep_gemm exited 0 but no kernels are in its cache directory: " +
				"the image may read SGL_DG_CACHE_DIR (SGLang before 0.5.4) rather than SGLANG_DG_CACHE_DIR; set both")
		}
		return true, "", nil
	}
	line := knownFailure(r.LogTail)
	if line == "" {
		return false, "", fmt.Errorf("compile_deep_gemm exited with code %d; last lines of its log:\n%s", r.ExitCode, tail)
	}
	fresh := r.KernelsAfter - r.KernelsBefore
	if fresh <= 0 {
		return false, "", fmt.Errorf("compile_deep_gemm exited with code %d after the known PD sync failure, "+
			"but compiled no new kernels (%d before, %d after), so the failure came before the warmup; last lines of its log:\n%s",
			r.ExitCode, r.KernelsBefore, r.KernelsAfter, tail)
	}
	warning = fmt.Sprintf("compile_deep_gemm exited with code %d after compiling %d new kernel(s), on the known PD failure "+
		"of images without the bootstrap fix: %q", r.ExitCode, fresh, line)
	if r.Strict {
		return false, "", fmt.Errorf("%s; not published in strict mode", warning)
	}
	return true, warning + "; published anyway", nil
}

// knownFailure returns the last log line holding a known failure, or "".
func knownFailure(log string) string {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		for _, f := range knownFailures {
			if strings.Contains(lines[i], f) {
				return strings.TrimSpace(lines[i])
			}
		}
	}
	return ""
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TailLines returns the last n lines of the log at path, reading backwards
// from its end so that a large log costs only its tail. Carriage returns
// (tqdm progress bars) are resolved as a terminal would show them: only the
// text after a line's last "\r" is kept. When the log cannot be read, the
// result says so in parentheses, since it ends up in an error message.
func TailLines(path string, n int) string {
	if n <= 0 {
		return ""
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	const chunk = 64 << 10
	var buf []byte
	pos := fi.Size()
	for pos > 0 && len(buf) < maxTailBytes && bytes.Count(bytes.TrimRight(buf, "\n"), []byte{'\n'}) < n {
		size := min(chunk, pos)
		pos -= size
		part := make([]byte, size, int(size)+len(buf))
		if _, err := f.ReadAt(part, pos); err != nil && err != io.EOF {
			return fmt.Sprintf("(reading log %s: %v)", path, err)
		}
		buf = append(part, buf...)
	}
	lines := strings.Split(strings.TrimRight(string(buf), "\n"), "\n")
	if pos > 0 && len(lines) > 1 {
		lines = lines[1:] // the first line read is probably cut
	}
	lines = lines[max(0, len(lines)-n):]
	for i, l := range lines {
		l = strings.TrimSuffix(l, "\r")
		if j := strings.LastIndexByte(l, '\r'); j >= 0 {
			l = l[j+1:]
		}
		lines[i] = l
	}
	return strings.Join(lines, "\n")
}
