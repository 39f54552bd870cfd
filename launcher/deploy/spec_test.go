package deploy

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// spec8 is the default spec on 8-GPU nodes, as the CLI resolves it.
func spec8() Spec {
	s := DefaultSpec()
	s.ResolveGPUs(0)
	return s
}

func TestResolveGPUs(t *testing.T) {
	for name, tc := range map[string]struct{ flag, slurm, want int }{
		"flag wins":      {4, 8, 4},
		"slurm":          {0, 4, 4},
		"default":        {0, 0, DefaultGPUsPerNode},
		"negative flag":  {-1, 4, -1}, // left for Validate to report
		"negative slurm": {0, -2, DefaultGPUsPerNode},
	} {
		t.Run(name, func(t *testing.T) {
			s := DefaultSpec()
			s.GPUsPerNode = tc.flag
			s.ResolveGPUs(tc.slurm)
			assert.Equal(t, tc.want, s.GPUsPerNode)
		})
	}
}

func TestParseRole(t *testing.T) {
	for _, r := range []Role{RolePrefill, RoleDecode, RoleInfra} {
		got, err := ParseRole(string(r))
		require.NoError(t, err)
		assert.Equal(t, r, got)
	}
	_, err := ParseRole("router")
	assert.EqualError(t, err, `unknown role "router" (want prefill, decode or infra)`)
}

func TestParseArgEdit(t *testing.T) {
	for raw, want := range map[string]argEdit{
		"--mem-fraction-static=0.8":   {flag: "--mem-fraction-static", vals: []string{"0.8"}, joined: true},
		"--cuda-graph-bs 1 2  4":      {flag: "--cuda-graph-bs", vals: []string{"1", "2", "4"}},
		"--enable-metrics":            {flag: "--enable-metrics"},
		"  !--deepep-config ":         {flag: "--deepep-config", remove: true},
		"--json-override={\"a\": 1}":  {flag: "--json-override", vals: []string{`{"a": 1}`}, joined: true},
		"--host\t0.0.0.0":             {flag: "--host", vals: []string{"0.0.0.0"}},
		"--watchdog-timeout=":         {flag: "--watchdog-timeout", vals: []string{""}, joined: true},
		"--dist-init-addr=a:1 ignore": {flag: "--dist-init-addr", vals: []string{"a:1 ignore"}, joined: true},
	} {
		t.Run(raw, func(t *testing.T) {
			got, err := parseArgEdit(raw)
			require.NoError(t, err)
			assert.Equal(t, want, got)
		})
	}
	for _, raw := range []string{"", "mem 0.8", "-m 1", "--", "!--x 1", "!"} {
		_, err := parseArgEdit(raw)
		assert.Error(t, err, "%q", raw)
	}
}

func TestParseSize(t *testing.T) {
	for s, want := range map[string]int64{"64MB": 64 << 20, "1mb": 1 << 20, "512KB": 512 << 10, "1048576": 1 << 20, "2G": 2 << 30} {
		got, err := parseSize(s)
		require.NoError(t, err, s)
		assert.Equal(t, want, got, s)
	}
	for _, s := range []string{"", "MB", "lots", "-1MB", "1.5MB"} {
		_, err := parseSize(s)
		assert.Error(t, err, s)
	}
}

// problemsOf returns the individual problems of a Validate/NewPlan error.
func problemsOf(t *testing.T, err error) []string {
	t.Helper()
	require.Error(t, err)
	var ce *ConfigError
	require.ErrorAs(t, err, &ce)
	var me *multierror.Error
	require.True(t, errors.As(err, &me), "a *multierror.Error inside: %T", ce.Err)
	out := make([]string, len(me.Errors))
	for i, e := range me.Errors {
		out[i] = e.Error()
	}
	return out
}

func TestValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		edit  func(*Spec)
		nodes int
		want  []string // each is a substring of one problem; exactly these problems
	}{
		"too few nodes": {func(s *Spec) { s.NodeSource = "SLURM_STEP_NODELIST" }, 7, []string{
			"SLURM_STEP_NODELIST has 7 nodes but the spec needs 8 (1 prefill worker × 4 nodes + 1 decode worker × 4 nodes)"}},
		"dedicated infra needs one more": {func(s *Spec) { s.InfraPlacement = InfraDedicated }, 8, []string{
			"the node list has 8 nodes but the spec needs 9 (1 prefill worker × 4 nodes + 1 decode worker × 4 nodes + 1 dedicated infra node)"}},
		"xPyD count": {func(s *Spec) { s.PrefillWorkers, s.PrefillNodesPerWorker, s.DecodeNodesPerWorker = 3, 2, 2 }, 7, []string{
			"has 7 nodes but the spec needs 8 (3 prefill workers × 2 nodes + 1 decode worker × 2 nodes)"}},
		"no nodes per worker": {func(s *Spec) { s.PrefillNodesPerWorker = 0 }, 4, []string{
			"--prefill-nodes-per-worker 0: a worker spans at least one whole node"}},
		"no decode workers": {func(s *Spec) { s.DecodeWorkers = 0 }, 4, []string{"--decode-workers 0: must be at least 1"}},
		"partial nodes": {func(s *Spec) { s.DecodeTPSize = 16 }, 8, []string{
			"decode worker does not fill whole nodes: tp 16 × pp 1 = 16 ranks, but 4 nodes × 8 GPUs = 32 GPUs (--decode-tp-size"}},
		"too many ranks": {func(s *Spec) { s.PrefillTPSize = 64 }, 8, []string{
			"prefill worker does not fill whole nodes: tp 64 × pp 1 = 64 ranks"}},
		"pp without smaller tp": {func(s *Spec) { s.PrefillTPSize, s.PrefillArgs = 32, []string{"--pp-size 2"} }, 8, []string{
			"tp 32 × pp 2 = 64 ranks"}},
		"dp must divide tp": {func(s *Spec) { s.PrefillDPSize = 5 }, 8, []string{"--prefill-dp-size 5: must divide the tp size 32"}},
		"no GPUs":           {func(s *Spec) { s.GPUsPerNode = 0 }, 8, []string{"--gpus-per-node 0: must be at least 1"}},
		"empty model path":  {func(s *Spec) { s.ModelPath = " " }, 8, []string{"--model-path is empty"}},
		"empty served name": {func(s *Spec) { s.ServedModelName = "" }, 8, []string{"--served-model-name is empty"}},
		"infra placement":   {func(s *Spec) { s.InfraPlacement = "last" }, 8, []string{`--infra-node "last": want first or dedicated`}},
		"frontend and precompile on one port": {func(s *Spec) { s.SGLangPort = 8000 }, 8, []string{
			"port 8000 is used twice on prefill node rank 0 (node 0, infra): by frontend (Dynamo frontend HTTP (--http-port)) and by precompile (SGLang HTTP server of the precompile (--sglang-port))"}},
		"dedicated infra node keeps 8000 apart":   {func(s *Spec) { s.SGLangPort, s.InfraPlacement = 8000, InfraDedicated }, 9, nil},
		"no precompile, nobody listens on --port": {func(s *Spec) { s.SGLangPort, s.Precompile = 8000, PrecompileNever }, 8, nil},
		"two flags of one process": {func(s *Spec) { s.NCCLPort = 30000 }, 8, []string{
			"port 30000 is used twice on prefill node rank 0 (node 0, infra): by precompile (NCCL init (--nccl-port)) and by precompile (SGLang HTTP server of the precompile (--sglang-port))",
			"port 30000 is used twice on prefill node ranks 1-3: by precompile (NCCL init (--nccl-port)) and by precompile (SGLang HTTP server of the precompile (--sglang-port))",
			"port 30000 is used twice on decode node rank 0: by precompile",
			"port 30000 is used twice on decode node ranks 1-3: by precompile",
		}},
		"etcd and nats": {func(s *Spec) { s.NATSPort = 2379 }, 8, []string{
			"port 2379 is used twice on prefill node rank 0 (node 0, infra): by etcd (etcd clients (--etcd-client-port)) and by nats (NATS (--nats-port))"}},
		"etcd on the bootstrap port": {func(s *Spec) { s.EtcdPeerPort = 30001 }, 8, []string{
			"by etcd (etcd peers (--etcd-peer-port)) and by prefill (PD bootstrap server (--bootstrap-port))"}},
		"etcd on a port SGLang checks is free on every node": {func(s *Spec) { s.EtcdClientPort = 29503 }, 8, []string{
			"port 29503 is used twice on prefill node rank 0 (node 0, infra): by etcd (etcd clients (--etcd-client-port)) and by prefill (SGLang RPC (--dist-init-port+3))"}},
		"SGLang's derived ports reach the bootstrap port": {func(s *Spec) { s.DistInitPort = 29988 }, 8, []string{
			"port 30001 is used twice on prefill node rank 0 (node 0, infra): by prefill (SGLang DP-attention handshake (--dist-init-port+13)) and by prefill (PD bootstrap server (--bootstrap-port))",
		}},
		"derived ports past the last port": {func(s *Spec) { s.DistInitPort = 65530 }, 8, []string{
			"--dist-init-port 65530: SGLang uses the ports above it up to +13 (65543)"}},
		"rendezvous port": {func(s *Spec) { s.RendezvousPort = 4222 }, 8, []string{
			"port 4222 is used twice on prefill node rank 0 (node 0, infra): by nats (NATS (--nats-port)) and by the launcher (the launcher rendezvous (--rendezvous-port))"}},
		"bad SGLang version": {func(s *Spec) { s.SGLangVersion = "latest" }, 8, []string{
			`--sglang-version "latest": want a version such as 0.5.6.post2`}},
		"bad ports": {func(s *Spec) { s.HTTPPort, s.NCCLPort, s.RendezvousPort = 0, 70000, -1 }, 8, []string{
			"--http-port 0: not a TCP port", "--nccl-port 70000: not a TCP port", "--rendezvous-port -1: not a TCP port"}},
		"managed flags": {func(s *Spec) {
			s.PrefillArgs = []string{"--node-rank 3", "--nnodes=2", "!--dist-init-addr"}
			s.DecodeArgs = []string{"--disaggregation-mode prefill", "--tp-size 16", "--port 1"}
		}, 8, []string{
			`--prefill-arg "--node-rank 3": --node-rank is managed by the plan`,
			`--prefill-arg "--nnodes=2": --nnodes is managed by the plan (use --prefill-nodes-per-worker/--decode-nodes-per-worker)`,
			`--prefill-arg "!--dist-init-addr": --dist-init-addr is managed by the plan`,
			`--decode-arg "--disaggregation-mode prefill": --disaggregation-mode is managed by the plan`,
			`--decode-arg "--tp-size 16": --tp-size is managed by the plan (use --prefill-tp-size/--decode-tp-size)`,
			`--decode-arg "--port 1": --port is managed by the plan (use --sglang-port)`,
		}},
		"bad extra args": {func(s *Spec) { s.DecodeArgs = []string{"cuda-graph-bs 8", "!--deepep-config", "!--cuda-graph-bs 8"} }, 8, []string{
			`--decode-arg "cuda-graph-bs 8": want --flag [value], --flag=value or !--flag`,
			`--decode-arg "!--deepep-config": --deepep-config is not a default decode flag, nothing to remove`,
			`--decode-arg "!--cuda-graph-bs 8": !--cuda-graph-bs removes a flag and takes no value`,
		}},
		"bad env": {func(s *Spec) {
			s.PrefillEnv = []string{"NOVALUE", "1X=2", "ETCD_ENDPOINTS=http://x:1"}
			s.DecodeEnv = []string{"NATS_SERVER=nats://y:2", "OK=1"}
		}, 8, []string{
			`--prefill-env "NOVALUE": want KEY=VALUE`,
			`--prefill-env "1X=2": "1X" is not a valid variable name`,
			`--prefill-env "ETCD_ENDPOINTS=http://x:1": ETCD_ENDPOINTS is set by the plan (use --etcd-endpoints)`,
			`--decode-env "NATS_SERVER=nats://y:2": NATS_SERVER is set by the plan`,
		}},
		"nats": {func(s *Spec) { s.NATSServer, s.NoNATS, s.NATSMaxPayload = "tcp://bus:4222", true, "128MB" }, 8, []string{
			`--nats-server "tcp://bus:4222" and --no-nats contradict each other`,
			`--nats-server "tcp://bus:4222": must start with nats://`,
			`--nats-max-payload "128MB": nats-server refuses more than its max_pending, 64MB`,
		}},
		"nats payload syntax": {func(s *Spec) { s.NATSMaxPayload = "lots" }, 8, []string{`--nats-max-payload "lots": want a size such as 64MB`}},
		"etcd endpoints":      {func(s *Spec) { s.EtcdEndpoints = "http://a:2379,b:2379" }, 8, []string{`"b:2379" is not an http:// or https:// URL`}},
		"paths": {func(s *Spec) { s.CacheDir, s.LocalDir, s.EtcdDataDir, s.LogDir = "cache", "tmp", "etcd", "" }, 8, []string{
			`--cache-dir "cache": must be an absolute path on storage shared by all nodes`,
			"--log-dir is empty",
			`--local-dir "tmp": must be an absolute path on node-local disk`,
			`--etcd-data-dir "etcd": must be an absolute path on node-local disk`,
		}},
		"deepgemm": {func(s *Spec) {
			s.Precompile, s.DGCacheMode, s.DGLocalDir, s.ImageDigest = "sometimes", "nfs", "dg", "sha256:abc"
			s.PrefillEnv = []string{"SGLANG_DG_CACHE_DIR=/x", "DG_JIT_CACHE_DIR=/y"}
			s.DecodeEnv = []string{"SGL_DG_CACHE_DIR=/z"}
		}, 8, []string{
			`--precompile "sometimes": want auto, always or never`,
			`--dg-cache-mode "nfs": want local or shared`,
			`--image-digest "sha256:abc": want sha256:<64 hex digits>`,
			`--prefill-env "SGLANG_DG_CACHE_DIR=/x": SGLANG_DG_CACHE_DIR is set by the plan`,
			`--prefill-env "DG_JIT_CACHE_DIR=/y": SGLang overwrites DG_JIT_CACHE_DIR`,
			`--decode-env "SGL_DG_CACHE_DIR=/z": SGL_DG_CACHE_DIR is set by the plan`,
		}},
		"dg local dir": {func(s *Spec) { s.DGLocalDir = "dg" }, 8, []string{`--dg-local-dir "dg": must be an absolute path on node-local disk`}},
		"precompile timeout": {func(s *Spec) { s.PrecompileTimeout = 500 * time.Millisecond }, 8, []string{
			"--precompile-timeout 500ms: want at least 1s"}},
		"iface": {func(s *Spec) { s.Iface = "eth0/1" }, 8, []string{`--iface "eth0/1": not a network interface name`}},
		"valid xPyD": {func(s *Spec) {
			s.PrefillWorkers, s.PrefillNodesPerWorker, s.DecodeNodesPerWorker = 3, 2, 2
			s.PrefillArgs = []string{"--mem-fraction-static 0.8", "!--deepep-config"}
			s.PrefillEnv = []string{"HF_TOKEN=x"}
		}, 8, nil},
	} {
		t.Run(name, func(t *testing.T) {
			s := spec8()
			tc.edit(&s)
			err := s.Validate(tc.nodes)
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			got := problemsOf(t, err)
			require.Len(t, got, len(tc.want), "problems:\n%s", strings.Join(got, "\n"))
			for i, w := range tc.want {
				assert.Contains(t, got[i], w)
			}
		})
	}
}

