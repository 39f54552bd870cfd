package launcher

import (
	"fmt"
	"hash/fnv"
	"path"
	"strconv"
	"strings"

	"github.com/hashicorp/go-multierror"
	"github.com/spf13/pflag"
)

// Role is what a node does in the deployment.
type Role string

const (
	RolePrefill Role = "prefill"
	RoleDecode  Role = "decode"
	// RoleInfra is a dedicated node that runs only etcd, NATS and the frontend.
	RoleInfra Role = "infra"
)

// ParseRole accepts the role names a user can type (for example run --role).
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RolePrefill, RoleDecode, RoleInfra:
		return r, nil
	}
	return "", fmt.Errorf("unknown role %q (want prefill, decode or infra)", s)
}

// Where the infra services (etcd, NATS, frontend) run.
const (
	InfraFirst     = "first"     // on node 0, next to prefill worker 0's head
	InfraDedicated = "dedicated" // on one extra node, the last of the node list
)

// Defaults that other packages need to agree on.
const (
	DefaultGPUsPerNode = 8
	// DefaultNATSMaxPayload raises NATS's 1 MB default: with long inputs
	// Dynamo's NATS messages exceed 1 MB and the overflow surfaces only as a
	// request timeout (ai-dynamo/dynamo #9734; srt-slurm needed 24+ MB). 64 MB
	// is the most nats-server accepts without also raising max_pending.
	DefaultNATSMaxPayload = "64MB"
	natsMaxPending        = 64 << 20

	// RendezvousPortBase and rendezvousPortRange bound the port derived from
	// the job id: below Linux's ephemeral range (32768+), so an outgoing
	// connection on the node cannot be holding it.
	RendezvousPortBase  = 20000
	rendezvousPortRange = 10000
)

// Spec is the deployment: what to run, how many workers of each role, on
// which ports. It is independent of the nodes; NewPlan maps it onto them.
type Spec struct {
	ModelPath       string // inside the container, like the reference's /model/
	ServedModelName string
	Image           string // container image; "" runs on the host
	// GPUsPerNode 0 means "not given": call ResolveGPUs before planning.
	GPUsPerNode int

	PrefillWorkers        int
	PrefillNodesPerWorker int
	DecodeWorkers         int
	DecodeNodesPerWorker  int
	// TP and DP sizes per role; 0 derives them: tp = GPUs per node × nodes
	// per worker (divided by --pp-size when the role's args set one), dp = tp.
	PrefillTPSize, PrefillDPSize int
	DecodeTPSize, DecodeDPSize   int

	InfraPlacement string // InfraFirst or InfraDedicated

	HTTPPort       int // frontend --http-port
	DistInitPort   int // --dist-init-addr <head>:port
	BootstrapPort  int // --disaggregation-bootstrap-port
	SGLangPort     int // --port of every worker
	NCCLPort       int // --nccl-port of every worker
	EtcdClientPort int
	EtcdPeerPort   int
	NATSPort       int
	// RendezvousPort of the launchers on node 0; 0 derives it from the job id
	// (see RendezvousPort) so two jobs sharing nodes do not collide.
	RendezvousPort int

	Iface    string // network interface for addresses and GLOO/NCCL sockets; "" = default route
	CacheDir string // shared; DeepGEMM kernels go to <CacheDir>/deepgemm/<key>
	LogDir   string
	// LocalDir is node-local scratch; "%j" is replaced by the job id.
	LocalDir     string
	EtcdDataDir  string // "" = <LocalDir>/etcd
	NATSStoreDir string // "" = <LocalDir>/nats

	// Extra SGLang arguments per role, one argument per entry:
	// "--flag value...", "--flag=value", or "!--flag" to remove a default.
	PrefillArgs, DecodeArgs []string
	// Extra environment per role, KEY=VALUE.
	PrefillEnv, DecodeEnv []string

	EtcdEndpoints  string // external etcd: no etcd process is started
	NATSServer     string // external NATS: no nats-server is started
	NoNATS         bool   // Dynamo without NATS: none started, NATS_SERVER not exported
	NATSMaxPayload string // "" keeps nats-server's 1 MB default

	Precompile bool // run sglang.compile_deep_gemm on every worker node first
	// Simulate is carried for the runtime, which swaps the Python processes for
	// stand-ins; the plan does not depend on it.
	Simulate bool

	// NodeSource names where the node list came from (SLURM_STEP_NODELIST,
	// --nodelist), for error messages.
	NodeSource string
}

