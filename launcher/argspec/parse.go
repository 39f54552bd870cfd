package argspec

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// Arg is one flag occurrence in an argv.
type Arg struct {
	// Flag is the canonical name (Flag.Name) of the flag the tokens set.
	Flag string
	// Option is the option string the tokens resolved to, written in full:
	// an alias, a negation, or what an abbreviation stands for.
	Option string
	// Tokens are exactly the argv tokens of this occurrence: the option
	// (possibly "--opt=value") followed by its separate values.
	Tokens []string
}

// Error is a rejection with argparse's wording, so a stand-in can print what
// the real program would.
type Error struct {
	// Tool is the program whose grammar rejected the argv.
	Tool string
	// Token is the first argv token the message is about.
	Token string
	// Msg is argparse's message, without the "prog: error: " prefix.
	Msg string
	// Unrecognized are the left-over tokens when that is the whole error
	// ("unrecognized arguments: ..."), for programs that use
	// parse_known_args and report them themselves (dynamo.frontend).
	Unrecognized []string
}

func (e *Error) Error() string { return e.Tool + ": error: " + e.Msg }

// negativeNumber is argparse's _negative_number_matcher. None of the grammars
// has an option that looks like a negative number, so such tokens are values.
var negativeNumber = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^-\d+$|^-\d*\.\d+$`) })

// resolution is what argparse's _parse_optional makes of one token.
type resolution struct {
	found    bool
	flag     Flag
	option   string // full option string matched
	explicit bool   // written as --opt=value
	value    string // the value after '=' when explicit
}

// Parse splits argv into flag occurrences the way the program's argparse
// parser(s) would, or returns the *Error argparse would exit 2 with. Each
// group of the table is one parser run over what the previous one left
// (parse_known_args), the last one as parse_args. Within a parser, errors come
// in argparse's order: an ambiguous prefix anywhere, then a bad or missing
// value, then missing required flags; unrecognized arguments (all of them, in
// one message) come last. The result is in argv order.
func (t *Table) Parse(argv []string) ([]Arg, error) {
	rest := make([]int, len(argv))
	for i := range argv {
		rest[i] = i
	}
	var args []placed
	for gi := range t.groups {
		got, left, err := t.parseGroup(gi, argv, rest)
		if err != nil {
			return nil, err
		}
		args = append(args, got...)
		rest = left
	}
	if len(rest) > 0 {
		extras := make([]string, len(rest))
		for i, p := range rest {
			extras[i] = argv[p]
		}
		return nil, &Error{Tool: t.Tool, Token: extras[0], Msg: "unrecognized arguments: " + strings.Join(extras, " "), Unrecognized: extras}
	}
	slices.SortFunc(args, func(a, b placed) int { return a.pos - b.pos })
	out := make([]Arg, len(args))
	for i, a := range args {
		out[i] = a.Arg
	}
	return out, nil
}

// placed is an Arg with the argv position of its first token.
type placed struct {
	Arg
	pos int
}

// parseGroup is one parse_known_args over the argv positions in rest; it
// returns the occurrences it claimed and the positions it left over.
func (t *Table) parseGroup(gi int, argv []string, rest []int) ([]placed, []int, error) {
	toks := make([]string, len(rest))
	for i, p := range rest {
		toks[i] = argv[p]
	}
	end := slices.Index(toks, "--")
	if end < 0 {
		end = len(toks)
	}
	res := make([]resolution, end)
	for i, tok := range toks[:end] {
		r, err := t.classify(gi, tok)
		if err != nil {
			return nil, nil, err
		}
		res[i] = r
	}
	var got []placed
	var left []int
	seen := map[string]bool{}
	for i := 0; i < end; {
		if !res[i].found {
			left = append(left, rest[i])
			i++
			continue
		}
		n, err := t.consume(gi, res[i], toks[i], toks[i+1:end])
		if err != nil {
			return nil, nil, err
		}
		a := Arg{Flag: res[i].flag.Name, Option: res[i].option, Tokens: slices.Clone(toks[i : i+1+n])}
		got = append(got, placed{Arg: a, pos: rest[i]})
		seen[a.Flag] = true
		i += 1 + n
	}
	left = append(left, rest[end:]...)
	if err := t.checkRequired(t.groups[gi], seen); err != nil {
		return nil, nil, err
	}
	return got, left, nil
}

// classify is argparse's _parse_optional for one parser (group): the token is
// claimed by exact option string, by "--opt=value", or by unambiguous prefix;
// an ambiguous prefix is an error. Anything else is left to later groups.
func (t *Table) classify(gi int, tok string) (resolution, error) {
	if !strings.HasPrefix(tok, "-") || len(tok) < 2 {
		return resolution{}, nil
	}
	idx, group := t.index[gi], t.groups[gi]
	at := func(opt string) resolution {
		f := group[idx[opt]]
		return resolution{found: true, flag: f, option: opt}
	}
	if _, ok := idx[tok]; ok {
		return at(tok), nil
	}
	opt, value, explicit := splitExplicit(tok)
	if explicit {
		if _, ok := idx[opt]; ok {
			r := at(opt)
			r.explicit, r.value = true, value
			return r, nil
		}
	}
	if !strings.HasPrefix(tok, "--") {
		return resolution{}, nil
	}
	var matches []string
	for _, f := range group {
		for _, o := range f.OptionStrings() {
			if strings.HasPrefix(o, opt) {
				matches = append(matches, o)
			}
		}
	}
	switch len(matches) {
	case 0:
		return resolution{}, nil
	case 1:
		r := at(matches[0])
		r.explicit, r.value = explicit, value
		return r, nil
	}
	return resolution{}, &Error{Tool: t.Tool, Token: tok,
		Msg: fmt.Sprintf("ambiguous option: %s could match %s", tok, strings.Join(matches, ", "))}
}

// resolve runs classify group by group, the order the program's parsers see
// the token.
func (t *Table) resolve(tok string) (resolution, error) {
	for gi := range t.groups {
		r, err := t.classify(gi, tok)
		if err != nil || r.found {
			return r, err
		}
	}
	return resolution{}, nil
}

// splitExplicit splits "--opt=value" at the first '='.
func splitExplicit(tok string) (opt, value string, explicit bool) {
	opt, value, explicit = strings.Cut(tok, "=")
	return opt, value, explicit
}

// isOption is argparse's test for an 'O' token: one that cannot be a flag's
// value. Known options, prefixes of them and unknown dash-words all are;
// negative numbers, "-" and dash-words with a space are not.
func (t *Table) isOption(gi int, tok string) bool {
	if !strings.HasPrefix(tok, "-") || tok == "-" {
		return false
	}
	if r, err := t.classify(gi, tok); err != nil || r.found {
		return true
	}
	if negativeNumber().MatchString(tok) {
		return false
	}
	return !strings.Contains(tok, " ")
}

// consume validates the values of one occurrence and returns how many of the
// following tokens belong to it.
func (t *Table) consume(gi int, r resolution, tok string, rest []string) (int, error) {
	f := r.flag
	name := strings.Join(f.OptionStrings(), "/")
	fail := func(token, format string, a ...any) error {
		return &Error{Tool: t.Tool, Token: token, Msg: "argument " + name + ": " + fmt.Sprintf(format, a...)}
	}
	if f.Kind == Bool || f.Kind == NegatableBool {
		if r.explicit {
			return 0, fail(tok, "ignored explicit argument %s", pyRepr(r.value))
		}
		return 0, nil
	}
	if r.explicit {
		return 0, t.checkValue(f, name, tok, r.value)
	}
	n := 0
	for n < len(rest) && !t.isOption(gi, rest[n]) {
		n++
		if f.Kind == Value || f.Kind == Optional {
			break
		}
	}
	switch {
	case f.Kind == Value && n == 0:
		return 0, fail(tok, "expected one argument")
	case f.Kind == Multi && f.Nargs == "+" && n == 0:
		return 0, fail(tok, "expected at least one argument")
	}
	for _, v := range rest[:n] {
		if err := t.checkValue(f, name, v, v); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// checkValue applies the flag's type and then its choices, as argparse's
// _get_values does.
func (t *Table) checkValue(f Flag, name, token, v string) error {
	if err := checkType(f.Type, v); err != nil {
		return &Error{Tool: t.Tool, Token: token,
			Msg: fmt.Sprintf("argument %s: invalid %s value: %s", name, pyTypeName(f), pyRepr(v))}
	}
	if len(f.Choices) == 0 || inChoices(f, v) {
		return nil
	}
	shown := make([]string, len(f.Choices))
	for i, c := range f.Choices {
		shown[i] = choiceRepr(f.Type, c)
	}
	return &Error{Tool: t.Tool, Token: token, Msg: fmt.Sprintf("argument %s: invalid choice: %s (choose from %s)",
		name, choiceRepr(f.Type, v), strings.Join(shown, ", "))}
}

// checkRequired is the end of parse_known_args: required flags of this
// parser that did not appear.
func (t *Table) checkRequired(group []Flag, seen map[string]bool) error {
	var missing []string
	for _, f := range group {
		if f.Required && !seen[f.Name] {
			missing = append(missing, strings.Join(f.OptionStrings(), "/"))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return &Error{Tool: t.Tool, Msg: "the following arguments are required: " + strings.Join(missing, ", ")}
}
