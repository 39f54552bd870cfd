package deploy

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/wideep/wideep-launch/launcher/argspec"
)

// gpuHosts is gpu01..gpuNN, what slurm.Expand("gpu[01-NN]") gives; built by
// hand so these tests do not depend on the hostlist parser.
func gpuHosts(n int) []string {
	h := make([]string, n)
	for i := range h {
		h[i] = fmt.Sprintf("gpu%02d", i+1)
	}
	return h
}

// refCommands reads the reference document's commands (testdata), joining
// continuation lines and dropping a trailing '&'.
func refCommands(t *testing.T) [][]string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "dynamo-sglang-wideep-h100.sh"))
	require.NoError(t, err)
	defer f.Close()
	var cmds [][]string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cont := strings.HasSuffix(line, `\`)
		cur.WriteString(strings.TrimSuffix(line, `\`) + " ")
		if !cont {
			words := strings.Fields(cur.String())
			if words[len(words)-1] == "&" {
				words = words[:len(words)-1]
			}
			cmds = append(cmds, words)
			cur.Reset()
		}
	}
	require.NoError(t, sc.Err())
	return cmds
}

// flagValues parses an argv's flags (after the program and module) into
// flag → values and the flags in order. --a=b counts as --a with value b.
func flagValues(argv []string) (map[string][]string, []string) {
	vals := map[string][]string{}
	var order []string
	cur := ""
	for _, a := range argv {
		if strings.HasPrefix(a, "--") {
			flag, v, joined := strings.Cut(a, "=")
			cur = flag
			order = append(order, flag)
			vals[flag] = []string{}
			if joined {
				vals[flag] = append(vals[flag], v)
			}
			continue
		}
		if cur != "" {
			vals[cur] = append(vals[cur], a)
		}
	}
	return vals, order
}

func procByName(t *testing.T, n NodePlan, name string) Process {
	t.Helper()
	for _, p := range n.Processes {
		if p.Name == name {
			return p
		}
	}
	require.Failf(t, "process missing", "node %d (%s) has no %s process", n.Index, n.Host, name)
	return Process{}
}

func procNames(n NodePlan) []string {
	var names []string
	for _, p := range n.Processes {
		names = append(names, p.Name)
	}
	return names
}

// TestPlanReproducesReference checks the default plan for gpu[01-08] against
// every command of the reference document, flag by flag and in order.
func TestPlanReproducesReference(t *testing.T) {
	cmds := refCommands(t)
	require.Len(t, cmds, 3, "frontend, prefill and decode commands")
	var frontend, prefill, decode []string
	for _, c := range cmds {
		v, _ := flagValues(c)
		switch {
		case c[2] == "dynamo.frontend":
			frontend = c
		case slices.Equal(v["--disaggregation-mode"], []string{"prefill"}):
			prefill = c
		case slices.Equal(v["--disaggregation-mode"], []string{"decode"}):
			decode = c
		}
	}
	require.NotNil(t, frontend)
	require.NotNil(t, prefill)
	require.NotNil(t, decode)

	plan, err := NewPlan(spec8(), "offline", gpuHosts(8), nil)
	require.NoError(t, err)
	require.Len(t, plan.Nodes, 8)

	// The plan adds fixed ports so nothing relies on free-port probing.
	allowedExtra := map[string]string{"--port": "30000", "--nccl-port": "29400"}

	for i, n := range plan.Nodes {
		t.Run(n.Host, func(t *testing.T) {
			ref, head, role := prefill, "gpu01", RolePrefill
			if i >= 4 {
				ref, head, role = decode, "gpu05", RoleDecode
			}
			assert.Equal(t, role, n.Role)
			assert.Equal(t, 0, n.Worker)
			assert.Equal(t, i%4, n.NodeRank)
			assert.Equal(t, head, n.Head)
			assert.Equal(t, i == 0, n.Infra)

			want, wantOrder := flagValues(ref)
			want["--node-rank"] = []string{fmt.Sprint(i % 4)}
			want["--dist-init-addr"] = []string{head + ":29500"}

			w := procByName(t, n, string(role))
			require.Equal(t, ref[:3], w.Argv[:3], "program and module")
			got, gotOrder := flagValues(w.Argv)
			for _, f := range wantOrder {
				assert.Equal(t, want[f], got[f], "flag %s", f)
			}
			var extra []string
			for _, f := range gotOrder {
				if _, ok := want[f]; !ok {
					extra = append(extra, f)
					assert.Equal(t, []string{allowedExtra[f]}, got[f], "added flag %s", f)
				}
			}
			assert.ElementsMatch(t, []string{"--port", "--nccl-port"}, extra, "flags beyond the reference")
			assert.Equal(t, wantOrder, slices.DeleteFunc(slices.Clone(gotOrder), func(f string) bool {
				_, ok := allowedExtra[f]
				return ok
			}), "reference flags in the reference's order")

			// The precompile runs the same SGLang server args (the reference
			// has no Dynamo-only flag to strip) plus its own --timeout, into
			// the node-local copy of the role's kernel set, which the worker
			// then reads through both variable names.
			pc := procByName(t, n, ProcPrecompile)
			assert.True(t, pc.Oneshot)
			assert.Equal(t, []string{"python3", "-m", "sglang.compile_deep_gemm"}, pc.Argv[:3])
			assert.Equal(t, w.Argv[3:], pc.Argv[3:len(pc.Argv)-2])
			assert.Equal(t, []string{"--timeout", "3600"}, pc.Argv[len(pc.Argv)-2:])
			set := plan.DeepGEMM[slices.IndexFunc(plan.DeepGEMM, func(k KernelSet) bool { return k.Role == role })]
			assert.Equal(t, "/tmp/wideep-dg/"+set.Name(), w.Env["SGLANG_DG_CACHE_DIR"])
			assert.Equal(t, w.Env["SGLANG_DG_CACHE_DIR"], w.Env["SGL_DG_CACHE_DIR"])
			assert.Equal(t, pc.Env["SGLANG_DG_CACHE_DIR"], w.Env["SGLANG_DG_CACHE_DIR"])
			assert.Equal(t, "/configs/cache/deepgemm/"+set.Name(), set.Entry)
			assert.Regexp(t, "^"+string(role)+"-[0-9a-f]{16}$", set.Name())

			assert.Equal(t, "http://gpu01:2379", w.Env["ETCD_ENDPOINTS"])
			assert.Equal(t, "nats://gpu01:4222", w.Env["NATS_SERVER"])
			assert.Equal(t, n.Host, w.Env["DYN_TCP_RPC_HOST"])

			if i == 0 {
				assert.Equal(t, []string{ProcEtcd, ProcNATS, ProcFrontend, ProcPrecompile, "prefill"}, procNames(n))
				assert.Equal(t, frontend, procByName(t, n, ProcFrontend).Argv)
			} else {
				assert.Equal(t, []string{ProcPrecompile, string(role)}, procNames(n))
			}
		})
	}
	assert.Equal(t, "http://gpu01:8000", plan.Frontend)
	assert.Equal(t, "http://gpu01:2379", plan.EtcdEndpoints)
	assert.Equal(t, "nats://gpu01:4222", plan.NATSServer)
	assert.NotEqual(t, plan.Nodes[0].Processes[3].Env["SGLANG_DG_CACHE_DIR"], plan.Nodes[4].Processes[0].Env["SGLANG_DG_CACHE_DIR"],
		"prefill and decode compile different kernels")
	require.Len(t, plan.DeepGEMM, 2)
	assert.Equal(t, []int{0, 1, 2, 3}, plan.DeepGEMM[0].CompilerNodes)
	assert.Equal(t, []int{4, 5, 6, 7}, plan.DeepGEMM[1].CompilerNodes)
}

// Only the first worker of a layout compiles: the others wait for its
// kernels and have no precompile process.
func TestPlanOnlyTheFirstWorkerOfALayoutCompiles(t *testing.T) {
	s := spec8()
	s.PrefillWorkers, s.PrefillNodesPerWorker = 3, 2
	s.DecodeWorkers, s.DecodeNodesPerWorker = 1, 2
	plan, err := NewPlan(s, "5", gpuHosts(s.NodesNeeded()), nil)
	require.NoError(t, err)
	var compiling []int
	for _, n := range plan.Nodes {
		if slices.Contains(procNames(n), ProcPrecompile) {
			compiling = append(compiling, n.Index)
		}
	}
	assert.Equal(t, []int{0, 1, 6, 7}, compiling)
	require.Len(t, plan.DeepGEMM, 2)
	assert.Equal(t, KernelSet{Role: RolePrefill, Key: plan.DeepGEMM[0].Key, Entry: plan.DeepGEMM[0].Entry,
		Compiler: 0, CompilerNodes: []int{0, 1}, Workers: 3, Inputs: plan.DeepGEMM[0].Inputs}, plan.DeepGEMM[0])
	for _, w := range plan.Workers {
		assert.Equal(t, string(w.Role)+"-"+plan.DeepGEMM[map[Role]int{RolePrefill: 0, RoleDecode: 1}[w.Role]].Key, w.KernelSet)
	}
	for i := 0; i < 6; i++ {
		assert.Equal(t, "/tmp/wideep-dg/"+plan.DeepGEMM[0].Name(), procByName(t, plan.Nodes[i], "prefill").Env["SGLANG_DG_CACHE_DIR"])
	}
}

func TestPlanDeepGEMMDirs(t *testing.T) {
	for name, tc := range map[string]struct {
		edit            func(*Spec)
		worker, compile string // for node 1 (gpu02) of job 5; %s is the set's name
	}{
		"local":                    {func(*Spec) {}, "/tmp/wideep-dg/%s", "/tmp/wideep-dg/%s"},
		"local, per job, per node": {func(s *Spec) { s.DGLocalDir = "/scratch/%j/%h/dg" }, "/scratch/5/gpu02/dg/%s", "/scratch/5/gpu02/dg/%s"},
		// The workers read the shared entry itself; the compile still
		// writes node-local.
		"shared": {func(s *Spec) { s.DGCacheMode = DGCacheShared }, "/configs/cache/deepgemm/%s", "/tmp/wideep-dg/%s"},
	} {
		t.Run(name, func(t *testing.T) {
			s := spec8()
			tc.edit(&s)
			plan, err := NewPlan(s, "5", gpuHosts(8), nil)
			require.NoError(t, err)
			set := plan.DeepGEMM[0].Name()
			w := procByName(t, plan.Nodes[1], "prefill")
			pc := procByName(t, plan.Nodes[1], ProcPrecompile)
			assert.Equal(t, fmt.Sprintf(tc.worker, set), w.Env["SGLANG_DG_CACHE_DIR"])
			assert.Equal(t, fmt.Sprintf(tc.worker, set), w.Env["SGL_DG_CACHE_DIR"])
			assert.Equal(t, fmt.Sprintf(tc.compile, set), pc.Env["SGLANG_DG_CACHE_DIR"])
			assert.Equal(t, fmt.Sprintf(tc.compile, set), pc.Env["SGL_DG_CACHE_DIR"])
			assert.NotContains(t, w.Env, "DG_JIT_CACHE_DIR", "SGLang overwrites it")
		})
	}
}

func TestPlanInfraProcesses(t *testing.T) {
	plan, err := NewPlan(spec8(), "4242", gpuHosts(8), nil)
	require.NoError(t, err)
	n := plan.Nodes[0]
	etcd := procByName(t, n, ProcEtcd)
	assert.Equal(t, []string{"etcd", "--name", "gpu01", "--data-dir", "/tmp/wideep-4242/etcd",
		"--listen-client-urls", "http://0.0.0.0:2379", "--advertise-client-urls", "http://gpu01:2379",
		"--listen-peer-urls", "http://0.0.0.0:2380", "--initial-advertise-peer-urls", "http://gpu01:2380",
		"--initial-cluster", "gpu01=http://gpu01:2380"}, etcd.Argv)
	assert.Equal(t, []int{2379, 2380}, portNumbers(etcd.Ports, true))

	nats := procByName(t, n, ProcNATS)
	assert.Equal(t, []string{"nats-server", "-js", "-p", "4222", "-sd", "/tmp/wideep-4242/nats",
		"-c", "/tmp/wideep-4242/nats.conf"}, nats.Argv)
	assert.Equal(t, map[string]string{"/tmp/wideep-4242/nats.conf": "max_payload: 64MB\n"}, nats.Files)
	assert.Equal(t, []int{4222}, portNumbers(nats.Ports, true))

	fe := procByName(t, n, ProcFrontend)
	assert.Equal(t, map[string]string{"ETCD_ENDPOINTS": "http://gpu01:2379", "NATS_SERVER": "nats://gpu01:4222",
		"DYN_TCP_RPC_HOST": "gpu01"}, fe.Env)
	assert.Equal(t, []int{8000}, portNumbers(fe.Ports, true))

	// SGLang's port model (0.5.6.post2, DP attention): the head listens on
	// the torch store P, P+1..P+5 and the DP handshake P+13, the prefill head
	// on the bootstrap port too; every node of the worker needs P..P+5 and
	// the NCCL port free; dynamo.sglang listens on no --port, the
	// precompile's server does, on every node.
	w := procByName(t, n, "prefill")
	assert.Equal(t, []int{29500, 29501, 29502, 29503, 29504, 29505, 29513, 30001}, portNumbers(w.Ports, true))
	assert.Equal(t, []int{29400}, portNumbers(w.Ports, false))
	rest := procByName(t, plan.Nodes[1], "prefill")
	assert.Empty(t, portNumbers(rest.Ports, true), "a non-head node listens on nothing")
	assert.Equal(t, []int{29500, 29501, 29502, 29503, 29504, 29505, 29400}, portNumbers(rest.Ports, false),
		"but SGLang checks the dist-init ports on every node")
	dec := procByName(t, plan.Nodes[4], "decode")
	assert.NotContains(t, portNumbers(dec.Ports, true), 30001, "decode never binds the bootstrap port")
	pre := procByName(t, plan.Nodes[5], ProcPrecompile)
	assert.Equal(t, []int{30000}, portNumbers(pre.Ports, true), "compile_deep_gemm's server listens on --port")
	assert.Equal(t, "SGLang tokenizer (--dist-init-port+1)", rest.Ports[1].Describe())
}

func TestNATSConfigAcceptedByNATSServer(t *testing.T) {
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		t.Fatal("needs nats-server (Debian package nats-server; make deps installs it)")
	}
	plan, err := NewPlan(spec8(), "1", gpuHosts(8), nil)
	require.NoError(t, err)
	nats := procByName(t, plan.Nodes[0], ProcNATS)
	require.Len(t, nats.Files, 1)
	conf := filepath.Join(t.TempDir(), "nats.conf")
	for _, content := range nats.Files {
		require.NoError(t, os.WriteFile(conf, []byte(content), 0o600))
	}
	out, err := exec.Command(bin, "-c", conf, "-t").CombinedOutput()
	assert.NoError(t, err, "%s", out)
}

type nodeWant struct {
	role   Role
	worker int
	rank   int
	head   string
	procs  string
}

func TestPlanLayouts(t *testing.T) {
	layout := func(pw, pn, dw, dn int) Spec {
		s := spec8()
		s.PrefillWorkers, s.PrefillNodesPerWorker, s.DecodeWorkers, s.DecodeNodesPerWorker = pw, pn, dw, dn
		return s
	}
	const (
		infraP = "etcd,nats,frontend,precompile,prefill"
		pc     = "precompile,prefill" // the first worker of a layout compiles on a miss
		p      = "prefill"
		d      = "precompile,decode"
	)
	for name, tc := range map[string]struct {
		spec  Spec
		nodes int
		want  []nodeWant
	}{
		"3P×2 + 1D×2 on 8": {layout(3, 2, 1, 2), 8, []nodeWant{
			{RolePrefill, 0, 0, "gpu01", infraP}, {RolePrefill, 0, 1, "gpu01", pc},
			{RolePrefill, 1, 0, "gpu03", p}, {RolePrefill, 1, 1, "gpu03", p},
			{RolePrefill, 2, 0, "gpu05", p}, {RolePrefill, 2, 1, "gpu05", p},
			{RoleDecode, 0, 0, "gpu07", d}, {RoleDecode, 0, 1, "gpu07", d},
		}},
		"2P×1 + 1D×2 on 4": {layout(2, 1, 1, 2), 4, []nodeWant{
			{RolePrefill, 0, 0, "gpu01", infraP}, {RolePrefill, 1, 0, "gpu02", p},
			{RoleDecode, 0, 0, "gpu03", d}, {RoleDecode, 0, 1, "gpu03", d},
		}},
		"1P×1 + 1D×1 on 2": {layout(1, 1, 1, 1), 2, []nodeWant{
			{RolePrefill, 0, 0, "gpu01", infraP}, {RoleDecode, 0, 0, "gpu02", d},
		}},
		"dedicated infra, 1P×1 + 1D×1 on 3": {func() Spec {
			s := layout(1, 1, 1, 1)
			s.InfraPlacement = InfraDedicated
			return s
		}(), 3, []nodeWant{
			{RolePrefill, 0, 0, "gpu01", pc}, {RoleDecode, 0, 0, "gpu02", d},
			{RoleInfra, -1, -1, "", "etcd,nats,frontend"},
		}},
	} {
		t.Run(name, func(t *testing.T) {
			plan, err := NewPlan(tc.spec, "7", gpuHosts(tc.nodes), nil)
			require.NoError(t, err)
			require.Len(t, plan.Nodes, len(tc.want))
			for i, w := range tc.want {
				n := plan.Nodes[i]
				got := nodeWant{n.Role, n.Worker, n.NodeRank, n.Head, strings.Join(procNames(n), ",")}
				assert.Equal(t, w, got, "node %d (%s)", i, n.Host)
				if n.Worker >= 0 {
					v, _ := flagValues(procByName(t, n, string(n.Role)).Argv)
					assert.Equal(t, []string{fmt.Sprint(w.rank)}, v["--node-rank"], "node %d", i)
					assert.Equal(t, []string{w.head + ":29500"}, v["--dist-init-addr"], "node %d", i)
				}
			}
			infra := plan.Nodes[plan.InfraNode]
			assert.True(t, infra.Infra)
			assert.Equal(t, "http://"+infra.Host+":8000", plan.Frontend)
		})
	}
}

// TestPlanLargeLayouts checks every node's rank and head arithmetically for
// layouts too big to list.
func TestPlanLargeLayouts(t *testing.T) {
	for name, tc := range map[string]struct {
		pw, pn, dw, dn int
		infra          string
		nodes          int
		tp             [2]int
	}{
		"16 nodes: 2P×4 + 1D×8":           {2, 4, 1, 8, InfraFirst, 16, [2]int{32, 64}},
		"16 nodes: 4P×2 + 1D×7 + infra":   {4, 2, 1, 7, InfraDedicated, 16, [2]int{16, 56}},
		"64 nodes: 8P×4 + 4D×8":           {8, 4, 4, 8, InfraFirst, 64, [2]int{32, 64}},
		"64 nodes: 6P×4 + 1D×39 + infra":  {6, 4, 1, 39, InfraDedicated, 64, [2]int{32, 312}},
		"64 nodes: 16P×2 + 16D×2 (32 PD)": {16, 2, 16, 2, InfraFirst, 64, [2]int{16, 16}},
	} {
		t.Run(name, func(t *testing.T) {
			s := spec8()
			s.PrefillWorkers, s.PrefillNodesPerWorker, s.DecodeWorkers, s.DecodeNodesPerWorker = tc.pw, tc.pn, tc.dw, tc.dn
			s.InfraPlacement = tc.infra
			hosts := gpuHosts(tc.nodes)
			plan, err := NewPlan(s, "123", hosts, nil)
			require.NoError(t, err)
			require.Len(t, plan.Nodes, tc.nodes)
			require.Len(t, plan.Workers, tc.pw+tc.dw)
			decodeStart := tc.pw * tc.pn
			for i, n := range plan.Nodes {
				role, worker, rank, per := RolePrefill, i/tc.pn, i%tc.pn, tc.pn
				if i >= decodeStart {
					role, worker, rank, per = RoleDecode, (i-decodeStart)/tc.dn, (i-decodeStart)%tc.dn, tc.dn
				}
				if tc.infra == InfraDedicated && i == tc.nodes-1 {
					assert.Equal(t, RoleInfra, n.Role)
					assert.Equal(t, -1, n.Worker)
					assert.True(t, n.Infra)
					assert.Equal(t, i, plan.InfraNode)
					continue
				}
				head := hosts[i-rank]
				if n.Role != role || n.Worker != worker || n.NodeRank != rank || n.Head != head {
					t.Errorf("node %d: got %s worker %d rank %d head %s, want %s worker %d rank %d head %s",
						i, n.Role, n.Worker, n.NodeRank, n.Head, role, worker, rank, head)
				}
				v, _ := flagValues(n.Processes[len(n.Processes)-1].Argv)
				if fmt.Sprint(v["--nnodes"], v["--node-rank"], v["--dist-init-addr"]) != fmt.Sprint([]string{fmt.Sprint(per)}, []string{fmt.Sprint(rank)}, []string{head + ":29500"}) {
					t.Errorf("node %d argv: nnodes %v rank %v dist-init %v", i, v["--nnodes"], v["--node-rank"], v["--dist-init-addr"])
				}
			}
			for _, w := range plan.Workers {
				want := tc.tp[0]
				if w.Role == RoleDecode {
					want = tc.tp[1]
				}
				assert.Equal(t, want, w.TPSize, "%s worker %d", w.Role, w.Index)
				assert.Equal(t, plan.Nodes[w.Nodes[0]].Host, w.Head)
				for r, ni := range w.Nodes {
					assert.Equal(t, r, plan.Nodes[ni].NodeRank)
				}
			}
		})
	}
}

func TestPlanWithAddresses(t *testing.T) {
	hosts := gpuHosts(8)
	addrs := make([]string, 8)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("10.0.0.%d", i+11)
	}
	s := spec8()
	s.Iface = "ib0"
	plan, err := NewPlan(s, "99", hosts, addrs)
	require.NoError(t, err)
	for i, n := range plan.Nodes {
		assert.Equal(t, addrs[i], n.Addr)
		assert.Equal(t, hosts[i], n.Host)
	}
	assert.Equal(t, "10.0.0.11", plan.Nodes[3].Head)
	assert.Equal(t, "10.0.0.15", plan.Nodes[6].Head)
	assert.Equal(t, "http://10.0.0.11:8000", plan.Frontend)
	assert.Equal(t, "10.0.0.11:"+fmt.Sprint(plan.RendezvousPort), plan.Rendezvous)

	etcd := procByName(t, plan.Nodes[0], ProcEtcd)
	v, _ := flagValues(etcd.Argv)
	assert.Equal(t, []string{"gpu01"}, v["--name"])
	assert.Equal(t, []string{"http://10.0.0.11:2379"}, v["--advertise-client-urls"], "advertise the address, never 0.0.0.0")
	assert.Equal(t, []string{"http://10.0.0.11:2380"}, v["--initial-advertise-peer-urls"])
	assert.Equal(t, []string{"gpu01=http://10.0.0.11:2380"}, v["--initial-cluster"])

	w := procByName(t, plan.Nodes[6], "decode")
	wv, _ := flagValues(w.Argv)
	assert.Equal(t, []string{"10.0.0.15:29500"}, wv["--dist-init-addr"])
	for k, want := range map[string]string{
		"ETCD_ENDPOINTS": "http://10.0.0.11:2379", "NATS_SERVER": "nats://10.0.0.11:4222",
		"DYN_TCP_RPC_HOST": "10.0.0.17", "GLOO_SOCKET_IFNAME": "ib0", "NCCL_SOCKET_IFNAME": "ib0",
		"NVSHMEM_BOOTSTRAP_UID_SOCK_IFNAME": "ib0",
	} {
		assert.Equal(t, want, w.Env[k], k)
	}
}

func TestPlanControlPlaneOptions(t *testing.T) {
	for name, tc := range map[string]struct {
		edit      func(*Spec)
		infra     string // processes on node 0
		etcd      string
		nats      string // "" = NATS_SERVER not exported
		natsFiles bool
	}{
		"default": {func(*Spec) {}, "etcd,nats,frontend,precompile,prefill",
			"http://gpu01:2379", "nats://gpu01:4222", true},
		"no nats": {func(s *Spec) { s.NoNATS = true }, "etcd,frontend,precompile,prefill",
			"http://gpu01:2379", "", false},
		"external etcd and nats": {func(s *Spec) {
			s.EtcdEndpoints, s.NATSServer = "http://etcd1:2379,http://etcd2:2379", "nats://bus:4222"
		}, "frontend,precompile,prefill", "http://etcd1:2379,http://etcd2:2379", "nats://bus:4222", false},
		"nats default payload": {func(s *Spec) { s.NATSMaxPayload = "" }, "etcd,nats,frontend,precompile,prefill",
			"http://gpu01:2379", "nats://gpu01:4222", false},
		"no precompile": {func(s *Spec) { s.Precompile = PrecompileNever }, "etcd,nats,frontend,prefill",
			"http://gpu01:2379", "nats://gpu01:4222", true},
	} {
		t.Run(name, func(t *testing.T) {
			s := spec8()
			tc.edit(&s)
			plan, err := NewPlan(s, "5", gpuHosts(8), nil)
			require.NoError(t, err)
			assert.Equal(t, tc.infra, strings.Join(procNames(plan.Nodes[0]), ","))
			assert.Equal(t, tc.etcd, plan.EtcdEndpoints)
			assert.Equal(t, tc.nats, plan.NATSServer)
			for _, n := range plan.Nodes {
				for _, p := range n.Processes {
					if p.Name == ProcEtcd || p.Name == ProcNATS {
						if p.Name == ProcNATS {
							assert.Equal(t, tc.natsFiles, slices.Contains(p.Argv, "-c"))
							assert.Equal(t, tc.natsFiles, len(p.Files) == 1)
						}
						continue
					}
					assert.Equal(t, tc.etcd, p.Env["ETCD_ENDPOINTS"], "%s on node %d", p.Name, n.Index)
					nats, exported := p.Env["NATS_SERVER"]
					assert.Equal(t, tc.nats != "", exported, "%s on node %d", p.Name, n.Index)
					assert.Equal(t, tc.nats, nats)
					_, dg := p.Env["SGLANG_DG_CACHE_DIR"]
					assert.Equal(t, p.Name != ProcFrontend, dg, "%s on node %d", p.Name, n.Index)
				}
			}
		})
	}
}

func TestPlanExtraArgsAndEnv(t *testing.T) {
	s := spec8()
	s.PrefillArgs = []string{
		"--mem-fraction-static=0.8",             // override in place, joined form kept
		"!--deepep-config",                      // remove a default
		"--chunked-prefill-size 16384",          // append
		"--enable-metrics",                      // append a switch
		"--endpoint dyn://dynamo.prefill.gen",   // Dynamo-only: not for compile_deep_gemm
		"--json-model-override-args={\"a\": 1}", // one argument, verbatim
	}
	s.DecodeArgs = []string{"--cuda-graph-bs 1 2 4 8", "--deepep-mode low_latency"}
	s.PrefillEnv = []string{"TORCH_DISTRIBUTED_DEFAULT_TIMEOUT=1800", "EMPTY="}
	s.DecodeEnv = []string{"SGLANG_DECODE_BOOTSTRAP_TIMEOUT=1000"}
	plan, err := NewPlan(s, "5", gpuHosts(8), nil)
	require.NoError(t, err)

	pre := procByName(t, plan.Nodes[1], "prefill")
	def, _, _ := flatten(nil, defaultArgs(RolePrefill))
	i := slices.Index(pre.Argv, "--mem-fraction-static=0.8")
	assert.Equal(t, slices.Index(def, "--mem-fraction-static")+3, i, "overridden in place")
	assert.NotContains(t, pre.Argv, "--deepep-config")
	assert.NotContains(t, pre.Argv, "/configs/deepep.json")
	assert.Equal(t, []string{"--chunked-prefill-size", "16384", "--enable-metrics", "--endpoint", "dyn://dynamo.prefill.gen",
		`--json-model-override-args={"a": 1}`}, pre.Argv[len(pre.Argv)-6:])
	assert.Equal(t, "1800", pre.Env["TORCH_DISTRIBUTED_DEFAULT_TIMEOUT"])
	assert.Equal(t, "", pre.Env["EMPTY"])
	assert.NotContains(t, pre.Env, "SGLANG_DECODE_BOOTSTRAP_TIMEOUT")

	pc := procByName(t, plan.Nodes[1], ProcPrecompile)
	assert.NotContains(t, pc.Argv, "--endpoint")
	assert.NotContains(t, pc.Argv, "dyn://dynamo.prefill.gen")
	assert.Contains(t, pc.Argv, "--enable-metrics")
	v, _ := flagValues(pc.Argv)
	assert.Equal(t, []string{"1"}, v["--node-rank"])

	dec := procByName(t, plan.Nodes[5], "decode")
	dv, _ := flagValues(dec.Argv)
	assert.Equal(t, []string{"1", "2", "4", "8"}, dv["--cuda-graph-bs"], "list values become separate arguments")
	assert.Equal(t, "1000", dec.Env["SGLANG_DECODE_BOOTSTRAP_TIMEOUT"])
	assert.NotContains(t, dec.Env, "TORCH_DISTRIBUTED_DEFAULT_TIMEOUT")
}

func TestPlanDPAndPPSizes(t *testing.T) {
	s := spec8()
	s.PrefillDPSize = 8
	s.DecodeTPSize = 16
	s.DecodeArgs = []string{"--pp-size 2"}
	plan, err := NewPlan(s, "5", gpuHosts(8), nil)
	require.NoError(t, err)
	pv, _ := flagValues(procByName(t, plan.Nodes[0], "prefill").Argv)
	assert.Equal(t, []string{"32"}, pv["--tp-size"])
	assert.Equal(t, []string{"8"}, pv["--dp-size"])
	dv, _ := flagValues(procByName(t, plan.Nodes[4], "decode").Argv)
	assert.Equal(t, []string{"16"}, dv["--tp-size"])
	assert.Equal(t, []string{"16"}, dv["--dp-size"])
	assert.Equal(t, []string{"2"}, dv["--pp-size"])
	// The per-DP-rank ports are random (SGLang >= 0.5.3.post2): dp does not
	// move the head's fixed ports.
	assert.Equal(t, []int{29500, 29501, 29502, 29503, 29504, 29505, 29513, 30001},
		portNumbers(procByName(t, plan.Nodes[0], "prefill").Ports, true))
}

func TestPlanCacheKey(t *testing.T) {
	key := func(edit func(*Spec)) string {
		s := spec8()
		edit(&s)
		plan, err := NewPlan(s, "5", gpuHosts(s.NodesNeeded()), nil)
		require.NoError(t, err)
		assert.Equal(t, plan.DeepGEMM[0].Name(), plan.Workers[0].KernelSet)
		return plan.Workers[0].KernelSet
	}
	base := key(func(*Spec) {})
	assert.Equal(t, base, key(func(s *Spec) { s.DecodeArgs = []string{"--cuda-graph-bs 64"} }), "decode args do not change prefill kernels")
	assert.Equal(t, base, key(func(s *Spec) { s.PrefillWorkers = 2 }), "one cache per role, shared by its workers")
	assert.Equal(t, base, key(func(s *Spec) { s.SGLangPort, s.BootstrapPort, s.DistInitPort = 31000, 31001, 28000 }), "ports do not matter")
	assert.NotEqual(t, base, key(func(s *Spec) { s.Image = "dynamo-wideep:0.9" }), "a new image recompiles")
	assert.NotEqual(t, base, key(func(s *Spec) { s.PrefillDPSize = 8 }), "the layout matters")
	assert.NotEqual(t, base, key(func(s *Spec) { s.PrefillArgs = []string{"--chunked-prefill-size 8192"} }))
	assert.NotEqual(t, base, key(func(s *Spec) { s.PrefillArgs = []string{"--cuda-graph-bs 1 2 4"} }), "cuda graph batch sizes are kernel shapes")
	assert.Equal(t, base, key(func(s *Spec) { s.ServedModelName = "r1" }), "the served name is a label")
	assert.Equal(t, base, key(func(s *Spec) { s.PrefillArgs = []string{"--endpoint dyn://a.b.c"} }),
		"Dynamo-only flags never reach compile_deep_gemm")
	assert.Equal(t, base, key(func(s *Spec) { s.PrecompileTimeout = 2 * time.Hour }), "compile_deep_gemm's --timeout")
	assert.Equal(t, base, key(func(s *Spec) { s.DGLocalDir, s.DGCacheMode = "/scratch/dg", DGCacheShared }))
	assert.Equal(t, base, key(func(s *Spec) { s.PrefillEnv = []string{"TORCH_DISTRIBUTED_DEFAULT_TIMEOUT=1800"} }))
	digest := "sha256:" + strings.Repeat("ab", 32)
	withDigest := key(func(s *Spec) { s.ImageDigest = digest })
	assert.NotEqual(t, base, withDigest)
	assert.Equal(t, withDigest, key(func(s *Spec) { s.ImageDigest, s.Image = digest, "registry/retagged:v2" }),
		"with a digest, a retag keeps the key")
	assert.NotEqual(t, base, key(func(s *Spec) { s.GPUModel = "NVIDIA H200" }), "kernels are built per GPU")
	assert.NotEqual(t, base, key(func(s *Spec) { s.KernelEnv = map[string]string{"SGLANG_JIT_DEEPGEMM_FAST_WARMUP": "1"} }))
	assert.NotEqual(t, base, key(func(s *Spec) { s.PrefillEnv = []string{"SGL_DG_USE_NVRTC=1"} }), "the role's kernel env counts")
}

func TestNewPlanNodeErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		jobID string
		hosts []string
		addrs []string
		want  []string
	}{
		"duplicate host": {"1", append(gpuHosts(7), "gpu03"), nil, []string{"host gpu03 is node 2 and node 7"}},
		"empty host":     {"1", append(gpuHosts(7), ""), nil, []string{"node 7 has an empty host name"}},
		"addresses":      {"1", gpuHosts(8), []string{"10.0.0.1"}, []string{"1 addresses for 8 nodes"}},
		"empty address":  {"1", gpuHosts(2), []string{"10.0.0.1", ""}, []string{"node 1 (gpu02) has no address", "has 2 nodes but the spec needs 8"}},
		"job id":         {"../x", gpuHosts(8), nil, []string{`job id "../x"`}},
		"empty job id":   {"", gpuHosts(8), nil, []string{`job id ""`}},
	} {
		t.Run(name, func(t *testing.T) {
			plan, err := NewPlan(spec8(), tc.jobID, tc.hosts, tc.addrs)
			require.Error(t, err)
			assert.Nil(t, plan)
			var ce *ConfigError
			require.ErrorAs(t, err, &ce)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

// portNumbers are the ports that ports binds (bind) or only needs free.
func portNumbers(ports []Port, bind bool) []int {
	var out []int
	for _, p := range ports {
		if p.Bind == bind {
			out = append(out, p.Port)
		}
	}
	return out
}

// compile_deep_gemm gets exactly what it accepts of the worker's arguments:
// Dynamo's own flags, negations included, stay with dynamo.sglang. Both
// argvs parse under the real grammars (launcher/argspec).
func TestPrecompileKeepsWhatSGLangAccepts(t *testing.T) {
	dynamoOwn := []string{"--dump-config-to /tmp/c.json", "--connector", "--endpoint-types chat",
		"--no-use-sglang-tokenizer", "--no-multimodal-processor", "--namespace dyn", "--discovery-backend etcd",
		"--request-plane tcp", "--engine-request-limit 8", "--tcp-tls-insecure", "--endpoint dyn://dynamo.prefill.generate",
		"--dyn-reasoning-parser deepseek_r1", "--custom-jinja-template /t.jinja"}
	s := spec8()
	s.PrefillArgs = append(slices.Clone(dynamoOwn), "--chunked-prefill-size 8192", "--enable-metrics")
	plan, err := NewPlan(s, "5", gpuHosts(8), nil)
	require.NoError(t, err)
	w := procByName(t, plan.Nodes[1], "prefill")
	pc := procByName(t, plan.Nodes[1], ProcPrecompile)
	_, err = argspec.DynamoSGLang().Parse(w.Argv[3:])
	require.NoError(t, err, "the worker's argv is valid dynamo.sglang")
	_, err = argspec.CompileDeepGEMM().Parse(pc.Argv[3:])
	require.NoError(t, err, "the precompile's argv is valid compile_deep_gemm")
	for _, a := range dynamoOwn {
		flag, _, _ := strings.Cut(a, " ")
		assert.Contains(t, w.Argv, flag)
		assert.NotContains(t, pc.Argv, flag)
	}
	assert.Contains(t, pc.Argv, "--chunked-prefill-size")
	assert.Contains(t, pc.Argv, "--enable-metrics")
}

func TestWorkerArgsCheckedAgainstTheRealGrammar(t *testing.T) {
	for name, tc := range map[string]struct {
		args    []string
		version string
		want    string // "" = valid
	}{
		"removed flag":       {[]string{"--enable-deepep-moe"}, "", `--prefill-arg: python3 -m dynamo.sglang (SGLang 0.5.6.post2) would refuse the worker's arguments: unrecognized arguments: --enable-deepep-moe`},
		"bad choice":         {[]string{"--deepep-mode fast"}, "", `argument --deepep-mode: invalid choice: 'fast'`},
		"bad int":            {[]string{"--chunked-prefill-size big"}, "", `argument --chunked-prefill-size: invalid int value: 'big'`},
		"abbreviation":       {[]string{"--chunked-prefill 4096"}, "", `--prefill-arg: --chunked-prefill abbreviates --chunked-prefill-size: write it in full`},
		"newer SGLang":       {[]string{"--enable-something-new"}, "0.5.9", ""},
		"valid":              {[]string{"--cuda-graph-bs 1 2 4", "--context-length=8192"}, "", ""},
		"dynamo's own, full": {[]string{"--dump-config-to=/tmp/x.json"}, "", ""},
	} {
		t.Run(name, func(t *testing.T) {
			s := spec8()
			s.PrefillArgs = tc.args
			if tc.version != "" {
				s.SGLangVersion = tc.version
			}
			err := s.Validate(8)
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	// With another release, a flag neither grammar knows reaches the precompile.
	s := spec8()
	s.SGLangVersion, s.PrefillArgs = "0.5.9", []string{"--enable-something-new"}
	plan, err := NewPlan(s, "5", gpuHosts(8), nil)
	require.NoError(t, err)
	assert.Contains(t, procByName(t, plan.Nodes[0], ProcPrecompile).Argv, "--enable-something-new")
}
