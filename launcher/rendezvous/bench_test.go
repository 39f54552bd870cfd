package rendezvous

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkRendezvousRelease8 measures, for 8 nodes on loopback, the time from
// the server reading the last node's join to the last node holding the address
// table (target ≤ 50 ms). ns/op is the whole rendezvous: server start, 8
// connects, joins, release.
func BenchmarkRendezvousRelease8(b *testing.B) {
	const n = 8
	cfg := rvConfig(n, time.Minute)
	members := make([]Member, n)
	for i := range members {
		members[i] = rvMember(cfg, i)
	}
	var total, worst time.Duration
	got := make([]time.Time, n)
	for b.Loop() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(b, err)
		s, err := Serve(context.Background(), ln, cfg)
		require.NoError(b, err)
		clients := make([]*Client, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i, m := range members {
			wg.Go(func() {
				clients[i], _, errs[i] = Join(context.Background(), ln.Addr().String(), cfg, m)
				got[i] = time.Now()
			})
		}
		wg.Wait()
		for _, err := range errs {
			require.NoError(b, err)
		}
		s.mu.Lock()
		last := s.lastArrival
		s.mu.Unlock()
		var released time.Time
		for _, t := range got {
			if t.After(released) {
				released = t
			}
		}
		d := released.Sub(last)
		total += d
		worst = max(worst, d)
		for _, c := range clients {
			c.Close()
		}
		s.Close()
	}
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "release-ns/op")
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "release-ms/op")
	b.ReportMetric(float64(worst.Microseconds())/1000, "worst-release-ms")
}

// BenchmarkRendezvousBarrier8 measures one barrier round for 8 connected
// nodes: all arrive together, all are released.
func BenchmarkRendezvousBarrier8(b *testing.B) {
	clients, _, _ := joinEveryone(b, 8)
	ctx := context.Background()
	round := 0
	for b.Loop() {
		round++ // barrier names are single-use
		for _, err := range barrierAll(ctx, clients, "round-"+strconv.Itoa(round), nil) {
			require.NoError(b, err)
		}
	}
}

// countingListener counts the bytes the server writes to its peers.
type countingListener struct {
	net.Listener
	written *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.written}, nil
}

type countingConn struct {
	net.Conn
	written *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// BenchmarkHeartbeatOverhead measures what keeping a job together costs node
// 0 once every node has joined: the CPU of the server (the peers run in
// another process) as a share of one core, and the heartbeat bytes it sends
// each peer per second, at the default peer timeout (a heartbeat every 3.3 s),
// for 8 nodes and for 1,024 (targets: well under 1 % of a core).
func BenchmarkHeartbeatOverhead(b *testing.B) {
	for _, peers := range []int{8, 1024} {
		b.Run(fmt.Sprintf("peers=%d", peers), func(b *testing.B) {
			const window = 10 * time.Second
			for b.Loop() {
				cfg := rvConfig(peers, time.Minute)
				cfg.Hosts = nil
				cfg.PeerTimeout = DefaultPeerTimeout
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				require.NoError(b, err)
				var written atomic.Int64
				s, err := Serve(context.Background(), countingListener{ln, &written}, cfg)
				require.NoError(b, err)
				cmd := helpers.Command(b, "peers", ln.Addr().String(), strconv.Itoa(peers), cfg.JobID, hex.EncodeToString(cfg.Key), cfg.PeerTimeout.String())
				out, err := cmd.StdoutPipe()
				require.NoError(b, err)
				cmd.Stderr = os.Stderr
				require.NoError(b, cmd.Start())
				line, err := bufio.NewReader(out).ReadString('\n')
				require.NoError(b, err, "the peers joined")
				require.Equal(b, "joined\n", line)

				before, bytes0, t0 := cpuTime(), written.Load(), time.Now()
				time.Sleep(window)
				cpu, sent, wall := cpuTime()-before, written.Load()-bytes0, time.Since(t0)

				require.NoError(b, cmd.Process.Signal(syscall.SIGTERM))
				_ = cmd.Wait()
				s.Close()
				b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "cpu-%-of-core")
				b.ReportMetric(float64(sent)/wall.Seconds()/float64(peers), "B/s/peer")
			}
		})
	}
}

// cpuTime is this process's user+system CPU so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
