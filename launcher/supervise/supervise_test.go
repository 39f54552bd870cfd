package supervise

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Fake processes for the supervision tests: the test binary re-executed.
func init() {
	helpers.Register("worker", helperWorker)
	helpers.Register("daemon", helperDaemon)
	helpers.Register("lines", helperLines)
	helpers.Register("write", func(args []string) int {
		os.Stdout.WriteString(args[0])
		return 0
	})
	helpers.Register("kill-self", func(args []string) int {
		syscall.Kill(os.Getpid(), unix.SignalNum(args[0]))
		select {} // SIGKILL lands before this blocks for good
	})
}

// helperWorker is a fake long-running worker. It installs its signal
// handlers before it writes -ready, so a test that waited for the file knows
// every signal it sends is handled.
func helperWorker(args []string) int {
	fl := flag.NewFlagSet("worker", flag.ContinueOnError)
	ready := fl.String("ready", "", "file that gets the worker's pid once its handlers are installed")
	record := fl.String("record", "", "file each received signal's name is appended to")
	ignoreTerm := fl.Bool("ignore-term", false, "keep running after SIGTERM")
	termExit := fl.Int("term-exit", 0, "exit code after SIGTERM")
	exitCode := fl.Int("exit", -1, "exit at once with this code (after -ready)")
	print := fl.String("print", "", "line printed on stdout, then on stderr with \" (stderr)\"")
	child := fl.String("child", "", "start a grandchild that ignores SIGTERM; its pid goes to this file")
	setsid := fl.Bool("setsid", false, "the grandchild starts a new session (leaves our process group)")
	if fl.Parse(args) != nil {
		return 2
	}
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGCONT)
	if *print != "" {
		fmt.Fprintln(os.Stdout, *print)
		fmt.Fprintln(os.Stderr, *print+" (stderr)")
	}
	if *child != "" {
		pid, err := startDaemon(*setsid)
		if err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
			return 99
		}
		writeFileAtomic(*child, strconv.Itoa(pid))
	}
	if *ready != "" {
		writeFileAtomic(*ready, strconv.Itoa(os.Getpid()))
	}
	if *exitCode >= 0 {
		return *exitCode
	}
	for sig := range sigs {
		if *record != "" {
			f, err := os.OpenFile(*record, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
			if err == nil {
				fmt.Fprintln(f, unix.SignalName(sig.(syscall.Signal)))
				f.Close()
			}
		}
		if sig == syscall.SIGTERM && !*ignoreTerm {
			return *termExit
		}
	}
	return 0
}

// startDaemon starts the "daemon" helper with our stdout and stderr, and
// returns its pid once it has set up its signal dispositions.
func startDaemon(setsid bool) (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), helperEnv+"=daemon") // exec.Cmd: the last value wins
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: setsid}
	err = cmd.Start() // never waited for: it is meant to outlive us
	w.Close()
	if err != nil {
		return 0, err
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(string(b))
}

// helperDaemon ignores the polite signals, reports its pid on fd 3 and idles.
func helperDaemon([]string) int {
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	fmt.Println("daemon running")
	f := os.NewFile(3, "pid")
	fmt.Fprint(f, os.Getpid())
	f.Close()
	for {
		time.Sleep(time.Hour)
	}
}

// helperLines writes N numbered lines on stdout and N on stderr at once.
func helperLines(args []string) int {
	n, _ := strconv.Atoi(args[0])
	var wg sync.WaitGroup
	for _, w := range []struct {
		f    *os.File
		name string
	}{{os.Stdout, "out"}, {os.Stderr, "err"}} {
		wg.Go(func() {
			for i := range n {
				fmt.Fprintf(w.f, "%s %d\n", w.name, i)
			}
		})
	}
	wg.Wait()
	return 0
}

func writeFileAtomic(path, content string) {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err == nil {
		os.Rename(tmp, path)
	}
}

// waitTimeout bounds every wait, so a bug fails instead of hanging; it is
// never what makes a test pass.
const waitTimeout = 20 * time.Second

// sentSignals records what the Supervisor sends, then sends it.
type sentSignals struct {
	mu    sync.Mutex
	calls []sentSignal
}

type sentSignal struct {
	pid int
	sig syscall.Signal
}

