package launcher

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// DefaultGrace is the SIGTERM → SIGKILL delay when Supervisor.Grace is 0. It
// must stay below Slurm's KillWait (30 s by default), after which slurmstepd
// SIGKILLs the whole step itself.
const DefaultGrace = 20 * time.Second

const (
	// outputDrainTimeout bounds how long an exit waits for the process's
	// output pipe to reach EOF. EOF normally follows the exit at once; a
	// descendant that inherited the pipe (a daemon) keeps it open, and then
	// the exit is reported anyway and the copy goes on until Shutdown.
	outputDrainTimeout = 250 * time.Millisecond
	// killTimeout bounds the SIGKILL phase of Shutdown: only a process stuck
	// in the kernel (state D) survives SIGKILL, and Slurm drains such nodes.
	killTimeout = 10 * time.Second
	// treePollInterval paces Shutdown's re-checks of the process tree. Deaths
	// of our own children wake it at once; this catches deaths deeper down,
	// which the kernel reports to their parent, not to us.
	treePollInterval = 10 * time.Millisecond
)

// ErrSupervisorStopped is returned by Start after Shutdown.
var ErrSupervisorStopped = errors.New("supervisor is shut down")

// ProcSpec is one process of the node.
type ProcSpec struct {
	Name string   // "etcd", "prefill", ...: names the log file and prefixes output
	Argv []string // argv[0] without a slash is looked up in the launcher's PATH (exec.Command semantics)
	Env  []string // the full environment, KEY=VALUE; nil inherits the launcher's (as exec.Cmd does)
	Dir  string   // working directory; "" is the launcher's. A relative argv[0] with a slash is relative to it.
	// LogPath receives the process's stdout and stderr verbatim (one stream,
	// in the order written): created 0644 with its directory if missing,
	// appended to. "" means no log file.
	LogPath string
	// Oneshot marks a process that is expected to finish (precompile): its
	// exit with code 0 is not critical.
	Oneshot bool
}

// Exit is how a supervised process ended.
type Exit struct {
	Name    string
	Pid     int // 0 if it never started
	Oneshot bool
	Code    int            // exit status; -1 when killed by a signal or when Err is set
	Signal  syscall.Signal // the signal that killed it; 0 if it exited
	Err     error          // why it could not be started, or why its status is unknown
}

// Critical reports whether this exit should stop the node (fail-fast): any
// exit of a long-running process, a failed oneshot, or a process that could
// not be started.
func (e Exit) Critical() bool {
	return !e.Oneshot || e.Err != nil || e.Signal != 0 || e.Code != 0
}

// SignalName is the name of the signal that killed the process ("SIGKILL"),
// "" if it exited or the signal number is unknown.
func (e Exit) SignalName() string {
	if e.Signal == 0 {
		return ""
	}
	return unix.SignalName(e.Signal)
}

func (e Exit) String() string {
	switch {
	case e.Err != nil && e.Pid == 0: // start errors name the process already
		return fmt.Sprintf("%v (exit code %d)", e.Err, ExitCodeOf(e))
	case e.Err != nil:
		return fmt.Sprintf("%s (pid %d): %v (exit code %d)", e.Name, e.Pid, e.Err, ExitCodeOf(e))
	case e.Signal != 0:
		return fmt.Sprintf("%s (pid %d) killed by %s (exit code %d)", e.Name, e.Pid, e.SignalName(), ExitCodeOf(e))
	default:
		return fmt.Sprintf("%s (pid %d) exited with code %d", e.Name, e.Pid, e.Code)
	}
}

// ExitCodeOf is the one mapping from a process's end to an exit code, as a
// shell reports it:
//
//	exited with status c             c
//	killed by signal N               128+N (SIGTERM 143, SIGKILL 137, SIGSEGV 139)
//	command not found                127
//	found but cannot be executed     126
//	anything else (launcher failure) 125
func ExitCodeOf(e Exit) int {
	var ee *execError
	switch {
	case e.Err != nil && errors.As(e.Err, &ee):
		if errors.Is(ee.err, exec.ErrNotFound) || errors.Is(ee.err, fs.ErrNotExist) {
			return 127
		}
		return 126
	case e.Err != nil:
		return 125
	case e.Signal != 0:
		// bash's convention: the low 7 bits of a status are the program's,
		// a signal is encoded above them.
		return 128 + int(e.Signal)
	default:
		return e.Code
	}
}

