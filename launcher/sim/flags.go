package sim

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/wideep/wideep-launch/launcher/argspec"
)

// The real programs parse their command lines with Python's argparse. The
// stand-ins parse theirs with the real grammars, launcher/argspec's tables
// of the real programs (no flag table of our own): an argv the real program
// would refuse (an unknown flag, a bad choice, a malformed number, a missing
// value, an ambiguous abbreviation) is refused with argparse's message and
// exit code 2, and whatever the real one accepts (aliases such as --tp-size,
// unambiguous abbreviations such as --tp, "--flag=value") is accepted.
var (
	workerGrammar     = sync.OnceValue(argspec.DynamoSGLang)
	precompileGrammar = sync.OnceValue(argspec.CompileDeepGEMM)
	frontendGrammar   = sync.OnceValue(argspec.DynamoFrontend)
)

// errHelp is -h/--help: usage on stdout, exit 0.
type errHelp struct{}

func (errHelp) Error() string { return "help requested" }

// errVersion is --version (action=version): a version line on stdout, exit 0.
type errVersion struct{}

func (errVersion) Error() string { return "version requested" }

// args is a parsed command line: what the stand-ins read out of it. Flags are
// named by any of their option strings (an alias names its canonical flag);
// a flag given twice has the value of its last occurrence, as argparse's
// store actions do.
type args struct {
	grammar *argspec.Table
	last    map[string]argspec.Arg // by argspec.Flag.Name
}

func newArgs(g *argspec.Table, parsed []argspec.Arg) *args {
	a := &args{grammar: g, last: make(map[string]argspec.Arg, len(parsed))}
	for _, p := range parsed {
		a.last[p.Flag] = p
	}
	return a
}

// flag resolves an option string the stand-in asks about. Asking about a flag
// the grammar does not have is a bug in the stand-in, not an input error.
func (a *args) flag(opt string) argspec.Flag {
	f, ok := a.grammar.Lookup(opt)
	if !ok {
		panic(fmt.Sprintf("sim: %s has no flag %s", a.grammar.Tool, opt))
	}
	return f
}

func (a *args) occurrence(opt string) (argspec.Flag, argspec.Arg, bool) {
	f := a.flag(opt)
	o, ok := a.last[f.Name]
	return f, o, ok
}

// has tells whether the flag was given (a negation counts).
func (a *args) has(opt string) bool { _, _, ok := a.occurrence(opt); return ok }

// values are the values of the flag's last occurrence, as written.
func (a *args) values(opt string) []string {
	_, o, ok := a.occurrence(opt)
	if !ok {
		return nil
	}
	if _, v, explicit := strings.Cut(o.Tokens[0], "="); explicit {
		return []string{v}
	}
	return o.Tokens[1:]
}

func (a *args) str(opt, def string) string {
	if v := a.values(opt); len(v) > 0 {
		return v[0]
	}
	return def
}

// bool is a switch: given, and not as its --no- negation.
func (a *args) bool(opt string) bool {
	f, o, ok := a.occurrence(opt)
	return ok && (f.Negation == "" || o.Option != f.Negation)
}

// int and float only see values the grammar validated; an int beyond Go's
// range (Python's has none) reads as def.
func (a *args) int(opt string, def int) int {
	if v := a.values(opt); len(v) > 0 {
		if n, err := pyAtoi(v[0]); err == nil {
			return n
		}
	}
	return def
}

func (a *args) float(opt string, def float64) float64 {
	if v := a.values(opt); len(v) > 0 {
		if x, err := strconv.ParseFloat(strings.ReplaceAll(strings.TrimSpace(v[0]), "_", ""), 64); err == nil {
			return x
		}
	}
	return def
}