func (r *sentSignals) kill(pid int, sig syscall.Signal) error {
	r.mu.Lock()
	r.calls = append(r.calls, sentSignal{pid, sig})
	r.mu.Unlock()
	return syscall.Kill(pid, sig)
}

func (r *sentSignals) list() []sentSignal {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sentSignal(nil), r.calls...)
}

func newTestSupervisor(t *testing.T, grace time.Duration) (*Supervisor, *sentSignals) {
	t.Helper()
	sent := &sentSignals{}
	s := &Supervisor{
		Reaper: testReaper,
		Log:    zerolog.New(zerolog.NewTestWriter(t)),
		Prefix: "node1",
		Grace:  grace,
		kill:   sent.kill,
	}
	t.Cleanup(func() { s.Shutdown("test over") })
	return s, sent
}

func workerSpec(t *testing.T, name string, args ...string) ProcSpec {
	argv, env := helpers.Exec(t, "worker", args...)
	return ProcSpec{Name: name, Argv: argv, Env: env}
}

// waitFile waits until path exists and returns its content.
func waitFile(t *testing.T, path string) string {
	t.Helper()
	var b []byte
	require.Eventually(t, func() bool {
		var err error
		b, err = os.ReadFile(path)
		return err == nil
	}, waitTimeout, 5*time.Millisecond, "waiting for %s", path)
	return string(b)
}

func waitPid(t *testing.T, path string) int {
	t.Helper()
	pid, err := strconv.Atoi(waitFile(t, path))
	require.NoError(t, err)
	return pid
}

// afterFile calls fn once path exists, from another goroutine.
func afterFile(path string, fn func()) {
	go func() {
		deadline := time.Now().Add(waitTimeout)
		for time.Now().Before(deadline) {
			if _, err := os.Stat(path); err == nil {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		fn()
	}()
}

// waitRecorded waits until the worker's -record file names sig (at most
// waitTimeout; the test's own checks say what happened then).
func waitRecorded(record, sig string) {
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(record); err == nil && strings.Contains(string(b), sig) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func recvExit(t *testing.T, exits <-chan Exit) Exit {
	t.Helper()
	select {
	case e, ok := <-exits:
		require.True(t, ok, "Exits closed")
		return e
	case <-time.After(waitTimeout):
		t.Fatal("no exit reported")
		return Exit{}
	}
}

func TestSupervisorExitCodeOf(t *testing.T) {
	notFound := fmt.Errorf("start x: %w", &execError{&exec.Error{Name: "x", Err: exec.ErrNotFound}})
	noExec := fmt.Errorf("start x: %w", &execError{&os.PathError{Op: "fork/exec", Path: "/x", Err: syscall.EACCES}})
	for name, tc := range map[string]struct {
		exit     Exit
		code     int
		critical bool
	}{
		"service exited 0":        {Exit{Code: 0}, 0, true},
		"oneshot exited 0":        {Exit{Code: 0, Oneshot: true}, 0, false},
		"oneshot exited 3":        {Exit{Code: 3, Oneshot: true}, 3, true},
		"service exited 3":        {Exit{Code: 3}, 3, true},
		"killed by SIGTERM":       {Exit{Code: -1, Signal: syscall.SIGTERM, Oneshot: true}, 143, true},
		"killed by SIGKILL":       {Exit{Code: -1, Signal: syscall.SIGKILL}, 137, true},
		"killed by SIGSEGV":       {Exit{Code: -1, Signal: syscall.SIGSEGV}, 139, true},
		"command not found":       {Exit{Code: -1, Err: notFound, Oneshot: true}, 127, true},
		"command not executable":  {Exit{Code: -1, Err: noExec, Oneshot: true}, 126, true},
		"launcher-side failure":   {Exit{Code: -1, Err: errors.New("log: permission denied"), Oneshot: true}, 125, true},
		"status taken by another": {Exit{Pid: 9, Code: -1, Err: errors.New("exit status lost")}, 125, true},
	} {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.code, ExitCodeOf(tc.exit))
			assert.Equal(t, tc.critical, tc.exit.Critical())
		})
	}
}