// TestValidateReportsEverythingAtOnce: one run names every problem, so a
// user fixes the spec in one go.
func TestValidateReportsEverythingAtOnce(t *testing.T) {
	s := spec8()
	s.ModelPath = ""
	s.SGLangPort = 8000
	s.PrefillArgs = []string{"--node-rank 1"}
	s.DecodeEnv = []string{"BAD"}
	s.NodeSource = "--nodelist"
	err := s.Validate(7)
	got := problemsOf(t, err)
	assert.Len(t, got, 5, strings.Join(got, "\n"))
	msg := err.Error()
	assert.True(t, strings.HasPrefix(msg, "invalid deployment spec (5 problems):\n  - "), msg)
	for _, w := range []string{"--model-path", "--nodelist has 7 nodes", "port 8000", "--node-rank", `--decode-env "BAD"`} {
		assert.Contains(t, msg, w)
	}
}

func TestRendezvousPort(t *testing.T) {
	assert.Equal(t, 21234, RendezvousPort(20000, "41234"))
	assert.NotEqual(t, RendezvousPort(20000, "41234"), RendezvousPort(20000, "41235"), "consecutive jobs differ")
	for _, id := range []string{"0", "9999", "18446744073709551615", "offline", "x"} {
		p := RendezvousPort(RendezvousPortBase, id)
		assert.True(t, p >= 20000 && p < 30000, "%s: %d", id, p)
	}
	assert.Equal(t, RendezvousPort(20000, "offline"), RendezvousPort(20000, "offline"), "stable")

	// Job 9500 would land on the dist-init port; the plan moves past every
	// port SGLang uses or checks (29500-29505), to the first free one.
	plan, err := NewPlan(spec8(), "9500", gpuHosts(8), nil)
	require.NoError(t, err)
	assert.Equal(t, 29506, plan.RendezvousPort)
	assert.Equal(t, "gpu01:29506", plan.Rendezvous)

	s := spec8()
	s.RendezvousPort = 12345
	plan, err = NewPlan(s, "9500", gpuHosts(8), nil)
	require.NoError(t, err)
	assert.Equal(t, 12345, plan.RendezvousPort, "an explicit port is kept")
}

