package cli

import (
	"github.com/spf13/pflag"

	"github.com/wideep/wideep-launch/launcher/deploy"
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
	num(&s.DistInitPort, "dist-init-port", "port of each worker's --dist-init-addr: SGLang checks it and the next 5 free on every node of the worker, and its head listens on them and on +13")
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