func TestSupervisorSignalPolicy(t *testing.T) {
	assert.Equal(t, []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGCONT}, ForwardSignals())

	dir := t.TempDir()
	record := filepath.Join(dir, "signals")
	s, sent := newTestSupervisor(t, 0)
	require.NoError(t, s.Start(workerSpec(t, "worker", "-ready", filepath.Join(dir, "ready"), "-record", record, "-term-exit", "7")))
	pid := waitPid(t, filepath.Join(dir, "ready"))

	// No stop signal is forwarded: the worker runs until Shutdown.
	for _, tc := range []struct {
		sig           syscall.Signal
		forward, stop bool
	}{
		{syscall.SIGCONT, false, false},
		{syscall.SIGUSR1, false, true},
		{syscall.SIGUSR2, true, false},
		{syscall.SIGHUP, true, false},
		{syscall.SIGQUIT, true, false},
		{syscall.SIGINT, false, true},
		{syscall.SIGTERM, false, true},
	} {
		name := unix.SignalName(tc.sig)
		t.Run(name, func(t *testing.T) {
			before := len(sent.list())
			assert.Equal(t, tc.stop, s.HandleSignal(tc.sig), "stop")
			assert.Equal(t, tc.stop, StopsNode(tc.sig), "StopsNode")
			if !tc.forward {
				assert.Len(t, sent.list(), before, "must not be forwarded")
				return
			}
			assert.Equal(t, []sentSignal{{-pid, tc.sig}}, sent.list()[before:], "sent to the worker's process group")
			require.Eventually(t, func() bool {
				b, _ := os.ReadFile(record)
				return slicesContains(strings.Fields(string(b)), name)
			}, waitTimeout, 5*time.Millisecond, "the worker never got %s", name)
		})
	}
	// The stop's one SIGTERM comes from Shutdown.
	exits := s.Shutdown("stop")
	require.Len(t, exits, 1)
	assert.Equal(t, 7, ExitCodeOf(exits[0]), "the worker's own code after SIGTERM")
	b, err := os.ReadFile(record)
	require.NoError(t, err)
	got := strings.Fields(string(b))
	assert.NotContains(t, got, "SIGCONT")
	assert.NotContains(t, got, "SIGINT")
	assert.Equal(t, 1, strings.Count(string(b), "SIGTERM"), "exactly one SIGTERM: %v", got)
}

func slicesContains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestSupervisorGracefulStop(t *testing.T) {
	dir := t.TempDir()
	s, sent := newTestSupervisor(t, 0)
	exits := s.Exits()
	require.NoError(t, s.Start(workerSpec(t, "prefill", "-ready", filepath.Join(dir, "ready"), "-record", filepath.Join(dir, "signals"))))
	pid := waitPid(t, filepath.Join(dir, "ready"))

	stopped := s.Shutdown("test stop")

	require.Len(t, stopped, 1)
	assert.Equal(t, Exit{Name: "prefill", Pid: pid, Code: 0}, stopped[0])
	assert.Equal(t, "SIGTERM\n", waitFile(t, filepath.Join(dir, "signals")))
	assert.NotContains(t, sent.list(), sentSignal{-pid, syscall.SIGKILL}, "no SIGKILL needed")
	_, open := <-exits
	assert.False(t, open, "Exits is closed once Shutdown has begun")
}

func TestSupervisorGraceThenKill(t *testing.T) {
	dir := t.TempDir()
	s, sent := newTestSupervisor(t, 300*time.Millisecond)
	require.NoError(t, s.Start(workerSpec(t, "decode", "-ready", filepath.Join(dir, "ready"), "-record", filepath.Join(dir, "signals"), "-ignore-term")))
	pid := waitPid(t, filepath.Join(dir, "ready"))

	stopped := s.Shutdown("test stop")

	require.Len(t, stopped, 1)
	assert.Equal(t, syscall.SIGKILL, stopped[0].Signal)
	assert.Equal(t, 137, ExitCodeOf(stopped[0]))
	assert.Equal(t, "SIGTERM\n", waitFile(t, filepath.Join(dir, "signals")), "SIGTERM came first and was ignored")
	var toGroup []syscall.Signal
	for _, c := range sent.list() {
		if c.pid == -pid {
			toGroup = append(toGroup, c.sig)
		}
	}
	require.NotEmpty(t, toGroup)
	assert.Equal(t, syscall.SIGTERM, toGroup[0])
	assert.Contains(t, toGroup, syscall.SIGKILL)
}

