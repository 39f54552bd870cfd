package rendezvous

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func testKey(secret string) []byte { return deriveKey("secret", secret) }

// rawJoin authenticates by hand as m, the way a node's client does, and
// returns the connection after the server's welcome, with what it said.
func rawJoin(t *testing.T, addr string, cfg Config, m Member) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	br := bufio.NewReader(conn)
	ch := readMsg(t, br)
	require.Equal(t, msgChallenge, ch.Type)
	nonce := newNonce()
	_, err = conn.Write(encode(message{Type: msgJoin, Job: cfg.JobID, Member: &m, Nonce: nonce,
		MAC: joinMAC(cfg.Key, cfg.JobID, m, ch.Nonce, nonce)}))
	require.NoError(t, err)
	w := readMsg(t, br)
	require.Equal(t, msgWelcome, w.Type, "%+v", w)
	require.True(t, validMAC(w.MAC, welcomeMAC(cfg.Key, cfg.JobID, ch.Nonce, nonce)), "the server proves it knows the key")
	return conn, br
}

func readMsg(t *testing.T, br *bufio.Reader) message {
	t.Helper()
	line, err := readLine(br, maxClientLine)
	require.NoError(t, err)
	var m message
	require.NoError(t, json.Unmarshal(line, &m))
	return m
}

// A handshake captured on the wire is worth nothing on another connection:
// the server's nonce is new on each.
func TestRendezvousReplayedHandshakeRejected(t *testing.T) {
	cfg := rvConfig(2, time.Minute)
	_, addr := startRendezvous(t, cfg)
	m := rvMember(cfg, 1)

	// The eavesdropped exchange: a genuine join for the first challenge.
	first, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	br := bufio.NewReader(first)
	ch := readMsg(t, br)
	nonce := newNonce()
	captured := encode(message{Type: msgJoin, Job: cfg.JobID, Member: &m, Nonce: nonce,
		MAC: joinMAC(cfg.Key, cfg.JobID, m, ch.Nonce, nonce)})
	first.Close()

	replay, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer replay.Close()
	rbr := bufio.NewReader(replay)
	require.Equal(t, msgChallenge, readMsg(t, rbr).Type)
	_, err = replay.Write(captured)
	require.NoError(t, err)
	got := readMsg(t, rbr)
	assert.Equal(t, msgReject, got.Type)
	assert.Contains(t, got.Error, "authentication failed")

	// The real node 1 is not locked out by the replay.
	res := joinAll(t, addr, cfg, []Member{rvMember(cfg, 0), m})
	for i, r := range res {
		assert.NoError(t, r.err, "node %d", i)
	}
}

