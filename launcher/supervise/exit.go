package supervise

import (
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// Exit is how a supervised process ended.
type Exit struct {
	Name    string
	Pid     int // 0 if it never started
	Oneshot bool
	Code    int            // exit status; -1 when killed by a signal or when Err is set
	Signal  syscall.Signal // the signal that killed it; 0 if it exited
	Err     error          // why it could not be started, or why its status is unknown
	// OutputDropped counts the lines of its output that did not reach the
	// Supervisor's Output because that stalled, up to when the exit was
	// reported (its log file has them all).
	OutputDropped int
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
