package supervise

import (
	"testing"

	"github.com/wideep/wideep-launch/launcher/testproc"
)

// helperEnv selects a helper command: the test binary re-executed with it set
// acts as that command (a fake worker, a fake daemon, ...) instead of running
// the tests, as in the standard library's os/exec tests (see
// launcher/testproc).
const helperEnv = "WIDEEP_TEST_HELPER"

// helpers are the helper commands, registered from init functions of the
// test files that use them.
var helpers = testproc.New(helperEnv)

// testReaper is the test binary's one Reaper, as a program has one.
var testReaper = NewReaper()

func TestMain(m *testing.M) { helpers.Main(m) }