// DefaultSpec is the reference deployment: 1 prefill worker on 4 nodes and 1
// decode worker on 4 nodes, infra on node 0.
func DefaultSpec() Spec {
	return Spec{
		ModelPath:             "/model/",
		ServedModelName:       "deepseek-ai/DeepSeek-R1",
		PrefillWorkers:        1,
		PrefillNodesPerWorker: 4,
		DecodeWorkers:         1,
		DecodeNodesPerWorker:  4,
		InfraPlacement:        InfraFirst,
		HTTPPort:              8000,
		DistInitPort:          29500,
		BootstrapPort:         30001,
		SGLangPort:            30000,
		// Below the dist-init port: SGLang's DP attention binds dist-init+1 ..
		// dist-init+5+dp on the head, which would reach a port above it once
		// dp ≥ 95 (12 nodes per worker).
		NCCLPort:       29400,
		EtcdClientPort: 2379,
		EtcdPeerPort:   2380,
		NATSPort:       4222,
		CacheDir:       "/configs/cache",
		LogDir:         "logs",
		LocalDir:       "/tmp/wideep-%j",
		NATSMaxPayload: DefaultNATSMaxPayload,
		Precompile:     true,
	}
}

// EnvName is the WIDEEP_* variable that backs a flag (the CLI's rule):
// --model-path is WIDEEP_MODEL_PATH.
func EnvName(flag string) string {
	return "WIDEEP_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// RegisterFlags registers the deployment flags, shared by plan and run, with
// the spec's current values as defaults.
func (s *Spec) RegisterFlags(fs *pflag.FlagSet) {
	str := func(p *string, name, usage string) { fs.StringVar(p, name, *p, withEnv(name, usage)) }
	num := func(p *int, name, usage string) { fs.IntVar(p, name, *p, withEnv(name, usage)) }
	list := func(p *[]string, name, usage string) { fs.StringArrayVar(p, name, *p, withEnv(name, usage)) }

	str(&s.ModelPath, "model-path", "model directory as the workers see it")
	str(&s.ServedModelName, "served-model-name", "model name served by the frontend")
	str(&s.Image, "image", "container image the job runs; it keys the DeepGEMM cache (the container itself comes from srun --container-image)")
	num(&s.GPUsPerNode, "gpus-per-node", "GPUs per node (0: SLURM_GPUS_ON_NODE, else 8)")

	num(&s.PrefillWorkers, "prefill-workers", "number of prefill workers")
	num(&s.PrefillNodesPerWorker, "prefill-nodes-per-worker", "nodes per prefill worker")
	num(&s.DecodeWorkers, "decode-workers", "number of decode workers")
	num(&s.DecodeNodesPerWorker, "decode-nodes-per-worker", "nodes per decode worker")
	num(&s.PrefillTPSize, "prefill-tp-size", "prefill --tp-size (0: GPUs per node × nodes per worker)")
	num(&s.PrefillDPSize, "prefill-dp-size", "prefill --dp-size (0: the tp size)")
	num(&s.DecodeTPSize, "decode-tp-size", "decode --tp-size (0: GPUs per node × nodes per worker)")
	num(&s.DecodeDPSize, "decode-dp-size", "decode --dp-size (0: the tp size)")
	str(&s.InfraPlacement, "infra-node", "where etcd, NATS and the frontend run: first (node 0) or dedicated (one extra node, the last)")

	num(&s.HTTPPort, "http-port", "frontend HTTP port")
	num(&s.DistInitPort, "dist-init-port", "port of each worker's --dist-init-addr (the head also binds the next 5+dp ports)")
	num(&s.BootstrapPort, "bootstrap-port", "--disaggregation-bootstrap-port")
	num(&s.SGLangPort, "sglang-port", "--port of every worker")
	num(&s.NCCLPort, "nccl-port", "--nccl-port of every worker")
	num(&s.EtcdClientPort, "etcd-client-port", "etcd client port")
	num(&s.EtcdPeerPort, "etcd-peer-port", "etcd peer port")
	num(&s.NATSPort, "nats-port", "NATS client port")
	num(&s.RendezvousPort, "rendezvous-port", "launcher rendezvous port on node 0 (0: 20000 + job id mod 10000, skipping planned ports)")

	str(&s.Iface, "iface", "network interface for node addresses and GLOO/NCCL sockets (empty: default route)")
	str(&s.CacheDir, "cache-dir", "shared cache directory, absolute (DeepGEMM kernels in <dir>/deepgemm/<key>)")
	str(&s.LogDir, "log-dir", "log directory (relative: to the job's working directory)")
	str(&s.LocalDir, "local-dir", "node-local scratch directory, %j is the job id")
	str(&s.EtcdDataDir, "etcd-data-dir", "etcd data directory on node-local disk (empty: <local-dir>/etcd)")
	str(&s.NATSStoreDir, "nats-store-dir", "NATS JetStream store on node-local disk (empty: <local-dir>/nats)")

	list(&s.PrefillArgs, "prefill-arg", `extra prefill argument, repeatable: "--flag value" or "--flag=value" `+
		`overrides a default flag in place or appends, "!--flag" removes a default flag`)
	list(&s.DecodeArgs, "decode-arg", "extra decode argument, repeatable (as --prefill-arg)")
	list(&s.PrefillEnv, "prefill-env", "extra prefill environment KEY=VALUE, repeatable")
	list(&s.DecodeEnv, "decode-env", "extra decode environment KEY=VALUE, repeatable")

	str(&s.EtcdEndpoints, "etcd-endpoints", "external etcd (http://host:port,...): start no etcd")
	str(&s.NATSServer, "nats-server", "external NATS (nats://host:port): start no nats-server")
	fs.BoolVar(&s.NoNATS, "no-nats", s.NoNATS, withEnv("no-nats", "no NATS at all (Dynamo > 0.8 with the TCP request plane)"))
	str(&s.NATSMaxPayload, "nats-max-payload", "NATS max_payload, at most 64MB (empty: the NATS default 1MB, "+
		"too small for long inputs: dynamo#9734)")
	fs.BoolVar(&s.Precompile, "precompile", s.Precompile, withEnv("precompile", "precompile DeepGEMM kernels on every worker node before starting the workers"))
}

func withEnv(flag, usage string) string { return usage + " (env " + EnvName(flag) + ")" }

// ResolveGPUs fills a GPUsPerNode of 0 with the node's SLURM_GPUS_ON_NODE, or
// DefaultGPUsPerNode when that is 0 too.
func (s *Spec) ResolveGPUs(slurmGPUsOnNode int) {
	if s.GPUsPerNode != 0 {
		return
	}
	s.GPUsPerNode = slurmGPUsOnNode
	if s.GPUsPerNode <= 0 {
		s.GPUsPerNode = DefaultGPUsPerNode
	}
}

// NodesNeeded is the node count the spec is planned for.
func (s Spec) NodesNeeded() int {
	n := s.PrefillWorkers*s.PrefillNodesPerWorker + s.DecodeWorkers*s.DecodeNodesPerWorker
	if s.InfraPlacement == InfraDedicated {
		n++
	}
	return n
}

// Layout is the short xPyD description: "1P×4 + 1D×4".
func (s Spec) Layout() string {
	l := fmt.Sprintf("%dP×%d + %dD×%d", s.PrefillWorkers, s.PrefillNodesPerWorker, s.DecodeWorkers, s.DecodeNodesPerWorker)
	if s.InfraPlacement == InfraDedicated {
		l += " + infra"
	}
	return l
}

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

// localDir is LocalDir with %j expanded.
func (s Spec) localDir(jobID string) string { return strings.ReplaceAll(s.LocalDir, "%j", jobID) }

func (s Spec) etcdDataDir(jobID string) string {
	if s.EtcdDataDir != "" {
		return strings.ReplaceAll(s.EtcdDataDir, "%j", jobID)
	}
	return path.Join(s.localDir(jobID), "etcd")
}

func (s Spec) natsStoreDir(jobID string) string {
	if s.NATSStoreDir != "" {
		return strings.ReplaceAll(s.NATSStoreDir, "%j", jobID)
	}
	return path.Join(s.localDir(jobID), "nats")
}

func (s Spec) runsEtcd() bool { return s.EtcdEndpoints == "" }
func (s Spec) runsNATS() bool { return !s.NoNATS && s.NATSServer == "" }

// roleSpec is one role's part of the spec, with the names of its flags for
// messages.
type roleSpec struct {
	role           Role
	workers, nodes int
	tp, dp         int
	args, env      []string
}

func (s Spec) roles() [2]roleSpec {
	return [2]roleSpec{
		{RolePrefill, s.PrefillWorkers, s.PrefillNodesPerWorker, s.PrefillTPSize, s.PrefillDPSize, s.PrefillArgs, s.PrefillEnv},
		{RoleDecode, s.DecodeWorkers, s.DecodeNodesPerWorker, s.DecodeTPSize, s.DecodeDPSize, s.DecodeArgs, s.DecodeEnv},
	}
}

func (r roleSpec) flag(suffix string) string { return "--" + string(r.role) + "-" + suffix }

// Validate reports every problem of the spec for a node list of numNodes
// nodes at once, as a *ConfigError wrapping a *multierror.Error.
func (s Spec) Validate(numNodes int) error {
	v := &validator{}
	s.validate(v, numNodes)
	return v.err()
}

// validate counts nodes and ports only where the sizes and ports they
// depend on are sane, so one mistake does not cascade into many messages.
func (s Spec) validate(v *validator, numNodes int) {
	s.validateFields(v)
	sizesOK := s.PrefillWorkers >= 1 && s.PrefillNodesPerWorker >= 1 && s.DecodeWorkers >= 1 &&
		s.DecodeNodesPerWorker >= 1 && (s.InfraPlacement == InfraFirst || s.InfraPlacement == InfraDedicated)
	if want := s.NodesNeeded(); sizesOK && numNodes != want {
		src := s.NodeSource
		if src == "" {
			src = "the node list"
		}
		v.addf("%s has %d nodes but the spec needs %d (%s)", src, numNodes, want, s.nodeBreakdown())
	}
	portsOK := sizesOK
	for _, p := range s.portFlags() {
		portsOK = portsOK && *p.port >= 1 && *p.port <= 65535
	}
	if portsOK {
		for _, r := range s.roles() {
			edits, _ := parseArgEdits(&validator{}, r)
			if _, dp, _ := s.sizes(r, edits); s.DistInitPort+5+dp > 65535 {
				v.addf("--dist-init-port %d: SGLang DP attention with dp %d binds up to port %d on the %s head",
					s.DistInitPort, dp, s.DistInitPort+5+dp, r.role)
			}
		}
		s.checkPorts(v)
	}
}

func (s Spec) nodeBreakdown() string {
	plural := func(n int, w string) string {
		if n == 1 {
			return fmt.Sprintf("%d %s", n, w)
		}
		return fmt.Sprintf("%d %ss", n, w)
	}
	b := fmt.Sprintf("%s × %s + %s × %s",
		plural(s.PrefillWorkers, "prefill worker"), plural(s.PrefillNodesPerWorker, "node"),
		plural(s.DecodeWorkers, "decode worker"), plural(s.DecodeNodesPerWorker, "node"))
	if s.InfraPlacement == InfraDedicated {
		b += " + 1 dedicated infra node"
	}
	return b
}

type validator struct{ errs *multierror.Error }

func (v *validator) addf(format string, a ...any) {
	v.errs = multierror.Append(v.errs, fmt.Errorf(format, a...))
}
func (v *validator) ok() bool { return v.errs == nil }

func (v *validator) err() error {
	if v.errs == nil {
		return nil
	}
	v.errs.ErrorFormat = func(es []error) string {
		var b strings.Builder
		noun := "problems"
		if len(es) == 1 {
			noun = "problem"
		}
		fmt.Fprintf(&b, "invalid deployment spec (%d %s):", len(es), noun)
		for _, e := range es {
			b.WriteString("\n  - " + e.Error())
		}
		return b.String()
	}
	return &ConfigError{Err: v.errs}
}

func (s Spec) validateFields(v *validator) {
	if strings.TrimSpace(s.ModelPath) == "" {
		v.addf("--model-path is empty")
	}
	if strings.TrimSpace(s.ServedModelName) == "" {
		v.addf("--served-model-name is empty")
	}
	if s.GPUsPerNode < 1 {
		v.addf("--gpus-per-node %d: must be at least 1 (0 must be resolved first: see ResolveGPUs)", s.GPUsPerNode)
	}
	switch s.InfraPlacement {
	case InfraFirst, InfraDedicated:
	default:
		v.addf("--infra-node %q: want %s or %s", s.InfraPlacement, InfraFirst, InfraDedicated)
	}
	for _, r := range s.roles() {
		s.validateRole(v, r)
	}
	for _, p := range s.portFlags() {
		if *p.port < 1 || *p.port > 65535 {
			v.addf("--%s %d: not a TCP port (1-65535)", p.flag, *p.port)
		}
	}
	if s.RendezvousPort < 0 || s.RendezvousPort > 65535 {
		v.addf("--rendezvous-port %d: not a TCP port (0 derives it from the job id)", s.RendezvousPort)
	}
	if s.Iface != "" && (len(s.Iface) > 15 || strings.ContainsAny(s.Iface, "/ \t\n:")) {
		v.addf("--iface %q: not a network interface name", s.Iface)
	}
	if !path.IsAbs(s.CacheDir) {
		v.addf("--cache-dir %q: must be an absolute path on storage shared by all nodes", s.CacheDir)
	}
	if strings.TrimSpace(s.LogDir) == "" {
		v.addf("--log-dir is empty")
	}
	for _, d := range []struct{ flag, val string }{
		{"local-dir", s.LocalDir}, {"etcd-data-dir", s.EtcdDataDir}, {"nats-store-dir", s.NATSStoreDir},
	} {
		if (d.val != "" || d.flag == "local-dir") && !path.IsAbs(d.val) {
			v.addf("--%s %q: must be an absolute path on node-local disk", d.flag, d.val)
		}
	}
	if s.EtcdEndpoints != "" {
		for _, e := range strings.Split(s.EtcdEndpoints, ",") {
			if !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://") {
				v.addf("--etcd-endpoints %q: %q is not an http:// or https:// URL", s.EtcdEndpoints, e)
			}
		}
	}
	if s.NATSServer != "" {
		if s.NoNATS {
			v.addf("--nats-server %q and --no-nats contradict each other", s.NATSServer)
		}
		if !strings.HasPrefix(s.NATSServer, "nats://") {
			// Dynamo's client refuses anything else (lib/runtime/src/transports/nats.rs).
			v.addf("--nats-server %q: must start with nats://", s.NATSServer)
		}
	}
	if s.NATSMaxPayload != "" {
		if n, err := parseSize(s.NATSMaxPayload); err != nil {
			v.addf("--nats-max-payload %q: %v", s.NATSMaxPayload, err)
		} else if n > natsMaxPending {
			v.addf("--nats-max-payload %q: nats-server refuses more than its max_pending, 64MB", s.NATSMaxPayload)
		}
	}
}

