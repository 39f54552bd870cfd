package argspec

import (
	"bufio"
	"bytes"
	"fmt"
	"slices"
	"strings"
)

// tsvHeader is the column line every data file carries after its comments;
// checking it catches a file edited with the columns shifted.
const tsvHeader = "name\taliases\tkind\tnargs\ttype\tchoices\trequired\tsource\tnote"

// kindExtendChoices marks a row that adds choices to a flag of another file
// instead of defining a flag (dynamo.sglang adds "gms" to --load-format).
const kindExtendChoices = "extend-choices"

// mustLoad parses an embedded data file. The files are part of the build, so a
// malformed one is a programming error, not a runtime condition.
func mustLoad(name string) []Flag {
	raw, err := dataFS.ReadFile(name)
	if err != nil {
		panic(fmt.Sprintf("argspec: %v", err))
	}
	flags, err := parseTSV(raw)
	if err != nil {
		panic(fmt.Sprintf("argspec: %s: %v", name, err))
	}
	return flags
}

func parseTSV(raw []byte) ([]Flag, error) {
	var flags []Flag
	sawHeader := false
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !sawHeader {
			if line != tsvHeader {
				return nil, fmt.Errorf("line %d: want header %q", n, tsvHeader)
			}
			sawHeader = true
			continue
		}
		f, err := parseRow(strings.Split(line, "\t"))
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		flags = append(flags, f)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !sawHeader {
		return nil, fmt.Errorf("no header line")
	}
	return flags, nil
}

func parseRow(cols []string) (Flag, error) {
	if len(cols) != 9 {
		return Flag{}, fmt.Errorf("want 9 columns, got %d", len(cols))
	}
	f := Flag{
		Name:     cols[0],
		Aliases:  splitList(cols[1]),
		Nargs:    cols[3],
		Type:     cols[4],
		Choices:  splitList(cols[5]),
		Required: cols[6] == "yes",
		Source:   cols[7],
		Note:     cols[8],
	}
	if !strings.HasPrefix(f.Name, "--") {
		return Flag{}, fmt.Errorf("flag %q is not a long option", f.Name)
	}
	if cols[2] == kindExtendChoices {
		return f, nil
	}
	kinds := map[string]Kind{"bool": Bool, "negatable-bool": NegatableBool, "value": Value, "optional": Optional, "multi": Multi}
	k, ok := kinds[cols[2]]
	if !ok {
		return Flag{}, fmt.Errorf("%s: unknown kind %q", f.Name, cols[2])
	}
	f.Kind = k
	if err := checkShape(f); err != nil {
		return Flag{}, fmt.Errorf("%s: %w", f.Name, err)
	}
	if k == NegatableBool {
		f.Negation = "--no-" + strings.TrimPrefix(f.Name, "--")
	}
	return f, nil
}

// checkShape rejects rows whose columns contradict each other, so that a typo
// in a data file fails every test instead of silently changing the grammar.
func checkShape(f Flag) error {
	takesValue := f.Kind == Value || f.Kind == Optional || f.Kind == Multi
	switch {
	case f.Kind == Multi && f.Nargs != "*" && f.Nargs != "+":
		return fmt.Errorf("multi needs nargs * or +, got %q", f.Nargs)
	case f.Kind == Optional && f.Nargs != "?":
		return fmt.Errorf("optional needs nargs ?, got %q", f.Nargs)
	case (f.Kind == Value || !takesValue) && f.Nargs != "":
		return fmt.Errorf("kind %v takes no nargs, got %q", f.Kind, f.Nargs)
	case takesValue && !slices.Contains([]string{"int", "float", "json", "str"}, f.Type):
		return fmt.Errorf("kind %v needs a type, got %q", f.Kind, f.Type)
	case !takesValue && (f.Type != "" || len(f.Choices) > 0):
		return fmt.Errorf("kind %v takes no value", f.Kind)
	}
	for _, c := range f.Choices {
		if err := checkType(f.Type, c); err != nil {
			return fmt.Errorf("choice %q: %w", c, err)
		}
	}
	return nil
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// splitExtensions separates extend-choices rows from flag rows.
func splitExtensions(rows []Flag) (flags, ext []Flag) {
	for _, f := range rows {
		if f.Kind == 0 {
			ext = append(ext, f)
		} else {
			flags = append(flags, f)
		}
	}
	return flags, ext
}

// extendChoices returns a copy of flags with ext's choices appended to the
// flags they name.
func extendChoices(flags, ext []Flag) []Flag {
	out := make([]Flag, len(flags))
	for i, f := range flags {
		out[i] = f.clone()
	}
	for _, e := range ext {
		i := slices.IndexFunc(out, func(f Flag) bool { return f.Name == e.Name })
		if i < 0 {
			panic(fmt.Sprintf("argspec: extend-choices for unknown flag %s", e.Name))
		}
		if len(out[i].Choices) == 0 {
			panic(fmt.Sprintf("argspec: extend-choices for %s, which accepts any value", e.Name))
		}
		out[i].Choices = append(out[i].Choices, e.Choices...)
	}
	return out
}

// mustTable indexes the groups. An option string registered twice in one
// group is a conflict argparse itself would refuse (add_argument raises).
func mustTable(t *Table, groups ...[]Flag) *Table {
	for _, g := range groups {
		idx := make(map[string]int, len(g))
		for i, f := range g {
			if f.Kind == 0 {
				panic(fmt.Sprintf("argspec: %s: extend-choices row outside dynamo table", f.Name))
			}
			for _, opt := range f.OptionStrings() {
				if _, dup := idx[opt]; dup {
					panic(fmt.Sprintf("argspec: %s: option %s registered twice", t.Tool, opt))
				}
				idx[opt] = i
			}
		}
		t.groups = append(t.groups, g)
		t.index = append(t.index, idx)
	}
	return t
}
