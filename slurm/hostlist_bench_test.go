package slurm

import (
	"fmt"
	"io"
	"strings"
	"testing"
)

// bench1M names 999,424 hosts in ranges of at most 65,536, all inside the
// Slurm 22.05 grammar (hostlistbench/bench.sh times the same expression).
var bench1M = func() string {
	var parts []string
	for i := 1; i <= 15; i++ {
		parts = append(parts, fmt.Sprintf("p%02d-[00000-65535]", i))
	}
	return strings.Join(append(parts, "rack[1-2]-n[00000-8191]"), ",")
}()

const bench1MHosts = 15*65536 + 2*8192

func BenchmarkExpand1M(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		names, err := Expand(bench1M)
		if err != nil || len(names) != bench1MHosts {
			b.Fatalf("Expand: %d names, %v", len(names), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/bench1MHosts, "ns/name")
}

// BenchmarkExpandJob is the size a launcher meets: one job's node list.
func BenchmarkExpandJob(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Expand("gpu-a[001-064,066-127],gpu-b[01-08]"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCompress(b *testing.B) {
	names, err := Expand(bench1M)
	if err != nil {
		b.Fatal(err)
	}
	// Every other name, so the output has ~500,000 ranges rather than 17.
	var sparse []string
	for i := 0; i < len(names); i += 2 {
		sparse = append(sparse, names[i])
	}
	for name, hosts := range map[string][]string{"1M-contiguous": names, "500k-gaps": sparse} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if Compress(hosts) == "" {
					b.Fatal("empty")
				}
			}
		})
	}
}

// BenchmarkWriteHostnames1M is `wideep-launch hostnames` without the process.
func BenchmarkWriteHostnames1M(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if err := WriteHostnames(io.Discard, bench1M); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/bench1MHosts, "ns/name")
}