// A peer that trickles bytes gets no more time than one that sends nothing:
// one deadline for the whole authentication.
func TestRendezvousSlowLorisDropped(t *testing.T) {
	cfg := rvConfig(2, time.Minute)
	_, addr := startRendezvous(t, cfg)
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	br := bufio.NewReader(conn)
	require.Equal(t, msgChallenge, readMsg(t, br).Type)
	began := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		// One byte every 100 ms, never a whole line.
		for {
			if _, err := conn.Write([]byte(" ")); err != nil {
				closed <- time.Since(began)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	go func() {
		_, _ = br.ReadByte() // EOF when the server hangs up
		closed <- time.Since(began)
	}()
	select {
	case d := <-closed:
		assert.GreaterOrEqual(t, d, authTimeout/2, "it had the authentication time")
	case <-time.After(4 * authTimeout):
		t.Fatal("a slow-loris peer kept its connection past the authentication deadline")
	}
}

// A line longer than an unauthenticated peer may send is refused.
func TestRendezvousOversizedJoinRefused(t *testing.T) {
	cfg := rvConfig(2, time.Minute)
	_, addr := startRendezvous(t, cfg)
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	br := bufio.NewReader(conn)
	require.Equal(t, msgChallenge, readMsg(t, br).Type)
	big := make([]byte, 2*maxAuthLine)
	for i := range big {
		big[i] = 'x'
	}
	_, _ = conn.Write(big)
	_ = conn.SetReadDeadline(time.Now().Add(2 * authTimeout))
	_, err = br.ReadByte()
	assert.Error(t, err, "the server hung up")
}

// 1,000 idle connections do not keep the job's nodes out, nor slow them
// down much: the oldest unauthenticated ones make room.
func TestRendezvousIdleFloodDoesNotLockNodesOut(t *testing.T) {
	const n = 8
	cfg := rvConfig(n, time.Minute)
	_, addr := startRendezvous(t, cfg)
	var flood []net.Conn
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 1000 {
		wg.Go(func() {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				mu.Lock()
				flood = append(flood, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range flood {
			c.Close()
		}
	})
	require.Greater(t, len(flood), 900, "the flood connected")

	began := time.Now()
	members := make([]Member, n)
	for i := range members {
		members[i] = rvMember(cfg, i)
	}
	for i, r := range joinAll(t, addr, cfg, members) {
		require.NoError(t, r.err, "node %d", i)
	}
	t.Logf("8 nodes joined in %s beside %d idle connections", time.Since(began), len(flood))
	assert.Less(t, time.Since(began), authTimeout, "the nodes did not wait for the idle connections to time out")
}

func TestLoadKey(t *testing.T) {
	unset := func(string) (string, bool) { return "", false }
	secret := "0123456789abcdef0123456789abcdef"
	env := func(k string) (string, bool) { return secret, k == SecretEnv }

	derived, from, err := LoadKey(unset, "", "4242", "0")
	require.NoError(t, err)
	assert.Equal(t, KeyFromJobID, from)
	again, _, _ := LoadKey(unset, "", "4242", "0")
	assert.Equal(t, derived, again, "every node derives the same key")
	other, _, _ := LoadKey(unset, "", "4242", "1")
	assert.NotEqual(t, derived, other, "another step of the job")

	fromEnv, from, err := LoadKey(env, "", "4242", "0")
	require.NoError(t, err)
	assert.Equal(t, KeyFromEnv, from)
	assert.NotEqual(t, derived, fromEnv)
	assert.NotContains(t, string(fromEnv), secret, "the key is not the secret itself")

	dir := t.TempDir()
	good := filepath.Join(dir, "secret")
	require.NoError(t, os.WriteFile(good, []byte(secret+"\n"), 0o600))
	fromFile, from, err := LoadKey(unset, good, "4242", "0")
	require.NoError(t, err)
	assert.Equal(t, KeyFromFile, from)
	assert.Equal(t, fromEnv, fromFile, "the same secret, from either place, is the same key")

	for name, tc := range map[string]struct {
		mode    os.FileMode
		content string
		want    string
	}{
		"readable by others": {0o644, secret, "mode 0644 lets other users read it (chmod 600"},
		"readable by group":  {0o640, secret, "mode 0640 lets other users read it"},
		"too short":          {0o600, "short", "5 characters; use at least 16"},
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, name)
			require.NoError(t, os.WriteFile(p, []byte(tc.content), tc.mode))
			require.NoError(t, os.Chmod(p, tc.mode))
			_, _, err := LoadKey(unset, p, "4242", "0")
			require.Error(t, err)
			assert.Contains(t, err.Error(), "--secret-file "+p)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	_, _, err = LoadKey(func(k string) (string, bool) { return "tiny", k == SecretEnv }, "", "4242", "0")
	assert.ErrorContains(t, err, "WIDEEP_SECRET is 4 characters")
	_, _, err = LoadKey(unset, filepath.Join(dir, "missing"), "4242", "0")
	assert.ErrorContains(t, err, "no such file")
}

func TestRendezvousServerMustProveTheKey(t *testing.T) {
	// A listener that is not the job's node 0 (another user's, say) cannot
	// fake the welcome without the key.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	cfg := rvConfig(2, 5*time.Second)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write(encode(message{Type: msgChallenge, Job: cfg.JobID, Nonce: newNonce()}))
		br := bufio.NewReader(c)
		_, _ = readLine(br, maxAuthLine)
		c.Write(encode(message{Type: msgWelcome, MAC: "00"}))
		c.Write(encode(message{Type: msgTable, Job: cfg.JobID, Members: []Member{rvMember(cfg, 0), rvMember(cfg, 1)}}))
		time.Sleep(time.Second)
	}()
	_, _, err = Join(context.Background(), ln.Addr().String(), cfg, rvMember(cfg, 1))
	require.Error(t, err)
	assert.True(t, configVerdict(err))
	assert.Contains(t, err.Error(), "did not prove it knows job 4242's secret")
}