// execError marks a start failure caused by the command itself (missing,
// not executable), as opposed to the launcher failing to set it up.
type execError struct{ err error }

func (e *execError) Error() string { return e.err.Error() }
func (e *execError) Unwrap() error { return e.err }

// BecomeSubreaper makes this process the reaper of orphaned descendants
// (prctl PR_SET_CHILD_SUBREAPER): a process whose parent dies is re-parented
// to us instead of to init, even after setsid or a double fork, so Shutdown
// can find and kill it. Call it once at start-up, before starting processes.
func BecomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", err)
	}
	return nil
}

// signalPolicy is the launcher's whole signal policy, in one place.
// Slurm signals only the task's top process (the launcher) under
// proctrack/cgroup, so forwarding to the children is our job; under other
// plugins they also get the signal directly, which is why forwarding must be
// idempotent. SIGCONT precedes every SIGTERM Slurm sends and is dropped.
var signalPolicy = []struct {
	sig           syscall.Signal
	forward, stop bool
}{
	// scancel, time limit, --kill-on-bad-exit, Ctrl-C: the stop's own
	// SIGTERM (Shutdown) is the only one the processes get. Forwarding it too
	// would deliver two SIGTERMs microseconds apart, and servers that treat
	// a second SIGTERM as "force quit now" would skip their graceful path.
	{syscall.SIGTERM, false, true},
	{syscall.SIGINT, false, true},
	{syscall.SIGHUP, true, false},
	{syscall.SIGQUIT, true, false},
	// sbatch --signal=USR1@T comes T s before the time limit (and USR1/USR2
	// are the only signals srun passes through unchanged): stop gracefully
	// now, with SIGTERM, rather than forwarding USR1, which kills a Python
	// worker outright (its default action) and looks like a crash.
	{syscall.SIGUSR1, false, true},
	{syscall.SIGUSR2, true, false},
	{syscall.SIGCONT, false, false},
}

// StopsNode reports whether the launcher stops the node when it receives sig
// (SIGTERM, SIGINT, SIGUSR1); the other signals of ForwardSignals are only forwarded,
// or ignored (SIGCONT).
func StopsNode(sig syscall.Signal) bool {
	for _, p := range signalPolicy {
		if p.sig == sig {
			return p.stop
		}
	}
	return false
}

// ForwardSignals lists the signals the caller passes to signal.Notify (with a
// buffered channel, before the first Start) and hands to HandleSignal. It
// includes SIGCONT so that it is consumed rather than acted on; do not use
// signal.Ignore for it, because ignored signals stay ignored in children.
func ForwardSignals() []os.Signal {
	sigs := make([]os.Signal, len(signalPolicy))
	for i, p := range signalPolicy {
		sigs[i] = p.sig
	}
	return sigs
}

// HandleSignal applies signalPolicy to a signal the launcher received: it
// forwards SIGHUP, SIGQUIT and SIGUSR2 to every process group and ignores
// SIGCONT. stop is true for SIGTERM, SIGINT and SIGUSR1, which are not
// forwarded: the caller then calls Shutdown, which sends the one SIGTERM and
// SIGKILL after Grace.
func (s *Supervisor) HandleSignal(sig os.Signal) (stop bool) {
	ss, ok := sig.(syscall.Signal)
	if !ok {
		return false
	}
	for _, p := range signalPolicy {
		if p.sig != ss {
			continue
		}
		if !p.forward {
			s.Log.Debug().Str("signal", unix.SignalName(ss)).Bool("stop", p.stop).Msg("signal not forwarded")
			return p.stop
		}
		s.Log.Info().Str("signal", unix.SignalName(ss)).Bool("stop", p.stop).Msg("signal received, forwarding")
		s.Forward(ss)
		return p.stop
	}
	return false
}

