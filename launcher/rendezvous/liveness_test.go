package rendezvous

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// waitAbort waits for c's abort, with a bound that only a broken test hits.
func waitAbort(t *testing.T, c *Client, what string) *AbortError {
	t.Helper()
	select {
	case <-c.Aborted():
	case <-time.After(time.Minute):
		t.Fatalf("%s: no abort", what)
	}
	return c.Err()
}

func TestRendezvousFailureReachesEveryNode(t *testing.T) {
	clients, _, _ := joinEveryone(t, 8)
	clients[5].Abort("node 5 (node6): process decode exited with code 3", false)
	for i, c := range clients {
		if i == 5 {
			continue
		}
		ae := waitAbort(t, c, fmt.Sprintf("node %d", i))
		assert.Equal(t, "node 5 (node6): process decode exited with code 3", ae.Msg, "node %d", i)
		assert.Equal(t, 5, ae.Node)
		assert.False(t, ae.Stopped)
		assert.False(t, ae.Lost)
	}
	// The failing node learns that the job ends because of it; a second
	// failure does not replace the first on anybody, and its node learns
	// which came first (its own may be a consequence).
	first := clients[5].FirstAbort(10 * time.Second)
	require.NotNil(t, first)
	assert.Equal(t, 5, first.Node, "node 5's own abort came back: it was first")
	clients[2].Abort("node 2 (node3): process prefill exited with code 1", false)
	second := clients[2].FirstAbort(10 * time.Second)
	require.NotNil(t, second)
	assert.Equal(t, 5, second.Node, "node 2 is told node 5 failed first")
	assert.Contains(t, clients[7].Err().Msg, "node 5 (node6)")
}

func TestRendezvousStoppedNodeReachesEveryNode(t *testing.T) {
	clients, _, _ := joinEveryone(t, 3)
	clients[1].Abort("node 1 (node2) stopped by SIGTERM", true)
	for _, i := range []int{0, 2} {
		ae := waitAbort(t, clients[i], "node")
		assert.True(t, ae.Stopped, "node %d", i)
		assert.Equal(t, "node 1 (node2) stopped by SIGTERM", ae.Msg)
	}
}

// A node that stays connected but says nothing (its launcher hangs, its
// node is frozen) is declared lost after the peer timeout.
func TestRendezvousSilentNodeIsLost(t *testing.T) {
	cfg := rvConfig(3, time.Minute)
	cfg.PeerTimeout = 300 * time.Millisecond
	_, addr := startRendezvous(t, cfg)
	// Node 2 authenticates by hand and then never speaks again.
	silent, _ := rawJoin(t, addr, cfg, rvMember(cfg, 2))
	defer silent.Close()
	res := joinAll(t, addr, cfg, []Member{rvMember(cfg, 0), rvMember(cfg, 1)})
	began := time.Now()
	for i, r := range res {
		require.NoError(t, r.err, "node %d", i)
	}
	for i, r := range res {
		ae := waitAbort(t, r.c, "node")
		assert.True(t, ae.Lost, "node %d", i)
		assert.Equal(t, 2, ae.Node)
		assert.Contains(t, ae.Msg, "node 2 (node3) lost: silent for ")
	}
	t.Logf("declared lost %s after the others joined (peer timeout %s)", time.Since(began), cfg.PeerTimeout)
}

// Node 0 going silent (its launcher SIGSTOPped, its node frozen, the network
// cut) makes every client abort by itself.
func TestRendezvousClientLosesSilentNodeZero(t *testing.T) {
	cfg := rvConfig(2, 10*time.Second)
	cfg.PeerTimeout = 300 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	release := make(chan struct{})
	defer close(release)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		nonce := newNonce()
		c.Write(encode(message{Type: msgChallenge, Job: cfg.JobID, Nonce: nonce}))
		line, _ := readLine(bufio.NewReader(c), maxAuthLine)
		var join message
		_ = json.Unmarshal(line, &join)
		c.Write(encode(message{Type: msgWelcome, MAC: welcomeMAC(cfg.Key, cfg.JobID, nonce, join.Nonce)}))
		c.Write(encode(message{Type: msgTable, Job: cfg.JobID, Members: []Member{rvMember(cfg, 0), rvMember(cfg, 1)}}))
		<-release // and never a word again
	}()
	client, _, err := Join(context.Background(), ln.Addr().String(), cfg, rvMember(cfg, 1))
	require.NoError(t, err)
	defer client.Close()
	ae := waitAbort(t, client, "node 1")
	assert.True(t, ae.Lost)
	assert.Equal(t, 0, ae.Node)
	assert.Contains(t, ae.Msg, "node 0 (node1) lost: no word from it for ")
}

// Node 0's launcher dying closes every connection: every client learns at
// once, without waiting for the peer timeout.
func TestRendezvousClientLosesClosedNodeZero(t *testing.T) {
	cfg := rvConfig(3, time.Minute)
	cfg.PeerTimeout = time.Hour
	s, addr := startRendezvous(t, cfg)
	res := joinAll(t, addr, cfg, []Member{rvMember(cfg, 0), rvMember(cfg, 1), rvMember(cfg, 2)})
	// As a SIGKILL does: every socket closes, nobody says anything.
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	for i, r := range res[1:] {
		ae := waitAbort(t, r.c, "node")
		assert.True(t, ae.Lost, "node %d", i+1)
		assert.Contains(t, ae.Msg, "node 0 (node1) lost: its launcher's connection closed without a word")
	}
}
