package cli

import (
	"fmt"
	"path"

	"github.com/spf13/pflag"

	"github.com/wideep/wideep-launch/launcher/deploy"
	"github.com/wideep/wideep-launch/launcher/dgcache"
)

// bindSpecFlags binds the deployment flags, shared by plan and run, to the
// fields of s, with their current values as defaults: the spec itself knows
// nothing of flags.
func bindSpecFlags(fs *pflag.FlagSet, s *deploy.Spec) {
	str := func(p *string, name, usage string) { fs.StringVar(p, name, *p, withEnv(name, usage)) }
	num := func(p *int, name, usage string) { fs.IntVar(p, name, *p, withEnv(name, usage)) }
	list := func(p *[]string, name, usage string) { fs.StringArrayVar(p, name, *p, withEnv(name, usage)) }

	str(&s.ModelPath, "model-path", "model directory as the workers see it")
	str(&s.ServedModelName, "served-model-name", "model name served by the frontend")
	str(&s.Image, "image", "container image: --runtime enroot imports it (a .sqsh path, or a registry image such as nvcr.io#org/image:tag[@sha256:...]); under pyxis it only keys the DeepGEMM cache")
	str(&s.SGLangVersion, "sglang-version", "SGLang release in the image: which ports it binds or checks depends on it (plan --show-ports)")
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
	num(&s.DistInitPort, "dist-init-port", "port of each worker's --dist-init-addr: SGLang checks it and the next 5 (6 from 0.5.18, on several nodes) free on every node of the worker, and its head listens on them and on +13")
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
	fs.Var((*precompileMode)(&s.Precompile), "precompile", withEnv("precompile", "when the first worker of each layout "+
		"compiles DeepGEMM kernels before the workers start: auto (when node 0 finds them missing from <cache-dir>/deepgemm), "+
		"always (and replace the cached ones), never"))
	fs.DurationVar(&s.PrecompileTimeout, "precompile-timeout", s.PrecompileTimeout, withEnv("precompile-timeout",
		"how long one DeepGEMM compile may take, and how long node 0 waits for another job compiling the same kernels "+
			"(compile_deep_gemm gets it as its --timeout)"))
	fs.BoolVar(&s.PrecompileStrict, "precompile-strict", s.PrecompileStrict, withEnv("precompile-strict", "fail when "+
		"compile_deep_gemm exits non-zero even after its known 'Sync request failed' error, which leaves every kernel compiled"))
	str(&s.ImageDigest, "image-digest", "the image's sha256:<hex> digest: keys the DeepGEMM cache instead of --image, "+
		"so a retag does not recompile and an image rebuilt in place does")
	str(&s.GPUModel, "gpu-model", "GPU model in the DeepGEMM cache key (empty: nvidia-smi --query-gpu=name on each node)")
	str(&s.DGLocalDir, "dg-local-dir", "node-local directory the DeepGEMM kernels are copied to and compiled in, "+
		"%j the job id, %h the node (default $SLURM_TMPDIR/wideep-dg when SLURM_TMPDIR is set)")
	str(&s.DGCacheMode, "dg-cache-mode", "where the workers read DeepGEMM kernels: local (a node-local copy) or "+
		"shared (the shared cache entry itself; DeepGEMM writing there from many nodes is DeepEP #683's race)")
}

// finishSpec fills in what depends on the environment rather than on flags:
// the kernel-relevant variables of the DeepGEMM key, and a node-local
// directory that Slurm provides.
func finishSpec(fs *pflag.FlagSet, lookup func(string) (string, bool), environ []string, s *deploy.Spec) {
	s.KernelEnv = dgcache.KernelEnv(environ)
	if _, fromEnv := lookup(EnvName("dg-local-dir")); !fs.Changed("dg-local-dir") && !fromEnv {
		if tmp, ok := lookup("SLURM_TMPDIR"); ok && path.IsAbs(tmp) {
			s.DGLocalDir = path.Join(tmp, "wideep-dg")
		}
	}
}

// precompileMode is --precompile: auto, always or never, and the boolean
// spellings of the flag it replaced (true is auto, false never).
type precompileMode string

func (m *precompileMode) String() string { return string(*m) }
func (m *precompileMode) Type() string   { return "auto|always|never" }
func (m *precompileMode) Set(v string) error {
	switch v {
	case deploy.PrecompileAuto, deploy.PrecompileAlways, deploy.PrecompileNever:
	case "true", "1":
		v = deploy.PrecompileAuto
	case "false", "0":
		v = deploy.PrecompileNever
	default:
		return fmt.Errorf("want auto, always or never")
	}
	*m = precompileMode(v)
	return nil
}

func withEnv(flag, usage string) string { return usage + " (env " + EnvName(flag) + ")" }
