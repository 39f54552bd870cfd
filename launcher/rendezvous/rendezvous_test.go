package rendezvous

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/launcher/exitcode"
	"github.com/wideep/wideep-launch/launcher/sim/simtest"
)

func rvHosts(n int) []string {
	h := make([]string, n)
	for i := range h {
		h[i] = fmt.Sprintf("node%d", i+1)
	}
	return h
}

func rvConfig(n int, deadline time.Duration) Config {
	return Config{JobID: "4242", Key: testKey("4242"), Size: n, Hosts: rvHosts(n), Deadline: deadline}
}

func rvMember(cfg Config, i int) Member {
	return Member{Index: i, Host: cfg.Hosts[i], Addr: fmt.Sprintf("10.213.77.%d", i+1)}
}

// startRendezvous serves on a loopback port and returns its address.
func startRendezvous(t testing.TB, cfg Config) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s, err := Serve(context.Background(), ln, cfg)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s, ln.Addr().String()
}

type joined struct {
	c     *Client
	table []Member
	err   error
}

// joinAll joins every member concurrently, as the nodes of a job do.
func joinAll(t testing.TB, addr string, cfg Config, members []Member) []joined {
	t.Helper()
	out := make([]joined, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Go(func() {
			c, table, err := Join(context.Background(), addr, cfg, m)
			out[i] = joined{c, table, err}
		})
	}
	wg.Wait()
	for _, j := range out {
		if j.c != nil {
			t.Cleanup(j.c.Close)
		}
	}
	return out
}

func joinEveryone(t testing.TB, n int) ([]*Client, *Server, Config) {
	t.Helper()
	cfg := rvConfig(n, time.Minute)
	s, addr := startRendezvous(t, cfg)
	members := make([]Member, n)
	for i := range members {
		members[i] = rvMember(cfg, i)
	}
	res := joinAll(t, addr, cfg, members)
	clients := make([]*Client, n)
	for i, r := range res {
		require.NoError(t, r.err, "node %d", i)
		clients[i] = r.c
	}
	return clients, s, cfg
}

// barrierAll runs the same barrier on every client concurrently.
func barrierAll(ctx context.Context, clients []*Client, name string, problem map[int]string) []error {
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		if c == nil {
			continue
		}
		wg.Go(func() { errs[i] = c.Barrier(ctx, name, problem[i]) })
	}
	wg.Wait()
	return errs
}

