package cli

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// mainEnv makes the test binary act as wideep-launch itself (the os/exec
// helper-process pattern): tests that must signal the launcher from outside
// run it as a child process rather than through Main in-process.
const mainEnv = "WIDEEP_CLI_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		os.Exit(Main(os.Args[1:], OSSystem()))
	}
	os.Exit(m.Run())
}

// launcherCommand returns a command that runs `wideep-launch args...` as a
// child process: the test binary, re-executed with mainEnv set.
func launcherCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("finding the test binary: %v", err)
	}
	// A race-enabled binary sleeps 1 s at exit unless told not to; the
	// launcher must exit when it says. WIDEEP_* variables of whoever runs the
	// tests would change the launcher's flags (flag > env > default).
	goRace := "atexit_sleep_ms=0"
	var env []string
	for _, kv := range os.Environ() {
		switch {
		case strings.HasPrefix(kv, "WIDEEP_"):
		case strings.HasPrefix(kv, "GORACE="):
			goRace = strings.TrimPrefix(kv, "GORACE=") + " " + goRace
		default:
			env = append(env, kv)
		}
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(env, mainEnv+"=1", "GORACE="+goRace)
	return cmd
}
