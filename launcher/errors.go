// Package launcher knows the deployment: the spec, the plan (who runs what,
// where, with which argv), the rendezvous between nodes, the phases of a node
// and the supervision of its processes.
package launcher

import "fmt"

// ConfigError is bad configuration or a failed preflight: the user has to fix
// something and nothing heavy was started. The CLI maps it to exit code 2.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

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

func (e *ExitError) ExitCode() int { return e.Code }