func (s Spec) validateRole(v *validator, r roleSpec) {
	if r.workers < 1 {
		v.addf("%s %d: must be at least 1", r.flag("workers"), r.workers)
	}
	if r.nodes < 1 {
		v.addf("%s %d: a worker spans at least one whole node", r.flag("nodes-per-worker"), r.nodes)
	}
	edits, ok := parseArgEdits(v, r)
	if ok && s.GPUsPerNode >= 1 && r.nodes >= 1 {
		tp, dp, pp := s.sizes(r, edits)
		switch {
		case tp < 1:
			v.addf("%s %d: must be at least 1", r.flag("tp-size"), tp)
		case tp*pp != r.nodes*s.GPUsPerNode:
			v.addf("%s worker does not fill whole nodes: tp %d × pp %d = %d ranks, but %d nodes × %d GPUs = %d GPUs (%s, %s, --gpus-per-node)",
				r.role, tp, pp, tp*pp, r.nodes, s.GPUsPerNode, r.nodes*s.GPUsPerNode, r.flag("tp-size"), r.flag("nodes-per-worker"))
		case dp < 1 || tp%dp != 0:
			v.addf("%s %d: must divide the tp size %d", r.flag("dp-size"), dp, tp)
		}
	}
	for _, e := range r.env {
		k, _, found := strings.Cut(e, "=")
		switch {
		case !found:
			v.addf("%s %q: want KEY=VALUE", r.flag("env"), e)
		case !validEnvName(k):
			v.addf("%s %q: %q is not a valid variable name", r.flag("env"), e, k)
		case k == "ETCD_ENDPOINTS":
			v.addf("%s %q: ETCD_ENDPOINTS is set by the plan (use --etcd-endpoints)", r.flag("env"), e)
		case k == "NATS_SERVER":
			v.addf("%s %q: NATS_SERVER is set by the plan (use --nats-server or --no-nats)", r.flag("env"), e)
		}
	}
}