// Supervisor runs the processes of one node and makes sure none outlives it.
//
// Each process gets its own process group (signals reach its whole tree), a
// parent-death signal (SIGKILL if the launcher dies: the starting goroutine
// stays locked to its OS thread, because the signal fires when the forking
// thread exits), stdin from /dev/null, and stdout+stderr copied to its log
// file and, line by line with a "[<Prefix> <name>] " prefix, to Output.
// Pdeathsig reaches only the direct children; if the launcher is SIGKILLed,
// their descendants are left to Slurm's cgroup.
//
// Reaping: one package-level goroutine owns every wait4 of supervised
// processes (on SIGCHLD) and also reaps orphans re-parented to this process
// (see BecomeSubreaper). Processes are started with syscall.ForkExec, never
// exec.Cmd: Cmd.Wait would race the reaper for the same status. Other code
// in the program may still use exec.Cmd for its own children as long as they
// stay in the launcher's process group (the default): children in another
// process group that no Supervisor started are taken for orphans, reaped and,
// at Shutdown, killed.
//
// Exits are reported in the order the processes ended, each after its output
// has been copied (or after outputDrainTimeout if a descendant keeps the
// output open; the copy then goes on until Shutdown). Fail-fast is the caller's policy: stop the node on an exit
// for which Exit.Critical is true (see SuperviseOne for the pattern).
//
// The zero value is ready to use once the exported fields are set; Shutdown
// must be called to release it. Methods are safe for concurrent use.
type Supervisor struct {
	Log    zerolog.Logger
	Output io.Writer     // prefixed copy of every process's output; nil discards it
	Prefix string        // first word of the prefix, e.g. the host name
	Grace  time.Duration // SIGTERM → SIGKILL delay of Shutdown and RunOneshot; 0 means DefaultGrace

	// kill sends signals; tests record through it. nil means syscall.Kill.
	kill func(pid int, sig syscall.Signal) error

	initOnce sync.Once
	startReq chan startRequest // served by the locked starter goroutine

	mu           sync.Mutex
	closing      bool
	starts       sync.WaitGroup // Start calls in flight
	outputs      []*proc        // processes whose output is still being copied
	pending      []Exit         // reported, not yet received from Exits
	lastReported chan struct{}  // closed once the previous exit is reported: keeps exits in order

	pendingNotify      chan struct{} // cap 1
	exits              chan Exit
	stopPump, pumpDone chan struct{}
	finishing          sync.WaitGroup // reaped exits on their way to report
	wake               chan struct{}  // cap 1: the reaper reaped something
	outMu              sync.Mutex     // one line at a time to Output

	shutdownOnce sync.Once
	stopped      []Exit
}

// proc is one started process.
type proc struct {
	sup        *Supervisor
	name       string
	oneshot    bool
	pid        int // also its process group id
	out        *os.File
	outputDone chan struct{}
	waiter     chan Exit // RunOneshot's process: its exit goes here, not to Exits
}

type startRequest struct {
	path  string
	argv  []string
	attr  *syscall.ProcAttr
	p     *proc
	reply chan error
}

func (s *Supervisor) init() {
	s.initOnce.Do(func() {
		s.startReq = make(chan startRequest)
		s.pendingNotify = make(chan struct{}, 1)
		s.exits = make(chan Exit)
		s.stopPump = make(chan struct{})
		s.pumpDone = make(chan struct{})
		s.wake = make(chan struct{}, 1)
		s.lastReported = make(chan struct{})
		close(s.lastReported)
		reaper.acquire(s)
		go s.pump()
		go s.starter()
	})
}

func (s *Supervisor) grace() time.Duration {
	if s.Grace > 0 {
		return s.Grace
	}
	return DefaultGrace
}

func (s *Supervisor) signal(pid int, sig syscall.Signal) error {
	if s.kill != nil {
		return s.kill(pid, sig)
	}
	return syscall.Kill(pid, sig)
}

// starter forks every child of this Supervisor from one OS thread, which it
// never releases: the children's Pdeathsig fires when that thread exits, so it
// lives until Shutdown has reaped them all.
func (s *Supervisor) starter() {
	runtime.LockOSThread()
	// No UnlockOSThread: when this goroutine returns the runtime discards the
	// thread, which is what Pdeathsig needs if a child somehow survived.
	for req := range s.startReq {
		reaper.mu.Lock()
		pid, err := syscall.ForkExec(req.path, req.argv, req.attr)
		if err == nil {
			// Registered before the reaper can look again, so the exit is
			// never mistaken for an orphan's.
			req.p.pid = pid
			reaper.procs[pid] = req.p
		}
		reaper.mu.Unlock()
		req.reply <- err
	}
}

