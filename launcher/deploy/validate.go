package deploy

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"
)

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
		if top := s.DistInitPort + maxDistInitOffset; top > 65535 {
			v.addf("--dist-init-port %d: SGLang uses the ports above it up to +%d (%d)", s.DistInitPort, maxDistInitOffset, top)
		} else {
			s.checkPorts(v)
		}
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
	s.validateRuntime(v)
	s.validateRemovedFlags(v)
	switch s.Precompile {
	case PrecompileAuto, PrecompileAlways, PrecompileNever:
	default:
		v.addf("--precompile %q: want auto, always or never", s.Precompile)
	}
	switch s.DGCacheMode {
	case DGCacheLocal, DGCacheShared:
	default:
		v.addf("--dg-cache-mode %q: want local or shared", s.DGCacheMode)
	}
	if s.DGCacheMode == DGCacheShared && s.Precompile == PrecompileNever {
		// On a miss nothing would publish the set, and every worker would
		// JIT-compile into the shared entry at once (DeepEP #683's crash),
		// leaving an entry without COMPLETE.json that later jobs refuse.
		v.addf("--dg-cache-mode shared with --precompile never: on a cache miss every worker would compile into the shared " +
			"cache entry at once and leave it unusable; use --dg-cache-mode local, or --precompile auto")
	}
	if s.DGCacheMode == DGCacheLocal && !path.IsAbs(s.DGLocalDir) {
		v.addf("--dg-local-dir %q: must be an absolute path on node-local disk", s.DGLocalDir)
	}
	if s.PlansPrecompile() && s.PrecompileTimeout < time.Second {
		v.addf("--precompile-timeout %v: want at least 1s (compile_deep_gemm's --timeout is whole seconds)", s.PrecompileTimeout)
	}
	if s.ImageDigest != "" && !validDigest(s.ImageDigest) {
		v.addf("--image-digest %q: want sha256:<64 hex digits>", s.ImageDigest)
	}
	if _, err := parseVersion(s.SGLangVersion); err != nil {
		v.addf("--sglang-version %q: %v", s.SGLangVersion, err)
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
	for _, e := range edits {
		if e.remove || !isPPFlag(e.flag) {
			continue
		}
		// sizes ignores a pipeline-parallel size below 1, which SGLang
		// does not: the layout check would pass a worker that cannot start.
		val := strings.Join(e.vals, " ")
		if n, err := strconv.Atoi(val); err != nil || n < 1 {
			v.addf("%s: %s %s: the pipeline-parallel size must be a whole number of at least 1", r.flag("arg"), e.flag, val)
			ok = false
		}
	}
	if ok {
		s.checkWorkerArgs(v, r)
	}
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
		case k == EnvDGCacheDir || k == EnvDGCacheDirOld:
			v.addf("%s %q: %s is set by the plan to the worker's DeepGEMM kernels (use --cache-dir, --dg-local-dir, --dg-cache-mode)",
				r.flag("env"), e, k)
		case k == "DG_JIT_CACHE_DIR":
			v.addf("%s %q: SGLang overwrites DG_JIT_CACHE_DIR from %s, so it has no effect (use --dg-local-dir)",
				r.flag("env"), e, EnvDGCacheDir)
		}
	}
}

// validateRuntime checks what the container runtime needs.
func (s Spec) validateRuntime(v *validator) {
	switch s.Runtime {
	case "", RuntimeHost, RuntimePyxis:
	case RuntimeEnroot:
		if strings.TrimSpace(s.Image) == "" {
			v.addf("--runtime enroot needs --image (a squashfs file, or a registry image such as nvcr.io#nvidia/ai-dynamo/sglang-runtime:0.8.0)")
		}
		if s.ImageCache != "" && !path.IsAbs(s.ImageCache) {
			v.addf("--image-cache %q: must be an absolute path on storage shared by all nodes", s.ImageCache)
		}
		// These are bind-mounted into the container as they are, and
		// enroot's --mount cannot carry a ':' or white space.
		mounted := []struct{ flag, val string }{{"cache-dir", s.CacheDir}, {"local-dir", s.LocalDir}}
		if s.DGCacheMode == DGCacheLocal {
			mounted = append(mounted, struct{ flag, val string }{"dg-local-dir", s.DGLocalDir})
		}
		for _, d := range mounted {
			if strings.ContainsAny(d.val, ": \t\n") {
				v.addf("--%s %q: holds a ':' or white space, which enroot cannot mount into the container", d.flag, d.val)
			}
		}
	default:
		v.addf("--runtime %q: want auto, host, pyxis or enroot", s.Runtime)
	}
	for _, m := range s.ContainerMounts {
		if err := checkMount(m); err != nil {
			v.addf("--container-mount %q: %v", m, err)
		}
	}
}

// sizes are the role's tp, dp and pp sizes; pp comes from its extra args.
func (s Spec) sizes(r roleSpec, edits []argEdit) (tp, dp, pp int) {
	pp = 1
	for _, e := range edits {
		if !e.remove && isPPFlag(e.flag) && len(e.vals) == 1 {
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

func isPPFlag(flag string) bool { return flag == "--pp-size" || flag == "--pipeline-parallel-size" }

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

// checkMount checks a SRC:DST[:ro] bind mount as enroot will read it: both
// paths absolute, no white space (enroot splits fstab fields on it).
func checkMount(m string) error {
	parts := strings.Split(m, ":")
	if len(parts) < 2 || len(parts) > 3 || len(parts) == 3 && parts[2] != "ro" && parts[2] != "rw" {
		return fmt.Errorf("want SRC:DST or SRC:DST:ro")
	}
	for _, p := range parts[:2] {
		if !path.IsAbs(p) {
			return fmt.Errorf("%q is not an absolute path", p)
		}
		if strings.ContainsAny(p, " \t\n") {
			return fmt.Errorf("%q has white space, which enroot cannot mount", p)
		}
	}
	return nil
}

func validDigest(d string) bool {
	hex, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hex) != 64 {
		return false
	}
	return strings.Trim(hex, "0123456789abcdef") == ""
}
