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
	"github.com/wideep/wideep-launch/launcher/testproc"
)

// helperEnv makes the test binary, re-executed with it set, act as a helper
// program instead of running the tests (the os/exec tests' pattern, see
// launcher/testproc). The only helper here is "sim": the simulation
// stand-ins, as `wideep-launch sim <argv>` runs them.
const helperEnv = "WIDEEP_TEST_HELPER"

var helpers = testproc.New(helperEnv)

func init() {
	helpers.Register("sim", func(args []string) int {
		if len(args) < 1 || args[0] != "sim" {
			fmt.Fprintf(os.Stderr, "unknown helper %q (args %s)\n", "sim", strings.Join(args, " "))
			return 2
		}
		sigs := make(chan os.Signal, 2)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		return sim.Main(args[1:], os.LookupEnv, os.Stdout, os.Stderr, sigs)
	})
}

// testReaper is the test binary's one reaper, shared by every node that
// runs in it, as a program has one.
var testReaper = supervise.NewReaper()

func TestMain(m *testing.M) { helpers.Main(m) }
