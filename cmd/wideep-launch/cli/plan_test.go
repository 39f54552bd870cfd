package cli

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	file := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(file, got, 0o644))
		return
	}
	want, err := os.ReadFile(file)
	require.NoError(t, err, "run 'go test ./cmd/wideep-launch/cli -run %s -update' to create it", t.Name())
	assert.Equal(t, string(want), string(got), "differs from %s (-update rewrites it)", file)
}

// runCLI runs wideep-launch with args and exactly the environment env.
func runCLI(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	sys := System{
		Stdin:  strings.NewReader(""),
		Stdout: &out,
		Stderr: &errb,
		LookupEnv: func(k string) (string, bool) {
			v, ok := env[k]
			return v, ok
		},
		Environ:    func() []string { return nil },
		Now:        func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) },
		Executable: func() (string, error) { return "/usr/bin/wideep-launch", nil },
	}
	code = Main(args, sys)
	return code, out.String(), errb.String()
}

func TestPlanHelp(t *testing.T) {
	// The help text must not depend on the environment.
	code, out, errOut := runCLI(t, map[string]string{"WIDEEP_MODEL_PATH": "/elsewhere", "SLURM_JOB_ID": "9"}, "plan", "--help")
	require.Equal(t, 0, code, errOut)
	golden(t, "plan-help.golden", []byte(out))
	for _, l := range strings.Split(out, "\n") {
		assert.LessOrEqual(t, utf8.RuneCountInString(l), 100, "%q", l)
	}
}

func TestPlanTable(t *testing.T) {
	code, out, errOut := runCLI(t, nil, "plan", "--nodelist", "gpu[01-08]")
	require.Equal(t, 0, code, errOut)
	assert.Empty(t, errOut)
	golden(t, "plan-gpu01-08.golden", []byte(out))
	for _, l := range strings.Split(out, "\n") {
		assert.LessOrEqual(t, utf8.RuneCountInString(l), 100, "%q", l)
	}
}

// A plan for an SGLang that deprecated one of the planned flags says so on
// stderr, and still plans.
func TestPlanWarnsOfDeprecatedFlags(t *testing.T) {
	code, out, errOut := runCLI(t, nil, "plan", "--nodelist", "gpu[01-08]", "--sglang-version", "0.5.8", "--output", "json")
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, "wideep-launch plan: warning: decode worker flag --prefill-round-robin-balance: deprecated since SGLang 0.5.8 "+
		"(a no-op with a warning) and refused by later releases: remove it with !--prefill-round-robin-balance\n", errOut)
	var p jsonPlan
	require.NoError(t, json.Unmarshal([]byte(out), &p), "stdout is still the plan alone")
}

type jsonPlan struct {
	JobID    string `json:"job_id"`
	Frontend string `json:"frontend"`
	Nodes    []struct {
		Index     int    `json:"index"`
		Host      string `json:"host"`
		Role      string `json:"role"`
		Worker    int    `json:"worker"`
		NodeRank  int    `json:"node_rank"`
		Head      string `json:"head"`
		Processes []struct {
			Name string            `json:"name"`
			Argv []string          `json:"argv"`
			Env  map[string]string `json:"env"`
		} `json:"processes"`
	} `json:"nodes"`
}

func TestPlanJSON(t *testing.T) {
	code, out, errOut := runCLI(t, nil, "plan", "--nodelist", "gpu[01-08]", "-o", "json")
	require.Equal(t, 0, code, errOut)
	var p jsonPlan
	require.NoError(t, json.Unmarshal([]byte(out), &p))
	require.Len(t, p.Nodes, 8)
	assert.Equal(t, "offline", p.JobID)
	assert.Equal(t, "http://gpu01:8000", p.Frontend)
	for i, n := range p.Nodes {
		assert.Equal(t, i, n.Index)
		assert.Equal(t, i%4, n.NodeRank)
		if i < 4 {
			assert.Equal(t, "prefill", n.Role)
			assert.Equal(t, "gpu01", n.Head)
		} else {
			assert.Equal(t, "decode", n.Role)
			assert.Equal(t, "gpu05", n.Head)
		}
	}
	fe := p.Nodes[0].Processes[2]
	assert.Equal(t, "frontend", fe.Name)
	assert.Equal(t, []string{"python3", "-m", "dynamo.frontend", "--http-port=8000"}, fe.Argv)
	assert.Equal(t, "http://gpu01:2379", fe.Env["ETCD_ENDPOINTS"])
}

