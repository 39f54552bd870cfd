package cli

import (
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/pflag"

	"github.com/wideep/wideep-launch/launcher/exitcode"
	"github.com/wideep/wideep-launch/slurm"
)

// The exit codes (see package exitcode); worker codes pass through unchanged.
const (
	exitOK      = exitcode.OK
	exitInput   = exitcode.Input
	exitFailure = exitcode.Launcher
)

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// passedThrough is the exit code of a child process that the launcher exits
// with as it is (exec, sim); the child has already said why, so nothing more
// is printed.
type passedThrough int

func (e passedThrough) Error() string  { return "exited with code " + strconv.Itoa(int(e)) }
func (e passedThrough) ExitCode() int  { return int(e) }
func (e passedThrough) Reported() bool { return true }

func usageErrorf(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

// exitCode prints the error (unless it was already reported) to stderr and
// returns the process exit code.
func exitCode(stderr io.Writer, err error) int {
	if err == nil || errors.Is(err, pflag.ErrHelp) {
		return exitOK
	}
	var reported interface{ Reported() bool }
	if !(errors.As(err, &reported) && reported.Reported()) {
		fmt.Fprintf(stderr, "wideep-launch: %v\n", err)
	}
	return codeOf(err)
}

// codeOf is the one place that turns an error into an exit code: the CLI's
// own errors and the slurm package's are input errors; the launcher's
// errors carry the code they mean (exitcode.Coder); anything else is the
// launcher failing.
func codeOf(err error) int {
	if err == nil || errors.Is(err, pflag.ErrHelp) {
		return exitOK
	}
	var (
		ue  *usageError
		he  *slurm.HostlistError
		ee  *slurm.EnvError
		exc exitcode.Coder
	)
	switch {
	case errors.As(err, &ue), errors.As(err, &he), errors.As(err, &ee),
		errors.Is(err, slurm.ErrNotInSlurm):
		return exitInput
	case errors.As(err, &exc):
		if c := exc.ExitCode(); c > 0 && c < 256 {
			return c
		}
	}
	return exitFailure
}
