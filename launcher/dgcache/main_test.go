package dgcache

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// helperEnv makes the test binary act as a helper command instead of running
// the tests (the os/exec helper-process pattern, as in launcher/sharedcache),
// so that tests can race two real processes for an entry and SIGKILL one in
// the middle of a publish.
const helperEnv = "WIDEEP_DGCACHE_HELPER"

var helpers = map[string]func(args []string) int{}

func registerHelper(name string, fn func(args []string) int) {
	if _, dup := helpers[name]; dup {
		panic("duplicate helper " + name)
	}
	helpers[name] = fn
}

// helperCmd returns a command running helper name with args in a child.
func helperCmd(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	if _, ok := helpers[name]; !ok {
		t.Fatalf("no helper %q", name)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("finding the test binary: %v", err)
	}
	// A race-enabled binary sleeps 1 s at exit unless told not to.
	goRace := "atexit_sleep_ms=0"
	var env []string
	for _, kv := range os.Environ() {
		switch {
		case strings.HasPrefix(kv, helperEnv+"="):
		case strings.HasPrefix(kv, "GORACE="):
			goRace = strings.TrimPrefix(kv, "GORACE=") + " " + goRace
		default:
			env = append(env, kv)
		}
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(env, helperEnv+"="+name, "GORACE="+goRace)
	return cmd
}

func TestMain(m *testing.M) {
	if name, ok := os.LookupEnv(helperEnv); ok {
		fn, ok := helpers[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
			os.Exit(2)
		}
		os.Exit(fn(os.Args[1:]))
	}
	os.Exit(m.Run())
}
