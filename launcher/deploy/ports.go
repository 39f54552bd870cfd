package deploy

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
)

// RendezvousPort derives a port in [base, base+10000) from a job id, so that
// two jobs sharing nodes (one numeric id apart) do not pick the same port.
// Non-numeric ids (offline plans) are hashed.
func RendezvousPort(base int, jobID string) int {
	if n, err := strconv.ParseUint(jobID, 10, 64); err == nil {
		return base + int(n%rendezvousPortRange)
	}
	h := fnv.New32a()
	h.Write([]byte(jobID))
	return base + int(h.Sum32()%rendezvousPortRange)
}

type portFlag struct {
	flag string
	port *int
}

func (s *Spec) portFlags() []portFlag {
	return []portFlag{
		{"http-port", &s.HTTPPort}, {"dist-init-port", &s.DistInitPort}, {"bootstrap-port", &s.BootstrapPort},
		{"sglang-port", &s.SGLangPort}, {"nccl-port", &s.NCCLPort}, {"etcd-client-port", &s.EtcdClientPort},
		{"etcd-peer-port", &s.EtcdPeerPort}, {"nats-port", &s.NATSPort},
	}
}

// derivedRendezvousPort is RendezvousPort for the job, moved past every
// port the plan binds or needs free.
func (s Spec) derivedRendezvousPort(jobID string) int {
	used := map[int]bool{}
	for _, k := range s.portKinds() {
		for _, u := range k.ports {
			used[u.Port.Port] = true
		}
	}
	port := RendezvousPort(RendezvousPortBase, jobID)
	for range rendezvousPortRange {
		if !used[port] {
			break
		}
		port++
		if port >= RendezvousPortBase+rendezvousPortRange {
			port = RendezvousPortBase
		}
	}
	return port
}

// Port is one TCP port a process needs on its node.
type Port struct {
	Port int `json:"port"`
	// Bind: the process listens there. False: the port must merely be free
	// on this node, because the program test-binds it at start and dies if
	// it is taken (SGLang checks its dist-init ports on every node of a
	// worker, but only the head listens).
	Bind bool `json:"bind"`
	// What needs it, and the flag that moves it.
	What string `json:"what"`
	Flag string `json:"flag"`
}

// Describe is how messages name the port: "SGLang tokenizer (--dist-init-port+1)".
func (p Port) Describe() string { return p.What + " (" + p.Flag + ")" }

// sglangPorts are the ports above --dist-init-port P that SGLang's
// PortArgs.init_new uses with DP attention (sglang python/sglang/srt/
// server_args.py, read at v0.5.4 to main of 2026): every node of the worker
// test-binds P..P+5 (and P+6 from 0.5.18 on, when nnodes > 1) and the
// head listens on them, and on P+13 for the DP handshake. The ports of the
// DP ranks themselves are random (picked on the head since 0.5.3.post2):
// nobody can check those in advance.
var sglangPorts = []struct {
	offset   int
	what     string
	headOnly bool
	since    version // zero: every version the model covers
	multi    bool    // only when nnodes > 1
}{
	{1, "SGLang tokenizer", false, version{}, false},
	{2, "SGLang detokenizer", false, version{}, false},
	{3, "SGLang RPC", false, version{}, false},
	{4, "SGLang metrics", false, version{}, false},
	{5, "SGLang scheduler input", false, version{}, false},
	{6, "SGLang load collector", false, version{0, 5, 18, 0}, true},
	{13, "SGLang DP-attention handshake", true, version{}, false},
}

// maxDistInitOffset is the highest port above --dist-init-port SGLang uses.
const maxDistInitOffset = 13

// rolePorts are the ports of one node of a role: its worker's and its
// precompile's (compile_deep_gemm runs a full SGLang server).
func (s Spec) rolePorts(r roleSpec, head bool) (worker, precompile []Port) {
	dpAttention := slices.ContainsFunc(s.roleArgs(r), func(a arg) bool { return a.flag == "--enable-dp-attention" })
	v, _ := parseVersion(s.SGLangVersion) // Validate has reported a bad one
	common := []Port{{Port: s.DistInitPort, Bind: head, What: "SGLang torch store", Flag: "--dist-init-port"}}
	if dpAttention {
		for _, sp := range sglangPorts {
			if sp.headOnly && !head || sp.multi && r.nodes < 2 || v.less(sp.since) {
				continue
			}
			common = append(common, Port{Port: s.DistInitPort + sp.offset, Bind: head, What: sp.what,
				Flag: fmt.Sprintf("--dist-init-port+%d", sp.offset)})
		}
		// Test-bound on every node with DP attention; the TP group's
		// NCCL bootstrap uses it.
		common = append(common, Port{Port: s.NCCLPort, What: "NCCL init", Flag: "--nccl-port"})
	}
	if r.role == RolePrefill && head {
		// The bootstrap server runs in the prefill head's tokenizer manager.
		common = append(common, Port{Port: s.BootstrapPort, Bind: true, What: "PD bootstrap server", Flag: "--bootstrap-port"})
	}
	// dynamo.sglang runs no HTTP server; compile_deep_gemm's server listens
	// on --port on every node (a dummy health server on the others).
	precompile = append(slices.Clone(common), Port{Port: s.SGLangPort, Bind: true, What: "SGLang HTTP server of the precompile", Flag: "--sglang-port"})
	return common, precompile
}