// Start starts p and returns once it runs (or failed to). Its exit will be
// delivered on Exits. A start failure is only returned here, never on Exits.
func (s *Supervisor) Start(p ProcSpec) error {
	_, err := s.start(p, nil)
	return err
}

func (s *Supervisor) start(spec ProcSpec, waiter chan Exit) (*proc, error) {
	if spec.Name == "" || len(spec.Argv) == 0 {
		return nil, fmt.Errorf("start %q: name and argv are required", spec.Name)
	}
	path := spec.Argv[0]
	if !strings.Contains(path, "/") {
		lp, err := exec.LookPath(path)
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", spec.Name, &execError{err})
		}
		path = lp
	}
	env := spec.Env
	if env == nil {
		env = os.Environ()
	}

	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil, fmt.Errorf("start %s: %w", spec.Name, ErrSupervisorStopped)
	}
	s.init()
	s.starts.Add(1)
	s.mu.Unlock()
	defer s.starts.Done()

	var logFile *os.File
	if spec.LogPath != "" {
		if err := os.MkdirAll(filepath.Dir(spec.LogPath), 0o755); err != nil {
			return nil, fmt.Errorf("start %s: log: %w", spec.Name, err)
		}
		f, err := os.OpenFile(spec.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("start %s: log: %w", spec.Name, err)
		}
		logFile = f
	}
	closeLog := func() {
		if logFile != nil {
			logFile.Close()
		}
	}
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		closeLog()
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	defer devNull.Close()
	// One pipe for stdout and stderr keeps the log in the order written.
	r, w, err := os.Pipe()
	if err != nil {
		closeLog()
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}

	p := &proc{sup: s, name: spec.Name, oneshot: spec.Oneshot, out: r, outputDone: make(chan struct{}), waiter: waiter}
	req := startRequest{
		path: path,
		argv: spec.Argv,
		attr: &syscall.ProcAttr{
			Dir: spec.Dir,
			Env: env,
			// Fd puts the write end back in blocking mode for the child.
			Files: []uintptr{devNull.Fd(), w.Fd(), w.Fd()},
			Sys:   &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
		},
		p:     p,
		reply: make(chan error, 1),
	}
	s.startReq <- req
	err = <-req.reply
	w.Close()
	if err != nil {
		r.Close()
		closeLog()
		return nil, fmt.Errorf("start %s: %w", spec.Name, &execError{&os.PathError{Op: "fork/exec", Path: path, Err: err}})
	}
	s.mu.Lock()
	s.outputs = append(s.outputs, p)
	s.mu.Unlock()
	go s.copyOutput(p, logFile)
	s.Log.Info().Str("process", p.name).Int("pid", p.pid).Strs("argv", spec.Argv).Msg("process started")
	return p, nil
}

// copyOutput copies the process's output verbatim to its log file and, line
// by line with the prefix, to Output, until every writer has closed the pipe.
func (s *Supervisor) copyOutput(p *proc, logFile *os.File) {
	defer close(p.outputDone)
	defer p.out.Close()
	defer func() {
		s.mu.Lock()
		s.outputs = slices.DeleteFunc(s.outputs, func(q *proc) bool { return q == p })
		s.mu.Unlock()
	}()
	var prefix string
	if s.Prefix != "" {
		prefix = "[" + s.Prefix + " " + p.name + "] "
	} else {
		prefix = "[" + p.name + "] "
	}
	br := bufio.NewReaderSize(p.out, 64<<10)
	var line []byte
	logFailed := false
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			if logFile != nil && !logFailed {
				if _, werr := logFile.Write(chunk); werr != nil {
					logFailed = true
					s.Log.Error().Err(werr).Str("process", p.name).Msg("writing the log file failed; the rest goes only to the output")
				}
			}
			if s.Output != nil {
				// A line longer than the buffer is split into prefixed pieces.
				line = append(append(line[:0], prefix...), chunk...)
				if line[len(line)-1] != '\n' {
					line = append(line, '\n')
				}
				s.outMu.Lock()
				s.Output.Write(line)
				s.outMu.Unlock()
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			break
		}
	}
	if logFile != nil {
		if err := logFile.Close(); err != nil && !logFailed {
			s.Log.Error().Err(err).Str("process", p.name).Msg("closing the log file failed")
		}
	}
}