func TestImageVersionsAndDeprecations(t *testing.T) {
	s := spec8()
	out := []byte(`{"sglang": "0.5.6.post2", "ai-dynamo": "0.8.0", "ai-dynamo-runtime": null}` + "\n")
	v, err := ParseVersions(out)
	require.NoError(t, err)
	assert.Equal(t, Versions{SGLang: "0.5.6.post2", Dynamo: "0.8.0"}, v)
	assert.Equal(t, "SGLang 0.5.6.post2, Dynamo 0.8.0", v.String())
	assert.Empty(t, s.CheckImage(v))
	assert.Contains(t, s.CheckImage(Versions{SGLang: "0.5.9"}), "the image holds SGLang 0.5.9, but the plan is made for SGLang 0.5.6.post2")
	assert.Contains(t, s.CheckImage(Versions{}), "the image has no sglang package")
	_, err = ParseVersions([]byte("Traceback (most recent call last):"))
	assert.ErrorContains(t, err, "the version probe printed")

	assert.Empty(t, s.Deprecations(), "0.5.6.post2 deprecates none of the guide's flags")
	s.SGLangVersion = "0.5.8"
	assert.Equal(t, []string{"decode worker flag --prefill-round-robin-balance: deprecated since SGLang 0.5.8 " +
		"(a no-op with a warning) and refused by later releases: remove it with !--prefill-round-robin-balance"}, s.Deprecations())
	s.SGLangVersion = "0.5.14"
	assert.Len(t, s.Deprecations(), 2, "and --cuda-graph-bs on decode")
	require.NoError(t, s.Validate(8), "deprecated is not refused")

	// A release that no longer parses the flag: refused before anything
	// starts, with the way out; the warning for it goes.
	s.SGLangVersion = "0.5.20"
	err = s.Validate(8)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "decode worker flag --prefill-round-robin-balance: SGLang 0.5.20 no longer accepts it "+
		"(removed in 0.5.20): remove it with --decode-arg '!--prefill-round-robin-balance'")
	assert.Equal(t, []string{"decode worker flag --cuda-graph-bs: an alias of --cuda-graph-bs-decode since SGLang 0.5.14: " +
		"prefill graphs use --cuda-graph-bs-prefill"}, s.Deprecations())
	s.DecodeArgs = []string{"!--prefill-round-robin-balance"}
	assert.NoError(t, s.Validate(8), "removed as told")

	// Before the port model's first release: said, not refused.
	s.DecodeArgs, s.SGLangVersion = nil, "0.5.2"
	assert.Equal(t, []string{"SGLang 0.5.2: the plan's port model starts at 0.5.3.post2; before it each DP rank " +
		"bound --dist-init-port+1+rank, which the preflight does not check"}, s.Deprecations())
	s.SGLangVersion = "0.5.3.post2"
	assert.Empty(t, s.Deprecations())
}

