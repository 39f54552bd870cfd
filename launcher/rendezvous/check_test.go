package rendezvous

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// oddOneOut is a Config.Check: every node must have node 0's "gpu" fact.
func oddOneOut(members []Member) map[int][]string {
	out := map[int][]string{}
	var want string
	for _, m := range members {
		if m.Index == 0 {
			want = m.Facts["gpu"]
		}
	}
	for _, m := range members {
		if got := m.Facts["gpu"]; got != want {
			out[m.Index] = append(out[m.Index], "gpu-model: "+got+" here, "+want+" on node 0")
		}
	}
	return out
}

// Node 0 judges the nodes side by side from their facts; what it finds is
// reported like any node's own preflight problems, to every node.
func TestRendezvousCheckAcrossNodes(t *testing.T) {
	const n = 4
	for name, tc := range map[string]struct {
		gpus []string
		own  map[int][]string
		want string // "" is a table
	}{
		"alike": {gpus: []string{"H100", "H100", "H100", "H100"}},
		"one node differs": {gpus: []string{"H100", "H100", "H200", "H100"},
			want: "preflight failed on 1 of 4 nodes:\n  node 2 (node3): gpu-model: H200 here, H100 on node 0"},
		"with a node's own problems": {gpus: []string{"H100", "H200", "H100", "H100"},
			own: map[int][]string{1: {"port 8000: already in use on this node"}, 3: {"executable etcd: not found in PATH"}},
			want: "preflight failed on 2 of 4 nodes:\n" +
				"  node 1 (node2): port 8000: already in use on this node\n" +
				"  node 1 (node2): gpu-model: H200 here, H100 on node 0\n" +
				"  node 3 (node4): executable etcd: not found in PATH"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := rvConfig(n, time.Minute)
			cfg.Check = oddOneOut
			_, addr := startRendezvous(t, cfg)
			members := make([]Member, n)
			for i := range members {
				members[i] = rvMember(cfg, i)
				members[i].Facts = map[string]string{"gpu": tc.gpus[i]}
				members[i].Problems = tc.own[i]
			}
			for i, r := range joinAll(t, addr, cfg, members) {
				if tc.want == "" {
					require.NoError(t, r.err, "node %d", i)
					assert.Equal(t, members, r.table, "node %d: the facts travel with the table", i)
					continue
				}
				require.Error(t, r.err, "node %d", i)
				assert.True(t, configVerdict(r.err), "node %d exits 2", i)
				assert.Equal(t, tc.want, r.err.Error(), "node %d", i)
			}
		})
	}
}
