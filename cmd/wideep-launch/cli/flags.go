package cli

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

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

// checkDurations rejects durations that must be positive (positive) or may
// be zero to turn something off (optional) but are negative, naming the flag
// and, when that is where the value came from, its variable.
func checkDurations(fs *pflag.FlagSet, positive, optional map[string]time.Duration) error {
	var errs *multierror.Error
	check := func(name string, d time.Duration, zeroOK bool) {
		if d > 0 || zeroOK && d == 0 {
			return
		}
		want := "must be positive"
		if zeroOK {
			want = "must be positive, or 0 to turn it off"
		}
		errs = multierror.Append(errs, fmt.Errorf("--%s %s%s: %s", name, d, fromEnv(fs, name), want))
	}
	for _, name := range sortedKeys(positive) {
		check(name, positive[name], false)
	}
	for _, name := range sortedKeys(optional) {
		check(name, optional[name], true)
	}
	if err := errs.ErrorOrNil(); err != nil {
		return &usageError{msg: err.Error()}
	}
	return nil
}

// fromEnv says " (from WIDEEP_X)" when flag name was set by its variable,
// not on the command line.
func fromEnv(fs *pflag.FlagSet, name string) string {
	if f := fs.Lookup(name); f != nil && !f.Changed && f.Value.String() != f.DefValue {
		return " (from " + EnvName(name) + ")"
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
