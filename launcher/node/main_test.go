package node

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"

	"github.com/wideep/wideep-launch/launcher/sim"
	"github.com/wideep/wideep-launch/launcher/supervise"
)

// helperEnv makes the test binary, re-executed with it set, act as a helper
// program instead of running the tests (the os/exec tests' pattern). The
// only helper here is "sim": the simulation stand-ins, as `wideep-launch
// sim <argv>` runs them.
const helperEnv = "WIDEEP_TEST_HELPER"

// testReaper is the test binary's one reaper, shared by every node that
// runs in it, as a program has one.
var testReaper = supervise.NewReaper()

func TestMain(m *testing.M) {
	if name, ok := os.LookupEnv(helperEnv); ok {
		if name != "sim" || len(os.Args) < 2 || os.Args[1] != "sim" {
			fmt.Fprintf(os.Stderr, "unknown helper %q (args %s)\n", name, strings.Join(os.Args[1:], " "))
			os.Exit(2)
		}
		sigs := make(chan os.Signal, 2)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		os.Exit(sim.Main(os.Args[2:], os.LookupEnv, os.Stdout, os.Stderr, sigs))
	}
	os.Exit(m.Run())
}
