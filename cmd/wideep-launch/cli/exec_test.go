package cli

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These run real processes through Main in the test process, which thereby
// becomes a child subreaper; that is harmless here.
func TestExec(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		code int
		out  string
	}{
		"success":             {[]string{"--", "sh", "-c", "exit 0"}, 0, ""},
		"exit code passed":    {[]string{"--", "sh", "-c", "exit 3"}, 3, ""},
		"killed by SIGKILL":   {[]string{"--", "sh", "-c", "kill -KILL $$"}, 137, ""},
		"killed by SIGTERM":   {[]string{"--", "sh", "-c", "kill -TERM $$"}, 143, ""},
		"without --":          {[]string{"sh", "-c", "exit 4"}, 4, ""},
		"flags after command": {[]string{"--grace", "1s", "sh", "-c", "echo $1", "sh", "--grace"}, 0, "[sh] --grace\n"},
		// One pipe for stdout and stderr: the lines stay in the order written.
		"output prefixed":         {[]string{"--", "sh", "-c", "echo one; echo two >&2; printf three"}, 0, "[sh] one\n[sh] two\n[sh] three\n"},
		"prefix is the base name": {[]string{"--", "/bin/sh", "-c", "echo x"}, 0, "[sh] x\n"},
		"command not found":       {[]string{"--", "/nonexistent/wideep-cmd"}, 127, ""},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := runCLI(t, nil, append([]string{"exec"}, tc.args...)...)
			assert.Equal(t, tc.code, code, errOut)
			assert.Equal(t, tc.out, out)
		})
	}
}

func TestExecLogFile(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "sub", "cmd.log")
	code, out, errOut := runCLI(t, nil, "exec", "--log", logFile, "--", "sh", "-c", "echo out; echo err >&2; exit 5")
	assert.Equal(t, 5, code, errOut)
	assert.Equal(t, "[sh] out\n[sh] err\n", out)
	b, err := os.ReadFile(logFile)
	require.NoError(t, err)
	assert.Equal(t, "out\nerr\n", string(b), "the log file gets the output verbatim")

	// WIDEEP_LOG is --log's fallback.
	envLog := filepath.Join(t.TempDir(), "env.log")
	code, _, errOut = runCLI(t, map[string]string{"WIDEEP_LOG": envLog}, "exec", "--", "sh", "-c", "echo env")
	require.Equal(t, 0, code, errOut)
	b, err = os.ReadFile(envLog)
	require.NoError(t, err)
	assert.Equal(t, "env\n", string(b))
}

func TestExecErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		env  map[string]string
		args []string
		want string
	}{
		"no command":       {nil, nil, "exec needs a command"},
		"only --":          {nil, []string{"--"}, "exec needs a command"},
		"grace not a time": {nil, []string{"--grace", "soon", "--", "true"}, `exec: invalid argument "soon" for "--grace" flag`},
		"grace zero":       {nil, []string{"--grace", "0s", "--", "true"}, "--grace 0s: must be positive"},
		"grace negative":   {nil, []string{"--grace=-1s", "--", "true"}, "--grace -1s: must be positive"},
		"unknown flag":     {nil, []string{"--timeout", "1s", "--", "true"}, "exec: unknown flag: --timeout"},
		"bad WIDEEP_GRACE": {map[string]string{"WIDEEP_GRACE": "soon"}, []string{"--", "true"}, "WIDEEP_GRACE=soon (for --grace)"},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tc.env, append([]string{"exec"}, tc.args...)...)
			assert.Equal(t, 2, code)
			assert.Empty(t, out)
			assert.Contains(t, errOut, tc.want)
		})
	}
}

// TestExecStopsOnSIGTERM signals a real launcher process (the test binary
// run as wideep-launch) as scancel does. SuperviseOne forwards SIGTERM to the
// command's process group, waits --grace, SIGKILLs the group, and exits with
// the command's own code: 7 when its trap exits 7, 137 when it ignores
// SIGTERM and dies by SIGKILL.
func TestExecStopsOnSIGTERM(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Fatal("needs sh (a POSIX system has it)")
	}
	for name, tc := range map[string]struct {
		trap string
		code int
	}{
		"command exits on SIGTERM":  {`trap 'exit 7' TERM`, 7},
		"command ignores SIGTERM":   {`trap '' TERM`, 137},
		"command dies from SIGTERM": {`:`, 143},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			ready := filepath.Join(dir, "ready")
			// The readiness file (written after the trap, published by rename)
			// holds the shell's pid. "$1" keeps the path out of the script.
			script := tc.trap + `; echo $$ > "$1.tmp"; mv "$1.tmp" "$1"; while :; do sleep 0.05; done`
			cmd := launcherCommand(t, "exec", "--grace", "500ms", "--", "sh", "-c", script, "sh", ready)
			// Files, not buffers: they can be read while the launcher runs.
			stderrPath := filepath.Join(dir, "launcher.stderr")
			stderrFile, err := os.Create(stderrPath)
			require.NoError(t, err)
			defer stderrFile.Close()
			cmd.Stderr = stderrFile
			launcherStderr := func() string { b, _ := os.ReadFile(stderrPath); return string(b) }
			require.NoError(t, cmd.Start())
			waitErr := make(chan error, 1)
			go func() { waitErr <- cmd.Wait() }()
			t.Cleanup(func() {
				_ = cmd.Process.Kill() // harmless once it exited: Wait has reaped it
				<-waitErr
			})

			var pid int
			require.Eventually(t, func() bool {
				b, err := os.ReadFile(ready)
				if err != nil {
					return false
				}
				pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
				return err == nil
			}, 10*time.Second, 5*time.Millisecond, "the command never got ready")

			require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
			// A deadline against hanging forever, not a timing assertion: the
			// launcher needs --grace (500ms) plus its own shutdown.
			select {
			case err = <-waitErr:
				waitErr <- err // for the cleanup
			case <-time.After(30 * time.Second):
				require.FailNow(t, "the launcher did not exit after SIGTERM", "stderr: %s", launcherStderr())
			}
			var ee *exec.ExitError
			require.True(t, errors.As(err, &ee), "launcher: %v; stderr: %s", err, launcherStderr())
			assert.Equal(t, tc.code, ee.ExitCode(), "stderr: %s", launcherStderr())
			// The launcher reaped the shell before it exited: nothing is left.
			assert.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "the command (pid %d) outlived the launcher", pid)
		})
	}
}
