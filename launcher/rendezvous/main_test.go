package rendezvous

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/wideep/wideep-launch/launcher/testproc"
)

// helpers makes the re-executed test binary a helper program instead of the
// tests (the os/exec tests' pattern, see launcher/testproc). The one helper,
// "peers", is a crowd of nodes in another process, so that a benchmark
// measures the server's CPU alone.
var helpers = testproc.New("WIDEEP_TEST_HELPER")

func init() { helpers.Register("peers", runPeers) }

func TestMain(m *testing.M) { helpers.Main(m) }

// runPeers joins nodes 0..n-1 of a rendezvous and keeps them connected
// (heartbeats only) until SIGTERM: args addr n job keyhex peer-timeout.
func runPeers(args []string) int {
	if len(args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: peers ADDR N JOB KEYHEX PEER_TIMEOUT")
		return 2
	}
	n, _ := strconv.Atoi(args[1])
	key, _ := hex.DecodeString(args[3])
	pt, _ := time.ParseDuration(args[4])
	cfg := Config{JobID: args[2], Key: key, Size: n, Deadline: time.Minute, PeerTimeout: pt}
	errs := make(chan error, n)
	clients := make([]*Client, n)
	for i := range n {
		go func() {
			c, _, err := Join(context.Background(), args[0], cfg, Member{Index: i, Host: fmt.Sprintf("peer%d", i), Addr: "10.0.0.1"})
			clients[i] = c
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	fmt.Println("joined")
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	<-sigs
	for _, c := range clients {
		c.Close()
	}
	return 0
}
