package supervise

import (
	"context"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

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
