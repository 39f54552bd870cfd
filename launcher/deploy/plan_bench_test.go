package deploy

import (
	"fmt"
	"testing"
)

// BenchmarkPlan4096 plans 64 prefill and 64 decode workers of 32 nodes each:
// 4,096 nodes, every node's argv and environment (target: ≤ 10 ms).
func BenchmarkPlan4096(b *testing.B) {
	s := spec8()
	s.PrefillWorkers, s.PrefillNodesPerWorker = 64, 32
	s.DecodeWorkers, s.DecodeNodesPerWorker = 64, 32
	hosts := make([]string, 4096)
	addrs := make([]string, len(hosts))
	for i := range hosts {
		hosts[i] = fmt.Sprintf("gpu%04d", i+1)
		addrs[i] = fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255)
	}
	for _, bc := range []struct {
		name  string
		addrs []string
	}{{"offline", nil}, {"resolved", addrs}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p, err := NewPlan(s, "123456", hosts, bc.addrs)
				if err != nil || len(p.Nodes) != len(hosts) {
					b.Fatalf("plan: %v", err)
				}
			}
		})
	}
}
