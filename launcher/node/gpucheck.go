package node

import (
	"fmt"
	"slices"

	"github.com/wideep/wideep-launch/launcher/preflight"
	"github.com/wideep/wideep-launch/launcher/rendezvous"
)

// factGPUModel is the Member fact carrying a node's GPU model and memory.
const factGPUModel = preflight.CheckGPUModel

// namedChecks fills in what the fabric and GPU checks need. A GPU node
// checks its own fabric ("/" unless told otherwise) and asks nvidia-smi; a
// simulated node asks the stand-in nvidia-smi and has no fabric to check,
// unless it is given a fake tree to read.
func (r *run) namedChecks(cfg *preflight.Config) {
	o := r.n.Options
	cfg.Skip = o.SkipChecks
	cfg.Sysroot = o.PreflightSysroot
	if r.n.Runtime.UsesGPUs() {
		cfg.Fabric = true
		// On the node itself: the enroot container does not exist yet,
		// and the GPUs and driver are the host's anyway.
		cfg.NvidiaSMI = preflight.HostNvidiaSMI
		return
	}
	cfg.Fabric = o.PreflightSysroot != ""
	cfg.MadeUpPIDs = o.PreflightSysroot == ""
	cfg.NvidiaSMI = preflight.SimNvidiaSMI(r.host, cfg.GPUs, r.n.LookupEnv)
}

// crossCheck runs on node 0 once the nodes have joined: every node of one
// worker must have the same GPU model and memory (tensor parallelism across
// unlike GPUs runs at the slowest one's pace, or not at all).
func (r *run) crossCheck(members []rendezvous.Member) map[int][]string {
	if slices.Contains(r.n.Options.SkipChecks, preflight.CheckGPUModel) {
		return nil
	}
	var order []string
	workers := map[string][]preflight.NodeGPU{}
	for _, m := range members {
		model := m.Facts[factGPUModel]
		if m.Index < 0 || m.Index >= len(r.offline.Nodes) || model == "" {
			continue
		}
		np := r.offline.Nodes[m.Index]
		if np.Worker < 0 {
			continue
		}
		w := fmt.Sprintf("%s worker %d", np.Role, np.Worker)
		if _, ok := workers[w]; !ok {
			order = append(order, w)
		}
		workers[w] = append(workers[w], preflight.NodeGPU{Index: m.Index,
			Name: fmt.Sprintf("node %d (%s)", m.Index, np.Host), Model: model})
	}
	out := map[int][]string{}
	for _, w := range order {
		for i, p := range preflight.MixedGPUs(w, workers[w]) {
			out[i] = append(out[i], p)
		}
	}
	return out
}
