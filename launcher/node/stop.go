package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wideep/wideep-launch/launcher/exitcode"
	"github.com/wideep/wideep-launch/launcher/rendezvous"
	"github.com/wideep/wideep-launch/launcher/supervise"
)

// Stop causes, recorded when the node decides to stop.
type stopBySignal struct{ sig syscall.Signal }

func (s stopBySignal) Error() string { return "stopped by " + signalName(s.sig) }

type stopByExit struct{ exit supervise.Exit }

func (s stopByExit) Error() string { return "process " + s.exit.Name + " exited" }

// stopByPeer is the job ending because of another node (node 0 said so, or
// node 0 itself is lost).
type stopByPeer struct{ abort *rendezvous.AbortError }

func (s stopByPeer) Error() string { return s.abort.Error() }

// watchSignals applies the signal policy until the teardown is over: a stop
// signal cancels the node; every signal goes to the supervisor, which
// forwards what the policy forwards.
func (r *run) watchSignals(done <-chan struct{}) {
	for {
		var sig os.Signal
		var ok bool
		select {
		case <-done:
			return
		case sig, ok = <-r.n.Signals:
		}
		if !ok {
			return
		}
		ss, _ := sig.(syscall.Signal)
		if supervise.StopsNode(ss) {
			r.signalOnce.Do(func() {
				r.ownSignal = ss
				close(r.signalled)
			})
		}
		// The stop is recorded before anything is forwarded: a process that
		// dies of the forwarded signal must not look like a crash.
		if supervise.StopsNode(ss) && r.ctx.Err() == nil {
			r.log.Warn().Str("signal", signalName(ss)).
				Msg("stop requested by signal (scancel, time limit, or another node failed under --kill-on-bad-exit)")
			r.cancel(stopBySignal{ss})
		}
		// Forwarding goes on during teardown: Slurm may signal again.
		if s := r.supervisor(); s != nil {
			s.HandleSignal(sig)
		}
	}
}

// watchPeers stops the node when the job ends because of another node.
func (r *run) watchPeers() {
	select {
	case <-r.client.Aborted():
		if r.ctx.Err() == nil {
			ae := r.client.Err()
			r.log.Warn().Int("from_node", ae.Node).Msg("the job is ending: " + ae.Msg)
			r.cancel(stopByPeer{ae})
		}
	case <-r.ctx.Done():
	}
}

// watchExits implements fail-fast: any exit of a long-running process, or a
// failed oneshot, stops the node.
func (r *run) watchExits(s *supervise.Supervisor) {
	for {
		select {
		case <-r.ctx.Done():
			return
		case e, ok := <-s.Exits():
			if !ok {
				return
			}
			if e.Oneshot {
				// runOneshot reports oneshots itself.
				continue
			}
			r.log.Error().Str("process", e.Name).Int("pid", e.Pid).Int("exit_code", supervise.ExitCodeOf(e)).
				Msg("process exited: stopping this node")
			r.cancel(stopByExit{e})
			return
		}
	}
}

// stopError turns the stop cause into the error the launcher exits with.
func (r *run) stopError(cause error) error {
	var bySig stopBySignal
	var byExit stopByExit
	var byPeer stopByPeer
	switch {
	case errors.As(cause, &bySig):
		if bySig.sig == syscall.SIGUSR1 {
			// sbatch --signal=USR1@T: a planned stop before the time limit.
			r.log.Info().Msg("stopped gracefully on SIGUSR1 (time limit approaching)")
			return nil
		}
		return &StoppedError{Node: r.idx, Host: r.host, Signal: bySig.sig}
	case errors.As(cause, &byPeer):
		return r.peerStop(byPeer.abort)
	case errors.As(cause, &byExit):
		e := byExit.exit
		ee := &ExitError{Node: r.idx, Host: r.host, Process: e.Name, Code: supervise.ExitCodeOf(e)}
		if e.Signal != 0 {
			ee.Signal = signalName(e.Signal)
		}
		if e.Err != nil {
			return fmt.Errorf("%s: %w", ee.Error(), e.Err)
		}
		return ee
	}
	return cause
}