// exited is called by the reaper. The exit is reported once the output is
// drained (or outputDrainTimeout passed) and after every earlier exit.
func (s *Supervisor) exited(p *proc, ws syscall.WaitStatus, statusErr error) {
	e := Exit{Name: p.name, Pid: p.pid, Oneshot: p.oneshot, Code: -1, Err: statusErr}
	switch {
	case statusErr != nil:
	case ws.Signaled():
		e.Signal = ws.Signal()
	default:
		e.Code = ws.ExitStatus()
	}
	s.mu.Lock()
	prev := s.lastReported
	done := make(chan struct{})
	s.lastReported = done
	s.mu.Unlock()
	go func() {
		defer s.finishing.Done()
		defer close(done)
		t := time.NewTimer(outputDrainTimeout)
		select {
		case <-p.outputDone:
		case <-t.C:
			s.Log.Debug().Str("process", p.name).Msg("output still open after exit (a descendant holds it)")
		}
		t.Stop()
		<-prev
		s.mu.Lock()
		closing := s.closing
		s.mu.Unlock()
		ev := s.Log.Info()
		if e.Critical() && !closing {
			ev = s.Log.Warn()
		}
		ev.Str("process", e.Name).Int("pid", e.Pid).Int("exit_code", ExitCodeOf(e)).Str("signal", e.SignalName()).Msg("process ended")
		if p.waiter != nil {
			p.waiter <- e
			return
		}
		s.mu.Lock()
		s.pending = append(s.pending, e)
		s.mu.Unlock()
		select {
		case s.pendingNotify <- struct{}{}:
		default:
		}
	}()
}

// pump hands pending exits to the Exits channel until Shutdown starts.
func (s *Supervisor) pump() {
	defer close(s.pumpDone)
	defer close(s.exits)
	for {
		s.mu.Lock()
		if len(s.pending) == 0 {
			s.mu.Unlock()
			select {
			case <-s.pendingNotify:
				continue
			case <-s.stopPump:
				return
			}
		}
		e := s.pending[0]
		s.mu.Unlock()
		select {
		case s.exits <- e:
			s.mu.Lock()
			s.pending = s.pending[1:]
			s.mu.Unlock()
		case <-s.stopPump:
			return
		}
	}
}

// Exits delivers the exit of every process started with Start, in the order
// they ended, until Shutdown begins; then it is closed. Exits not received by
// then are returned by Shutdown instead, so each exit is reported once.
func (s *Supervisor) Exits() <-chan Exit {
	s.init()
	return s.exits
}

// Forward sends sig to the process group of every running process. It is
// harmless to repeat and after the processes ended; groups that vanished in
// the meantime (ESRCH) are skipped.
func (s *Supervisor) Forward(sig syscall.Signal) {
	// Under reaper.mu no pid can be reaped, hence none reused, while we send.
	reaper.mu.Lock()
	defer reaper.mu.Unlock()
	for _, p := range reaper.procs {
		if p.sup == s {
			s.signalGroup(p, sig)
		}
	}
}

// signalGroup must be called with reaper.mu held.
func (s *Supervisor) signalGroup(p *proc, sig syscall.Signal) {
	if err := s.signal(-p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		s.Log.Warn().Err(err).Str("process", p.name).Str("signal", unix.SignalName(sig)).Msg("signalling the process group failed")
	}
}

func (s *Supervisor) signalProc(p *proc, sig syscall.Signal) {
	reaper.mu.Lock()
	defer reaper.mu.Unlock()
	if reaper.procs[p.pid] == p {
		s.signalGroup(p, sig)
	}
}

