// Package argspec holds the real command-line grammars of the programs the
// launcher starts: SGLang's server (sglang.launch_server, i.e.
// ServerArgs.add_cli_args) at sglang 0.5.6.post2, sglang.compile_deep_gemm
// (the same plus --timeout), Dynamo's dynamo.sglang (Dynamo's own flags,
// then SGLang's) and Dynamo's frontend (dynamo.frontend, an older Dynamo
// snapshot; see DynamoFrontend). The grammars are data (data/*.tsv,
// embedded; README.md says how they were derived), each file
// headed by the repository, file, commit or index id it was read from and by
// how the version was pinned; every row that is not certain says why it is
// there in its note column.
//
// The tables exist so that two things cannot drift from the real programs:
// building the precompile argv by keeping only the flags SGLang accepts out of
// a dynamo.sglang argv (Keep), and making simulation stand-ins reject an argv
// where argparse would, with argparse's message (Table.Parse).
//
// Parse follows argparse as these programs configure it: long options,
// "--flag=value" as one token, allow_abbrev=True (SGLang's and Dynamo's
// parsers keep argparse's default, so an unambiguous prefix such as "--tp"
// is that option and the real programs accept it; a stricter stand-in must
// reject abbreviations itself, e.g. by comparing Arg.Option with the written
// token), tokens that look like negative numbers are values, and unknown flags
// are reported after every other error, as parse_args does. Messages are
// CPython 3.11's; newer CPython words some of them differently.
//
// Not modelled: config files (--config is a plain value flag here),
// environment-variable defaults, the checks SGLang runs after parsing
// (ServerArgs.__post_init__), and dynamo.sglang's worker router flags (parsed
// by a separate parse_known_args; their definitions were not read), which
// DynamoSGLang therefore rejects.
package argspec

import (
	"embed"
	"slices"
	"sync"
)

//go:embed data/*.tsv
var dataFS embed.FS

// Kind is how many values a flag takes, which is all Parse needs to split an
// argv into flag groups.
type Kind int

const (
	// Bool takes no value (store_true, store_false, action=version).
	Bool Kind = iota + 1
	// NegatableBool takes no value and also answers to its Negation
	// (argparse.BooleanOptionalAction).
	NegatableBool
	// Value takes exactly one value (nargs=None).
	Value
	// Optional takes zero or one value (nargs='?').
	Optional
	// Multi takes a run of values (nargs='*' or '+'; see Flag.Nargs).
	Multi
)

// String names the kind the way the TSV files spell it.
func (k Kind) String() string {
	switch k {
	case Bool:
		return "bool"
	case NegatableBool:
		return "negatable-bool"
	case Value:
		return "value"
	case Optional:
		return "optional"
	case Multi:
		return "multi"
	}
	return "unknown"
}

// Flag is one argparse action.
type Flag struct {
	// Name is the first option string, the one argparse puts first in
	// messages ("--tensor-parallel-size", not "--tp-size").
	Name    string
	Aliases []string
	Kind    Kind
	// Nargs is "*" or "+" for Multi, "?" for Optional, "" otherwise.
	Nargs string
	// Type is how argparse converts the value: "int", "float", "json" or "str".
	// Empty for flags without a value.
	Type string
	// Choices lists the accepted values; empty means any value of Type.
	Choices []string
	// Negation is "--no-<name>" for NegatableBool flags.
	Negation string
	// Required flags must appear (argparse required=True).
	Required bool
	// Source says where the row comes from ("both", "old", "mid", a commit).
	Source string
	// Note records why an uncertain row is in the table.
	Note string
}

// OptionStrings returns every string argparse registers for the flag: the
// name, the aliases and the negation.
func (f Flag) OptionStrings() []string {
	out := append([]string{f.Name}, f.Aliases...)
	if f.Negation != "" {
		out = append(out, f.Negation)
	}
	return out
}

func (f Flag) clone() Flag {
	f.Aliases = slices.Clone(f.Aliases)
	f.Choices = slices.Clone(f.Choices)
	return f
}

// Table is the grammar of one program. Its flags come in groups, one per
// argparse parser the program runs in turn: dynamo.sglang lets its own parser
// (parse_known_args) claim a token before SGLang's parser sees the rest, which
// matters for prefix abbreviations.
type Table struct {
	// Tool is the command line the grammar belongs to.
	Tool string
	// Version is the pinned version of the program(s).
	Version string
	// Source names the repositories, files and commits the rows came from.
	Source string

	groups [][]Flag
	index  []map[string]int
}

// Flags returns all flags, in resolution order.
func (t *Table) Flags() []Flag {
	var out []Flag
	for _, g := range t.groups {
		for _, f := range g {
			out = append(out, f.clone())
		}
	}
	return out
}

