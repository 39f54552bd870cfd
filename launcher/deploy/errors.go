package deploy

import "github.com/wideep/wideep-launch/launcher/exitcode"

// ConfigError is bad configuration: the user has to fix something, and
// nothing heavy was started.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// ExitCode is exitcode.Input: the user's to fix.
func (e *ConfigError) ExitCode() int { return exitcode.Input }