func TestRendezvousAllNodesGetTheSameTable(t *testing.T) {
	const n = 8
	cfg := rvConfig(n, time.Minute)
	// Node 0's server starts after the others began trying: they retry.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	want := make([]Member, n)
	for i := range want {
		want[i] = rvMember(cfg, i)
	}
	results := make(chan []joined, 1)
	go func() { results <- joinAll(t, addr, cfg, want) }()

	ln, err = net.Listen("tcp", addr)
	require.NoError(t, err)
	s, err := Serve(context.Background(), ln, cfg)
	require.NoError(t, err)
	t.Cleanup(s.Close)

	res := <-results
	clients := make([]*Client, n)
	for i, r := range res {
		require.NoError(t, r.err, "node %d", i)
		assert.Equal(t, want, r.table, "node %d", i)
		clients[i] = r.c
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, name := range []string{"infra", "precompile"} {
		for i, err := range barrierAll(ctx, clients, name, nil) {
			assert.NoError(t, err, "barrier %s, node %d", name, i)
		}
	}

	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i, c := range clients {
		require.NoError(t, c.Report(ctx, json.RawMessage(fmt.Sprintf(`{"node":%d,"start":%q}`, i, start.Format(time.RFC3339)))))
	}
	got := s.Reports(ctx)
	require.Len(t, got, n)
	for i := range n {
		assert.JSONEq(t, fmt.Sprintf(`{"node":%d,"start":"2026-01-02T03:04:05Z"}`, i), string(got[i]))
	}
}

func TestRendezvousLateNodeNamed(t *testing.T) {
	const n, late = 8, 5
	// Long enough for seven loopback joins on a busy machine; the test takes
	// this long.
	cfg := rvConfig(n, time.Second)
	_, addr := startRendezvous(t, cfg)
	// Node 7's launcher has the wrong secret: the report says so where it
	// names node 7 as missing.
	wrong := cfg
	wrong.Key = testKey("another job's secret")
	_, _, err := Join(context.Background(), addr, wrong, rvMember(cfg, 7))
	require.Error(t, err)

	var members []Member
	for i := range n {
		if i != late && i != 7 {
			members = append(members, rvMember(cfg, i))
		}
	}
	res := joinAll(t, addr, cfg, members)
	for _, r := range res {
		require.Error(t, r.err)
		assert.Contains(t, r.err.Error(), "rendezvous failed: 2 of 8 nodes never arrived within 1s:\n")
		assert.Contains(t, r.err.Error(), "\n  node 5 (node6) never arrived\n")
		assert.Contains(t, r.err.Error(), "\n  node 7 (node8) never arrived (a connection from 127.0.0.1:")
		assert.Contains(t, r.err.Error(), "claiming node 7 was rejected: authentication failed for job 4242")
		assert.NotContains(t, r.err.Error(), "node 4 (node5)")
		assert.False(t, configVerdict(r.err), "a missing node is not a configuration error")
		assert.Equal(t, res[0].err.Error(), r.err.Error(), "every node gets the same report")
	}

	// The late node gets the same report instead of a timeout of its own.
	_, _, err = Join(context.Background(), addr, cfg, rvMember(cfg, late))
	require.Error(t, err)
	assert.Equal(t, res[0].err.Error(), err.Error())
}

func TestRendezvousWrongSecret(t *testing.T) {
	const n = 3
	cfg := rvConfig(n, time.Minute)
	var log simtest.SyncBuffer // the server logs from several goroutines
	cfg.Log = zerolog.New(&log)
	_, addr := startRendezvous(t, cfg)

	t.Run("secret", func(t *testing.T) {
		bad := cfg
		bad.Log = zerolog.Nop()
		bad.Key = testKey("secret-from-elsewhere")
		_, _, err := Join(context.Background(), addr, bad, rvMember(cfg, 1))
		require.Error(t, err)
		require.True(t, configVerdict(err), "%v", err)
		assert.Contains(t, err.Error(), "refused node 1 (node2)")
		assert.Contains(t, err.Error(), "authentication failed for job 4242: the job's secret (WIDEEP_SECRET or --secret-file) must be the same on every node")
		assert.Contains(t, log.String(), "rejected a connection", "the server logs the rejection")
	})
	t.Run("job id", func(t *testing.T) {
		bad := cfg
		bad.Log = zerolog.Nop()
		bad.JobID = "4243"
		_, _, err := Join(context.Background(), addr, bad, rvMember(cfg, 1))
		require.Error(t, err)
		require.True(t, configVerdict(err), "%v", err)
		assert.Contains(t, err.Error(), `serves job "4242", not job "4243"`)
	})
	for _, key := range [][]byte{cfg.Key, testKey("secret-from-elsewhere")} {
		assert.NotContains(t, log.String(), hex.EncodeToString(key), "no key is ever logged")
	}

	// The refused connections do not count: the honest nodes still meet.
	res := joinAll(t, addr, cfg, []Member{rvMember(cfg, 0), rvMember(cfg, 1), rvMember(cfg, 2)})
	for i, r := range res {
		require.NoError(t, r.err, "node %d", i)
		assert.Len(t, r.table, n)
	}
}

func TestRendezvousRejectsBadMembers(t *testing.T) {
	// One node so that the first join completes at once and the server's
	// state is known when the bad one arrives.
	cfg := rvConfig(1, time.Minute)
	_, addr := startRendezvous(t, cfg)
	res := joinAll(t, addr, cfg, []Member{rvMember(cfg, 0)})
	require.NoError(t, res[0].err)

	tests := map[string]struct {
		m    Member
		want string
	}{
		"index out of range": {Member{Index: 1, Host: "node2"}, "node index 1 out of range: the job has 1 nodes (0-0)"},
		"negative index":     {Member{Index: -1, Host: "node1"}, "node index -1 out of range"},
		"host mismatch":      {Member{Index: 0, Host: "node9"}, `node 0 claims to be host "node9", but the job's node list has "node1" at index 0`},
		"duplicate index":    {Member{Index: 0, Host: "node1"}, "node 0 already joined from 127.0.0.1:"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, _, err := Join(context.Background(), addr, cfg, tc.m)
			require.Error(t, err)
			assert.True(t, configVerdict(err), "%v", err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestRendezvousPreflightFailureReportedToAll(t *testing.T) {
	const n = 8
	cfg := rvConfig(n, time.Minute)
	_, addr := startRendezvous(t, cfg)
	members := make([]Member, n)
	for i := range members {
		members[i] = rvMember(cfg, i)
	}
	members[3].Problems = []string{"model path /models/dsr1: does not exist", "port 8000: already in use on this node"}
	members[6].Problems = []string{"executable etcd: not found in PATH"}

	res := joinAll(t, addr, cfg, members)
	want := "preflight failed on 2 of 8 nodes:\n" +
		"  node 3 (node4): model path /models/dsr1: does not exist\n" +
		"  node 3 (node4): port 8000: already in use on this node\n" +
		"  node 6 (node7): executable etcd: not found in PATH"
	for i, r := range res {
		require.Error(t, r.err, "node %d", i)
		require.True(t, configVerdict(r.err), "node %d exits 2", i)
		assert.Equal(t, want, r.err.Error(), "node %d", i)
		assert.Nil(t, r.table)
	}
}

func TestRendezvousBarrierProblem(t *testing.T) {
	clients, _, _ := joinEveryone(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errs := barrierAll(ctx, clients, "infra", map[int]string{0: "etcd not ready after 2m0s"})
	for i, err := range errs {
		require.Error(t, err, "node %d", i)
		// How many nodes were still on their way when node 0 arrived varies.
		assert.Regexp(t, `^barrier "infra" failed on 1 of 8 nodes( \([1-7] not there yet\))?:\n  node 0 \(node1\): etcd not ready after 2m0s$`, err.Error(), "node %d", i)
		assert.Equal(t, errs[0].Error(), err.Error(), "node %d gets the same verdict", i)
	}
}

// A problem fails the barrier at once: nobody waits for nodes still busy
// (a precompile can take half an hour) to hear the same verdict.
func TestRendezvousBarrierProblemDoesNotWait(t *testing.T) {
	clients, _, _ := joinEveryone(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	present := append([]*Client(nil), clients...)
	present[6] = nil // still precompiling, never arrives here
	errs := barrierAll(ctx, present, "precompile", map[int]string{2: "kernel cache missing"})
	for i, err := range errs {
		if i == 6 {
			continue
		}
		// A node that arrived gets the verdict as the answer; one still on
		// its way (how many varies) is told as an abort: the same text.
		var ve *VerdictError
		var ae *AbortError
		require.True(t, errors.As(err, &ve) || errors.As(err, &ae), "node %d: %T", i, err)
		assert.Contains(t, err.Error(), "not there yet", "decided before node 6 arrived")
		assert.NotContains(t, err.Error(), "did not arrive", "not by the deadline")
		assert.Contains(t, err.Error(), "node 2 (node3): kernel cache missing")
	}
}

// A node not at a barrier that fails (still compiling, dialling, slow) is
// told at once, not when it gets there: it stops now, and its log says why
// before a --kill-on-bad-exit SIGTERM can cut it short. A check the user
// has to fix stays exit 2 on the node told early too.
func TestRendezvousBarrierProblemTellsAbsentNodes(t *testing.T) {
	for name, tc := range map[string]struct {
		check    bool
		wantCode int
	}{
		"failure":       {false, exitcode.Launcher},
		"user's to fix": {true, exitcode.Input},
	} {
		t.Run(name, func(t *testing.T) {
			clients, _, _ := joinEveryone(t, 8)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var wg sync.WaitGroup
			errs := make([]error, len(clients))
			for i, c := range clients {
				if i == 6 {
					continue // busy elsewhere: it never calls the barrier
				}
				problem := map[int]string{2: "cannot reach node 4 (node5)"}[i]
				wg.Go(func() {
					if tc.check {
						errs[i] = c.CheckBarrier(ctx, "routes", problem)
					} else {
						errs[i] = c.Barrier(ctx, "routes", problem)
					}
				})
			}
			select {
			case <-clients[6].Aborted():
			case <-time.After(10 * time.Second):
				require.FailNow(t, "node 6 was not told")
			}
			wg.Wait()
			ae := clients[6].Err()
			require.NotNil(t, ae)
			assert.Equal(t, 2, ae.Node, "the first node with a problem")
			assert.Contains(t, ae.Msg, `barrier "routes" failed on 1 of 8 nodes`)
			assert.Contains(t, ae.Msg, "node 2 (node3): cannot reach node 4 (node5)")
			assert.False(t, ae.Stopped || ae.Lost)
			assert.Equal(t, tc.wantCode, ae.ExitCode())
			for i, err := range errs {
				if i == 6 {
					continue
				}
				require.Error(t, err, "node %d", i)
				assert.Contains(t, err.Error(), "node 2 (node3): cannot reach node 4 (node5)", "node %d", i)
				var coder exitcode.Coder
				require.ErrorAs(t, err, &coder, "node %d", i)
				assert.Equal(t, tc.wantCode, coder.ExitCode(), "node %d", i)
			}
			// The told node can still leave its last report.
			require.NoError(t, clients[6].Report(ctx, json.RawMessage(`{"phase":"routes"}`)))
		})
	}
}

func TestRendezvousBarrierDeadline(t *testing.T) {
	clients, _, _ := joinEveryone(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	present := append([]*Client(nil), clients...)
	present[6] = nil
	errs := barrierAll(ctx, present, "precompile", nil)
	for i, err := range errs {
		if i == 6 {
			continue
		}
		require.Error(t, err, "node %d", i)
		assert.Contains(t, err.Error(), `barrier "precompile" failed: 1 of 8 nodes did not arrive within`)
		assert.Contains(t, err.Error(), "node 6 (node7) did not arrive")
		assert.NotContains(t, err.Error(), "node 5 (node6)")
	}
}

// A launcher that dies drops its connection without a word: node 0 declares
// it lost and every other node learns it at once, whatever it was doing.
func TestRendezvousCrashedNodeAbortsTheJob(t *testing.T) {
	clients, _, _ := joinEveryone(t, 8)
	clients[4].conn.Close()
	want := "node 4 (node5) lost: its launcher's connection closed without a word (the launcher was killed, or its node went down)"
	for i, c := range clients {
		if i == 4 {
			continue
		}
		select {
		case <-c.Aborted():
		case <-time.After(time.Minute):
			t.Fatalf("node %d was not told", i)
		}
		ae := c.Err()
		require.NotNil(t, ae, "node %d", i)
		assert.Equal(t, want, ae.Msg, "node %d", i)
		assert.True(t, ae.Lost)
		assert.Equal(t, 4, ae.Node)
		// A barrier after the abort says the same.
		err := c.Barrier(context.Background(), "precompile", "")
		var got *AbortError
		require.ErrorAs(t, err, &got, "node %d", i)
		assert.Equal(t, want, got.Msg)
	}
}

// A node that says goodbye has left; nobody waits for it at a barrier, and
// the job goes on being decided.
func TestRendezvousNodeThatLeftFailsBarriers(t *testing.T) {
	clients, s, _ := joinEveryone(t, 8)
	clients[4].Close()
	clients[4] = nil
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, name := range []string{"infra", "precompile"} {
		for i, err := range barrierAll(ctx, clients, name, nil) {
			if i == 4 {
				continue
			}
			require.Error(t, err, "node %d", i)
			assert.Equal(t, fmt.Sprintf("barrier %q failed: node 4 (node5) left", name), err.Error())
		}
	}
	// Nobody waits for a timeline from the node that is gone.
	for i, c := range clients {
		if c != nil {
			require.NoError(t, c.Report(ctx, json.RawMessage(`{"phase":"wait"}`)), "node %d", i)
		}
	}
	assert.Len(t, s.Reports(ctx), 7)
	for i, c := range clients {
		if c != nil {
			assert.Nil(t, c.Err(), "node %d: a goodbye is no abort", i)
		}
	}
}

func TestRendezvousDisconnectBeforeEveryoneArrived(t *testing.T) {
	cfg := rvConfig(3, time.Minute)
	_, addr := startRendezvous(t, cfg)
	// Node 2 joins and dies at once; the server reads its join before the end
	// of the stream, whenever node 0 comes.
	conn, _ := rawJoin(t, addr, cfg, rvMember(cfg, 2))
	require.NoError(t, conn.Close())

	// Node 1 never comes, yet node 0 learns about node 2 without waiting for
	// the deadline.
	res := joinAll(t, addr, cfg, []Member{rvMember(cfg, 0)})
	require.Error(t, res[0].err)
	assert.Equal(t, "rendezvous failed: node 2 (node3) disconnected before every node arrived", res[0].err.Error())
}

func TestServerUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	cfg := rvConfig(2, 200*time.Millisecond)
	_, _, err = Join(context.Background(), addr, cfg, rvMember(cfg, 1))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "could not reach the server on node 0 (node1) at "+addr+" within 200ms")
	assert.Contains(t, err.Error(), "connection refused")
}

func TestConfigInvalid(t *testing.T) {
	_, _, err := Join(context.Background(), "127.0.0.1:1", Config{Size: 2, Hosts: []string{"a"}}, Member{})
	require.Error(t, err)
	for _, s := range []string{"no job id", "no job key", "1 host names for 2 nodes"} {
		assert.Contains(t, err.Error(), s)
	}
}

func TestRendezvousServeWithEndedContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(fmt.Errorf("stopped by SIGTERM"))
	s, err := Serve(ctx, ln, rvConfig(2, time.Minute))
	assert.Nil(t, s)
	assert.EqualError(t, err, "stopped by SIGTERM")
	_, err = net.Dial("tcp", ln.Addr().String())
	assert.Error(t, err, "the listener is closed")
}

// Node 0 stopping (signalled, or one of its processes ended) is no verdict on
// the others: they learn why, as an AbortError, instead of "connection lost".
func TestRendezvousNodeZeroStopping(t *testing.T) {
	cfg := rvConfig(2, time.Minute)
	s, addr := startRendezvous(t, cfg)
	all := joinAll(t, addr, cfg, []Member{rvMember(cfg, 0), rvMember(cfg, 1)})

	waiting := make(chan error, 1)
	go func() { waiting <- all[1].c.Barrier(context.Background(), "precompile", "") }()
	s.Stop("node 0 (node1) is stopping: process etcd exited")

	err := <-waiting
	var ae *AbortError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, "node 0 (node1) is stopping: process etcd exited", ae.Msg)
	assert.True(t, ae.Stopped)
	assert.Same(t, ae, all[1].c.Err())
}

// configVerdict says whether err is a verdict the user has to fix (exit 2).
func configVerdict(err error) bool {
	var ve *VerdictError
	return errors.As(err, &ve) && ve.Config && ve.ExitCode() == exitcode.Input
}

func TestRendezvousBarrierCarriesNodeZerosDecision(t *testing.T) {
	const n = 5
	clients, _, _ := joinEveryone(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got := make([]json.RawMessage, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, c := range clients {
		// Only node 0's payload counts: the others' is ignored.
		payload := json.RawMessage(fmt.Sprintf(`{"from":%d}`, i))
		wg.Go(func() { got[i], errs[i] = c.BarrierWith(ctx, "decide", "", payload) })
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i], "node %d", i)
		assert.JSONEq(t, `{"from":0}`, string(got[i]), "node %d gets node 0's decision", i)
	}
	// A later barrier without a payload releases with none.
	for i, err := range barrierAll(ctx, clients, "plain", nil) {
		assert.NoError(t, err, "node %d", i)
	}
}

// Node 0 tells every node news (READY) without anybody waiting for it, and
// sees every node's latest report without waiting for the others.
func TestRendezvousNoticesAndLatestReports(t *testing.T) {
	const n = 4
	clients, srv, _ := joinEveryone(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, clients[2].Report(ctx, json.RawMessage(`{"phase":"start"}`)))
	require.NoError(t, clients[2].Report(ctx, json.RawMessage(`{"phase":"serve"}`)))
	latest := srv.Latest()
	assert.Len(t, latest, 1, "only node 2 reported")
	assert.JSONEq(t, `{"phase":"serve"}`, string(latest[2]), "its last report")

	srv.Notify("ready", json.RawMessage(`{"url":"http://x:8000"}`))
	for i, c := range clients {
		select {
		case nt := <-c.Notices():
			assert.Equal(t, "ready", nt.Kind, "node %d", i)
			assert.JSONEq(t, `{"url":"http://x:8000"}`, string(nt.Payload), "node %d", i)
		case <-ctx.Done():
			require.FailNow(t, "no notice", "node %d", i)
		}
	}
	// The connection is still in step: a barrier works after the notice.
	for i, err := range barrierAll(ctx, clients, "after", nil) {
		assert.NoError(t, err, "node %d", i)
	}
}

// A node waiting at a barrier when the job aborts can still send its last
// report (why it stopped, how far it got): node 0's job summary needs it.
func TestRendezvousReportAfterAnAbortCutABarrierShort(t *testing.T) {
	clients, srv, _ := joinEveryone(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waited := make(chan error, 1)
	go func() { waited <- clients[1].Barrier(ctx, "precompile", "") }()
	time.Sleep(50 * time.Millisecond) // node 1 is at the barrier (if not, the abort reaches it there)
	clients[2].Abort("node 2 (h2): process decode exited with code 3", false)
	var ae *AbortError
	require.ErrorAs(t, <-waited, &ae)
	require.NoError(t, clients[1].Report(ctx, json.RawMessage(`{"phase":"failed"}`)))
	assert.JSONEq(t, `{"phase":"failed"}`, string(srv.Latest()[1]))
}