func TestSupervisorExitCodes(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-executable")
	require.NoError(t, os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644))
	helper := func(name string, args ...string) []string { argv, _ := helpers.Exec(t, name, args...); return argv }
	helperEnvFor := func(name string) []string { _, env := helpers.Exec(t, name); return env }

	for name, tc := range map[string]struct {
		argv    []string
		env     []string
		needs   string // an external command the case needs
		code    int
		signal  syscall.Signal
		started bool
	}{
		"exit 0":            {argv: helper("worker", "-exit", "0"), env: helperEnvFor("worker"), code: 0, started: true},
		"exit 3":            {argv: helper("worker", "-exit", "3"), env: helperEnvFor("worker"), code: 3, started: true},
		"killed by SIGKILL": {argv: helper("kill-self", "SIGKILL"), env: helperEnvFor("kill-self"), code: 137, signal: syscall.SIGKILL, started: true},
		// Go programs cannot die of a SIGSEGV sent to them; a shell can.
		"killed by SIGSEGV": {argv: []string{"sh", "-c", "ulimit -c 0; kill -SEGV $$"}, needs: "sh", code: 139, signal: syscall.SIGSEGV, started: true},
		"not found":         {argv: []string{"wideep-no-such-command"}, code: 127},
		"not found by path": {argv: []string{filepath.Join(dir, "missing")}, code: 127},
		"not executable":    {argv: []string{notExec}, code: 126},
	} {
		t.Run(name, func(t *testing.T) {
			if tc.needs != "" {
				if _, err := exec.LookPath(tc.needs); err != nil {
					t.Fatalf("needs %s (make deps installs it): %v", tc.needs, err)
				}
			}
			s, _ := newTestSupervisor(t, 0)
			e, err := s.RunOneshot(context.Background(), ProcSpec{Name: "p", Argv: tc.argv, Env: tc.env, Dir: t.TempDir(), Oneshot: true})
			assert.Equal(t, tc.code, ExitCodeOf(e), "exit: %v", e)
			assert.Equal(t, tc.signal, e.Signal)
			if tc.started {
				require.NoError(t, err)
				assert.NotZero(t, e.Pid)
			} else {
				require.Error(t, err)
				assert.Equal(t, err, e.Err)
				assert.Zero(t, e.Pid)
				assert.Equal(t, tc.code, ExitCodeOf(Exit{Err: s.Start(ProcSpec{Name: "p", Argv: tc.argv})}), "Start reports it too")
			}
		})
	}
}

func TestSupervisorRunOneshotCancel(t *testing.T) {
	dir := t.TempDir()
	s, _ := newTestSupervisor(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	ready := filepath.Join(dir, "ready")
	afterFile(ready, cancel)

	e, err := s.RunOneshot(ctx, workerSpec(t, "precompile", "-ready", ready, "-term-exit", "5"))

	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 5, ExitCodeOf(e), "stopped with SIGTERM, exit code of the process")
}

// The caller's fail-fast policy composed from Exits, Critical and Shutdown.
func TestSupervisorFailFast(t *testing.T) {
	dir := t.TempDir()
	s, _ := newTestSupervisor(t, 0)
	exits := s.Exits()
	require.NoError(t, s.Start(workerSpec(t, "decode", "-ready", filepath.Join(dir, "ready"))))
	waitPid(t, filepath.Join(dir, "ready"))

	check := workerSpec(t, "check", "-exit", "0")
	check.Oneshot = true
	require.NoError(t, s.Start(check))
	e := recvExit(t, exits)
	assert.Equal(t, "check", e.Name)
	assert.False(t, e.Critical(), "a oneshot that succeeded does not stop the node")

	require.NoError(t, s.Start(workerSpec(t, "prefill", "-exit", "3")))
	var failed Exit
	for failed.Name == "" {
		if e := recvExit(t, exits); e.Critical() {
			failed = e
		}
	}
	stopped := s.Shutdown(failed.String())

	assert.Equal(t, "prefill", failed.Name)
	assert.Equal(t, 3, ExitCodeOf(failed))
	require.Len(t, stopped, 1)
	assert.Equal(t, "decode", stopped[0].Name)
	assert.Equal(t, 0, ExitCodeOf(stopped[0]), "stopped gracefully, not failed")
}