// RunOneshot starts a process and waits for it to end: for oneshots such as
// the precompile step. Its exit is returned here, not on Exits or by Shutdown.
// If ctx ends first, the process group gets SIGTERM, then SIGKILL after
// Grace, and the error is ctx's cause. A start failure is returned both as
// error and as Exit.Err (ExitCodeOf gives 127/126/125).
func (s *Supervisor) RunOneshot(ctx context.Context, spec ProcSpec) (Exit, error) {
	waiter := make(chan Exit, 1)
	p, err := s.start(spec, waiter)
	if err != nil {
		return Exit{Name: spec.Name, Oneshot: spec.Oneshot, Code: -1, Err: err}, err
	}
	select {
	case e := <-waiter:
		return e, nil
	case <-ctx.Done():
	}
	s.Log.Info().Str("process", p.name).Msg("stopping: " + context.Cause(ctx).Error())
	s.signalProc(p, syscall.SIGTERM)
	t := time.NewTimer(s.grace())
	defer t.Stop()
	select {
	case e := <-waiter:
		return e, context.Cause(ctx)
	case <-t.C:
	}
	s.signalProc(p, syscall.SIGKILL)
	return <-waiter, context.Cause(ctx)
}

// Shutdown stops everything and releases the Supervisor: SIGTERM to every
// process group, up to Grace for the groups to empty, then SIGKILL to every
// remaining group and to every remaining descendant, including orphans that
// called setsid (found through BecomeSubreaper), until all are reaped and
// all output is copied. It returns the exits not received from Exits (those
// of the processes it stopped, mostly), in order. It is safe to call more
// than once and concurrently: every call waits for the end and returns the
// same exits. Start fails afterwards.
func (s *Supervisor) Shutdown(reason string) []Exit {
	s.init()
	s.shutdownOnce.Do(func() { s.shutdown(reason) })
	return slices.Clone(s.stopped)
}

func (s *Supervisor) shutdown(reason string) {
	began := time.Now()
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.starts.Wait()
	close(s.stopPump)
	<-s.pumpDone

	// The groups of the processes still running; a group whose leader is
	// gone is not signalled by id (the id could be reused once empty), its
	// members are found as descendants below.
	groups := map[int]bool{}
	var names []string
	reaper.mu.Lock()
	for pid, p := range reaper.procs {
		if p.sup == s {
			groups[pid] = true
			names = append(names, p.name)
			s.signalGroup(p, syscall.SIGTERM)
		}
	}
	reaper.mu.Unlock()
	slices.Sort(names)
	if len(names) > 0 {
		s.Log.Info().Str("reason", reason).Strs("processes", names).Dur("grace", s.grace()).Msg("stopping processes (SIGTERM)")
	}

	graceful := s.waitTree(time.Now().Add(s.grace()), func(tree []procStat) bool {
		for _, st := range tree {
			if groups[st.Pgid] && !st.zombie() {
				return false
			}
		}
		return true
	})
	if !graceful {
		s.Log.Warn().Dur("grace", s.grace()).Msg("grace period over, sending SIGKILL")
	}

	// Always: this is also what kills daemons that left the process groups.
	killed := map[int]bool{}
	clean := s.waitTree(time.Now().Add(killTimeout), func(tree []procStat) bool {
		liveGroups := map[int]bool{}
		for _, st := range tree {
			if !st.zombie() {
				liveGroups[st.Pgid] = true
			}
		}
		running := 0
		reaper.mu.Lock()
		for pid, p := range reaper.procs {
			if p.sup == s {
				running++
				if liveGroups[pid] {
					// Also reaches members forked since tree was read.
					s.signalGroup(p, syscall.SIGKILL)
				}
			}
		}
		reaper.mu.Unlock()
		for _, st := range tree {
			if !st.zombie() && !killed[st.Pid] {
				killed[st.Pid] = true
				s.Log.Warn().Int("pid", st.Pid).Str("command", st.Comm).Int("pgid", st.Pgid).Int("sid", st.Sid).Msg("killing leftover process")
			}
			// Zombies too: a leader shows Z while its other threads still
			// run (it called pthread_exit, or its exit is under way).
			s.signal(st.Pid, syscall.SIGKILL)
		}
		// Done when nothing is left, not even a zombie (zombies are reaped
		// by us or by their dying parent), and every exit of ours is counted
		// in finishing, which running == 0 under reaper.mu guarantees.
		return len(tree) == 0 && running == 0
	})
	if !clean {
		var left []int
		for _, st := range s.tree() {
			left = append(left, st.Pid)
		}
		s.Log.Error().Ints("pids", left).Msg("processes survived SIGKILL (stuck in the kernel?); giving up on them")
		var lost []*proc
		reaper.mu.Lock()
		for pid, p := range reaper.procs {
			if p.sup == s {
				delete(reaper.procs, pid)
				s.finishing.Add(1)
				lost = append(lost, p)
			}
		}
		reaper.mu.Unlock()
		for _, p := range lost {
			s.exited(p, 0, errors.New("survived SIGKILL"))
		}
	}

	// Every writer of the pipes is gone unless something escaped the tree
	// (no subreaper); do not wait for those.
	s.mu.Lock()
	outputs := slices.Clone(s.outputs)
	s.mu.Unlock()
	drain := time.NewTimer(outputDrainTimeout)
	for _, p := range outputs {
		select {
		case <-p.outputDone:
			continue
		case <-drain.C:
		}
		for _, q := range outputs {
			q.out.SetReadDeadline(time.Now())
		}
		break
	}
	drain.Stop()
	for _, p := range outputs {
		<-p.outputDone
	}
	s.finishing.Wait()

	close(s.startReq)
	reaper.release(s)
	s.mu.Lock()
	s.stopped = s.pending
	s.pending = nil
	s.mu.Unlock()
	s.Log.Info().Str("reason", reason).Dur("took", time.Since(began)).Msg("all processes stopped")
}

