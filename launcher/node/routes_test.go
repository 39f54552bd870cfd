package node

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/launcher/deploy"
)

func TestPlannedRoutes(t *testing.T) {
	s := deploy.DefaultSpec()
	s.ResolveGPUs(0)
	s.PrefillWorkers, s.PrefillNodesPerWorker, s.DecodeNodesPerWorker = 2, 2, 2
	hosts := []string{"n1", "n2", "n3", "n4", "n5", "n6"}
	addrs := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"}
	plan, err := deploy.NewPlan(s, "7", hosts, addrs)
	require.NoError(t, err)
	routesOf := func(i int) ([]int, []string) {
		r := testRun()
		r.plan, r.me, r.env.Nodes = plan, plan.Nodes[i], hosts
		listens, routes := r.plannedRoutes()
		var ports []int
		for _, l := range listens {
			ports = append(ports, l.Port)
		}
		var to []string
		for _, rt := range routes {
			to = append(to, fmt.Sprintf("%d %s %s", rt.node, rt.addr, rt.what))
		}
		return ports, to
	}
	for name, tc := range map[string]struct {
		node    int
		listens []int
		routes  []string
	}{
		"prefill head listens on its store and bootstrap ports": {0, []int{29500, 30001}, nil},
		"prefill node rank 1 reaches its head's store and bootstrap": {1, nil, []string{
			"0 10.0.0.1:29500 SGLang torch store of prefill worker 0",
			"0 10.0.0.1:30001 PD bootstrap server of prefill worker 0"}},
		"second prefill worker, node rank 1": {3, nil, []string{
			"2 10.0.0.3:29500 SGLang torch store of prefill worker 1",
			"2 10.0.0.3:30001 PD bootstrap server of prefill worker 1"}},
		"decode head listens and reaches every prefill bootstrap": {4, []int{29500}, []string{
			"0 10.0.0.1:30001 PD bootstrap server of prefill worker 0",
			"2 10.0.0.3:30001 PD bootstrap server of prefill worker 1"}},
		"decode node rank 1": {5, nil, []string{
			"0 10.0.0.1:30001 PD bootstrap server of prefill worker 0",
			"2 10.0.0.3:30001 PD bootstrap server of prefill worker 1",
			"4 10.0.0.5:29500 SGLang torch store of decode worker 0"}},
	} {
		t.Run(name, func(t *testing.T) {
			listens, routes := routesOf(tc.node)
			assert.Equal(t, tc.listens, listens)
			assert.ElementsMatch(t, tc.routes, routes)
		})
	}
}
