package testproc_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/launcher/testproc"
)

const helperEnv = "WIDEEP_TESTPROC_HELPER"

var helpers = testproc.New(helperEnv)

func init() {
	// echo prints its arguments and its GORACE and exits with code 3.
	helpers.Register("echo", func(args []string) int {
		fmt.Printf("%s|%s\n", strings.Join(args, " "), os.Getenv("GORACE"))
		return 3
	})
}

func TestMain(m *testing.M) { helpers.Main(m) }

// run runs cmd and returns its combined output and exit code.
func run(t *testing.T, cmd *exec.Cmd) (string, int) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "output:\n%s", &out)
	return out.String(), ee.ExitCode()
}

func TestCommandRunsTheHelperInAChild(t *testing.T) {
	// Our own selection (as in a helper starting a helper) is not passed on,
	// and a GORACE of ours is kept, with the child told not to sleep at exit.
	t.Setenv(helperEnv, "not-echo")
	t.Setenv("GORACE", "halt_on_error=1")
	out, code := run(t, helpers.Command(t, "echo", "a", "b c"))
	assert.Equal(t, 3, code)
	assert.Equal(t, "a b c|halt_on_error=1 atexit_sleep_ms=0\n", out)
}

func TestExec(t *testing.T) {
	argv, env := helpers.Exec(t, "echo", "x")
	exe, err := os.Executable()
	require.NoError(t, err)
	assert.Equal(t, []string{exe, "x"}, argv)
	assert.Equal(t, helperEnv+"=echo", env[len(env)-2])
	assert.Contains(t, env[len(env)-1], "atexit_sleep_ms=0")
	assert.Equal(t, 1, strings.Count(strings.Join(env, "\n"), helperEnv+"="))
}

func TestUnknownHelperExits2(t *testing.T) {
	cmd := helpers.Command(t, "echo")
	cmd.Env = append(cmd.Env, helperEnv+"=nope") // exec.Cmd: the last value wins
	out, code := run(t, cmd)
	assert.Equal(t, 2, code)
	assert.Equal(t, "unknown helper \"nope\"\n", out)
}

func TestRegisterPanicsOnDuplicate(t *testing.T) {
	h := testproc.New("WIDEEP_TESTPROC_OTHER")
	h.Register("x", func([]string) int { return 0 })
	assert.PanicsWithValue(t, "duplicate helper x", func() { h.Register("x", func([]string) int { return 1 }) })
}
