package rendezvous

import (
	"context"
	"net"
	"strconv"
	"sync"
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
