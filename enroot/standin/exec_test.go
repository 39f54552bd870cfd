package standin

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// asEnroot makes the test binary act as enroot (the os/exec helper-process
// pattern): start really execs, which must not replace the test process.
const asEnroot = "WIDEEP_STANDIN_TEST_AS_ENROOT"

func TestMain(m *testing.M) {
	if os.Getenv(asEnroot) == "1" {
		os.Exit(Main(os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// enrootCmd runs the stand-in as a child process with args, in the world of
// the fixture.
func (f *fixture) enrootCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, args...)
	cmd.Env = []string{asEnroot + "=1", "GORACE=atexit_sleep_ms=0"}
	for k, v := range f.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

// `enroot start` becomes the command: its exit code comes through as is.
func TestStartPassesExitCodeThrough(t *testing.T) {
	f := newFixture(t)
	err := f.enrootCmd(t, "start", "c1", "sh", "-c", "exit 3").Run()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, 3, ee.ExitCode())
}

// Death by a signal comes through as that signal (128+15 = 143 to a shell).
func TestStartPassesDeathBySignalThrough(t *testing.T) {
	f := newFixture(t)
	err := f.enrootCmd(t, "start", "c1", "sh", "-c", "kill -TERM $$").Run()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	ws, ok := ee.Sys().(syscall.WaitStatus)
	require.True(t, ok)
	require.True(t, ws.Signaled(), "killed by a signal, not exited: %v", ws)
	assert.Equal(t, syscall.SIGTERM, ws.Signal())

	// As a shell sees it.
	shell := exec.Command("sh", "-c", `"$0" start c1 sh -c 'kill -TERM $$'; echo $?`, mustExe(t))
	shell.Env = f.enrootCmd(t).Env
	out, err := shell.Output()
	require.NoError(t, err)
	assert.Equal(t, "143\n", string(out))
}

// The command keeps the stand-in's PID, so a signal sent to what the
// launcher started reaches the command itself.
func TestStartKeepsPIDAndReceivesSignals(t *testing.T) {
	f := newFixture(t)
	script := `trap 'exit 42' TERM; echo $$; while :; do sleep 0.01; done`
	cmd := f.enrootCmd(t, "start", "c1", "sh", "-c", script)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	require.NoError(t, err)
	assert.Equal(t, cmd.Process.Pid, pid, "the command is the process that was started")
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	err = cmd.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, 42, ee.ExitCode())
}

// A mount whose source is missing fails the start; the command never runs.
func TestStartWithMissingMountSourceFails(t *testing.T) {
	f := newFixture(t)
	ran := filepath.Join(f.dir, "ran")
	cmd := f.enrootCmd(t, "start", "--mount", filepath.Join(f.dir, "none")+":/data", "c1", "touch", ran)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "%v: %s", err, out)
	assert.Equal(t, 1, ee.ExitCode())
	assert.Contains(t, string(out), "failed to mount")
	assert.NoFileExists(t, ran)
}

func mustExe(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	return exe
}
