package cli

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
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
				errs = multierror.Append(errs, fmt.Errorf("%s: %v", envSource(f.Name, v), err))
			}
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("%s: %v", envSource(f.Name, v), err))
		}
	})
	return problems(errs)
}

// problems is a usage error listing errs: the one message, or one per line.
func problems(errs *multierror.Error) error {
	if errs == nil || len(errs.Errors) == 0 {
		return nil
	}
	errs.ErrorFormat = func(es []error) string {
		if len(es) == 1 {
			return es[0].Error()
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%d problems:", len(es))
		for _, e := range es {
			b.WriteString("\n  - " + e.Error())
		}
		return b.String()
	}
	return &usageError{msg: errs.Error()}
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
// be zero to turn something off (optional) but are not. A value that came
// from a WIDEEP_* variable is named by withEnvSources.
func checkDurations(positive, optional map[string]time.Duration) error {
	var errs *multierror.Error
	check := func(name string, d time.Duration, zeroOK bool) {
		if d > 0 || zeroOK && d == 0 {
			return
		}
		want := "must be positive"
		if zeroOK {
			want = "must be positive, or 0 to turn it off"
		}
		errs = multierror.Append(errs, fmt.Errorf("--%s %s: %s", name, d, want))
	}
	for _, name := range sortedKeys(positive) {
		check(name, positive[name], false)
	}
	for _, name := range sortedKeys(optional) {
		check(name, optional[name], true)
	}
	return problems(errs)
}

// envSource names where a flag's value came from when it was its variable:
// WIDEEP_X=value (for --x), the value quoted when it would be ambiguous.
func envSource(flag, value string) string {
	if value == "" || strings.ContainsFunc(value, func(c rune) bool {
		return c <= ' ' || c == '"' || c == '\\' || !strconv.IsPrint(c)
	}) {
		value = strconv.Quote(value)
	}
	return EnvName(flag) + "=" + value + " (for --" + flag + ")"
}

// withEnvSources makes err name the WIDEEP_* variables behind the flags it
// mentions: checks after applyEnvDefaults (here and in the deploy package)
// name flags, and the user who set only the variable must recognise it.
// The variables are found as applyEnvDefaults used them: a flag not set on
// the command line whose variable is set.
func withEnvSources(fs *pflag.FlagSet, lookup func(string) (string, bool), err error) error {
	if err == nil || errors.Is(err, pflag.ErrHelp) {
		return err
	}
	msg := err.Error()
	var sources []string
	fs.VisitAll(func(f *pflag.Flag) {
		v, ok := lookup(EnvName(f.Name))
		if !ok || f.Changed || f.Name == "help" || !mentionsFlag(msg, f.Name) || strings.Contains(msg, EnvName(f.Name)+"=") {
			return
		}
		sources = append(sources, envSource(f.Name, v))
	})
	if len(sources) == 0 {
		return err
	}
	return &envSourced{err: err, sources: sources}
}

// mentionsFlag says whether msg names --flag itself, not a longer flag
// that starts the same (--grace in --grace-period).
func mentionsFlag(msg, flag string) bool {
	word := "--" + flag
	for i := strings.Index(msg, word); i >= 0; {
		end := i + len(word)
		if end == len(msg) || !strings.ContainsRune("abcdefghijklmnopqrstuvwxyz0123456789-", rune(msg[end])) {
			return true
		}
		next := strings.Index(msg[end:], word)
		if next < 0 {
			return false
		}
		i = end + next
	}
	return false
}

// envSourced is an error with the variables its flags came from.
type envSourced struct {
	err     error
	sources []string
}

func (e *envSourced) Error() string {
	return e.err.Error() + "\n  set in the environment: " + strings.Join(e.sources, ", ")
}

func (e *envSourced) Unwrap() error { return e.err }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