// peerStop is this node's end when another node ended the job. When that
// node was stopped by a signal, this one probably is being stopped too
// (scancel reaches the nodes a moment apart): it waits briefly for its own
// signal and then reports "stopped", not a failure.
func (r *run) peerStop(ae *rendezvous.AbortError) error {
	if ae.Stopped {
		t := time.NewTimer(r.n.Options.StopSettle)
		defer t.Stop()
		select {
		case <-r.signalled:
		case <-t.C:
		}
	}
	select {
	case <-r.signalled:
		if r.ownSignal == syscall.SIGUSR1 {
			// Our own sbatch --signal=USR1 came too: the planned stop
			// before the time limit, whichever node heard it first.
			r.log.Info().Msg("stopped gracefully on SIGUSR1 (time limit approaching)")
			return nil
		}
		return &StoppedError{Node: r.idx, Host: r.host, Signal: r.ownSignal}
	default:
		return ae
	}
}

// announce tells the other nodes (through node 0) why this node ends, so
// the whole job ends with it, whether or not Slurm's --kill-on-bad-exit is
// set. An end that came from another node is not announced back.
func (r *run) announce(err error) {
	var ae *rendezvous.AbortError
	var st *StoppedError
	var ee *ExitError
	var se *StallError
	var msg string
	stopped := false
	switch {
	case errors.As(err, &ae):
		return
	case errors.As(err, &se):
		msg = err.Error()
	case err == nil:
		msg, stopped = fmt.Sprintf("node %d (%s) stopped gracefully (SIGUSR1: time limit approaching)", r.idx, r.host), true
	case errors.As(err, &st):
		msg, stopped = err.Error(), true
	case errors.As(err, &ee):
		msg = err.Error()
	case isVerdict(err):
		return // every node has it already
	default:
		msg = fmt.Sprintf("node %d (%s): %v", r.idx, r.host, err)
	}
	if !stopped {
		r.reportFailure(err, msg)
	}
	switch {
	case r.client != nil:
		r.client.Abort(msg, stopped)
	case r.server != nil:
		// Node 0 could not join its own rendezvous: tell those who did.
		r.server.Stop(msg)
	}
}

// consequence turns this node's own process failure into the job's first
// failure when another node's came before it: a worker whose peer rank died
// dies too (its NCCL or torch connection breaks), often before the news of
// the first failure arrives. The node then ends as the others do (125,
// naming the first failure), and its own exit is logged as what followed.
func (r *run) consequence(err error) error {
	var ee *ExitError
	if r.client == nil || !errors.As(err, &ee) {
		return err
	}
	first := r.client.FirstAbort(time.Second)
	if first == nil || first.Node == r.idx || first.Stopped {
		return err
	}
	r.log.Warn().Str("process", ee.Process).Int("code", ee.Code).Int("first_failure_node", first.Node).
		Msg("this node's process exit followed another node's failure: " + err.Error())
	return first
}

// reportFailure tells node 0 why this node fails, with the last lines of
// the process that did it, before the job ends: the summary names the
// first failure.
func (r *run) reportFailure(err error, msg string) {
	f := r.failure
	if f == nil {
		f = &Failure{Node: r.idx, Host: r.host, Message: msg}
		var ee *ExitError
		if errors.As(err, &ee) {
			f.Process, f.Code = ee.Process, ee.Code
			if st, ok := r.tracker.status(ee.Process, true); ok {
				f.LastLines = st.LastLines
			}
		}
	}
	r.failure = f
	r.sendReport(r.ctx, "failed", f)
}

// ExitError is a supervised process that ended the node: its code is the
// launcher's exit code (128+N when killed by signal N).
type ExitError struct {
	Node    int
	Host    string
	Process string
	Code    int
	Signal  string // name of the signal that killed it, "" if it exited
}

func (e *ExitError) Error() string {
	if e.Signal != "" {
		return fmt.Sprintf("node %d (%s): process %s killed by %s (exit code %d)", e.Node, e.Host, e.Process, e.Signal, e.Code)
	}
	if e.Code == 0 {
		// Services run until the job ends; a clean exit is still the end of
		// the deployment, and must not look like success to srun.
		return fmt.Sprintf("node %d (%s): process %s exited with code 0, but it should serve until the job ends", e.Node, e.Host, e.Process)
	}
	return fmt.Sprintf("node %d (%s): process %s exited with code %d", e.Node, e.Host, e.Process, e.Code)
}