// sizes are the role's tp, dp and pp sizes; pp comes from its extra args.
func (s Spec) sizes(r roleSpec, edits []argEdit) (tp, dp, pp int) {
	pp = 1
	for _, e := range edits {
		if !e.remove && (e.flag == "--pp-size" || e.flag == "--pipeline-parallel-size") && len(e.vals) == 1 {
			if n, err := strconv.Atoi(e.vals[0]); err == nil && n > 0 {
				pp = n
			}
		}
	}
	tp = r.tp
	if tp == 0 && pp > 0 {
		tp = r.nodes * s.GPUsPerNode / pp
	}
	dp = r.dp
	if dp == 0 {
		dp = tp
	}
	return tp, dp, pp
}

func validEnvName(k string) bool {
	if k == "" {
		return false
	}
	for i, c := range k {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// parseSize reads a NATS size: a number of bytes or one with a KB/MB/GB suffix
// (powers of 1024, as nats-server reads them).
func parseSize(s string) (int64, error) {
	num, mult := strings.ToUpper(strings.TrimSpace(s)), int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("want a size such as 64MB")
	}
	return n * mult, nil
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

// argEdit is one parsed --prefill-arg/--decode-arg entry.
type argEdit struct {
	flag   string   // "--mem-fraction-static"
	vals   []string // values as separate arguments
	joined bool     // given as --flag=value: kept as one argument
	remove bool     // "!--flag"
}

// managedFlags are set by the plan; a user edit of them would break the
// layout, so it is an error that names what to use instead.
var managedFlags = map[string]string{
	"--node-rank":                     "the plan sets it per node",
	"--nnodes":                        "use --prefill-nodes-per-worker/--decode-nodes-per-worker",
	"--dist-init-addr":                "the plan sets it to the worker's head (port: --dist-init-port)",
	"--disaggregation-mode":           "the plan sets it from the role",
	"--tp-size":                       "use --prefill-tp-size/--decode-tp-size",
	"--tp":                            "use --prefill-tp-size/--decode-tp-size",
	"--tensor-parallel-size":          "use --prefill-tp-size/--decode-tp-size",
	"--dp-size":                       "use --prefill-dp-size/--decode-dp-size",
	"--dp":                            "use --prefill-dp-size/--decode-dp-size",
	"--data-parallel-size":            "use --prefill-dp-size/--decode-dp-size",
	"--port":                          "use --sglang-port",
	"--nccl-port":                     "use --nccl-port",
	"--disaggregation-bootstrap-port": "use --bootstrap-port",
	"--model-path":                    "use --model-path",
	"--served-model-name":             "use --served-model-name",
}

// parseArgEdits parses a role's extra arguments, reporting bad entries.
func parseArgEdits(v *validator, r roleSpec) ([]argEdit, bool) {
	ok := true
	edits := make([]argEdit, 0, len(r.args))
	defaults := map[string]bool{}
	for _, a := range defaultArgs(r.role) {
		defaults[a.flag] = true
	}
	for _, raw := range r.args {
		e, err := parseArgEdit(raw)
		if err == nil {
			if why, managed := managedFlags[e.flag]; managed {
				err = fmt.Errorf("%s is managed by the plan (%s)", e.flag, why)
			} else if e.remove && !defaults[e.flag] {
				err = fmt.Errorf("%s is not a default %s flag, nothing to remove", e.flag, r.role)
			}
		}
		if err != nil {
			v.addf("%s %q: %v", r.flag("arg"), raw, err)
			ok = false
			continue
		}
		edits = append(edits, e)
	}
	return edits, ok
}

func parseArgEdit(raw string) (argEdit, error) {
	var e argEdit
	s := strings.TrimSpace(raw)
	if strings.HasPrefix(s, "!") {
		e.remove = true
		s = strings.TrimSpace(s[1:])
	}
	if !strings.HasPrefix(s, "--") || len(s) == 2 {
		return e, fmt.Errorf("want --flag [value], --flag=value or !--flag")
	}
	if i := strings.IndexAny(s, "= \t"); i >= 0 {
		e.flag = s[:i]
		rest := s[i+1:]
		if s[i] == '=' {
			e.vals, e.joined = []string{rest}, true
		} else {
			e.vals = strings.Fields(rest)
		}
	} else {
		e.flag = s
	}
	if e.remove && len(e.vals) > 0 {
		return e, fmt.Errorf("!%s removes a flag and takes no value", e.flag)
	}
	return e, nil
}
