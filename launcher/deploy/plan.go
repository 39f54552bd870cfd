package deploy

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/wideep/wideep-launch/launcher/dgcache"
)

// Plan is the whole deployment mapped onto a node list: every node's role,
// worker, rank and processes. A Plan is read-only once built: nodes of the
// same kind share Ports slices, and a node's precompile and worker share
// their Env map; copy before changing anything.
type Plan struct {
	JobID       string `json:"job_id"`
	Model       string `json:"model"` // served model name
	Layout      string `json:"layout"`
	GPUsPerNode int    `json:"gpus_per_node"`
	// SGLangVersion is the release whose port model the plan follows.
	SGLangVersion string `json:"sglang_version"`
	// Runtime, Image and Mounts say where the processes run.
	Runtime       string       `json:"runtime,omitempty"`
	Image         string       `json:"image,omitempty"`
	Mounts        []string     `json:"mounts,omitempty"`
	Nodes         []NodePlan   `json:"nodes"`
	Workers       []WorkerPlan `json:"workers"`
	InfraNode     int          `json:"infra_node"`
	Frontend      string       `json:"frontend"` // http://<infra>:<http port>
	EtcdEndpoints string       `json:"etcd_endpoints"`
	NATSServer    string       `json:"nats_server,omitempty"` // "" with --no-nats
	// Rendezvous is where the launchers meet: node 0, RendezvousPort.
	Rendezvous     string `json:"rendezvous"`
	RendezvousPort int    `json:"rendezvous_port"`
	// DeepGEMM is the plan's kernel sets, prefill's first; Precompile the
	// --precompile mode and DGCacheMode where the workers read kernels from.
	DeepGEMM    []KernelSet `json:"deepgemm"`
	Precompile  string      `json:"precompile"`
	DGCacheMode string      `json:"dg_cache_mode"`
}

// NodePlan is one node of the plan.
type NodePlan struct {
	Index int    `json:"index"`
	Host  string `json:"host"`
	Addr  string `json:"addr,omitempty"` // resolved address; "" in an offline plan
	Role  Role   `json:"role"`
	// Worker is the index of the node's worker within its role and NodeRank
	// its --node-rank; both are -1 on a dedicated infra node.
	Worker   int    `json:"worker"`
	NodeRank int    `json:"node_rank"`
	Head     string `json:"head"`  // the worker's head: host offline, address when resolved; "" on a dedicated infra node
	Infra    bool   `json:"infra"` // runs etcd/NATS/frontend
	// Processes in start order: etcd, nats, frontend, precompile, worker.
	Processes []Process `json:"processes"`
}

// Process is one program the launcher starts on a node.
type Process struct {
	Name string   `json:"name"` // etcd, nats, frontend, precompile, prefill, decode
	Argv []string `json:"argv"`
	// Env is what the launcher adds to the inherited environment.
	Env map[string]string `json:"env"`
	// Oneshot processes run to completion before the processes after them
	// start (the DeepGEMM precompile, which runs only when node 0 finds its
	// kernel set missing from the cache).
	Oneshot bool `json:"oneshot,omitempty"`
	// Ports the process binds, or needs free, on its node: the preflight
	// checks exactly these.
	Ports []Port `json:"ports,omitempty"`
	// Files the runtime writes (path → content) before starting the process.
	Files map[string]string `json:"files,omitempty"`
}

// WorkerPlan is one prefill or decode worker.
type WorkerPlan struct {
	Role         Role   `json:"role"`
	Index        int    `json:"index"`
	Nodes        []int  `json:"nodes"` // node indexes, by node rank
	Head         string `json:"head"`
	DistInitAddr string `json:"dist_init_addr"`
	TPSize       int    `json:"tp_size"`
	DPSize       int    `json:"dp_size"`
	KernelSet    string `json:"kernel_set"` // its DeepGEMM kernels: KernelSet.Name
}

// Process names.
const (
	ProcEtcd       = "etcd"
	ProcNATS       = "nats"
	ProcFrontend   = "frontend"
	ProcPrecompile = "precompile"
)

