package supervise

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

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
