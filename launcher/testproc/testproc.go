// Package testproc is the os/exec helper-process pattern for tests: the test
// binary, re-executed with an environment variable naming a helper, runs
// that helper instead of the tests. Tests use it when they need a real
// process (to SIGKILL it in the middle of something, to send it real
// signals, to race two of them for a lock). It exists so that the packages
// that do this share one registry, one TestMain and one way to build the
// child's environment, instead of each keeping a copy.
//
// A package declares its helpers in its tests:
//
//	var helpers = testproc.New("WIDEEP_FOO_HELPER")
//
//	func init() { helpers.Register("hold", holdLock) }
//
//	func TestMain(m *testing.M) { helpers.Main(m) }
//
// and runs one with helpers.Command(t, "hold", args...).
package testproc

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Helpers is a package's set of helper commands, selected by one
// environment variable.
type Helpers struct {
	env string
	fns map[string]func(args []string) int
}

// New returns an empty set of helpers selected by the environment variable
// env: the test binary run with env=name acts as helper name.
func New(env string) *Helpers {
	return &Helpers{env: env, fns: map[string]func(args []string) int{}}
}

// Register adds the helper name, typically from an init function of the
// test file that uses it. fn gets the arguments after the program name and
// returns the exit code. Registering a name twice panics.
func (h *Helpers) Register(name string, fn func(args []string) int) {
	if _, dup := h.fns[name]; dup {
		panic("duplicate helper " + name)
	}
	h.fns[name] = fn
}

// Main is the body of TestMain: if the environment selects a helper it runs
// that helper (exit status 2 for an unknown one), otherwise the tests; then
// it exits.
func (h *Helpers) Main(m *testing.M) {
	if name, ok := os.LookupEnv(h.env); ok {
		fn, ok := h.fns[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
			os.Exit(2)
		}
		os.Exit(fn(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// Exec returns the argv and environment that run helper name with args in
// a child process, for code that starts the process itself. The environment
// is ours, with the helper selection replaced by the child's and GORACE told
// to keep a race-enabled child from sleeping 1 s at exit (helpers must end
// when they say). It fails the test if name is not registered.
func (h *Helpers) Exec(t testing.TB, name string, args ...string) (argv, env []string) {
	t.Helper()
	if _, ok := h.fns[name]; !ok {
		t.Fatalf("no helper %q", name)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("finding the test binary: %v", err)
	}
	goRace := "atexit_sleep_ms=0"
	for _, kv := range os.Environ() {
		switch {
		case strings.HasPrefix(kv, h.env+"="):
			// A helper starting another helper must not pass its own name on.
		case strings.HasPrefix(kv, "GORACE="):
			goRace = strings.TrimPrefix(kv, "GORACE=") + " " + goRace
		default:
			env = append(env, kv)
		}
	}
	return append([]string{exe}, args...), append(env, h.env+"="+name, "GORACE="+goRace)
}

// Command returns a command that runs helper name with args in a child
// process, as Exec does.
func (h *Helpers) Command(t testing.TB, name string, args ...string) *exec.Cmd {
	t.Helper()
	argv, env := h.Exec(t, name, args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	return cmd
}
