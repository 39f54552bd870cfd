package sim

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/wideep/wideep-launch/launcher/testport"
)

// Rank 0 test-binds its ports before it listens for good, as SGLang does: a
// rank >0 that connects to that short-lived socket is dropped without an
// answer, and must try again, not fail the worker. (Seen in CI: "closed the
// connection before acknowledging: connection reset by peer".)
func TestJoinRetriesAConnectionDroppedBeforeTheAnswer(t *testing.T) {
	port := testport.Window(t, 1)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	early, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	dropped := make(chan struct{})
	go func() {
		c, err := early.Accept()
		if err == nil {
			c.Close() // no answer
		}
		early.Close()
		close(dropped)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logf := func(string, ...any) {}
	joined := make(chan error, 1)
	go func() {
		r, err := joinRendezvous(ctx, addr, Hello{Rank: 1, NNodes: 2, Node: "gpu02"}, 20*time.Second, logf)
		if err == nil {
			r.Close()
		}
		joined <- err
	}()
	<-dropped
	r, err := serveRendezvous(ctx, "127.0.0.1", strconv.Itoa(port), Hello{Rank: 0, NNodes: 2, Node: "gpu01"}, 20*time.Second, logf)
	require.NoError(t, err, "rank 0 completes the rendezvous")
	defer r.Close()
	require.NoError(t, <-joined, "rank 1 tried again after the dropped connection")
	assert.Len(t, r.Record.Peers, 2)
}
