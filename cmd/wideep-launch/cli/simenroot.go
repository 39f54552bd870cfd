package cli

import "github.com/wideep/wideep-launch/enroot/standin"

func init() {
	register(command{
		name:    "sim-enroot",
		summary: "stand-in for the enroot command (internal, for tests of --runtime enroot)",
		hidden:  true,
		run:     runSimEnroot,
	})
}

// runSimEnroot runs the enroot stand-in with the enroot command line in
// args, e.g. `wideep-launch sim-enroot start --env TOKEN wideep-42 sh`.
// Tests put a wrapper named enroot on PATH that execs this. Everything
// after "sim-enroot" belongs to enroot's grammar, and `start` execs the
// command, so its exit status and signals are the command's own.
func runSimEnroot(sys System, args []string) error {
	if code := standin.Main(args, sys.LookupEnv, sys.Stdout, sys.Stderr); code != 0 {
		return passedThrough(code)
	}
	return nil
}
