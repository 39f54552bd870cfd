package dgcache

import (
	"testing"

	"github.com/wideep/wideep-launch/launcher/testproc"
)

// helpers makes the test binary act as a helper command instead of running
// the tests (the os/exec helper-process pattern, see launcher/testproc), so
// that tests can race two real processes for an entry and SIGKILL one in the
// middle of a publish.
var helpers = testproc.New("WIDEEP_DGCACHE_HELPER")

func TestMain(m *testing.M) { helpers.Main(m) }
