package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/wideep/wideep-launch/slurm"
)

func init() {
	register(command{name: "hostnames", summary: "expand Slurm hostlists, one name per line (scontrol show hostnames)", run: runHostnames})
	register(command{name: "hostlist", summary: "compress host names into a Slurm hostlist (scontrol show hostlist)", run: runHostlist})
}

const hostnamesDescription = `Print every host of the Slurm hostlist expressions, one per line, in the
order Slurm uses and with duplicates kept, like 'scontrol show hostnames'.
Several expressions are expanded one after the other.

  wideep-launch hostnames 'rack[1-2]-gpu[01-04],login'

An invalid expression is reported with the offending text and its offset;
nothing is printed then.`

const hostlistDescription = `Print the host names compressed into one Slurm hostlist, like 'scontrol
show hostlist': only the trailing number is grouped, order and duplicates are
kept (n1,n2,n3,n2 gives n[1-3,2]). Arguments may themselves be hostlists.
With '-', names are read from standard input, separated by white space.

  scontrol show hostnames "$SLURM_JOB_NODELIST" | wideep-launch hostlist -`

func runHostnames(sys System, args []string) error {
	fs := newFlagSet(sys, "hostnames", "wideep-launch hostnames EXPR...", hostnamesDescription)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageErrorf("hostnames: no hostlist given (see 'wideep-launch hostnames --help')")
	}
	// WriteHostnames checks every expression before printing anything and
	// streams the names instead of holding them all.
	return slurm.WriteHostnames(sys.Stdout, fs.Args()...)
}

func runHostlist(sys System, args []string) error {
	fs := newFlagSet(sys, "hostlist", "wideep-launch hostlist NAME...|-", hostlistDescription)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageErrorf("hostlist: no host names given (see 'wideep-launch hostlist --help')")
	}
	var names []string
	for _, arg := range fs.Args() {
		if arg != "-" {
			var err error
			if names, err = slurm.ExpandAppend(names, arg); err != nil {
				return err
			}
			continue
		}
		in, err := io.ReadAll(sys.Stdin)
		if err != nil {
			return fmt.Errorf("hostlist: reading standard input: %w", err)
		}
		before := len(names)
		if names, err = expandLines(names, string(in)); err != nil {
			return err
		}
		if len(names) == before {
			return usageErrorf("hostlist: no host names on standard input")
		}
	}
	_, err := fmt.Fprintln(sys.Stdout, slurm.Compress(names))
	return err
}

// expandLines appends the names of every white-space separated expression
// of text, naming the line of a bad one: standard input is often a file or
// another program's output, where the offset alone is hard to find.
func expandLines(names []string, text string) ([]string, error) {
	for n, line := range strings.Split(text, "\n") {
		for _, expr := range strings.Fields(line) {
			var err error
			if names, err = slurm.ExpandAppend(names, expr); err != nil {
				return names, fmt.Errorf("hostlist: standard input line %d: %w", n+1, err)
			}
		}
	}
	return names, nil
}
