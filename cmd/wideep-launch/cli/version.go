package cli

import (
	"fmt"
	"runtime"
)

func init() {
	register(command{name: "version", summary: "print the version and exit", run: runVersion})
}

func runVersion(sys System, args []string) error {
	fs := newFlagSet(sys, "version", "wideep-launch version", "Print the version of wideep-launch and the Go runtime it was built with.")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageErrorf("version takes no arguments (got %q)", fs.Arg(0))
	}
	_, err := fmt.Fprintf(sys.Stdout, "wideep-launch %s (%s %s/%s)\n", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}