// Lookup finds the flag registered under opt: its name, an alias or its
// negation, written in full. Abbreviations and "--flag=value" are Parse's
// business, not Lookup's.
func (t *Table) Lookup(opt string) (Flag, bool) {
	for gi, idx := range t.index {
		if i, ok := idx[opt]; ok {
			return t.groups[gi][i].clone(), true
		}
	}
	return Flag{}, false
}

// SGLangVersion is the SGLang release whose grammar the tables hold.
const SGLangVersion = "0.5.6.post2"

const (
	sglangFile  = "data/sglang-server-0.5.6.post2.tsv"
	dynamoFile  = "data/dynamo-sglang.tsv"
	compileFile = "data/compile-deep-gemm.tsv"

	sglangVersion = "sglang " + SGLangVersion
	sglangSource  = "sgl-project/sglang python/sglang/srt/server_args.py, merged from index ids 8356329 (~v0.5.4) and 271536807 (~v0.5.7/0.5.8); see " + sglangFile
)

var (
	sglangRows  = sync.OnceValue(func() []Flag { return mustLoad(sglangFile) })
	dynamoRows  = sync.OnceValue(func() []Flag { return mustLoad(dynamoFile) })
	compileRows = sync.OnceValue(func() []Flag { return mustLoad(compileFile) })
)

// helpFlag is what argparse.ArgumentParser() adds unless add_help=False. It
// matters beyond -h itself: "--he" abbreviates it and "--h" is ambiguous.
// SGLang's own parsers and Dynamo's outer parser have it; the inner
// sglang_only_parser of dynamo.sglang does not.
func helpFlag() Flag {
	return Flag{Name: "-h", Aliases: []string{"--help"}, Kind: Bool, Source: "argparse add_help",
		Note: "argparse default: prints usage and exits 0"}
}

// SGLangServer is the grammar of python3 -m sglang.launch_server at 0.5.6.post2.
func SGLangServer() *Table {
	return mustTable(&Table{
		Tool:    "python3 -m sglang.launch_server",
		Version: sglangVersion,
		Source:  sglangSource,
	}, append([]Flag{helpFlag()}, sglangRows()...))
}

// CompileDeepGEMM is the grammar of python3 -m sglang.compile_deep_gemm:
// ServerArgs plus --timeout, in one parser.
func CompileDeepGEMM() *Table {
	flags := append([]Flag{helpFlag()}, sglangRows()...)
	flags = append(flags, compileRows()...)
	return mustTable(&Table{
		Tool:    "python3 -m sglang.compile_deep_gemm",
		Version: sglangVersion,
		Source:  sglangSource + "; sgl-project/sglang python/sglang/compile_deep_gemm.py @06c48ca8da0b2c8aac15df74a768e6a012444064",
	}, flags)
}

// DynamoSGLang is the grammar of python3 -m dynamo.sglang: Dynamo's own flags,
// resolved first, then SGLang's ServerArgs (with Dynamo's extra --load-format
// choice).
func DynamoSGLang() *Table {
	own, ext := splitExtensions(dynamoRows())
	engine := extendChoices(sglangRows(), ext)
	return mustTable(&Table{
		Tool:    "python3 -m dynamo.sglang",
		Version: sglangVersion + " + ai-dynamo/dynamo main@010ba7526f5a2c5113bace712b45f193af0b3c0d",
		Source:  sglangSource + "; ai-dynamo/dynamo components/src/dynamo/sglang/args.py @010ba7526f5a2c5113bace712b45f193af0b3c0d, backend_args.py @02ae17cce37049e29399bb9fab260c55b68c46e5; see " + dynamoFile,
	}, append([]Flag{helpFlag()}, own...), engine)
}

// Keep returns, in order, the argv tokens of the args whose flag keep accepts.
// It builds the precompile argv out of a dynamo.sglang argv: Dynamo's own flags
// (and their --no- negations) drop out, SGLang's stay. A flag written as an
// abbreviation that keep would resolve differently (or not at all) is written
// out in full so the result parses the same way under keep.
func Keep(args []Arg, keep *Table) []string {
	var out []string
	for _, a := range args {
		f, ok := keep.Lookup(a.Option)
		if !ok || f.Name != a.Flag {
			continue
		}
		written, _, _ := splitExplicit(a.Tokens[0])
		if r, err := keep.resolve(written); err == nil && r.found && r.flag.Name == a.Flag && r.option == a.Option {
			out = append(out, a.Tokens...)
			continue
		}
		first := a.Option
		if _, value, explicit := splitExplicit(a.Tokens[0]); explicit {
			first += "=" + value
		}
		out = append(out, first)
		out = append(out, a.Tokens[1:]...)
	}
	return out
}
