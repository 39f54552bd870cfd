package node

import (
	"fmt"
	"slices"

	"github.com/wideep/wideep-launch/launcher/deploy"
	"github.com/wideep/wideep-launch/launcher/preflight"
	"github.com/wideep/wideep-launch/launcher/rendezvous"
)

// factGPUModel is the Member fact carrying a node's GPU model and memory.
const factGPUModel = preflight.CheckGPUModel

// factKernelGPU is the Member fact carrying the GPU model a node would key
// DeepGEMM kernels with (Spec.GPUModel).
const factKernelGPU = "kernel-gpu"

// GPUModelGiven is NodeRuntime.GPUModelFrom when the user named the GPU
// (--gpu-model): it then keys every role's kernels.
const GPUModelGiven = "--gpu-model"

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

// kernelGPUs is, per role, the GPU model of the node rank 0 of the role's
// first worker — the node that compiles the role's kernels — as that node
// told it at the rendezvous, so every node keys each role's kernels with
// the GPU they are built on, whatever its own (prefill and decode nodes may
// differ). nil when the user named the GPU. Node 0 warns of a worker whose
// GPU differs from its role's: it gets kernels built for another GPU, and
// DeepGEMM compiles its own at run time.
func (r *run) kernelGPUs(table []rendezvous.Member) map[deploy.Role]string {
	if r.n.GPUModelFrom == GPUModelGiven {
		return nil
	}
	gpuOf := func(i int) string {
		if i < 0 || i >= len(table) {
			return ""
		}
		return table[i].Facts[factKernelGPU]
	}
	models := map[deploy.Role]string{}
	for _, w := range r.offline.Workers {
		gpu := gpuOf(w.Nodes[0])
		first, seen := models[w.Role]
		if !seen {
			models[w.Role] = gpu
			continue
		}
		if r.idx == 0 && gpu != first {
			r.log.Warn().Str("worker", fmt.Sprintf("%s worker %d", w.Role, w.Index)).Str("gpu", gpu).Str("kernels_for", first).
				Msg("this worker's GPU differs from its role's first worker's: the DeepGEMM kernels it gets are built for the other; it compiles its own at run time")
		}
	}
	return models
}
