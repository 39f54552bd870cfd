// Package cli wires the slurm, launcher and enroot packages into the
// wideep-launch command line. It owns argument routing and the single
// mapping from errors to process exit codes (exit.go).
package cli

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// Version is set at build time with -ldflags "-X .../cli.Version=...".
var Version = "dev"

// System is everything the commands take from the outside world. Tests build
// one by hand; main uses OSSystem.
type System struct {
	Stdin     io.Reader
	Stdout    io.Writer
	Stderr    io.Writer
	LookupEnv func(string) (string, bool)
	Environ   func() []string
	Now       func() time.Time
	// Executable is the path of this binary, re-executed for simulation stand-ins.
	Executable func() (string, error)
	// GPUModel names this node's GPU (nvidia-smi), for the DeepGEMM cache key.
	GPUModel func() (string, error)
}

// OSSystem is the System of the real process.
func OSSystem() System {
	return System{
		Stdin:      os.Stdin,
		Stdout:     os.Stdout,
		Stderr:     os.Stderr,
		LookupEnv:  os.LookupEnv,
		Environ:    os.Environ,
		Now:        time.Now,
		Executable: os.Executable,
		GPUModel:   nvidiaSMIModel,
	}
}

type command struct {
	name    string
	summary string
	hidden  bool
	run     func(sys System, args []string) error
}

// commands is filled by each command's file in its init, so adding a command
// touches only its own file.
var commands = map[string]command{}

func register(c command) {
	if _, dup := commands[c.name]; dup {
		panic("duplicate command " + c.name)
	}
	commands[c.name] = c
}

// Main runs wideep-launch with args (without the program name) and returns the
// process exit code.
func Main(args []string, sys System) int {
	err := route(sys, args)
	return exitCode(sys.Stderr, err)
}

func route(sys System, args []string) error {
	if len(args) == 0 {
		usage(sys.Stderr)
		return usageErrorf("no command given")
	}
	switch args[0] {
	case "help":
		if len(args) > 1 {
			// "help run" is "run --help".
			return route(sys, []string{args[1], "--help"})
		}
		usage(sys.Stdout)
		return nil
	case "-h", "--help":
		usage(sys.Stdout)
		return nil
	case "-v", "--version":
		args = []string{"version"}
	}
	c, ok := commands[args[0]]
	if !ok {
		usage(sys.Stderr)
		return usageErrorf("unknown command %q", args[0])
	}
	return c.run(sys, args[1:])
}

func usage(w io.Writer) {
	var b strings.Builder
	b.WriteString(`wideep-launch: one sbatch -> a disaggregated DeepSeek-R1 deployment
(NVIDIA Dynamo + SGLang, wide expert parallelism, prefill/decode split).

Usage:
  wideep-launch <command> [flags] [args]

Commands:
`)
	names := make([]string, 0, len(commands))
	for n, c := range commands {
		if !c.hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "  %-10s %s\n", n, commands[n].summary)
	}
	b.WriteString(`
Run 'wideep-launch <command> --help' for the flags of a command.

Exit codes: 0 ok; 2 usage, configuration or input error (nothing was started);
125 launcher failure; any other code is passed through from the process that
failed (128+N when it was killed by signal N).
`)
	fmt.Fprint(w, b.String())
}