// NewPlan maps spec onto hosts, in order: prefill workers first, then decode
// workers, then the dedicated infra node if any. addrs is nil for an offline
// plan (heads and endpoints are host names); otherwise addrs[i] is hosts[i]'s
// resolved address. jobID names node-local paths. NewPlan is a pure function.
func NewPlan(spec Spec, jobID string, hosts []string, addrs []string) (*Plan, error) {
	v := &validator{}
	spec.validate(v, len(hosts))
	checkNodes(v, jobID, hosts, addrs)
	if !v.ok() {
		return nil, v.err()
	}
	b := newPlanBuilder(spec, jobID, hosts, addrs)
	return b.build(), nil
}

func checkNodes(v *validator, jobID string, hosts, addrs []string) {
	if jobID == "" || strings.ContainsFunc(jobID, func(r rune) bool {
		return !(r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) {
		v.addf("job id %q: want letters, digits, '.', '_' or '-' (it names node-local paths)", jobID)
	}
	if addrs != nil && len(addrs) != len(hosts) {
		v.addf("%d addresses for %d nodes", len(addrs), len(hosts))
	}
	seen := make(map[string]int, len(hosts))
	for i, h := range hosts {
		if h == "" {
			v.addf("node %d has an empty host name", i)
			continue
		}
		if j, dup := seen[h]; dup {
			v.addf("host %s is node %d and node %d: one launcher per node, each node once", h, j, i)
			continue
		}
		seen[h] = i
		if addrs != nil && i < len(addrs) && addrs[i] == "" {
			v.addf("node %d (%s) has no address", i, h)
		}
	}
}

// roleTemplate is everything a role's nodes have in common.
type roleTemplate struct {
	role               Role
	workers, nodes     int
	tp, dp             int
	worker, precompile []string // full argv with the per-node values blank
	wRank, wAddr       int      // argv indexes of the --node-rank and --dist-init-addr values
	pRank, pAddr       int
	kernels            KernelSet   // Entry, Key, Inputs; the compiler's nodes are filled in by build
	env                [][2]string // the role's extra environment, in order
	head, rest         struct{ worker, precompile []Port }
}

// roleArgs are the role's SGLang arguments: the reference's, with the
// plan's values and the user's edits.
func (s Spec) roleArgs(r roleSpec) []arg {
	edits, _ := parseArgEdits(&validator{}, r) // Validate has reported bad entries
	tp, dp, _ := s.sizes(r, edits)
	args := defaultArgs(r.role)
	set := func(flag, val string) {
		for i := range args {
			if args[i].flag == flag {
				args[i].vals = []string{val}
				return
			}
		}
	}
	set("--model-path", s.ModelPath)
	set("--served-model-name", s.ServedModelName)
	set("--disaggregation-mode", string(r.role))
	set("--disaggregation-bootstrap-port", strconv.Itoa(s.BootstrapPort))
	set("--nnodes", strconv.Itoa(r.nodes))
	set("--tp-size", strconv.Itoa(tp))
	set("--dp-size", strconv.Itoa(dp))
	set("--port", strconv.Itoa(s.SGLangPort))
	set("--nccl-port", strconv.Itoa(s.NCCLPort))
	for _, e := range edits {
		i := slices.IndexFunc(args, func(a arg) bool { return a.flag == e.flag })
		switch {
		case e.remove:
			args = slices.Delete(args, i, i+1)
		case i >= 0:
			args[i] = arg{flag: e.flag, vals: e.vals, joined: e.joined}
		default:
			args = append(args, arg{flag: e.flag, vals: e.vals, joined: e.joined})
		}
	}
	return args
}

func (s Spec) roleTemplate(r roleSpec) roleTemplate {
	edits, _ := parseArgEdits(&validator{}, r) // Validate has reported bad entries
	tp, dp, _ := s.sizes(r, edits)
	args := s.roleArgs(r)
	t := roleTemplate{role: r.role, workers: r.workers, nodes: r.nodes, tp: tp, dp: dp}
	t.worker, t.wRank, t.wAddr = flatten([]string{"python3", "-m", "dynamo.sglang"}, args)
	sglangArgs := slices.DeleteFunc(slices.Clone(args), func(a arg) bool { return !s.forPrecompile(a.flag) })
	t.precompile, t.pRank, t.pAddr = flatten([]string{"python3", "-m", "sglang.compile_deep_gemm"}, sglangArgs)
	for _, e := range r.env {
		k, val, _ := strings.Cut(e, "=")
		t.env = append(t.env, [2]string{k, val})
	}
	in := s.kernelKeyInputs(&t, t.precompile[3:])
	t.kernels = KernelSet{Role: r.role, Key: dgcache.Key(in), Inputs: in.Describe(), Workers: r.workers}
	t.kernels.Entry = path.Join(s.DGCacheRoot(), t.kernels.Name())
	t.precompile = append(t.precompile, s.timeoutArg()...)

	t.head.worker, t.head.precompile = s.rolePorts(r, true)
	t.rest.worker, t.rest.precompile = s.rolePorts(r, false)
	return t
}

type planBuilder struct {
	s            Spec
	jobID        string
	hosts, addrs []string
	tmpl         [2]roleTemplate
	infra        int
	etcd, nats   string // endpoints as exported
	rankStrs     []string
}

func newPlanBuilder(s Spec, jobID string, hosts, addrs []string) *planBuilder {
	b := &planBuilder{s: s, jobID: jobID, hosts: hosts, addrs: addrs}
	for i, r := range s.roles() {
		b.tmpl[i] = s.roleTemplate(r)
	}
	if s.InfraPlacement == InfraDedicated {
		b.infra = len(hosts) - 1
	}
	infra := b.name(b.infra)
	b.etcd = s.EtcdEndpoints
	if b.etcd == "" {
		b.etcd = fmt.Sprintf("http://%s:%d", infra, s.EtcdClientPort)
	}
	switch {
	case s.NoNATS:
	case s.NATSServer != "":
		b.nats = s.NATSServer
	default:
		b.nats = fmt.Sprintf("nats://%s:%d", infra, s.NATSPort)
	}
	maxNodes := max(s.PrefillNodesPerWorker, s.DecodeNodesPerWorker)
	b.rankStrs = make([]string, maxNodes)
	for i := range b.rankStrs {
		b.rankStrs[i] = strconv.Itoa(i)
	}
	return b
}

// name is how other nodes reach node i: its address, else its host name.
func (b *planBuilder) name(i int) string {
	if b.addrs != nil {
		return b.addrs[i]
	}
	return b.hosts[i]
}

func (b *planBuilder) build() *Plan {
	s := b.s
	p := &Plan{
		JobID:         b.jobID,
		Model:         s.ServedModelName,
		Layout:        s.Layout(),
		GPUsPerNode:   s.GPUsPerNode,
		SGLangVersion: s.SGLangVersion,
		Runtime:       s.Runtime,
		Image:         s.Image,
		Mounts:        s.ContainerMounts,
		Nodes:         make([]NodePlan, len(b.hosts)),
		Workers:       make([]WorkerPlan, 0, s.PrefillWorkers+s.DecodeWorkers),
		InfraNode:     b.infra,
		Frontend:      fmt.Sprintf("http://%s:%d", b.name(b.infra), s.HTTPPort),
		EtcdEndpoints: b.etcd,
		NATSServer:    b.nats,
		Precompile:    s.Precompile,
		DGCacheMode:   s.DGCacheMode,
	}

	// One backing array for every node's argv: two allocations instead of
	// two per node, which is most of the plan's cost at thousands of nodes.
	// Sized exactly: only the first worker of a role has a precompile argv.
	total := 0
	for ti := range b.tmpl {
		t := &b.tmpl[ti]
		total += t.workers * t.nodes * len(t.worker)
		if s.PlansPrecompile() && t.workers > 0 {
			total += t.nodes * len(t.precompile)
		}
	}
	slab := make([]string, 0, total)
	clone := func(src []string) []string {
		if cap(slab)-len(slab) < len(src) {
			slab = make([]string, 0, max(len(src), cap(slab)))
		}
		n := len(slab)
		slab = append(slab, src...)
		return slab[n:len(slab):len(slab)]
	}

	idx := 0
	for ti := range b.tmpl {
		t := &b.tmpl[ti]
		set := t.kernels
		for w := 0; w < t.workers; w++ {
			headIdx := idx
			head := b.name(headIdx)
			distInit := head + ":" + strconv.Itoa(s.DistInitPort)
			wp := WorkerPlan{Role: t.role, Index: w, Nodes: make([]int, t.nodes), Head: head,
				DistInitAddr: distInit, TPSize: t.tp, DPSize: t.dp, KernelSet: set.Name()}
			// The first worker of the layout compiles on a miss; the others
			// have no precompile process at all.
			compiles := w == 0 && s.PlansPrecompile()
			if compiles {
				set.Compiler, set.CompilerNodes = w, wp.Nodes
			}
			for r := 0; r < t.nodes; r++ {
				wp.Nodes[r] = idx
				n := &p.Nodes[idx]
				*n = NodePlan{Index: idx, Host: b.hosts[idx], Role: t.role, Worker: w, NodeRank: r,
					Head: head, Infra: idx == b.infra}
				if b.addrs != nil {
					n.Addr = b.addrs[idx]
				}
				nproc := 1
				if compiles {
					nproc++
				}
				if n.Infra {
					nproc += 3
				}
				n.Processes = make([]Process, 0, nproc)
				if n.Infra {
					n.Processes = b.infraProcesses(n.Processes)
				}
				env := b.workerEnv(t, idx, s.DGDir(b.jobID, b.hosts[idx], set.Name()))
				ports := t.rest
				if r == 0 {
					ports = t.head
				}
				if compiles {
					argv := clone(t.precompile)
					argv[t.pRank], argv[t.pAddr] = b.rankStrs[r], distInit
					penv := env
					if dir := s.CompileDir(b.jobID, b.hosts[idx], set.Name()); dir != env[EnvDGCacheDir] {
						penv = b.workerEnv(t, idx, dir)
					}
					n.Processes = append(n.Processes, Process{Name: ProcPrecompile, Argv: argv, Env: penv,
						Oneshot: true, Ports: ports.precompile})
				}
				argv := clone(t.worker)
				argv[t.wRank], argv[t.wAddr] = b.rankStrs[r], distInit
				n.Processes = append(n.Processes, Process{Name: string(t.role), Argv: argv, Env: env, Ports: ports.worker})
				idx++
			}
			p.Workers = append(p.Workers, wp)
		}
		if t.workers > 0 {
			p.DeepGEMM = append(p.DeepGEMM, set)
		}
	}
	if s.InfraPlacement == InfraDedicated {
		n := &p.Nodes[idx]
		*n = NodePlan{Index: idx, Host: b.hosts[idx], Role: RoleInfra, Worker: -1, NodeRank: -1, Infra: true}
		if b.addrs != nil {
			n.Addr = b.addrs[idx]
		}
		n.Processes = b.infraProcesses(make([]Process, 0, 3))
	}

	p.RendezvousPort = s.RendezvousPort
	if p.RendezvousPort == 0 {
		p.RendezvousPort = s.derivedRendezvousPort(b.jobID)
	}
	p.Rendezvous = b.name(0) + ":" + strconv.Itoa(p.RendezvousPort)
	return p
}

func (b *planBuilder) infraProcesses(procs []Process) []Process {
	s := b.s
	host := b.hosts[b.infra]
	me := b.name(b.infra)
	etcdPorts, natsPorts, frontendPorts := s.infraPorts()
	if s.runsEtcd() {
		peer := fmt.Sprintf("http://%s:%d", me, s.EtcdPeerPort)
		procs = append(procs, Process{
			Name: ProcEtcd,
			Argv: []string{"etcd", "--name", host, "--data-dir", s.JobEtcdDataDir(b.jobID),
				"--listen-client-urls", fmt.Sprintf("http://0.0.0.0:%d", s.EtcdClientPort),
				"--advertise-client-urls", b.etcd,
				"--listen-peer-urls", fmt.Sprintf("http://0.0.0.0:%d", s.EtcdPeerPort),
				"--initial-advertise-peer-urls", peer,
				"--initial-cluster", host + "=" + peer},
			Env:   map[string]string{},
			Ports: etcdPorts,
		})
	}
	if s.runsNATS() {
		pr := Process{
			Name:  ProcNATS,
			Argv:  []string{"nats-server", "-js", "-p", strconv.Itoa(s.NATSPort), "-sd", s.JobNATSStoreDir(b.jobID)},
			Env:   map[string]string{},
			Ports: natsPorts,
		}
		if s.NATSMaxPayload != "" {
			// nats-server has no command-line flag for max_payload.
			conf := path.Join(s.JobLocalDir(b.jobID), "nats.conf")
			pr.Argv = append(pr.Argv, "-c", conf)
			pr.Files = map[string]string{conf: "max_payload: " + s.NATSMaxPayload + "\n"}
		}
		procs = append(procs, pr)
	}
	env := make(map[string]string, 6)
	b.controlPlaneEnv(env, b.infra)
	procs = append(procs, Process{
		Name:  ProcFrontend,
		Argv:  []string{"python3", "-m", "dynamo.frontend", "--http-port=" + strconv.Itoa(s.HTTPPort)},
		Env:   env,
		Ports: frontendPorts,
	})
	return procs
}

// controlPlaneEnv is what every Dynamo process needs to find etcd and NATS
// and to advertise the right address on multi-NIC nodes.
func (b *planBuilder) controlPlaneEnv(env map[string]string, node int) {
	env["ETCD_ENDPOINTS"] = b.etcd
	if b.nats != "" {
		env["NATS_SERVER"] = b.nats
	}
	env["DYN_TCP_RPC_HOST"] = b.name(node)
	if b.s.Iface != "" {
		env["GLOO_SOCKET_IFNAME"] = b.s.Iface
		env["NCCL_SOCKET_IFNAME"] = b.s.Iface
		env["NVSHMEM_BOOTSTRAP_UID_SOCK_IFNAME"] = b.s.Iface
	}
}

func (b *planBuilder) workerEnv(t *roleTemplate, node int, dgDir string) map[string]string {
	env := make(map[string]string, 8+len(t.env))
	b.controlPlaneEnv(env, node)
	// Both names: images before SGLang 0.5.4 read only the old one.
	env[EnvDGCacheDir] = dgDir
	env[EnvDGCacheDirOld] = dgDir
	for _, kv := range t.env {
		env[kv[0]] = kv[1]
	}
	return env
}

// ProcessNames lists the node's processes in start order: "etcd,nats,frontend,precompile,prefill".
func (n NodePlan) ProcessNames() string {
	names := make([]string, len(n.Processes))
	for i, p := range n.Processes {
		names[i] = p.Name
	}
	return strings.Join(names, ",")
}

// CheckRole says whether node index has role ("auto" always fits): a
// node's asserted role that the plan contradicts is a layout mistake.
func (p *Plan) CheckRole(index int, role string) error {
	if role == "auto" || index < 0 || index >= len(p.Nodes) {
		return nil
	}
	me := p.Nodes[index]
	if Role(role) == me.Role {
		return nil
	}
	return &ConfigError{Err: fmt.Errorf("--role %s, but the plan gives node %d (%s) the role %s (worker %d, node rank %d); "+
		"use --role auto or fix the layout flags", role, index, me.Host, me.Role, me.Worker, me.NodeRank)}
}
