package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/hashicorp/go-multierror"
	"github.com/spf13/pflag"
)

// newFlagSet makes a command's flag set. Usage output goes to stdout for
// --help (a request) and parse errors go to stderr via the returned error,
// so pflag itself prints nothing.
func newFlagSet(sys System, name, synopsis, description string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	fs.Usage = func() {
		fmt.Fprintf(sys.Stdout, "Usage: %s\n\n%s\n", synopsis, description)
		if fs.HasFlags() {
			fmt.Fprintf(sys.Stdout, "\nFlags:\n%s", fs.FlagUsagesWrapped(100))
		}
	}
	return fs
}

// parseFlags parses args. Parse errors become usage errors (exit 2).
func parseFlags(fs *pflag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return pflag.ErrHelp
		}
		return usageErrorf("%s: %v (see 'wideep-launch %s --help')", fs.Name(), err, fs.Name())
	}
	return nil
}

// EnvName is the WIDEEP_* variable that backs a flag: --health-timeout is
// WIDEEP_HEALTH_TIMEOUT, for every command's flags.
func EnvName(flag string) string {
	return "WIDEEP_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnvDefaults gives every flag the user did not set on the command line
// the value of its WIDEEP_* variable, so precedence is flag > env > default
// while --help stays independent of the environment.
func applyEnvDefaults(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	var errs *multierror.Error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "help" {
			return
		}
		v, ok := lookup(EnvName(f.Name))
		if !ok {
			return
		}
		if sv, isSlice := f.Value.(pflag.SliceValue); isSlice {
			// A slice flag from the environment replaces the default rather than appending to it.
			if err := sv.Replace(splitEnvList(v)); err != nil {
				errs = multierror.Append(errs, fmt.Errorf("%s=%q (for --%s): %v", EnvName(f.Name), v, f.Name, err))
			}
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("%s=%q (for --%s): %v", EnvName(f.Name), v, f.Name, err))
		}
	})
	if err := errs.ErrorOrNil(); err != nil {
		return &usageError{msg: err.Error()}
	}
	return nil
}

// splitEnvList splits a list-valued WIDEEP_* variable on newlines, so values
// may contain commas and spaces (extra SGLang arguments often do).
func splitEnvList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, "\n") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
