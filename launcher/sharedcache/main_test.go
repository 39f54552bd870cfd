package sharedcache

import (
	"testing"

	"github.com/wideep/wideep-launch/launcher/testproc"
)

// helpers makes the test binary act as a helper command instead of running
// the tests (the os/exec helper-process pattern, see launcher/testproc), so
// a test can SIGKILL a real process that holds a lock.
var helpers = testproc.New("WIDEEP_SHAREDCACHE_HELPER")

func TestMain(m *testing.M) { helpers.Main(m) }
