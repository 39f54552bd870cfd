// Package deploy is the deployment as data: the Spec (what to run, how many
// workers of each role, on which ports; its defaults and validation, every
// problem at once), the Plan that NewPlan maps it to on a node list (a pure
// function: every node computes the same one), and its renderings (table,
// JSON, shell commands, secrets redacted). It knows no flags and does no
// I/O; the CLI binds flags to a Spec.
package deploy

import (
	"fmt"
	"path"
	"strings"
	"time"
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

// Precompile modes and DeepGEMM cache modes (see Spec).
const (
	PrecompileAuto   = "auto"
	PrecompileAlways = "always"
	PrecompileNever  = "never"
	DGCacheLocal     = "local"
	DGCacheShared    = "shared"
)

// PlansPrecompile says whether the plan has precompile processes.
func (s Spec) PlansPrecompile() bool { return s.Precompile != PrecompileNever }

// JobDGLocalDir is DGLocalDir with %j and %h (the node) expanded.
func (s Spec) JobDGLocalDir(jobID, host string) string {
	return ExpandJobHost(s.DGLocalDir, jobID, host)
}

// ExpandJobHost replaces %j by jobID and %h by host in pattern, left to
// right, as strings.NewReplacer would — without building a replacer for
// each of thousands of nodes, which was a quarter of the plan's memory.
func ExpandJobHost(pattern, jobID, host string) string {
	if !strings.Contains(pattern, "%") {
		return pattern
	}
	var b strings.Builder
	b.Grow(len(pattern) + len(jobID) + len(host))
	for i := 0; i < len(pattern); i++ {
		if pattern[i] == '%' && i+1 < len(pattern) {
			switch pattern[i+1] {
			case 'j':
				b.WriteString(jobID)
				i++
				continue
			case 'h':
				b.WriteString(host)
				i++
				continue
			}
		}
		b.WriteByte(pattern[i])
	}
	return b.String()
}

// Runtimes (see Spec.Runtime).
const (
	RuntimeHost   = "host"
	RuntimePyxis  = "pyxis"
	RuntimeEnroot = "enroot"
)

// Where the infra services (etcd, NATS, frontend) run.
const (
	InfraFirst     = "first"     // on node 0, next to prefill worker 0's head
	InfraDedicated = "dedicated" // on one extra node, the last of the node list
)

// Defaults that other packages need to agree on.
const (
	DefaultGPUsPerNode = 8
	// DefaultSGLangVersion is the release Dynamo's WideEP guide pins.
	DefaultSGLangVersion = "0.5.6.post2"
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
	// Runtime is where the processes run: RuntimeHost, RuntimePyxis (the
	// launcher already runs in the container srun --container-image made)
	// or RuntimeEnroot (the launcher starts one container per node). The
	// plan only shows it.
	Runtime string
	// ContainerMounts are SRC:DST[:ro] bind mounts into an enroot container.
	ContainerMounts []string
	// ImageCache is where an enroot runtime imports registry images, shared
	// by the nodes and jobs; "" is <CacheDir>/images.
	ImageCache string
	// SGLangVersion is the SGLang release in the image: which ports it
	// uses depends on it (see Port).
	SGLangVersion string
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

	// Precompile says when the DeepGEMM kernels are compiled before the
	// workers start: PrecompileAuto on a cache miss (node 0 decides, the
	// first worker of each layout compiles), PrecompileAlways, or
	// PrecompileNever (no precompile process at all).
	Precompile string
	// PrecompileTimeout bounds one compile; compile_deep_gemm gets it as its
	// own --timeout (whole seconds), which also replaces its watchdog.
	PrecompileTimeout time.Duration
	// PrecompileStrict fails the job when compile_deep_gemm exits non-zero,
	// even after the known failure that leaves every kernel compiled.
	PrecompileStrict bool
	// ImageDigest ("sha256:<hex>") identifies the image in the DeepGEMM
	// cache key better than its reference; GPUModel is the nodes' GPU
	// (nvidia-smi), "" when unknown. KernelEnv are the variables that change
	// which kernels are compiled (dgcache.KernelEnv).
	ImageDigest string
	GPUModel    string
	KernelEnv   map[string]string
	// RoleGPUModels, when set, is the GPU each role's kernels are built on
	// (the GPU of the node that compiles them, told at the rendezvous): a
	// job's prefill and decode nodes may differ, and one node's GPU would
	// key the other role's kernels wrongly. A role missing here uses
	// GPUModel.
	RoleGPUModels map[Role]string
	// DGLocalDir is the node-local directory DeepGEMM kernels are seeded
	// into and compiled in (%j the job id, %h the node), one subdirectory
	// per kernel set. It outlives the job by default, so a node that ran a
	// layout before copies nothing. DGCacheMode "local" points the workers
	// there, "shared" at the shared cache entry itself.
	DGLocalDir  string
	DGCacheMode string

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
		SGLangVersion:         DefaultSGLangVersion,
		PrefillWorkers:        1,
		PrefillNodesPerWorker: 4,
		DecodeWorkers:         1,
		DecodeNodesPerWorker:  4,
		InfraPlacement:        InfraFirst,
		HTTPPort:              8000,
		DistInitPort:          29500,
		BootstrapPort:         30001,
		SGLangPort:            30000,
		// Below the dist-init port and its derived ports (up to +13).
		NCCLPort:          29400,
		EtcdClientPort:    2379,
		EtcdPeerPort:      2380,
		NATSPort:          4222,
		CacheDir:          "/configs/cache",
		LogDir:            "logs",
		LocalDir:          "/tmp/wideep-%j",
		NATSMaxPayload:    DefaultNATSMaxPayload,
		Precompile:        PrecompileAuto,
		PrecompileTimeout: 60 * time.Minute,
		DGLocalDir:        "/tmp/wideep-dg",
		DGCacheMode:       DGCacheLocal,
	}
}

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

// JobLocalDir is LocalDir with %j expanded: the node-local scratch of job
// jobID.
func (s Spec) JobLocalDir(jobID string) string { return strings.ReplaceAll(s.LocalDir, "%j", jobID) }

// JobImageCache is the shared directory imported images go to.
func (s Spec) JobImageCache() string {
	if s.ImageCache != "" {
		return s.ImageCache
	}
	return path.Join(s.CacheDir, "images")
}

// JobEtcdDataDir is where the infra node's etcd keeps its data.
func (s Spec) JobEtcdDataDir(jobID string) string {
	if s.EtcdDataDir != "" {
		return strings.ReplaceAll(s.EtcdDataDir, "%j", jobID)
	}
	return path.Join(s.JobLocalDir(jobID), "etcd")
}

// JobNATSStoreDir is where the infra node's NATS keeps its JetStream store.
func (s Spec) JobNATSStoreDir(jobID string) string {
	if s.NATSStoreDir != "" {
		return strings.ReplaceAll(s.NATSStoreDir, "%j", jobID)
	}
	return path.Join(s.JobLocalDir(jobID), "nats")
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