// waitTree re-checks done with the current tree until it holds or deadline
// passes.
func (s *Supervisor) waitTree(deadline time.Time, done func([]procStat) bool) bool {
	tick := time.NewTicker(treePollInterval)
	defer tick.Stop()
	limit := time.NewTimer(time.Until(deadline))
	defer limit.Stop()
	for {
		if done(s.tree()) {
			return true
		}
		reaper.poke()
		select {
		case <-s.wake:
		case <-tick.C:
		case <-limit.C:
			return done(s.tree())
		}
	}
}

// tree lists the processes this Supervisor answers for: its running
// processes with their descendants, and adopted orphans (children of this
// process in another process group that no other Supervisor started) with
// theirs. Orphans cannot be traced to the Supervisor whose process left
// them, so with several Supervisors each Shutdown takes all of them.
func (s *Supervisor) tree() []procStat {
	self := os.Getpid()
	children := newChildLister()
	reaper.mu.Lock()
	owner := make(map[int]*Supervisor, len(reaper.procs))
	for pid, p := range reaper.procs {
		owner[pid] = p.sup
	}
	pgrp := reaper.pgrp
	reaper.mu.Unlock()
	var tree []procStat
	for _, pid := range children(self) {
		if o, ok := owner[pid]; ok && o != s {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil {
			continue
		}
		if _, ok := owner[pid]; !ok && st.Pgid == pgrp {
			continue // another part of the program started it
		}
		tree = append(tree, st)
		tree = descendants(tree, pid, children)
	}
	return tree
}

// reaper owns every wait4 of supervised processes and adopted orphans, for
// all Supervisors of the program. It runs while at least one Supervisor is
// open.
var reaper = &reaperState{procs: map[int]*proc{}, users: map[*Supervisor]bool{}}

type reaperState struct {
	mu    sync.Mutex
	procs map[int]*proc // started and not yet reaped
	pgrp  int           // the program's own process group

	lifeMu sync.Mutex // guards the fields below
	users  map[*Supervisor]bool
	sigs   chan os.Signal
	kick   chan struct{}
	stop   chan struct{}
	done   chan struct{}
}

func (r *reaperState) acquire(s *Supervisor) {
	r.lifeMu.Lock()
	defer r.lifeMu.Unlock()
	r.users[s] = true
	if len(r.users) > 1 {
		return
	}
	r.mu.Lock()
	r.pgrp = syscall.Getpgrp()
	r.mu.Unlock()
	// Before the first fork, so that no SIGCHLD is missed.
	r.sigs = make(chan os.Signal, 1)
	signal.Notify(r.sigs, syscall.SIGCHLD)
	r.kick = make(chan struct{}, 1)
	r.stop = make(chan struct{})
	r.done = make(chan struct{})
	go r.loop(r.sigs, r.kick, r.stop, r.done)
}

func (r *reaperState) release(s *Supervisor) {
	r.lifeMu.Lock()
	defer r.lifeMu.Unlock()
	delete(r.users, s)
	if len(r.users) > 0 {
		return
	}
	signal.Stop(r.sigs)
	close(r.stop)
	done := r.done
	// Not under lifeMu: a last round may still be waking Supervisors.
	r.lifeMu.Unlock()
	<-done
	r.lifeMu.Lock()
}

// poke asks for a reaping round now; Shutdown uses it because SIGCHLDs may
// coalesce.
func (r *reaperState) poke() {
	r.lifeMu.Lock()
	defer r.lifeMu.Unlock()
	if len(r.users) == 0 {
		return
	}
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *reaperState) loop(sigs <-chan os.Signal, kick, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case <-sigs:
		case <-kick:
		case <-stop:
			return
		}
		r.round()
	}
}

