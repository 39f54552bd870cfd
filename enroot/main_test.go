package enroot

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/launcher/testproc"
)

// helperEnv makes the test binary act as a helper command instead of running
// the tests (the os/exec helper-process pattern, see launcher/testproc):
// "enroot" is the stand-in, "ensure" a launcher that imports an image and can
// be SIGKILLed.
const helperEnv = "WIDEEP_ENROOT_TEST_HELPER"

var helpers = testproc.New(helperEnv)

func TestMain(m *testing.M) { helpers.Main(m) }

// testEnv is the environment of the test's children: ours, without helper
// selection, with a race-enabled binary told not to sleep at exit.
func testEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, helperEnv+"=") && !strings.HasPrefix(kv, "GORACE=") &&
			!strings.HasPrefix(kv, "WIDEEP_ENROOT_") {
			env = append(env, kv)
		}
	}
	return append(append(env, "GORACE=atexit_sleep_ms=0"), extra...)
}

// enrootWrapper writes the two-line script that makes the stand-in the
// enroot command, as the launcher's tests do with `wideep-launch sim-enroot`.
func enrootWrapper(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "enroot")
	script := "#!/bin/sh\nexec env " + helperEnv + "=enroot GORACE=atexit_sleep_ms=0 '" + exe + "' \"$@\"\n"
	require.NoError(t, os.WriteFile(path, []byte(script), 0o755))
	return path
}

// helperCmd runs helper name with args as a child process.
func helperCmd(t *testing.T, name string, env []string, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, args...)
	cmd.Env = append(env, helperEnv+"="+name)
	return cmd
}
