// Package supervise runs a node's processes and makes sure none outlives it:
// each in its own process group, output copied to a log file and prefixed to
// the job's output, signals applied by one policy table, a stop as one
// SIGTERM, a grace period, then SIGKILL of every group and every descendant
// (even daemons that called setsid: the program is a child subreaper), and
// exit records with shell-style codes (128+N for signal N). One Reaper per
// program owns every wait4. Models: nomad's executor and containerd's reaper.
package supervise

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
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
	// defaultKillTimeout bounds each wait after SIGKILL (Shutdown's, and
	// RunOneshot's): only a process stuck in the kernel (state D) survives
	// SIGKILL, and Slurm drains such nodes.
	defaultKillTimeout = 10 * time.Second
	// treePollInterval paces the re-checks of the process tree. Deaths of our
	// own children wake them at once; this catches deaths deeper down, which
	// the kernel reports to their parent, not to us.
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
	// CPUs, when set, is the CPU affinity the process starts with; nil
	// inherits the launcher's (see AllowedCPUs).
	CPUs *unix.CPUSet
}

// Supervisor runs the processes of one node and makes sure none outlives it.
//
// Each process gets its own process group (signals reach its whole tree), a
// parent-death signal (SIGKILL if the launcher dies: the starting goroutine
// stays locked to its OS thread, because the signal fires when the forking
// thread exits), stdin from /dev/null, and stdout+stderr copied to its log
// file and, line by line with a "[<Prefix> <name>] " prefix, to Output.
// Output is written by one goroutine from a bounded queue: a stalled Output
// costs lines there (counted, and said so in Output), never the process's
// progress, and never the log file's completeness (see copyOutput).
// Pdeathsig reaches only the direct children; if the launcher is SIGKILLed,
// their descendants are left to Slurm's cgroup.
//
// Reaping: the program's Reaper owns every wait4 of supervised processes
// (on SIGCHLD) and also reaps orphans re-parented to this process
// (see BecomeSubreaper). Processes are started with syscall.ForkExec, never
// exec.Cmd: Cmd.Wait would race the reaper for the same status. Other code
// in the program may still use exec.Cmd for its own children as long as they
// stay in the launcher's process group (the default): children in another
// process group that no Supervisor started are taken for orphans, reaped and,
// at Shutdown, killed.
//
// Exits are reported in the order the processes ended, each after its output
// has been copied and written to Output (or after outputDrainTimeout if a
// descendant keeps the output open, or Output is stalled; the copy then goes
// on until Shutdown). Fail-fast is the caller's policy: stop the node on an
// exit for which Exit.Critical is true (see SuperviseOne for the pattern).
//
// The zero value is ready to use once the exported fields are set; Shutdown
// must be called to release it. Methods are safe for concurrent use.
type Supervisor struct {
	Log    zerolog.Logger
	Output io.Writer     // prefixed copy of every process's output (lines may be dropped, see above); nil discards it
	Prefix string        // first word of the prefix, e.g. the host name
	Grace  time.Duration // SIGTERM → SIGKILL delay of Shutdown and RunOneshot; 0 means DefaultGrace
	// Reaper is the program's one Reaper, shared by all its Supervisors.
	Reaper *Reaper
	// OnLine, when set, sees every piece of output as it is read (a line, or
	// up to 64 KiB of a longer one), with the process's pid and name. It
	// runs on the copy's goroutine: it must be quick and must not keep line.
	OnLine func(pid int, name string, line []byte)

	// kill sends signals; tests record through it. nil means syscall.Kill.
	kill func(pid int, sig syscall.Signal) error
	// killWait overrides defaultKillTimeout (tests).
	killWait time.Duration

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
	outQ               *outQueue      // lines on their way to Output; nil if Output is nil

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
	outputDone chan struct{}   // closed when the copy of its output has ended
	flushed    <-chan struct{} // set before outputDone: closed once its lines reached Output
	dropped    atomic.Int64    // lines of its output dropped for Output (stdout stalled)
	waiter     chan Exit       // RunOneshot's process: its exit goes here, not to Exits
	// For RunOneshot's hand-over: when it started (clock ticks after boot,
	// as in /proc/<pid>/stat), and the orphans we had already then.
	start  uint64
	before map[int]uint64
}

type startRequest struct {
	path  string
	argv  []string
	attr  *syscall.ProcAttr
	cpus  *unix.CPUSet
	p     *proc
	reply chan error
}

func (s *Supervisor) init() {
	s.initOnce.Do(func() {
		if s.Reaper == nil {
			panic("supervise: Supervisor.Reaper is nil (create one with NewReaper, once per program)")
		}
		s.startReq = make(chan startRequest)
		s.pendingNotify = make(chan struct{}, 1)
		s.exits = make(chan Exit)
		s.stopPump = make(chan struct{})
		s.pumpDone = make(chan struct{})
		s.lastReported = make(chan struct{})
		close(s.lastReported)
		if s.Output != nil {
			s.outQ = newOutQueue(s.Output, outputQueueBytes, func(err error) {
				s.Log.Error().Err(err).Msg("writing to the output failed; the log files have every line")
			})
		}
		s.Reaper.acquire(s)
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

func (s *Supervisor) killTimeout() time.Duration {
	if s.killWait > 0 {
		return s.killWait
	}
	return defaultKillTimeout
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
		s.Reaper.mu.Lock()
		if req.p.waiter != nil {
			req.p.before = s.Reaper.orphansLocked()
		}
		pid, err := forkExec(req)
		if err == nil {
			// Registered before the reaper can look again, so the exit is
			// never mistaken for an orphan's.
			req.p.pid = pid
			s.Reaper.procs[pid] = req.p
			if req.p.waiter != nil {
				// Not reaped yet (we hold the reaper), so this is our child.
				if st, err := readProcStat(pid); err == nil {
					req.p.start = st.Start
				}
			}
		}
		s.Reaper.mu.Unlock()
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
		cpus:  spec.CPUs,
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
	go s.copyOutput(p, logFile, spec.LogPath)
	s.Log.Info().Str("process", p.name).Int("pid", p.pid).Strs("argv", spec.Argv).Msg("process started")
	return p, nil
}

// exited is called by the s.Reaper. The exit is reported once the output is
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
			select {
			case <-p.flushed:
			case <-t.C:
				s.Log.Debug().Str("process", p.name).Msg("output not all written after exit (stdout stalled)")
			}
		case <-t.C:
			s.Log.Debug().Str("process", p.name).Msg("output still open after exit (a descendant holds it)")
		}
		t.Stop()
		e.OutputDropped = int(p.dropped.Load())
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
	// Under s.Reaper.mu no pid can be reaped, hence none reused, while we send.
	s.Reaper.mu.Lock()
	defer s.Reaper.mu.Unlock()
	for _, p := range s.Reaper.procs {
		if p.sup == s {
			s.signalGroup(p, sig)
		}
	}
}

// signalGroup must be called with s.Reaper.mu held.
func (s *Supervisor) signalGroup(p *proc, sig syscall.Signal) {
	if err := s.signal(-p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		s.Log.Warn().Err(err).Str("process", p.name).Str("signal", unix.SignalName(sig)).Msg("signalling the process group failed")
	}
}

func (s *Supervisor) signalProc(p *proc, sig syscall.Signal) {
	s.Reaper.mu.Lock()
	defer s.Reaper.mu.Unlock()
	if s.Reaper.procs[p.pid] == p {
		s.signalGroup(p, sig)
	}
}