type reaped struct {
	p   *proc
	ws  syscall.WaitStatus
	err error
}

// round reaps whatever has ended: supervised processes by pid, adopted
// orphans that are zombies. It never waits for -1, which would also take the
// children other code is waiting for.
func (r *reaperState) round() {
	var ended []reaped
	orphans := 0
	r.mu.Lock()
	for pid, p := range r.procs {
		var ws syscall.WaitStatus
		wpid, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		for err == syscall.EINTR {
			wpid, err = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		}
		switch {
		case wpid == pid:
			ended = append(ended, reaped{p: p, ws: ws})
		case err == syscall.ECHILD:
			// Someone else (a stray wait for -1) took the status.
			ended = append(ended, reaped{p: p, err: errors.New("exit status lost: reaped outside the supervisor")})
		default:
			continue
		}
		delete(r.procs, pid)
		// Counted under r.mu: once Shutdown sees no running process, every
		// exit is accounted for in finishing.
		p.sup.finishing.Add(1)
	}
	pgrp := r.pgrp
	for _, pid := range newChildLister()(os.Getpid()) {
		if _, ok := r.procs[pid]; ok {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil || !st.zombie() || st.Pgid == pgrp {
			continue
		}
		var ws syscall.WaitStatus
		if wpid, _ := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); wpid == pid {
			orphans++
		}
	}
	r.mu.Unlock()
	if len(ended) == 0 && orphans == 0 {
		return // nothing changed for Shutdown to look at
	}

	for _, e := range ended {
		e.p.sup.exited(e.p, e.ws, e.err)
	}
	r.lifeMu.Lock()
	for s := range r.users {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	r.lifeMu.Unlock()
}

// SuperviseOne runs one command under full supervision and returns the exit
// code for the launcher (ExitCodeOf): the command's own, even when it ended
// because of a signal the launcher received and forwarded. sigs carries the
// launcher's signals (signal.Notify with ForwardSignals); when ctx ends the
// command is stopped as on SIGTERM. It shuts s down before returning.
func SuperviseOne(ctx context.Context, s *Supervisor, p ProcSpec, sigs <-chan os.Signal) int {
	exits := s.Exits()
	if err := s.Start(p); err != nil {
		s.Log.Error().Err(err).Msg("cannot start")
		s.Shutdown("start failed")
		return ExitCodeOf(Exit{Err: err})
	}
	stop := func(reason string) int {
		for _, e := range s.Shutdown(reason) {
			if e.Name == p.Name {
				return ExitCodeOf(e)
			}
		}
		// Unreachable: Shutdown returns every exit not received.
		return 125
	}
	for {
		select {
		case e, ok := <-exits:
			if !ok {
				return stop("shut down")
			}
			s.Shutdown(e.String())
			return ExitCodeOf(e)
		case sig := <-sigs:
			if s.HandleSignal(sig) {
				return stop("received " + unix.SignalName(sig.(syscall.Signal)))
			}
		case <-ctx.Done():
			return stop(context.Cause(ctx).Error())
		}
	}
}