func TestPlanShowCommands(t *testing.T) {
	code, out, errOut := runCLI(t, map[string]string{"WIDEEP_PREFILL_ENV": "HF_TOKEN=hf_secret\nA=b c"},
		"plan", "--nodelist", "gpu[01-08]", "--show-commands", "--job-id", "77")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "INDEX  HOST")
	assert.Contains(t, out, "\n# node 0 gpu01 (prefill worker 0 rank 0, infra)\netcd --name gpu01 --data-dir /tmp/wideep-77/etcd ")
	assert.Contains(t, out, "\n# node 7 gpu08 (decode worker 0 rank 3)\n")
	assert.Contains(t, out, "'A=b c'")
	assert.Contains(t, out, "'HF_TOKEN=<redacted>'")
	assert.NotContains(t, out, "hf_secret")
}

// batchEnv is the SLURM_* environment of an 8-node batch script, as measured
// on Slurm 22.05 (slurm/testdata/env/example-env-batch-script.txt).
func batchEnv() map[string]string {
	return map[string]string{
		"SLURMD_NODENAME": "node1", "SLURM_JOB_ID": "2", "SLURM_JOBID": "2", "SLURM_JOB_NAME": "wideep-test",
		"SLURM_JOB_NODELIST": "node[1-8]", "SLURM_JOB_NUM_NODES": "8", "SLURM_NNODES": "8", "SLURM_NODEID": "0",
		"SLURM_NODELIST": "node[1-8]", "SLURM_NPROCS": "8", "SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "1",
		"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_SUBMIT_DIR": "/tmp", "SLURM_TASKS_PER_NODE": "1(x8)",
		"SLURM_GTIDS": "0", "SLURM_CPUS_ON_NODE": "1",
	}
}

func TestPlanFromSlurmEnvironment(t *testing.T) {
	env := batchEnv()
	env["SLURM_GPUS_ON_NODE"] = "4"
	code, out, errOut := runCLI(t, env, "plan", "-o", "json")
	require.Equal(t, 0, code, errOut)
	var p jsonPlan
	require.NoError(t, json.Unmarshal([]byte(out), &p))
	require.Len(t, p.Nodes, 8)
	assert.Equal(t, "2", p.JobID, "the job id comes from SLURM_JOB_ID")
	assert.Equal(t, "node1", p.Nodes[0].Host)
	assert.Equal(t, "node5", p.Nodes[7].Head)
	w := p.Nodes[0].Processes[len(p.Nodes[0].Processes)-1]
	assert.Contains(t, strings.Join(w.Argv, " "), "--tp-size 16 --dp-size 16", "4 GPUs per node from SLURM_GPUS_ON_NODE")
	assert.Contains(t, strings.Join(p.Nodes[0].Processes[0].Argv, " "), "--data-dir /tmp/wideep-2/etcd")

	// The flag beats SLURM_GPUS_ON_NODE, and --nodelist beats the job's nodes.
	code, out, errOut = runCLI(t, env, "plan", "-o", "json", "--gpus-per-node", "8", "--nodelist", "gpu[1-2]",
		"--prefill-nodes-per-worker", "1", "--decode-nodes-per-worker", "1")
	require.Equal(t, 0, code, errOut)
	p = jsonPlan{}
	require.NoError(t, json.Unmarshal([]byte(out), &p))
	require.Len(t, p.Nodes, 2)
	assert.Equal(t, "gpu1", p.Nodes[0].Host)
	assert.Equal(t, "2", p.JobID)
	w = p.Nodes[1].Processes[len(p.Nodes[1].Processes)-1]
	assert.Contains(t, strings.Join(w.Argv, " "), "--tp-size 8 --dp-size 8")
}

