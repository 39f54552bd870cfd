// Package exitcode names the exit codes wideep-launch ends with. Errors of
// the launcher packages carry the code they mean (an ExitCode method);
// cmd/wideep-launch/cli maps every error to its code in one place.
package exitcode

const (
	// OK: the node (or command) finished as asked.
	OK = 0
	// Input: usage, configuration or input error, or a failed preflight —
	// nothing heavy was started, and the message names the culprit.
	Input = 2
	// Launcher: the launcher itself failed (rendezvous, a barrier, the
	// health gate).
	Launcher = 125
)

// Coder is an error that knows the exit code it means.
type Coder interface {
	error
	ExitCode() int
}