func TestSupervisorZeroOrphans(t *testing.T) {
	require.NoError(t, BecomeSubreaper())
	for name, tc := range map[string]struct {
		args []string
		code int
	}{
		"setsid grandchild, worker exits on SIGTERM":       {args: []string{"-setsid"}, code: 0},
		"setsid grandchild, worker ignores SIGTERM":        {args: []string{"-setsid", "-ignore-term"}, code: 137},
		"grandchild in the worker's group ignores SIGTERM": {code: 0},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s, _ := newTestSupervisor(t, 300*time.Millisecond)
			args := append([]string{"-ready", filepath.Join(dir, "ready"), "-child", filepath.Join(dir, "child")}, tc.args...)
			require.NoError(t, s.Start(workerSpec(t, "worker", args...)))
			pid := waitPid(t, filepath.Join(dir, "ready"))
			child := waitPid(t, filepath.Join(dir, "child"))
			before, err := readProcStat(child)
			require.NoError(t, err)
			require.Equal(t, pid, before.PPid, "a grandchild of the supervisor")
			if slicesContains(tc.args, "-setsid") {
				require.Equal(t, child, before.Sid, "in its own session")
			} else {
				require.Equal(t, pid, before.Pgid, "in the worker's process group")
			}

			stopped := s.Shutdown("test stop")

			require.Len(t, stopped, 1)
			assert.Equal(t, tc.code, ExitCodeOf(stopped[0]))
			after, err := readProcStat(child)
			if err == nil {
				assert.NotEqual(t, before.Start, after.Start, "grandchild %d is still there (state %c)", child, after.State)
			} else {
				assert.ErrorIs(t, err, fs.ErrNotExist, "grandchild gone and reaped")
			}
			assert.Empty(t, s.tree(), "nothing left below the launcher")
		})
	}
}

func TestSupervisorLogsAndOutput(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "logs", "42", "node1.prefill.log")
	require.NoError(t, os.MkdirAll(filepath.Dir(logPath), 0o755))
	require.NoError(t, os.WriteFile(logPath, []byte("earlier attempt\n"), 0o644))
	rawLog := filepath.Join(dir, "new", "node1.raw.log")
	var out bytes.Buffer
	s, _ := newTestSupervisor(t, 0)
	s.Output = &out

	spec := workerSpec(t, "prefill", "-print", "hello", "-exit", "0")
	spec.LogPath = logPath
	e, err := s.RunOneshot(context.Background(), spec)
	require.NoError(t, err)
	require.Equal(t, 0, ExitCodeOf(e))
	argv, env := helpers.Exec(t, "write", "no newline\nat the end")
	e, err = s.RunOneshot(context.Background(), ProcSpec{Name: "raw", Argv: argv, Env: env, LogPath: rawLog})
	require.NoError(t, err)
	require.Equal(t, 0, ExitCodeOf(e))
	s.Shutdown("done")

	b, err := os.ReadFile(logPath)
	require.NoError(t, err)
	assert.Equal(t, "earlier attempt\nhello\nhello (stderr)\n", string(b), "appended, stdout and stderr in order")
	b, err = os.ReadFile(rawLog)
	require.NoError(t, err)
	assert.Equal(t, "no newline\nat the end", string(b), "verbatim")
	assert.Equal(t, "[node1 prefill] hello\n[node1 prefill] hello (stderr)\n[node1 raw] no newline\n[node1 raw] at the end\n", out.String())
}

// Output is a plain bytes.Buffer: the Supervisor must serialise the writes
// (the race detector checks it) and never split a line.
func TestSupervisorOutputLinesNotInterleaved(t *testing.T) {
	const n = 300
	var out bytes.Buffer
	s, _ := newTestSupervisor(t, 0)
	s.Output = &out
	exits := s.Exits()
	for _, name := range []string{"a", "b"} {
		argv, env := helpers.Exec(t, "lines", strconv.Itoa(n))
		require.NoError(t, s.Start(ProcSpec{Name: name, Argv: argv, Env: env, Oneshot: true}))
	}
	for range 2 {
		assert.Equal(t, 0, ExitCodeOf(recvExit(t, exits)))
	}
	s.Shutdown("done")

	line := regexp.MustCompile(`^\[node1 (a|b)\] (out|err) (\d+)$`)
	next := map[string]int{}
	sc := bufio.NewScanner(&out)
	lines := 0
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if !assert.NotNil(t, m, "line %q", sc.Text()) {
			continue
		}
		lines++
		stream := m[1] + " " + m[2]
		assert.Equal(t, strconv.Itoa(next[stream]), m[3], "order of %s", stream)
		next[stream]++
	}
	assert.Equal(t, 4*n, lines)
}