func (s Spec) infraPorts() (etcd, nats, frontend []Port) {
	if s.runsEtcd() {
		etcd = []Port{{Port: s.EtcdClientPort, Bind: true, What: "etcd clients", Flag: "--etcd-client-port"},
			{Port: s.EtcdPeerPort, Bind: true, What: "etcd peers", Flag: "--etcd-peer-port"}}
	}
	if s.runsNATS() {
		nats = []Port{{Port: s.NATSPort, Bind: true, What: "NATS", Flag: "--nats-port"}}
	}
	frontend = []Port{{Port: s.HTTPPort, Bind: true, What: "Dynamo frontend HTTP", Flag: "--http-port"}}
	return etcd, nats, frontend
}

// portUse is a port with the process it belongs to, for the checks.
type portUse struct {
	Port
	proc    string
	oneshot bool // the precompile, which has exited before the worker starts
}

// nodeKind is a set of nodes that use the same ports.
type nodeKind struct {
	desc  string
	ports []portUse
}

// portKinds lists the ports of one node of each kind: every node of a kind
// uses the same ports, so checking one of each is enough.
func (s Spec) portKinds() []nodeKind {
	infra := func() []portUse {
		etcd, nats, fe := s.infraPorts()
		var u []portUse
		for _, p := range etcd {
			u = append(u, portUse{Port: p, proc: ProcEtcd})
		}
		for _, p := range nats {
			u = append(u, portUse{Port: p, proc: ProcNATS})
		}
		for _, p := range fe {
			u = append(u, portUse{Port: p, proc: ProcFrontend})
		}
		return u
	}
	node := func(r roleSpec, head, withInfra bool) []portUse {
		var u []portUse
		if withInfra {
			u = infra()
		}
		worker, precompile := s.rolePorts(r, head)
		for _, p := range worker {
			u = append(u, portUse{Port: p, proc: string(r.role)})
		}
		if s.PlansPrecompile() {
			for _, p := range precompile {
				u = append(u, portUse{Port: p, proc: ProcPrecompile, oneshot: true})
			}
		}
		return u
	}
	var kinds []nodeKind
	for i, r := range s.roles() {
		desc := fmt.Sprintf("%s node rank 0", r.role)
		withInfra := i == 0 && s.InfraPlacement == InfraFirst
		if withInfra {
			desc += " (node 0, infra)"
		}
		kinds = append(kinds, nodeKind{desc, node(r, true, withInfra)})
		if r.nodes > 1 {
			kinds = append(kinds, nodeKind{fmt.Sprintf("%s node ranks 1-%d", r.role, r.nodes-1), node(r, false, false)})
		}
	}
	if s.InfraPlacement == InfraDedicated {
		kinds = append(kinds, nodeKind{"the dedicated infra node", infra()})
	}
	return kinds
}

func isWorker(proc string) bool { return proc == string(RolePrefill) || proc == string(RoleDecode) }

// checkPorts reports every port two processes of one node would collide on:
// both bind it, or one binds what the other needs free. The precompile has
// exited before the worker starts, so those two share; the control plane
// runs beside both.
func (s Spec) checkPorts(v *validator) {
	kinds := s.portKinds()
	if s.RendezvousPort != 0 {
		// The launchers meet on node 0, which is prefill worker 0's head.
		k := &kinds[0]
		k.ports = append(k.ports, portUse{Port: Port{Port: s.RendezvousPort, Bind: true, What: "the launcher rendezvous", Flag: "--rendezvous-port"},
			proc: "the launcher"})
		if !strings.Contains(k.desc, "node 0") {
			k.desc += " (node 0)"
		}
	}
	for _, k := range kinds {
		byPort := map[int][]portUse{}
		reported := map[[2]string]bool{}
		for _, u := range k.ports {
			for _, prev := range byPort[u.Port.Port] {
				if prev.oneshot && isWorker(u.proc) || u.oneshot && isWorker(prev.proc) {
					continue // the precompile has exited before the worker starts
				}
				if !prev.Bind && !u.Bind {
					continue // both only check it is free
				}
				key := [2]string{prev.Describe(), u.Describe()}
				if reported[key] {
					continue
				}
				reported[key] = true
				v.addf("port %d is used twice on %s: by %s (%s) and by %s (%s)",
					u.Port.Port, k.desc, prev.proc, key[0], u.proc, key[1])
			}
			byPort[u.Port.Port] = append(byPort[u.Port.Port], u)
		}
	}
}

// version is an SGLang release: major.minor.patch and the .postN number.
type version [4]int

// parseVersion reads "0.5.6.post2", "0.5.18" or "v0.5.18".
func parseVersion(s string) (version, error) {
	var v version
	rest := strings.TrimPrefix(strings.TrimSpace(s), "v")
	if p, post, ok := strings.Cut(rest, ".post"); ok {
		n, err := strconv.Atoi(post)
		if err != nil || n < 0 {
			return v, fmt.Errorf("want a version such as 0.5.6.post2")
		}
		rest, v[3] = p, n
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return v, fmt.Errorf("want a version such as 0.5.6.post2")
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return v, fmt.Errorf("want a version such as 0.5.6.post2")
		}
		v[i] = n
	}
	return v, nil
}

func (v version) less(w version) bool {
	for i := range v {
		if v[i] != w[i] {
			return v[i] < w[i]
		}
	}
	return false
}
