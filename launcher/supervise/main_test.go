package supervise

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// helperEnv selects a helper command: the test binary re-executed with it set
// acts as that command (a fake worker, a fake daemon, ...) instead of running
// the tests, as in the standard library's os/exec tests.
const helperEnv = "WIDEEP_TEST_HELPER"

var helpers = map[string]func(args []string) int{}

// testReaper is the test binary's one Reaper, as a program has one.
var testReaper = NewReaper()

// registerHelper adds a helper command, typically from an init function of
// the test file that uses it. fn gets the arguments after the program name
// and returns the exit code.
func registerHelper(name string, fn func(args []string) int) {
	if _, dup := helpers[name]; dup {
		panic("duplicate helper command " + name)
	}
	helpers[name] = fn
}

// helperCommand returns the argv and environment that run the helper name
// with args in a child process.
func helperCommand(t testing.TB, name string, args ...string) (argv, env []string) {
	t.Helper()
	if _, ok := helpers[name]; !ok {
		t.Fatalf("no helper command %q", name)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("finding the test binary: %v", err)
	}
	// A race-enabled binary sleeps 1 s at exit unless told not to; helpers
	// must end when they say.
	goRace := "atexit_sleep_ms=0"
	for _, kv := range os.Environ() {
		switch {
		case strings.HasPrefix(kv, helperEnv+"="):
			// A helper starting another helper must not pass its own name on.
		case strings.HasPrefix(kv, "GORACE="):
			goRace = strings.TrimPrefix(kv, "GORACE=") + " " + goRace
		default:
			env = append(env, kv)
		}
	}
	return append([]string{exe}, args...), append(env, helperEnv+"="+name, "GORACE="+goRace)
}

func TestMain(m *testing.M) {
	if name, ok := os.LookupEnv(helperEnv); ok {
		fn, ok := helpers[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown helper command %q\n", name)
			os.Exit(2)
		}
		os.Exit(fn(os.Args[1:]))
	}
	os.Exit(m.Run())
}