// strings.NewReplacer is the oracle: ExpandJobHost must give what it gives.
func TestExpandJobHost(t *testing.T) {
	oracle := func(p, j, h string) string { return strings.NewReplacer("%j", j, "%h", h).Replace(p) }
	for _, pattern := range []string{
		"", "/tmp", "/tmp/wideep-%j", "/local/%h/%j/dg", "%j%h%j", "%", "%%", "%%j", "%%%h", "a%", "%x%j",
		"/scratch/%J/%H", "%h%", "%jj%hh", "100%",
	} {
		t.Run(pattern, func(t *testing.T) {
			for _, jh := range [][2]string{{"123", "gpu01"}, {"", ""}, {"%h", "%j"}} {
				assert.Equal(t, oracle(pattern, jh[0], jh[1]), ExpandJobHost(pattern, jh[0], jh[1]), "job %q host %q", jh[0], jh[1])
			}
		})
	}
}

func FuzzExpandJobHost(f *testing.F) {
	f.Add("/tmp/%j/%h", "1", "gpu01")
	f.Fuzz(func(t *testing.T, pattern, job, host string) {
		want := strings.NewReplacer("%j", job, "%h", host).Replace(pattern)
		if got := ExpandJobHost(pattern, job, host); got != want {
			t.Fatalf("ExpandJobHost(%q, %q, %q) = %q, strings.NewReplacer gives %q", pattern, job, host, got, want)
		}
	})
}
