package cli

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/wideep/wideep-launch/launcher/sim"
)

func init() {
	register(command{
		name:    "sim",
		summary: "simulation stand-in for a Dynamo/SGLang process (internal, used by --simulate)",
		hidden:  true,
		run:     runSim,
	})
}

// runSim runs the stand-in for the original command line in args, e.g.
// `wideep-launch sim python3 -m dynamo.sglang --model-path /model/ ...`.
// Everything after "sim" belongs to the simulated program, so no flag of
// wideep-launch is parsed here.
func runSim(sys System, args []string) error {
	// Registered before the stand-in starts, so an early SIGTERM is a
	// graceful stop rather than the default death.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	if code := sim.Main(args, sys.LookupEnv, sys.Stdout, sys.Stderr, sigs); code != 0 {
		return passedThrough(code)
	}
	return nil
}
