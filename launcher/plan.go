package launcher

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
)

// Plan is the whole deployment mapped onto a node list: every node's role,
// worker, rank and processes. A Plan is read-only once built: nodes of the
// same kind share Ports slices, and a node's precompile and worker share
// their Env map; copy before changing anything.
type Plan struct {
	JobID         string       `json:"job_id"`
	Model         string       `json:"model"` // served model name
	Layout        string       `json:"layout"`
	GPUsPerNode   int          `json:"gpus_per_node"`
	Nodes         []NodePlan   `json:"nodes"`
	Workers       []WorkerPlan `json:"workers"`
	InfraNode     int          `json:"infra_node"`
	Frontend      string       `json:"frontend"` // http://<infra>:<http port>
	EtcdEndpoints string       `json:"etcd_endpoints"`
	NATSServer    string       `json:"nats_server,omitempty"` // "" with --no-nats
	// Rendezvous is where the launchers meet: node 0, RendezvousPort.
	Rendezvous     string `json:"rendezvous"`
	RendezvousPort int    `json:"rendezvous_port"`
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
	// start (the DeepGEMM precompile).
	Oneshot bool `json:"oneshot,omitempty"`
	// Ports the process binds (or may bind) on its node, for the preflight.
	Ports []int `json:"ports,omitempty"`
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
	CacheDir     string `json:"deepgemm_cache_dir"` // SGLANG_DG_CACHE_DIR of its processes
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

// arg is one SGLang flag with its values.
type arg struct {
	flag   string
	vals   []string
	joined bool // one argument "--flag=value"
}

// defaultArgs are the reference deployment's flags, in its order
// (dynamo-sglang-wideep-h100.md). Values the plan computes are "".
func defaultArgs(role Role) []arg {
	a := func(flag string, vals ...string) arg { return arg{flag: flag, vals: vals} }
	if role == RoleDecode {
		return []arg{
			a("--model-path", ""), a("--served-model-name", ""), a("--skip-tokenizer-init"),
			a("--disaggregation-mode", ""), a("--disaggregation-transfer-backend", "nixl"),
			a("--disaggregation-bootstrap-port", ""), a("--host", "0.0.0.0"),
			a("--dist-init-addr", ""), a("--nnodes", ""), a("--node-rank", ""),
			a("--tp-size", ""), a("--dp-size", ""), a("--enable-dp-attention"),
			a("--decode-log-interval", "1000"), a("--moe-a2a-backend", "deepep"),
			a("--prefill-round-robin-balance"), a("--page-size", "1"), a("--trust-remote-code"),
			a("--moe-dense-tp-size", "1"), a("--enable-dp-lm-head"), a("--disable-radix-cache"),
			a("--watchdog-timeout", "1000000"), a("--enable-two-batch-overlap"),
			a("--deepep-mode", "low_latency"), a("--mem-fraction-static", "0.835"),
			a("--ep-num-redundant-experts", "32"), a("--cuda-graph-bs", "128"),
			a("--port", ""), a("--nccl-port", ""),
		}
	}
	return []arg{
		a("--model-path", ""), a("--served-model-name", ""), a("--skip-tokenizer-init"),
		a("--disaggregation-mode", ""), a("--disaggregation-transfer-backend", "nixl"),
		a("--host", "0.0.0.0"), a("--disaggregation-bootstrap-port", ""),
		a("--dist-init-addr", ""), a("--nnodes", ""), a("--node-rank", ""),
		a("--tp-size", ""), a("--dp-size", ""), a("--enable-dp-attention"),
		a("--decode-log-interval", "1000"), a("--moe-a2a-backend", "deepep"),
		a("--load-balance-method", "round_robin"), a("--page-size", "1"), a("--trust-remote-code"),
		a("--moe-dense-tp-size", "1"), a("--enable-dp-lm-head"), a("--disable-radix-cache"),
		a("--watchdog-timeout", "1000000"), a("--enable-two-batch-overlap"),
		a("--deepep-mode", "normal"), a("--mem-fraction-static", "0.85"),
		a("--deepep-config", "/configs/deepep.json"), a("--ep-num-redundant-experts", "32"),
		a("--ep-dispatch-algorithm", "dynamic"), a("--eplb-algorithm", "deepseek"),
		a("--port", ""), a("--nccl-port", ""),
	}
}

// dynamoOnlyFlags are dynamo.sglang's own flags (Dynamo's SGLang reference
// guide and runtime args), which sglang.compile_deep_gemm would reject.
var dynamoOnlyFlags = map[string]bool{
	"--endpoint": true, "--use-sglang-tokenizer": true, "--custom-jinja-template": true,
	"--embedding-worker": true, "--multimodal-processor": true, "--multimodal-encode-worker": true,
	"--multimodal-worker": true, "--image-diffusion-worker": true, "--video-generation-worker": true,
	"--disagg-config": true, "--disagg-config-key": true, "--migration-limit": true,
	"--namespace": true, "--discovery-backend": true, "--request-plane": true,
	"--response-plane": true, "--event-plane": true, "--store-kv": true,
}

func isDynamoOnly(flag string) bool {
	return dynamoOnlyFlags[flag] || strings.HasPrefix(flag, "--dyn-")
}

// roleTemplate is everything a role's nodes have in common.
type roleTemplate struct {
	role                 Role
	workers, nodes       int
	tp, dp               int
	worker, precompile   []string // full argv with the per-node values blank
	wRank, wAddr         int      // argv indexes of the --node-rank and --dist-init-addr values
	pRank, pAddr         int
	cacheDir             string
	env                  [][2]string // the role's extra environment, in order
	headPorts, restPorts []int
}

func (s Spec) roleTemplate(r roleSpec) roleTemplate {
	v := &validator{}
	edits, _ := parseArgEdits(v, r) // Validate has reported bad entries
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

	t := roleTemplate{role: r.role, workers: r.workers, nodes: r.nodes, tp: tp, dp: dp}
	t.worker, t.wRank, t.wAddr = flatten([]string{"python3", "-m", "dynamo.sglang"}, args)
	sglangArgs := slices.DeleteFunc(slices.Clone(args), func(a arg) bool { return isDynamoOnly(a.flag) })
	t.precompile, t.pRank, t.pAddr = flatten([]string{"python3", "-m", "sglang.compile_deep_gemm"}, sglangArgs)
	t.cacheDir = path.Join(s.CacheDir, "deepgemm", s.cacheKey(t))
	for _, e := range r.env {
		k, val, _ := strings.Cut(e, "=")
		t.env = append(t.env, [2]string{k, val})
	}

	// Ports: --port and --nccl-port everywhere; the prefill bootstrap server
	// (Dynamo reserves the port on every prefill node); on the head the
	// torch store at the dist-init port and, with DP attention, SGLang's ZMQ
	// sockets at dist-init+1 .. dist-init+5+dp (PortArgs.init_new).
	base := []int{s.SGLangPort, s.NCCLPort}
	if r.role == RolePrefill {
		base = append(base, s.BootstrapPort)
	}
	t.restPorts = base
	t.headPorts = slices.Clone(base)
	for p := s.DistInitPort; p <= s.DistInitPort+5+dp && p <= 65535; p++ {
		t.headPorts = append(t.headPorts, p)
	}
	return t
}

// flatten turns args into an argv after prefix, and returns the indexes of
// the --node-rank and --dist-init-addr values (the only per-node ones).
func flatten(prefix []string, args []arg) (argv []string, rank, addr int) {
	argv = slices.Clone(prefix)
	rank, addr = -1, -1
	for _, a := range args {
		if a.joined {
			argv = append(argv, a.flag+"="+a.vals[0])
			continue
		}
		argv = append(argv, a.flag)
		switch a.flag {
		case "--node-rank":
			rank = len(argv)
		case "--dist-init-addr":
			addr = len(argv)
		}
		argv = append(argv, a.vals...)
	}
	return argv, rank, addr
}

// cacheKey names a role's DeepGEMM cache: kernels depend on the layout, the
// SGLang args and the image (DeepGEMM/SGLang versions), not on the node,
// the head or the ports.
func (s Spec) cacheKey(t roleTemplate) string {
	h := sha256.New()
	h.Write([]byte(s.Image))
	skipping := false
	for _, a := range t.precompile[3:] {
		if strings.HasPrefix(a, "--") {
			flag, _, _ := strings.Cut(a, "=")
			skipping = cacheKeyIgnores[flag]
		}
		if !skipping {
			h.Write([]byte{0})
			h.Write([]byte(a))
		}
	}
	return fmt.Sprintf("%s-tp%d-dp%d-%s", t.role, t.tp, t.dp, hex.EncodeToString(h.Sum(nil))[:8])
}

var cacheKeyIgnores = map[string]bool{
	"--node-rank": true, "--dist-init-addr": true, "--host": true, "--port": true, "--nccl-port": true,
	"--disaggregation-bootstrap-port": true,
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
		Nodes:         make([]NodePlan, len(b.hosts)),
		Workers:       make([]WorkerPlan, 0, s.PrefillWorkers+s.DecodeWorkers),
		InfraNode:     b.infra,
		Frontend:      fmt.Sprintf("http://%s:%d", b.name(b.infra), s.HTTPPort),
		EtcdEndpoints: b.etcd,
		NATSServer:    b.nats,
	}

	// One backing array for every node's argv: two allocations instead of
	// two per node, which is most of the plan's cost at thousands of nodes.
	perNode := len(b.tmpl[0].worker) + len(b.tmpl[1].worker)
	if s.Precompile {
		perNode += len(b.tmpl[0].precompile) + len(b.tmpl[1].precompile)
	}
	slab := make([]string, 0, perNode*len(b.hosts)/2+perNode)
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
		for w := 0; w < t.workers; w++ {
			headIdx := idx
			head := b.name(headIdx)
			distInit := head + ":" + strconv.Itoa(s.DistInitPort)
			wp := WorkerPlan{Role: t.role, Index: w, Nodes: make([]int, t.nodes), Head: head,
				DistInitAddr: distInit, TPSize: t.tp, DPSize: t.dp, CacheDir: t.cacheDir}
			for r := 0; r < t.nodes; r++ {
				wp.Nodes[r] = idx
				n := &p.Nodes[idx]
				*n = NodePlan{Index: idx, Host: b.hosts[idx], Role: t.role, Worker: w, NodeRank: r,
					Head: head, Infra: idx == b.infra}
				if b.addrs != nil {
					n.Addr = b.addrs[idx]
				}
				nproc := 1
				if s.Precompile {
					nproc++
				}
				if n.Infra {
					nproc += 3
				}
				n.Processes = make([]Process, 0, nproc)
				if n.Infra {
					n.Processes = b.infraProcesses(n.Processes)
				}
				env := b.workerEnv(t, idx)
				ports := t.restPorts
				if r == 0 {
					ports = t.headPorts
				}
				if s.Precompile {
					argv := clone(t.precompile)
					argv[t.pRank], argv[t.pAddr] = b.rankStrs[r], distInit
					n.Processes = append(n.Processes, Process{Name: ProcPrecompile, Argv: argv, Env: env,
						Oneshot: true, Ports: ports})
				}
				argv := clone(t.worker)
				argv[t.wRank], argv[t.wAddr] = b.rankStrs[r], distInit
				n.Processes = append(n.Processes, Process{Name: string(t.role), Argv: argv, Env: env, Ports: ports})
				idx++
			}
			p.Workers = append(p.Workers, wp)
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

// derivedRendezvousPort is RendezvousPort for the job, moved past every
// port the plan binds.
func (s Spec) derivedRendezvousPort(jobID string) int {
	used := map[int]bool{}
	for _, k := range s.portKinds() {
		for _, u := range k.ports {
			used[u.port] = true
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

func (b *planBuilder) infraProcesses(procs []Process) []Process {
	s := b.s
	host := b.hosts[b.infra]
	me := b.name(b.infra)
	if s.runsEtcd() {
		peer := fmt.Sprintf("http://%s:%d", me, s.EtcdPeerPort)
		procs = append(procs, Process{
			Name: ProcEtcd,
			Argv: []string{"etcd", "--name", host, "--data-dir", s.etcdDataDir(b.jobID),
				"--listen-client-urls", fmt.Sprintf("http://0.0.0.0:%d", s.EtcdClientPort),
				"--advertise-client-urls", b.etcd,
				"--listen-peer-urls", fmt.Sprintf("http://0.0.0.0:%d", s.EtcdPeerPort),
				"--initial-advertise-peer-urls", peer,
				"--initial-cluster", host + "=" + peer},
			Env:   map[string]string{},
			Ports: []int{s.EtcdClientPort, s.EtcdPeerPort},
		})
	}
	if s.runsNATS() {
		pr := Process{
			Name:  ProcNATS,
			Argv:  []string{"nats-server", "-js", "-p", strconv.Itoa(s.NATSPort), "-sd", s.natsStoreDir(b.jobID)},
			Env:   map[string]string{},
			Ports: []int{s.NATSPort},
		}
		if s.NATSMaxPayload != "" {
			// nats-server has no command-line flag for max_payload.
			conf := path.Join(s.localDir(b.jobID), "nats.conf")
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
		Ports: []int{s.HTTPPort},
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

func (b *planBuilder) workerEnv(t *roleTemplate, node int) map[string]string {
	env := make(map[string]string, 7+len(t.env))
	b.controlPlaneEnv(env, node)
	// Even without the precompile: kernels an earlier job compiled are reused.
	env["SGLANG_DG_CACHE_DIR"] = t.cacheDir
	for _, kv := range t.env {
		env[kv[0]] = kv[1]
	}
	return env
}

// portUse is a port with the process and flag it comes from, for messages.
type portUse struct {
	port       int
	proc, flag string
	oneshot    bool // the precompile
	worker     bool // the prefill/decode worker, started after the precompile exited
	dp, base   int  // dp > 0: one of SGLang's DP-attention ports above base, the --dist-init-port
}

func (u portUse) what() string {
	if u.dp > 0 {
		return fmt.Sprintf("%s+%d, SGLang DP attention with dp %d", u.flag, u.port-u.base, u.dp)
	}
	return u.flag
}

// nodeKind is a set of nodes that bind the same ports.
type nodeKind struct {
	desc  string
	ports []portUse
}

// portKinds lists the ports of one node of each kind: every node of a kind
// binds the same ports, so checking one of each is enough.
func (s Spec) portKinds() []nodeKind {
	infraPorts := func() []portUse {
		var u []portUse
		if s.runsEtcd() {
			u = append(u, portUse{port: s.EtcdClientPort, proc: ProcEtcd, flag: "--etcd-client-port"},
				portUse{port: s.EtcdPeerPort, proc: ProcEtcd, flag: "--etcd-peer-port"})
		}
		if s.runsNATS() {
			u = append(u, portUse{port: s.NATSPort, proc: ProcNATS, flag: "--nats-port"})
		}
		return append(u, portUse{port: s.HTTPPort, proc: ProcFrontend, flag: "--http-port"})
	}
	workerPorts := func(r roleSpec, head, oneshot bool) []portUse {
		name := string(r.role)
		if oneshot {
			name = ProcPrecompile
		}
		use := func(port int, flag string) portUse {
			return portUse{port: port, proc: name, flag: flag, oneshot: oneshot, worker: !oneshot}
		}
		u := []portUse{use(s.SGLangPort, "--sglang-port"), use(s.NCCLPort, "--nccl-port")}
		if r.role == RolePrefill {
			u = append(u, use(s.BootstrapPort, "--bootstrap-port"))
		}
		if head {
			edits, _ := parseArgEdits(&validator{}, r)
			_, dp, _ := s.sizes(r, edits)
			u = append(u, use(s.DistInitPort, "--dist-init-port"))
			for p := s.DistInitPort + 1; p <= s.DistInitPort+5+dp; p++ {
				// Formatted only if reported: there are hundreds at scale.
				pu := use(p, "--dist-init-port")
				pu.dp, pu.base = dp, s.DistInitPort
				u = append(u, pu)
			}
		}
		return u
	}
	node := func(r roleSpec, head, infra bool) []portUse {
		var u []portUse
		if infra {
			u = infraPorts()
		}
		u = append(u, workerPorts(r, head, false)...)
		if s.Precompile {
			u = append(u, workerPorts(r, head, true)...)
		}
		return u
	}
	var kinds []nodeKind
	for i, r := range s.roles() {
		desc := fmt.Sprintf("%s node rank 0", r.role)
		infra := i == 0 && s.InfraPlacement == InfraFirst
		if infra {
			desc += " (node 0, infra)"
		}
		kinds = append(kinds, nodeKind{desc, node(r, true, infra)})
		if r.nodes > 1 {
			kinds = append(kinds, nodeKind{fmt.Sprintf("%s node ranks 1-%d", r.role, r.nodes-1), node(r, false, false)})
		}
	}
	if s.InfraPlacement == InfraDedicated {
		kinds = append(kinds, nodeKind{"the dedicated infra node", infraPorts()})
	}
	return kinds
}

// checkPorts reports every port bound twice on one node.
func (s Spec) checkPorts(v *validator) {
	kinds := s.portKinds()
	if s.RendezvousPort != 0 {
		// The launchers meet on node 0, which is prefill worker 0's head.
		k := &kinds[0]
		k.ports = append(k.ports, portUse{port: s.RendezvousPort, proc: "the launcher rendezvous", flag: "--rendezvous-port"})
		if !strings.Contains(k.desc, "node 0") {
			k.desc += " (node 0)"
		}
	}
	for _, k := range kinds {
		byPort := map[int][]portUse{}
		reported := map[[2]string]bool{}
		for _, u := range k.ports {
			for _, prev := range byPort[u.port] {
				// The precompile has exited before the worker starts.
				if prev.worker && u.oneshot || prev.oneshot && u.worker {
					continue
				}
				key := [2]string{prev.what(), u.what()}
				if reported[key] {
					continue
				}
				reported[key] = true
				v.addf("port %d is used twice on %s: by %s (%s) and by %s (%s)",
					u.port, k.desc, prev.proc, key[0], u.proc, key[1])
			}
			byPort[u.port] = append(byPort[u.port], u)
		}
	}
}
