// Grammar of enroot 4.1.2's command line, as the stand-in enforces it.
//
// Derived by reading (not copying) NVIDIA/enroot through the project's code
// index: enroot.in and src/docker.sh at commit
// 4325eb8c2a1be36e4d32c74061acbd0dd73365be (the 4.0 commit that added
// `enroot load`; the index maps no commit to the v4.1.2 tag, and the parser
// below is unchanged in 4.x per the project notes' reading of v4.1.2),
// src/runtime.sh at 08647f1eb7f784703f5c9a53f5ad2d84e83e99af, src/common.sh
// at 0034f62e32b161ff722f20513c27fdb9022802a5, bin/enroot-switchroot.c at
// 22832b0b59691fef35fa9ff51a4c2dc5c2cae61d.
//
// The rules (enroot.in, one function per command):
//   - `enroot CMD [options] [--] OPERANDS`. Options are read until "--"
//     (dropped), or the first word that does not start with '-' followed by
//     at least one character ("-" alone is an operand): options never come
//     after an operand.
//   - A value option takes the next word whatever it is ("-o -x" sets
//     "-x"), or the long form "--output=VALUE"; a missing or empty value is
//     a usage error. Flags have no "=" form.
//   - A usage error prints the command's usage on stdout and exits 1;
//     -h/--help prints it and exits 0. No "[ERROR]" line: usage errors do
//     not go through common::err.
//   - Errors found after parsing go through common::err: "[ERROR] MESSAGE"
//     on stderr (colours only on a terminal), exit 1.
//   - import: -a|--arch ARCH, -o|--output FILE; exactly one URI. An
//     existing output is refused ("File already exists: ABS"); without -o the
//     output is IMAGE+TAG.sqsh in the working directory ('/' becoming '+',
//     Docker Hub's "library/" dropped). mksquashfs writes the output in
//     place: a partial file is visible while it runs.
//   - create: -n|--name NAME, -f|--force; exactly one IMAGE. NAME defaults
//     to the image's file name without ".sqsh"; an existing NAME is refused
//     ("File already exists: DATA/NAME") unless -f or ENROOT_FORCE_OVERRIDE.
//   - start: -c|--conf FILE, -m|--mount SRC:DST[:TYPE:OPTS], -e|--env
//     NAME[=VALUE], -r|--root, --rc FILE, -w|--rw; then NAME|IMAGE and the
//     command. Mounts must match ^[^[:space:]]+:[^[:space:]]+$ and
//     environment entries ^[[:alpha:]_][[:alnum:]_]*(=|$), else "Invalid
//     argument: ENTRY". A bare NAME takes its value from enroot's own
//     environment (empty when unset).
//   - remove: -f|--force; at least one NAME. Without -f it reads a y/N
//     answer from stdin (the prompt shows only on a terminal) and, under
//     set -e, exits 1 at end of input.
//   - list: -f|--fancy; operands are ignored. Prints `ls -1` of the data
//     path.
//   - version prints the version; help prints the usage (exit 0); no
//     command or an unknown one prints the usage and exits 1.
package standin

import "strings"

// option is one option of a command.
type option struct {
	short, long string // "-o", "--output"; either may be empty
	value       bool
}

// syntax is one command's options and usage line.
type syntax struct {
	name    string
	usage   string
	options []option
	// operands says whether n operands are acceptable.
	operands func(n int) bool
}

var syntaxes = map[string]syntax{
	"import": {
		name:  "import",
		usage: "import [options] [--] URI",
		options: []option{
			{"-a", "--arch", true},
			{"-o", "--output", true},
		},
		operands: func(n int) bool { return n == 1 },
	},
	"create": {
		name:  "create",
		usage: "create [options] [--] IMAGE",
		options: []option{
			{"-f", "--force", false},
			{"-n", "--name", true},
		},
		operands: func(n int) bool { return n == 1 },
	},
	"start": {
		name:  "start",
		usage: "start [options] [--] NAME|IMAGE [COMMAND] [ARG...]",
		options: []option{
			{"-c", "--conf", true},
			{"-m", "--mount", true},
			{"-e", "--env", true},
			{"-r", "--root", false},
			{"", "--rc", true},
			{"-w", "--rw", false},
		},
		operands: func(n int) bool { return n >= 1 },
	},
	"remove": {
		name:     "remove",
		usage:    "remove [options] [--] NAME...",
		options:  []option{{"-f", "--force", false}},
		operands: func(n int) bool { return n >= 1 },
	},
	"list": {
		name:     "list",
		usage:    "list [options]",
		options:  []option{{"-f", "--fancy", false}},
		operands: func(int) bool { return true },
	},
}

// parsed is a command line read against a syntax. Options are keyed by
// their long name, values in order.
type parsed struct {
	opts     map[string][]string
	operands []string
}

func (p parsed) has(long string) bool { _, ok := p.opts[long]; return ok }

func (p parsed) last(long string) string {
	v := p.opts[long]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// parse reads args like enroot's option loop does. help is -h/--help; ok
// false is a usage error.
func (s syntax) parse(args []string) (p parsed, help, ok bool) {
	p.opts = map[string][]string{}
	for len(args) > 0 {
		a := args[0]
		if a == "-h" || a == "--help" {
			return p, true, true
		}
		if a == "--" {
			args = args[1:]
			break
		}
		o, inline, hasInline, found := s.lookup(a)
		if !found {
			if len(a) >= 2 && a[0] == '-' {
				return p, false, false // unknown option
			}
			break // first operand
		}
		switch {
		case !o.value:
			p.opts[o.long] = append(p.opts[o.long], "")
			args = args[1:]
		case hasInline:
			if inline == "" {
				return p, false, false
			}
			p.opts[o.long] = append(p.opts[o.long], inline)
			args = args[1:]
		default:
			if len(args) < 2 || args[1] == "" {
				return p, false, false
			}
			p.opts[o.long] = append(p.opts[o.long], args[1])
			args = args[2:]
		}
	}
	p.operands = args
	return p, false, s.operands(len(args))
}

// lookup finds the option a names: "-o", "--output", or "--output=VALUE"
// for value options.
func (s syntax) lookup(a string) (o option, inline string, hasInline, found bool) {
	for _, o := range s.options {
		if a == o.short && o.short != "" || a == o.long {
			return o, "", false, true
		}
		if o.value && strings.HasPrefix(a, o.long+"=") {
			return o, strings.TrimPrefix(a, o.long+"="), true, true
		}
	}
	return option{}, "", false, false
}

// mainUsage lists the commands, in the style of `enroot help`.
const mainUsage = `Usage: enroot COMMAND [ARG...]

Command line utility for manipulating container sandboxes
(wideep stand-in for enroot 4.1.2: import, create, start, remove, list).

 Commands:
   create [options] [--] IMAGE
   import [options] [--] URI
   list   [options]
   remove [options] [--] NAME...
   start  [options] [--] NAME|IMAGE [COMMAND] [ARG...]
   version
`