func TestPlanEnvironmentFallbacks(t *testing.T) {
	env := map[string]string{
		"WIDEEP_NODELIST":                 "gpu[01-08]",
		"WIDEEP_PREFILL_WORKERS":          "3",
		"WIDEEP_PREFILL_NODES_PER_WORKER": "2",
		"WIDEEP_DECODE_NODES_PER_WORKER":  "1", // the flag below wins
		"WIDEEP_DECODE_ARG":               "--cuda-graph-bs 1 2 4\n--mem-fraction-static=0.8",
		"WIDEEP_OUTPUT":                   "json",
	}
	code, out, errOut := runCLI(t, env, "plan", "--decode-nodes-per-worker", "2")
	require.Equal(t, 0, code, errOut)
	var p jsonPlan
	require.NoError(t, json.Unmarshal([]byte(out), &p))
	require.Len(t, p.Nodes, 8)
	assert.Equal(t, "gpu05", p.Nodes[5].Head, "3 prefill workers of 2 nodes")
	assert.Equal(t, "decode", p.Nodes[6].Role)
	argv := strings.Join(p.Nodes[7].Processes[len(p.Nodes[7].Processes)-1].Argv, " ")
	assert.Contains(t, argv, "--cuda-graph-bs 1 2 4")
	assert.Contains(t, argv, "--mem-fraction-static=0.8")
}

func TestPlanErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		env  map[string]string
		args []string
		want []string
	}{
		"no nodes": {nil, nil, []string{"no nodes to plan for: pass --nodelist"}},
		"node count": {nil, []string{"--nodelist", "gpu[01-07]"}, []string{
			"--nodelist has 7 nodes but the spec needs 8 (1 prefill worker × 4 nodes + 1 decode worker × 4 nodes)"}},
		"slurm node count": {batchEnv(), []string{"--decode-workers", "2"}, []string{
			"SLURM_NODELIST has 8 nodes but the spec needs 12"}},
		"bad hostlist": {nil, []string{"--nodelist", "gpu[01-"}, []string{`invalid hostlist "gpu[01-"`}},
		"managed flag": {nil, []string{"--nodelist", "gpu[01-08]", "--prefill-arg", "--node-rank 2", "--sglang-port", "8000"}, []string{
			`--prefill-arg "--node-rank 2": --node-rank is managed by the plan`,
			"port 8000 is used twice on prefill node rank 0 (node 0, infra): by frontend (Dynamo frontend HTTP (--http-port)) and by precompile (SGLang HTTP server of the precompile (--sglang-port))"}},
		"output":            {nil, []string{"--nodelist", "a,b", "-o", "yaml"}, []string{`--output "yaml": want table or json`}},
		"commands and json": {nil, []string{"--nodelist", "a,b", "-o", "json", "--show-commands"}, []string{"--show-commands goes with --output table"}},
		"argument":          {nil, []string{"--nodelist", "a,b", "extra"}, []string{`plan takes no arguments (got "extra")`}},
		"unknown flag":      {nil, []string{"--nodes", "4"}, []string{"unknown flag: --nodes"}},
		"bad env value":     {map[string]string{"WIDEEP_PREFILL_WORKERS": "three"}, []string{"--nodelist", "a,b"}, []string{"WIDEEP_PREFILL_WORKERS=three (for --prefill-workers)"}},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tc.env, append([]string{"plan"}, tc.args...)...)
			assert.Equal(t, 2, code)
			assert.Empty(t, out, "nothing on stdout")
			for _, w := range tc.want {
				assert.Contains(t, errOut, w)
			}
		})
	}
}

func TestPlanEnrootCommandsGolden(t *testing.T) {
	code, out, errOut := runCLI(t, nil, "plan", "--nodelist", "gpu[01-02]", "--prefill-nodes-per-worker", "1",
		"--decode-nodes-per-worker", "1", "--job-id", "1234", "--runtime", "enroot",
		"--image", "nvcr.io#nvidia/ai-dynamo/sglang-runtime:0.8.0@sha256:"+strings.Repeat("ab", 32),
		"--container-mount", "/shared/models/DeepSeek-R1:/model:ro", "--show-commands")
	require.Equal(t, 0, code, errOut)
	golden(t, "plan-enroot-commands.golden", []byte(out))
}