// ints are the values of an int list flag (nargs '+' or '*').
func (a *args) ints(opt string) []int {
	var out []int
	for _, v := range a.values(opt) {
		if n, err := pyAtoi(v); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// text is the flag as one string: "true" for a switch that is on, the values
// space-joined otherwise, "" when absent.
func (a *args) text(opt string) string {
	f, _, ok := a.occurrence(opt)
	switch {
	case !ok:
		return ""
	case f.Kind == argspec.Bool || f.Kind == argspec.NegatableBool:
		if a.bool(opt) {
			return "true"
		}
		return "false"
	}
	return strings.Join(a.values(opt), " ")
}

// pyAtoi converts what Python's int() accepted: surrounding spaces, a sign,
// underscores between digits.
func pyAtoi(s string) (int, error) {
	return strconv.Atoi(strings.ReplaceAll(strings.TrimSpace(s), "_", ""))
}

// parseArgs parses argv (after the module name) with the program's grammar.
// Errors are *argspec.Error with argparse's message; -h/--help and --version
// come back as errHelp and errVersion.
func parseArgs(g *argspec.Table, argv []string) (*args, error) {
	parsed, err := g.Parse(argv)
	if err == nil {
		for _, p := range parsed {
			if e := exitAction(p.Flag); e != nil {
				return nil, e
			}
		}
		return newArgs(g, parsed), nil
	}
	if i, e := firstExitAction(g, argv); e != nil && !failsBefore(g, argv, i, err) {
		return nil, e
	}
	return nil, err
}

// exitAction is the error of a flag whose argparse action exits on the spot.
func exitAction(flag string) error {
	switch flag {
	case "-h":
		return errHelp{}
	case "--version":
		return errVersion{}
	}
	return nil
}

// firstExitAction finds the first token (before "--") that the grammar reads
// as -h/--help or --version, abbreviations included, and its exit error.
func firstExitAction(g *argspec.Table, argv []string) (int, error) {
	var required []string
	for _, f := range g.Flags() {
		if f.Required {
			required = append(required, f.Name, sampleValue(f))
		}
	}
	for i, tok := range argv {
		if tok == "--" {
			break
		}
		if tok != "-h" && (len(tok) < 3 || !strings.HasPrefix("--help", tok) && !strings.HasPrefix("--version", tok)) {
			continue
		}
		// The token alone (with the required flags) resolves as it does in
		// argv: by exact name or unambiguous prefix.
		parsed, err := g.Parse(append([]string{tok}, required...))
		if err == nil && len(parsed) > 0 {
			if e := exitAction(parsed[0].Flag); e != nil {
				return i, e
			}
		}
	}
	return -1, nil
}

// sampleValue is a value the flag's type and choices accept.
func sampleValue(f argspec.Flag) string {
	if len(f.Choices) > 0 {
		return f.Choices[0]
	}
	if f.Type == "str" {
		return "x"
	}
	return "0"
}

// failsBefore tells whether argparse reports err rather than acting on the
// exit action at argv[i]: an ambiguous option anywhere (argparse classifies
// every token before acting on any), or a bad value before argv[i]. Unknown
// arguments and missing required flags are only reported at the end, which
// help never reaches. (dynamo.sglang runs Dynamo's parser, which has -h,
// before SGLang's: a bad SGLang value before -h is reported here although
// the real program would print help first. Not worth modelling.)
func failsBefore(g *argspec.Table, argv []string, i int, err error) bool {
	var pe *argspec.Error
	if !errors.As(err, &pe) {
		return true
	}
	if strings.HasPrefix(pe.Msg, "ambiguous option: ") {
		return true
	}
	_, err = g.Parse(argv[:i])
	if !errors.As(err, &pe) {
		return false
	}
	return pe.Unrecognized == nil && !strings.HasPrefix(pe.Msg, "the following arguments are required: ")
}

// argsDone handles the outcome of parseArgs for the program of grammar g.
func (s *standIn) argsDone(g *argspec.Table, err error) (int, bool) {
	var pe *argspec.Error
	switch {
	case err == nil:
		return 0, false
	case errors.As(err, new(errHelp)):
		printUsage(s.stdout, g)
		return 0, true
	case errors.As(err, new(errVersion)):
		fmt.Fprintf(s.stdout, "%s (wideep-launch simulation stand-in; grammar of %s)\n", g.Tool, g.Version)
		return 0, true
	case errors.As(err, &pe):
		printArgError(s.stderr, pe)
		return exitUsage, true
	}
	fmt.Fprintf(s.stderr, "%s: error: %v\n", g.Tool, err)
	return exitUsage, true
}

// printArgError prints an argparse failure: a usage line, then
// "<prog>: error: <msg>".
func printArgError(w io.Writer, e *argspec.Error) {
	fmt.Fprintf(w, "usage: %s [-h] [options]\n%s: error: %s\n", e.Tool, e.Tool, e.Msg)
}

// printUsage prints the grammar's options, argparse style.
func printUsage(w io.Writer, g *argspec.Table) {
	fmt.Fprintf(w, "usage: %s [-h] [options]\n\n(wideep-launch simulation stand-in; the grammar of %s)\n\noptions:\n", g.Tool, g.Version)
	for _, f := range g.Flags() {
		fmt.Fprintf(w, "  %s%s\n", strings.Join(f.OptionStrings(), ", "), metavar(f))
	}
}

func metavar(f argspec.Flag) string {
	var m string
	switch {
	case len(f.Choices) > 0:
		m = "{" + strings.Join(f.Choices, ",") + "}"
	case f.Type == "int" || f.Type == "float" || f.Type == "json":
		m = strings.ToUpper(f.Type)
	case f.Type == "str":
		m = strings.ToUpper(strings.ReplaceAll(strings.TrimLeft(f.Name, "-"), "-", "_"))
	default:
		return ""
	}
	switch f.Kind {
	case argspec.Optional:
		return " [" + m + "]"
	case argspec.Multi:
		if f.Nargs == "+" {
			return " " + m + " [" + m + " ...]"
		}
		return " [" + m + " ...]"
	}
	return " " + m
}

// pyListRepr is Python's repr() of a list of str, as a logged list shows.
func pyListRepr(items []string) string {
	out := make([]string, len(items))
	for i, s := range items {
		out[i] = pyRepr(s)
	}
	return "[" + strings.Join(out, ", ") + "]"
}

// pyRepr quotes like Python's repr of a str.
func pyRepr(s string) string {
	if strings.Contains(s, "'") && !strings.Contains(s, `"`) {
		return `"` + s + `"`
	}
	return "'" + strings.ReplaceAll(s, "'", `\'`) + "'"
}