func TestSupervisorForwardAfterExit(t *testing.T) {
	s, sent := newTestSupervisor(t, 0)
	e, err := s.RunOneshot(context.Background(), workerSpec(t, "w", "-exit", "0"))
	require.NoError(t, err)
	require.Equal(t, 0, ExitCodeOf(e))

	s.Forward(syscall.SIGUSR1)
	assert.False(t, s.HandleSignal(syscall.SIGHUP))
	s.Shutdown("done")
	s.Forward(syscall.SIGUSR1)
	assert.True(t, s.HandleSignal(syscall.SIGTERM))

	assert.Empty(t, sent.list(), "nothing left to signal")
}

func TestSupervisorShutdownTwice(t *testing.T) {
	dir := t.TempDir()
	s, _ := newTestSupervisor(t, 0)
	spec := workerSpec(t, "w", "-ready", filepath.Join(dir, "ready"))
	require.NoError(t, s.Start(spec))
	waitPid(t, filepath.Join(dir, "ready"))

	var results [2][]Exit
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() { results[i] = s.Shutdown(fmt.Sprintf("caller %d", i)) })
	}
	wg.Wait()

	require.Len(t, results[0], 1)
	assert.Equal(t, results[0], results[1])
	assert.Equal(t, results[0], s.Shutdown("again"))
	assert.ErrorIs(t, s.Start(spec), ErrSupervisorStopped)
}

func TestSuperviseOne(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		// stop is what happens once the worker is ready
		stop func(cancel context.CancelFunc, sigs chan<- os.Signal, record string)
		code int
		want []string // signals the worker received
	}{
		"exit code passes through": {args: []string{"-exit", "3"}, code: 3},
		"SIGTERM: the worker's own code": {
			stop: func(_ context.CancelFunc, sigs chan<- os.Signal, _ string) { sigs <- syscall.SIGTERM },
			code: 7, want: []string{"SIGTERM"},
		},
		"SIGUSR2 and SIGCONT do not stop": {
			stop: func(_ context.CancelFunc, sigs chan<- os.Signal, record string) {
				sigs <- syscall.SIGCONT
				sigs <- syscall.SIGUSR2
				// Two signals at once may reach the worker in either order
				// (the race detector's runtime queues them its own way):
				// the stop comes once the first has arrived.
				waitRecorded(record, "SIGUSR2")
				sigs <- syscall.SIGINT
			},
			code: 7, want: []string{"SIGUSR2", "SIGTERM"},
		},
		"SIGUSR1 (time limit near) stops with SIGTERM only": {
			stop: func(_ context.CancelFunc, sigs chan<- os.Signal, _ string) { sigs <- syscall.SIGUSR1 },
			code: 7, want: []string{"SIGTERM"},
		},
		"context cancelled": {
			stop: func(cancel context.CancelFunc, _ chan<- os.Signal, _ string) { cancel() },
			code: 7, want: []string{"SIGTERM"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			ready, record := filepath.Join(dir, "ready"), filepath.Join(dir, "signals")
			s, _ := newTestSupervisor(t, 0)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sigs := make(chan os.Signal, 4)
			if tc.stop != nil {
				afterFile(ready, func() { tc.stop(cancel, sigs, record) })
			}
			args := append([]string{"-ready", ready, "-record", record, "-term-exit", "7"}, tc.args...)

			code := SuperviseOne(ctx, s, workerSpec(t, "w", args...), sigs)

			assert.Equal(t, tc.code, code)
			b, _ := os.ReadFile(record)
			got := strings.Fields(string(b))
			// Pending signals are delivered lowest number first, so only the
			// set is certain, and that SIGTERM (sent last, highest) ends it.
			assert.ElementsMatch(t, tc.want, got)
			if len(tc.want) > 0 && assert.NotEmpty(t, got) {
				assert.Equal(t, "SIGTERM", got[len(got)-1])
			}
		})
	}

	t.Run("start failure", func(t *testing.T) {
		s, _ := newTestSupervisor(t, 0)
		assert.Equal(t, 127, SuperviseOne(context.Background(), s, ProcSpec{Name: "x", Argv: []string{"wideep-no-such-command"}}, nil))
	})
}