// ExitCode passes the process's code through; a service that exited 0 still
// ended the deployment: exitcode.Launcher.
func (e *ExitError) ExitCode() int {
	if e.Code == 0 {
		return exitcode.Launcher
	}
	return e.Code
}

// StoppedError is a node stopped from outside (scancel, time limit, another
// node's failure): it failed nothing itself, so its log says "stopped".
type StoppedError struct {
	Node   int
	Host   string
	Signal syscall.Signal
}

func (e *StoppedError) Error() string {
	return fmt.Sprintf("node %d (%s) stopped by %s", e.Node, e.Host, signalName(e.Signal))
}

// ExitCode is 128+N for signal N, as a shell reports a process killed by it.
func (e *StoppedError) ExitCode() int { return 128 + int(e.Signal) }

// failure is any other error that ended the node: the launcher itself
// failed (a barrier, the health gate, a lost rendezvous).
type failure struct{ error }

func (e failure) Unwrap() error { return e.error }
func (e failure) ExitCode() int { return exitcode.Launcher }

// reported marks an error the node has logged already, so the CLI does not
// print it again.
type reported struct{ error }

func (e reported) Unwrap() error  { return e.error }
func (e reported) Reported() bool { return true }

// coded makes err carry its exit code and marks it as reported.
func coded(err error) error {
	if err == nil {
		return nil
	}
	var c exitcode.Coder
	if !errors.As(err, &c) {
		err = failure{err}
	}
	return reported{err}
}

// codeOf is the exit code err carries (see coded).
func codeOf(err error) int {
	var c exitcode.Coder
	if errors.As(coded(err), &c) {
		return c.ExitCode()
	}
	return exitcode.OK
}

// logEnd is the node's last word: why it ended and the exit code srun gets
// from it. Under --kill-on-bad-exit srun itself reports 137, so this line
// is where the real reason is.
func (r *run) logEnd(err error) {
	code := codeOf(err)
	var st *StoppedError
	var ee *ExitError
	var ae *rendezvous.AbortError
	switch {
	case err == nil:
		r.log.Info().Int("exit_code", code).Msgf("node %d (%s) finished", r.idx, r.host)
	case errors.As(err, &ae) && ae.Stopped:
		r.log.Warn().Int("exit_code", code).Int("from_node", ae.Node).
			Msgf("JOB STOPPED: %s; node %d (%s) stopped its processes too, without a stop signal of its own", ae.Msg, r.idx, r.host)
	case errors.As(err, &ae):
		r.log.Error().Int("exit_code", code).Int("from_node", ae.Node).
			Msgf("NODE FAILED: %s (node %d (%s) stopped its processes: the job is a gang)", ae.Msg, r.idx, r.host)
	case errors.As(err, &st):
		msg := err.Error() + ": processes stopped gracefully; this node did not fail"
		// Slurm ends a step whose task died of a signal, with or without
		// --kill-on-bad-exit: its SIGTERM may beat node 0's news here. When
		// the news came meanwhile, this line says what ended the job too.
		if ae := r.jobEnding(); ae != nil {
			msg += "; the job was ending: " + ae.Msg
		}
		r.log.Warn().Int("exit_code", code).Msg(msg)
	case errors.As(err, &ee), errors.As(err, new(*StallError)):
		// These name the node themselves.
		r.log.Error().Int("exit_code", code).Msg("NODE FAILED: " + err.Error())
	default:
		// The error in the message, not a field: the console shows its lines as lines.
		r.log.Error().Int("exit_code", code).Msgf("NODE FAILED: node %d (%s): %v", r.idx, r.host, err)
	}
}

func shutdownReason(ctx context.Context) string {
	if c := context.Cause(ctx); c != nil && ctx.Err() != nil {
		return c.Error()
	}
	return "launcher exiting"
}

func signalName(s syscall.Signal) string {
	if name := unix.SignalName(s); name != "" {
		return name
	}
	return fmt.Sprintf("signal %d", int(s))
}

// jobEnding is why the job ends when another node failed or was lost and
// node 0 told this one; nil before, or for a stop (every node has its own).
func (r *run) jobEnding() *rendezvous.AbortError {
	if r.client == nil {
		return nil
	}
	if ae := r.client.Err(); ae != nil && !ae.Stopped {
		return ae
	}
	return nil
}
