package supervise

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// RunOneshot starts a process and waits for it to end: for oneshots such as
// the precompile step. Its exit is returned here, not on Exits or by Shutdown.
//
// A oneshot is over only when all of it is: after its main process exited,
// the processes it left (its group, its descendants, even those that called
// setsid and were adopted by us) get Grace to exit on their own, then
// SIGKILL, and RunOneshot returns when they are gone. The precompile starts
// a whole SGLang server whose scheduler processes can outlive it for a
// moment; one still holding the dist-init or bootstrap port would make the
// worker started next fail. What the oneshot left is told from other
// orphans by when it started: an orphan adopted while the oneshot ran,
// started after it, is taken for the oneshot's (run oneshots before the
// services whose daemons could be mistaken for them, as the node does).
//
// If ctx ends first, the process group gets SIGTERM, then SIGKILL after
// Grace, and the error is ctx's cause; what it left gets the rest of that
// Grace. A process that survives SIGKILL (stuck in the kernel) is waited for
// killTimeout, then given up on: the Exit then has Err "survived SIGKILL". A
// start failure is returned both as error and as Exit.Err (ExitCodeOf gives
// 127/126/125).
func (s *Supervisor) RunOneshot(ctx context.Context, spec ProcSpec) (Exit, error) {
	waiter := make(chan Exit, 1)
	p, err := s.start(spec, waiter)
	if err != nil {
		return Exit{Name: spec.Name, Oneshot: spec.Oneshot, Code: -1, Err: err}, err
	}
	var e Exit
	select {
	case e = <-waiter:
		if !errors.Is(e.Err, errSurvivedKill) { // Shutdown gave up on it
			s.handOver(p, time.Now().Add(s.grace()))
		}
		return e, nil
	case <-ctx.Done():
	}
	cause := context.Cause(ctx)
	s.Log.Info().Str("process", p.name).Msg("stopping: " + cause.Error())
	stopped := time.Now()
	e, ok := s.stopOneshot(p, waiter)
	if ok {
		s.handOver(p, stopped.Add(s.grace()))
	}
	return e, cause
}

// stopOneshot stops p: SIGTERM to its group, Grace, SIGKILL, and at most
// killTimeout more. ok is false if p survived SIGKILL.
func (s *Supervisor) stopOneshot(p *proc, waiter <-chan Exit) (e Exit, ok bool) {
	s.signalProc(p, syscall.SIGTERM)
	t := time.NewTimer(s.grace())
	defer t.Stop()
	select {
	case e := <-waiter:
		return e, true
	case <-t.C:
	}
	s.signalProc(p, syscall.SIGKILL)
	t.Reset(s.killTimeout())
	select {
	case e := <-waiter:
		return e, true
	case <-t.C:
	}
	// Still registered: if it ever dies, the Reaper reaps it (its exit goes
	// to waiter, which has room), and Shutdown tries SIGKILL again.
	s.Log.Error().Str("process", p.name).Int("pid", p.pid).Dur("waited", s.killTimeout()).
		Msg("process survived SIGKILL (stuck in the kernel?); giving up on it")
	return Exit{Name: p.name, Pid: p.pid, Oneshot: p.oneshot, Code: -1, Err: errSurvivedKill}, false
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
