package cli

import (
	"bytes"
	"errors"
	"io/fs"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// badInput is one row of the bad-input matrix: a command line, an
// environment and standard input that must be refused before anything
// heavy starts (exit 2, the culprit named on stderr, nothing on stdout).
type badInput struct {
	name string
	// args is the whole command line; run rows get runArgs, plan rows planArgs.
	args []string
	// env is the environment. For run rows it is laid over a valid step
	// task's (stepTaskEnv) and the run base below; unset removes variables.
	env   map[string]string
	unset []string
	stdin string
	// want are substrings of stderr that name the culprit.
	want []string
}

// The root of each row's scratch files; every path a run row may write is
// under it, so "nothing written" is "the directory stays empty".
const scratchRoot = "@ROOT@"

// runArgs is `run --simulate` plus args: the stand-ins' runtime, so that a
// row that slips through could not start real programs either.
func runArgs(args ...string) []string { return append([]string{"run", "--simulate"}, args...) }

// planArgs plans the default layout's 8 nodes plus args.
func planArgs(args ...string) []string {
	return append([]string{"plan", "--nodelist", "gpu[01-08]"}, args...)
}

// runBase puts every directory a run row could touch under the row's
// scratch root. It is given through WIDEEP_* variables, not flags, so that a
// row's own flag (flag > env) or variable (the row's map wins) replaces it.
var runBase = map[string]string{
	"WIDEEP_LOG_DIR":          scratchRoot + "/logs",
	"WIDEEP_CACHE_DIR":        scratchRoot + "/cache",
	"WIDEEP_LOCAL_DIR":        scratchRoot + "/local/%j",
	"WIDEEP_DG_LOCAL_DIR":     scratchRoot + "/dg/%j",
	"WIDEEP_IMAGE_CACHE":      scratchRoot + "/images",
	"WIDEEP_ENROOT_DATA_PATH": scratchRoot + "/enroot/%j",
}

func kvEnv(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// TestBadInput runs the whole matrix: hostlists, standard input, the Slurm
// environment, flags, the same through WIDEEP_* variables, and plan specs.
// A run row that got past every check would reach the runtime, whose first
// step asks for this executable: the probe fails the row there (exit 125,
// and the probe records it), so nothing is ever started.
func TestBadInput(t *testing.T) {
	rows := slices.Concat(hostlistRows, slurmRows, flagRows, envRows, specRows)
	require.GreaterOrEqual(t, len(rows), 60)
	seen := map[string]bool{}
	for _, tc := range rows {
		require.False(t, seen[tc.name], "duplicate row %q", tc.name)
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			sys, out, errb, started := badInputSystem(t, tc, root)
			code := Main(slices.Clone(tc.args), sys)
			stderr := errb.String()
			assert.Equal(t, 2, code, "stderr: %s", stderr)
			for _, w := range tc.want {
				assert.Contains(t, stderr, w)
			}
			assert.Empty(t, out.String(), "nothing on stdout")
			assert.False(t, *started, "the runtime was built: nothing may start")
			var written []string
			require.NoError(t, filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
				if p != root {
					written = append(written, p)
				}
				return err
			}))
			assert.Empty(t, written, "nothing written")
		})
	}
}

// badInputSystem is the System a row runs with: its environment (over a
// valid step task's for run), its standard input, buffers for the output,
// and an executable probe that records whether the runtime was built.
func badInputSystem(t *testing.T, tc badInput, root string) (System, *bytes.Buffer, *bytes.Buffer, *bool) {
	t.Helper()
	environ := map[string]string{}
	if tc.args[0] == "run" {
		environ = stepTaskEnv(t)
		maps.Copy(environ, runBase)
	}
	maps.Copy(environ, tc.env)
	for _, k := range tc.unset {
		delete(environ, k)
	}
	for k, v := range environ {
		environ[k] = strings.ReplaceAll(v, scratchRoot, root)
	}
	var out, errb bytes.Buffer
	started := new(bool)
	sys := System{
		Stdin:  strings.NewReader(tc.stdin),
		Stdout: &out,
		Stderr: &errb,
		LookupEnv: func(k string) (string, bool) {
			v, ok := environ[k]
			return v, ok
		},
		Environ: func() []string {
			kv := make([]string, 0, len(environ))
			for k, v := range environ {
				kv = append(kv, k+"="+v)
			}
			return kv
		},
		Now: func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) },
		Executable: func() (string, error) {
			*started = true
			return "", errors.New("test probe: the runtime is being built")
		},
		GPUModel: func() (string, error) { return "", errors.New("test: no GPU probe") },
	}
	return sys, &out, &errb, started
}

var hostlistRows = []badInput{
	{name: "hostnames/decreasing range", args: []string{"hostnames", "node[3-1]"}, want: []string{`"3-1" at offset 5: range is decreasing`}},
	{name: "hostnames/unterminated", args: []string{"hostnames", "node[1-2"}, want: []string{`"[1-2" at offset 4: unterminated '['`}},
	{name: "hostnames/empty brackets", args: []string{"hostnames", "gpu[]"}, want: []string{`"[]" at offset 3: empty brackets`}},
	{name: "hostnames/letters in range", args: []string{"hostnames", "node[a-b]"}, want: []string{`"a-b" at offset 5`, "digits only"}},
	{name: "hostnames/negative", args: []string{"hostnames", "node[-1]"}, want: []string{`"-1" at offset 5: negative numbers`}},
	{name: "hostnames/unmatched close", args: []string{"hostnames", "node1]"}, want: []string{`"]" at offset 5: unmatched ']'`}},
	{name: "hostnames/number too large", args: []string{"hostnames", "n[18446744073709551616]"}, want: []string{"number too large"}},
	{name: "hostnames/too many hosts", args: []string{"hostnames", "a[0-65535]b[0-65535]"}, want: []string{"more than 4194304 hosts"}},
	{name: "hostnames/bad after good", args: []string{"hostnames", "node[1-3]", "gpu[2-1]"}, want: []string{`invalid hostlist "gpu[2-1]"`}},
	{name: "hostnames/control character", args: []string{"hostnames", "gpu01,gpu\x1b02"}, want: []string{`"\x1b" at offset 9: control character`}},
	{name: "hostnames/NUL", args: []string{"hostnames", "gpu\x0001"}, want: []string{`"\x00" at offset 3: control character`}},
	{name: "hostnames/no argument", args: []string{"hostnames"}, want: []string{"hostnames: no hostlist given"}},
	{name: "hostnames/unknown flag", args: []string{"hostnames", "--sorted", "n1"}, want: []string{"unknown flag: --sorted"}},
	{name: "hostlist/NUL on stdin", args: []string{"hostlist", "-"}, stdin: "gpu01\ngpu\x0002\ngpu03\n",
		want: []string{"standard input line 2", `"\x00" at offset 3: control character`}},
	{name: "hostlist/NUL alone on stdin", args: []string{"hostlist", "-"}, stdin: "\x00\n", want: []string{"standard input line 1", "control character"}},
	{name: "hostlist/escape on stdin", args: []string{"hostlist", "-"}, stdin: "a1 a2\na3\n\x1b[31ma4\n", want: []string{"standard input line 3", "control character"}},
	{name: "hostlist/bad hostlist on stdin", args: []string{"hostlist", "-"}, stdin: "n1\n\nn2 n[3\n", want: []string{"standard input line 3", `"[3" at offset 1: unterminated`}},
	{name: "hostlist/empty stdin", args: []string{"hostlist", "-"}, stdin: " \n\t\n", want: []string{"no host names on standard input"}},
	{name: "hostlist/bad argument after stdin", args: []string{"hostlist", "-", "n[3-1]"}, stdin: "n1\n", want: []string{`invalid hostlist "n[3-1]"`}},
	{name: "hostlist/no argument", args: []string{"hostlist"}, want: []string{"hostlist: no host names given"}},
}

// slurmRows change one thing of a valid step task's environment (node4,
// SLURM_NODEID=3 of node[1-8]).
var slurmRows = []badInput{
	{name: "slurm/no SLURM_STEP_NODELIST", args: runArgs(), unset: []string{"SLURM_STEP_NODELIST"}, want: []string{"SLURM_STEP_NODELIST is not set"}},
	{name: "slurm/no node list at all", args: runArgs(), unset: []string{"SLURM_STEP_NODELIST", "SLURM_NODELIST", "SLURM_JOB_NODELIST"},
		want: []string{"no node list: none of SLURM_STEP_NODELIST"}},
	{name: "slurm/no SLURM_NODEID", args: runArgs(), unset: []string{"SLURM_NODEID"}, want: []string{"SLURM_NODEID is not set"}},
	{name: "slurm/SLURM_NODEID out of range", args: runArgs(), env: kvEnv("SLURM_NODEID", "8", "SLURM_PROCID", "8"),
		want: []string{"SLURM_NODEID=8 is out of range: SLURM_STEP_NODELIST=node[1-8] has 8 nodes"}},
	{name: "slurm/SLURM_NODEID negative", args: runArgs(), env: kvEnv("SLURM_NODEID", "-1"), want: []string{"SLURM_NODEID=-1 is not a non-negative integer"}},
	{name: "slurm/SLURMD_NODENAME differs", args: runArgs(), env: kvEnv("SLURMD_NODENAME", "node5"),
		want: []string{"SLURMD_NODENAME=node5 but SLURM_STEP_NODELIST=node[1-8] has node4 at SLURM_NODEID=3"}},
	{name: "slurm/no SLURMD_NODENAME", args: runArgs(), unset: []string{"SLURMD_NODENAME"}, want: []string{"SLURMD_NODENAME is not set"}},
	{name: "slurm/malformed SLURM_STEP_TASKS_PER_NODE", args: runArgs(), env: kvEnv("SLURM_STEP_TASKS_PER_NODE", "1(x8"),
		want: []string{"SLURM_STEP_TASKS_PER_NODE=1(x8 is not a valid tasks-per-node list", "missing ')'"}},
	{name: "slurm/malformed SLURM_TASKS_PER_NODE", args: runArgs(), unset: []string{"SLURM_STEP_TASKS_PER_NODE"},
		env: kvEnv("SLURM_TASKS_PER_NODE", "1(y8)"), want: []string{"SLURM_TASKS_PER_NODE=1(y8) is not a valid tasks-per-node list"}},
	{name: "slurm/no tasks per node", args: runArgs(), unset: []string{"SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"},
		want: []string{"neither SLURM_STEP_TASKS_PER_NODE nor SLURM_TASKS_PER_NODE is set"}},
	{name: "slurm/two tasks per node", args: runArgs(), env: kvEnv("SLURM_STEP_TASKS_PER_NODE", "2(x8)", "SLURM_NTASKS", "16", "SLURM_PROCID", "6"),
		want: []string{"SLURM_STEP_TASKS_PER_NODE=2(x8) puts 2 tasks on node4", "srun --ntasks-per-node=1"}},
	{name: "slurm/second task on the node", args: runArgs(), env: kvEnv("SLURM_LOCALID", "1"), want: []string{"SLURM_LOCALID=1: this is not the only task on its node"}},
	{name: "slurm/task rank not the node index", args: runArgs(), env: kvEnv("SLURM_PROCID", "5"), want: []string{"SLURM_PROCID=5 but SLURM_NODEID=3"}},
	{name: "slurm/bad step node list", args: runArgs(), env: kvEnv("SLURM_STEP_NODELIST", "node[1-8"),
		want: []string{`SLURM_STEP_NODELIST=node[1-8 is not a valid hostlist`, "unterminated"}},
	{name: "slurm/NUL in the step node list", args: runArgs(), env: kvEnv("SLURM_STEP_NODELIST", "node[1-3],node\x004,node[5-8]"),
		want: []string{"SLURM_STEP_NODELIST=", "control character"}},
	{name: "slurm/node listed twice", args: runArgs(), env: kvEnv("SLURM_STEP_NODELIST", "node[1-7],node1"), want: []string{"lists node1 more than once"}},
	{name: "slurm/SLURM_JOB_ID not a number", args: runArgs(), env: kvEnv("SLURM_JOB_ID", "abc"), want: []string{"SLURM_JOB_ID=abc is not a non-negative integer"}},
	{name: "slurm/not in a job", args: runArgs(), unset: []string{"SLURM_JOB_ID"}, want: []string{"SLURM_JOB_ID is not set"}},
	{name: "slurm/SLURM_NNODES differs", args: runArgs(), env: kvEnv("SLURM_NNODES", "4"), want: []string{"SLURM_NNODES=4 but SLURM_STEP_NODELIST=node[1-8] has 8 nodes"}},
	{name: "slurm/SLURM_GPUS_ON_NODE not a number", args: runArgs(), env: kvEnv("SLURM_GPUS_ON_NODE", "eight"), want: []string{"SLURM_GPUS_ON_NODE=eight"}},
	{name: "slurm/7-node step for an 8-node layout", args: runArgs(), env: sevenNodeStepDiff(),
		want: []string{"SLURM_STEP_NODELIST has 7 nodes but the spec needs 8"}},
}

// sevenNodeStepDiff is what sevenNodeStep changes: a consistent 7-node step.
func sevenNodeStepDiff() map[string]string {
	m := kvEnv("SLURM_JOB_NODELIST", "node[1-7]", "SLURM_NODELIST", "node[1-7]", "SLURM_STEP_NODELIST", "node[1-7]")
	for _, k := range []string{"SLURM_JOB_NUM_NODES", "SLURM_NNODES", "SLURM_STEP_NUM_NODES", "SLURM_NPROCS", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS"} {
		m[k] = "7"
	}
	for _, k := range []string{"SLURM_TASKS_PER_NODE", "SLURM_STEP_TASKS_PER_NODE"} {
		m[k] = "1(x7)"
	}
	return m
}

var flagRows = []badInput{
	{name: "flag/--health-timeout negative", args: runArgs("--health-timeout", "-5s"), want: []string{"--health-timeout -5s: must be positive"}},
	{name: "flag/--stall-timeout zero", args: runArgs("--stall-timeout", "0"), want: []string{"--stall-timeout 0s: must be positive"}},
	{name: "flag/--precompile-timeout negative", args: runArgs("--precompile-timeout", "-1m"), want: []string{"--precompile-timeout -1m0s: must be positive"}},
	{name: "flag/--infra-timeout zero", args: runArgs("--infra-timeout", "0"), want: []string{"--infra-timeout 0s: must be positive"}},
	{name: "flag/--rendezvous-timeout negative", args: runArgs("--rendezvous-timeout", "-5s"), want: []string{"--rendezvous-timeout -5s: must be positive"}},
	{name: "flag/--grace zero", args: runArgs("--grace", "0s"), want: []string{"--grace 0s: must be positive"}},
	{name: "flag/--peer-timeout negative", args: runArgs("--peer-timeout", "-1s"), want: []string{"--peer-timeout -1s: must be positive"}},
	{name: "flag/--health-interval zero", args: runArgs("--health-interval", "0"), want: []string{"--health-interval 0s: must be positive"}},
	{name: "flag/--health-lost-timeout negative", args: runArgs("--health-lost-timeout", "-1m"), want: []string{"--health-lost-timeout -1m0s: must be positive"}},
	{name: "flag/--progress-interval zero", args: runArgs("--progress-interval", "0"), want: []string{"--progress-interval 0s: must be positive"}},
	{name: "flag/--canary-interval negative", args: runArgs("--canary-interval", "-1s"), want: []string{"--canary-interval -1s: must be positive, or 0 to turn it off"}},
	{name: "flag/--grace not a duration", args: runArgs("--grace", "soon"), want: []string{`invalid argument "soon" for "--grace"`}},
	{name: "flag/--canary-failures zero", args: runArgs("--canary-failures", "0"), want: []string{"--canary-failures 0"}},
	{name: "flag/--canary-failures not an int", args: runArgs("--canary-failures", "3x"), want: []string{`invalid argument "3x" for "--canary-failures"`}},
	{name: "flag/--prefill-workers not an int", args: planArgs("--prefill-workers", "two"), want: []string{`invalid argument "two" for "--prefill-workers"`}},
	{name: "flag/--simulate not a bool", args: runArgs("--simulate=maybe"), want: []string{`invalid argument "maybe" for "--simulate"`}},
	{name: "flag/--cpu-affinity unknown", args: runArgs("--cpu-affinity", "socket"), want: []string{`--cpu-affinity "socket"`, "want all or inherit"}},
	{name: "flag/--log-level unknown", args: runArgs("--log-level", "loud"), want: []string{`--log-level "loud"`}},
	{name: "flag/--log-format unknown", args: runArgs("--log-format", "xml"), want: []string{`--log-format "xml"`}},
	{name: "flag/--role unknown", args: runArgs("--role", "head"), want: []string{`--role "head"`}},
	{name: "flag/--role the plan contradicts", args: runArgs("--role", "decode"), want: []string{"--role decode, but the plan gives node 3 (node4) the role prefill"}},
	{name: "flag/--runtime unknown", args: runArgs("--runtime", "podman"), want: []string{`--runtime "podman"`}},
	{name: "flag/--runtime pyxis outside a container", args: runArgs("--runtime", "pyxis"), want: []string{"--runtime pyxis", "not inside a pyxis container"}},
	{name: "flag/--runtime enroot without --image", args: runArgs("--runtime", "enroot"), want: []string{"--runtime enroot needs --image"}},
	{name: "flag/--precompile unknown", args: runArgs("--precompile", "sometimes"), want: []string{`invalid argument "sometimes" for "--precompile"`}},
	{name: "flag/--rendezvous-host with a port", args: runArgs("--rendezvous-host", "node1:9999"), want: []string{`--rendezvous-host "node1:9999"`, "--rendezvous-port"}},
	{name: "flag/--rendezvous-host with a space", args: runArgs("--rendezvous-host", "node 1"), want: []string{`--rendezvous-host "node 1"`}},
	{name: "flag/--secret-file missing", args: runArgs("--secret-file", "/nonexistent/wideep-secret"), want: []string{"--secret-file /nonexistent/wideep-secret"}},
	{name: "flag/WIDEEP_SECRET too short", args: runArgs(), env: kvEnv("WIDEEP_SECRET", "hunter2"), want: []string{"WIDEEP_SECRET is 7 characters"}},
	{name: "flag/run argument", args: runArgs("node1"), want: []string{`run takes no arguments (got "node1")`}},
	{name: "flag/run unknown flag", args: runArgs("--nodelist", "n[1-8]"), want: []string{"run: unknown flag: --nodelist"}},
	{name: "flag/plan --output unknown", args: planArgs("--output", "yaml"), want: []string{`--output "yaml"`}},
	{name: "flag/plan --show-commands with json", args: planArgs("-o", "json", "--show-commands"), want: []string{"--show-commands goes with --output table"}},
	{name: "flag/plan --job-id path", args: planArgs("--job-id", "../x"), want: []string{`job id "../x"`}},
	{name: "flag/exec --grace zero", args: []string{"exec", "--grace", "0", "--", "true"}, want: []string{"--grace 0s: must be positive"}},
	{name: "flag/exec without a command", args: []string{"exec"}, want: []string{"exec needs a command"}},
	{name: "flag/unknown command", args: []string{"launch"}, want: []string{`unknown command "launch"`}},
}

// envRows give the bad value through the flag's WIDEEP_* variable: the
// message must name the variable, not only the flag nobody typed.
var envRows = []badInput{
	{name: "env/WIDEEP_HEALTH_TIMEOUT", args: runArgs(), env: kvEnv("WIDEEP_HEALTH_TIMEOUT", "-5s"), want: []string{"WIDEEP_HEALTH_TIMEOUT=-5s (for --health-timeout)"}},
	{name: "env/WIDEEP_STALL_TIMEOUT", args: runArgs(), env: kvEnv("WIDEEP_STALL_TIMEOUT", "-1m"), want: []string{"WIDEEP_STALL_TIMEOUT=-1m (for --stall-timeout)"}},
	{name: "env/WIDEEP_PRECOMPILE_TIMEOUT", args: runArgs(), env: kvEnv("WIDEEP_PRECOMPILE_TIMEOUT", "-1m"), want: []string{"WIDEEP_PRECOMPILE_TIMEOUT=-1m (for --precompile-timeout)"}},
	{name: "env/WIDEEP_INFRA_TIMEOUT", args: runArgs(), env: kvEnv("WIDEEP_INFRA_TIMEOUT", "0"), want: []string{"WIDEEP_INFRA_TIMEOUT=0 (for --infra-timeout)"}},
	{name: "env/WIDEEP_RENDEZVOUS_TIMEOUT", args: runArgs(), env: kvEnv("WIDEEP_RENDEZVOUS_TIMEOUT", "-5s"), want: []string{"WIDEEP_RENDEZVOUS_TIMEOUT=-5s (for --rendezvous-timeout)"}},
	{name: "env/WIDEEP_CANARY_INTERVAL", args: runArgs(), env: kvEnv("WIDEEP_CANARY_INTERVAL", "-1s"), want: []string{"WIDEEP_CANARY_INTERVAL=-1s (for --canary-interval)"}},
	{name: "env/WIDEEP_GRACE not a duration", args: runArgs(), env: kvEnv("WIDEEP_GRACE", "soon"), want: []string{"WIDEEP_GRACE=soon (for --grace)"}},
	{name: "env/WIDEEP_CANARY_FAILURES", args: runArgs(), env: kvEnv("WIDEEP_CANARY_FAILURES", "0"), want: []string{"WIDEEP_CANARY_FAILURES=0 (for --canary-failures)"}},
	{name: "env/WIDEEP_CPU_AFFINITY", args: runArgs(), env: kvEnv("WIDEEP_CPU_AFFINITY", "socket"), want: []string{"WIDEEP_CPU_AFFINITY=socket (for --cpu-affinity)"}},
	{name: "env/WIDEEP_LOG_LEVEL", args: runArgs(), env: kvEnv("WIDEEP_LOG_LEVEL", "loud"), want: []string{"WIDEEP_LOG_LEVEL=loud (for --log-level)"}},
	{name: "env/WIDEEP_LOG_FORMAT", args: runArgs(), env: kvEnv("WIDEEP_LOG_FORMAT", "xml"), want: []string{"WIDEEP_LOG_FORMAT=xml (for --log-format)"}},
	{name: "env/WIDEEP_ROLE", args: runArgs(), env: kvEnv("WIDEEP_ROLE", "head"), want: []string{"WIDEEP_ROLE=head (for --role)"}},
	{name: "env/WIDEEP_RUNTIME", args: runArgs(), env: kvEnv("WIDEEP_RUNTIME", "podman"), want: []string{"WIDEEP_RUNTIME=podman (for --runtime)"}},
	{name: "env/WIDEEP_SIMULATE not a bool", args: []string{"run"}, env: kvEnv("WIDEEP_SIMULATE", "maybe"), want: []string{"WIDEEP_SIMULATE=maybe (for --simulate)"}},
	{name: "env/WIDEEP_RENDEZVOUS_HOST", args: runArgs(), env: kvEnv("WIDEEP_RENDEZVOUS_HOST", "node1:9999"), want: []string{"WIDEEP_RENDEZVOUS_HOST=node1:9999 (for --rendezvous-host)"}},
	{name: "env/WIDEEP_CACHE_DIR relative", args: runArgs(), env: kvEnv("WIDEEP_CACHE_DIR", "cache"), want: []string{`--cache-dir "cache"`, "WIDEEP_CACHE_DIR=cache (for --cache-dir)"}},
	{name: "env/WIDEEP_PREFILL_WORKERS", args: runArgs(), env: kvEnv("WIDEEP_PREFILL_WORKERS", "two"), want: []string{"WIDEEP_PREFILL_WORKERS=two (for --prefill-workers)"}},
	{name: "env/WIDEEP_PREFILL_ARG quoted", args: runArgs(), env: kvEnv("WIDEEP_PREFILL_ARG", "--tool-call-parser 'qwen25'"),
		want: []string{"quote", `WIDEEP_PREFILL_ARG="--tool-call-parser 'qwen25'" (for --prefill-arg)`}},
	{name: "env/WIDEEP_DECODE_ENV", args: planArgs(), env: kvEnv("WIDEEP_DECODE_ENV", "ETCD_ENDPOINTS=http://x:2379"),
		want: []string{"ETCD_ENDPOINTS is set by the plan", "WIDEEP_DECODE_ENV=ETCD_ENDPOINTS=http://x:2379 (for --decode-env)"}},
	{name: "env/WIDEEP_HTTP_PORT", args: planArgs(), env: kvEnv("WIDEEP_HTTP_PORT", "70000"), want: []string{"--http-port 70000: not a TCP port", "WIDEEP_HTTP_PORT=70000 (for --http-port)"}},
	{name: "env/WIDEEP_NODELIST", args: []string{"plan"}, env: kvEnv("WIDEEP_NODELIST", "gpu[3-1]"), want: []string{"range is decreasing", "WIDEEP_NODELIST=gpu[3-1] (for --nodelist)"}},
	{name: "env/WIDEEP_OUTPUT", args: planArgs(), env: kvEnv("WIDEEP_OUTPUT", "yaml"), want: []string{"WIDEEP_OUTPUT=yaml (for --output)"}},
	{name: "env/WIDEEP_GRACE for exec", args: []string{"exec", "--", "true"}, env: kvEnv("WIDEEP_GRACE", "-1s"), want: []string{"WIDEEP_GRACE=-1s (for --grace)"}},
}

const quoteHint = "use one --prefill-arg per flag"

var specRows = []badInput{
	{name: "spec/--prefill-arg unbalanced quote", args: planArgs("--prefill-arg", "--tool-call-parser 'qwen25"),
		want: []string{`--prefill-arg "--tool-call-parser 'qwen25"`, quoteHint}},
	{name: "spec/--prefill-arg quoted value", args: planArgs("--prefill-arg", "--tool-call-parser 'qwen25'"), want: []string{quoteHint}},
	{name: "spec/--decode-arg double quotes", args: planArgs("--decode-arg", `--tool-call-parser "qwen25"`),
		want: []string{`--decode-arg "--tool-call-parser \"qwen25\""`, "use one --decode-arg per flag"}},
	{name: "spec/--prefill-arg quoted joined value", args: planArgs("--prefill-arg", `--tool-call-parser="qwen25"`),
		want: []string{"would reach SGLang", "--tool-call-parser=qwen25"}},
	{name: "spec/--prefill-arg quoted JSON with spaces", args: planArgs("--prefill-arg", `--json-model-override-args {"a": 1}`), want: []string{quoteHint, "--flag=value"}},
	{name: "spec/--prefill-arg empty flag name", args: planArgs("--prefill-arg", "--=1", "--sglang-version", "0.5.9"), want: []string{`--prefill-arg "--=1"`, "want --flag"}},
	{name: "spec/managed flag", args: planArgs("--prefill-arg", "--node-rank 3"), want: []string{"--node-rank is managed by the plan"}},
	{name: "spec/managed flag joined", args: planArgs("--decode-arg", "--tp-size=16"), want: []string{"--tp-size is managed by the plan", "--decode-tp-size"}},
	{name: "spec/unknown SGLang flag", args: planArgs("--prefill-arg", "--foo-bar 3"), want: []string{"--prefill-arg", "unrecognized arguments: --foo-bar 3"}},
	{name: "spec/abbreviated flag", args: planArgs("--prefill-arg", "--mem-frac 0.8"), want: []string{"--mem-frac abbreviates --mem-fraction-static"}},
	{name: "spec/missing value", args: planArgs("--decode-arg", "--mem-fraction-static"), want: []string{"--decode-arg", "--mem-fraction-static: expected one argument"}},
	{name: "spec/bad choice", args: planArgs("--decode-arg", "--deepep-mode fast"), want: []string{"--deepep-mode", "fast"}},
	{name: "spec/not a flag", args: planArgs("--prefill-arg", "0.8"), want: []string{`--prefill-arg "0.8": want --flag`}},
	{name: "spec/remove a flag not there", args: planArgs("--prefill-arg", "!--foo"), want: []string{"--foo is not a default prefill flag"}},
	{name: "spec/remove with a value", args: planArgs("--prefill-arg", "!--page-size 1"), want: []string{"!--page-size removes a flag and takes no value"}},
	{name: "spec/--pp-size 0", args: planArgs("--prefill-arg", "--pp-size 0"), want: []string{"--prefill-arg", "--pp-size 0", "at least 1"}},
	{name: "spec/layout workers zero", args: planArgs("--prefill-workers", "0"), want: []string{"--prefill-workers 0: must be at least 1"}},
	{name: "spec/layout tp not filling nodes", args: planArgs("--prefill-tp-size", "5"), want: []string{"prefill worker does not fill whole nodes", "--prefill-tp-size"}},
	{name: "spec/layout dp not dividing tp", args: planArgs("--decode-dp-size", "3"), want: []string{"--decode-dp-size 3: must divide the tp size 32"}},
	{name: "spec/layout too few nodes", args: []string{"plan", "--nodelist", "gpu[01-07]"}, want: []string{"--nodelist has 7 nodes but the spec needs 8"}},
	{name: "spec/layout host twice", args: []string{"plan", "--nodelist", "gpu[01-07],gpu01"}, want: []string{"host gpu01 is node 0 and node 7"}},
	{name: "spec/layout infra placement", args: planArgs("--infra-node", "middle"), want: []string{`--infra-node "middle"`}},
	{name: "spec/layout negative GPUs", args: planArgs("--gpus-per-node", "-2"), want: []string{"--gpus-per-node -2"}},
	{name: "spec/bad nodelist", args: planArgs("--nodelist", "gpu[3-1]"), want: []string{"--nodelist", `invalid hostlist "gpu[3-1]"`}},
	{name: "spec/port above 65535", args: planArgs("--http-port", "70000"), want: []string{"--http-port 70000: not a TCP port"}},
	{name: "spec/port zero", args: planArgs("--nccl-port", "0"), want: []string{"--nccl-port 0: not a TCP port"}},
	{name: "spec/port not a number", args: planArgs("--http-port", "http"), want: []string{`invalid argument "http" for "--http-port"`}},
	{name: "spec/dist-init ports past 65535", args: planArgs("--dist-init-port", "65530"), want: []string{"--dist-init-port 65530: SGLang uses the ports above it"}},
	{name: "spec/rendezvous port negative", args: planArgs("--rendezvous-port", "-1"), want: []string{"--rendezvous-port -1"}},
	{name: "spec/port collision bootstrap", args: planArgs("--bootstrap-port", "8000"), want: []string{"port 8000 is used twice", "--http-port", "--bootstrap-port"}},
	{name: "spec/port collision nats", args: planArgs("--nats-port", "2379"), want: []string{"port 2379 is used twice", "--etcd-client-port", "--nats-port"}},
	{name: "spec/path cache dir relative", args: planArgs("--cache-dir", "cache"), want: []string{`--cache-dir "cache": must be an absolute path`}},
	{name: "spec/path local dir relative", args: planArgs("--local-dir", "tmp/%j"), want: []string{`--local-dir "tmp/%j"`}},
	{name: "spec/path log dir empty", args: planArgs("--log-dir", ""), want: []string{"--log-dir is empty"}},
	{name: "spec/path etcd data dir relative", args: planArgs("--etcd-data-dir", "etcd"), want: []string{`--etcd-data-dir "etcd"`}},
	{name: "spec/path dg local dir relative", args: planArgs("--dg-local-dir", "dg"), want: []string{`--dg-local-dir "dg"`}},
	{name: "spec/path image cache relative", args: planArgs("--runtime", "enroot", "--image", "/i.sqsh", "--image-cache", "images"), want: []string{`--image-cache "images"`}},
	{name: "spec/path cache dir with a space under enroot", args: planArgs("--runtime", "enroot", "--image", "/i.sqsh", "--cache-dir", "/shared/my cache"),
		want: []string{`--cache-dir "/shared/my cache"`, "white space"}},
	{name: "spec/path local dir with a space under enroot", args: planArgs("--runtime", "enroot", "--image", "/i.sqsh", "--local-dir", "/tmp/my dir/%j"),
		want: []string{`--local-dir "/tmp/my dir/%j"`, "white space"}},
	{name: "spec/path container mount relative", args: planArgs("--runtime", "enroot", "--image", "/i.sqsh", "--container-mount", "model:/model"),
		want: []string{`--container-mount "model:/model"`}},
	{name: "spec/env without =", args: planArgs("--prefill-env", "FOO"), want: []string{`--prefill-env "FOO": want KEY=VALUE`}},
	{name: "spec/env bad name", args: planArgs("--decode-env", "1A=b"), want: []string{`--decode-env "1A=b": "1A" is not a valid variable name`}},
	{name: "spec/env managed", args: planArgs("--prefill-env", "NATS_SERVER=nats://x:4222"), want: []string{"NATS_SERVER is set by the plan"}},
	{name: "spec/env without effect", args: planArgs("--decode-env", "DG_JIT_CACHE_DIR=/x"), want: []string{"DG_JIT_CACHE_DIR", "no effect"}},
	{name: "spec/etcd endpoint not a URL", args: planArgs("--etcd-endpoints", "etcd:2379"), want: []string{`--etcd-endpoints "etcd:2379"`}},
	{name: "spec/nats server not nats://", args: planArgs("--nats-server", "x:4222"), want: []string{`--nats-server "x:4222": must start with nats://`}},
	{name: "spec/nats server and no-nats", args: planArgs("--nats-server", "nats://x:4222", "--no-nats"), want: []string{"--no-nats contradict"}},
	{name: "spec/nats max payload", args: planArgs("--nats-max-payload", "1TB"), want: []string{`--nats-max-payload "1TB"`}},
	{name: "spec/image digest", args: planArgs("--image-digest", "sha256:xyz"), want: []string{`--image-digest "sha256:xyz"`}},
	{name: "spec/sglang version", args: planArgs("--sglang-version", "banana"), want: []string{`--sglang-version "banana"`}},
	{name: "spec/a default flag the release removed", args: planArgs("--sglang-version", "0.5.20"),
		want: []string{"decode worker flag --prefill-round-robin-balance: SGLang 0.5.20 no longer accepts it", "--decode-arg '!--prefill-round-robin-balance'"}},
	{name: "spec/dg cache mode", args: planArgs("--dg-cache-mode", "nfs"), want: []string{`--dg-cache-mode "nfs"`}},
	{name: "spec/shared cache without precompile", args: planArgs("--dg-cache-mode", "shared", "--precompile", "never"),
		want: []string{"--dg-cache-mode shared with --precompile never", "use --dg-cache-mode local"}},
	{name: "spec/iface", args: planArgs("--iface", "eth0:1"), want: []string{`--iface "eth0:1"`}},
	{name: "spec/run layout", args: runArgs("--prefill-workers", "2"), want: []string{"SLURM_STEP_NODELIST has 8 nodes but the spec needs 12"}},
	{name: "spec/run quoted arg", args: runArgs("--decode-arg", "--tool-call-parser 'x'"), want: []string{"use one --decode-arg per flag"}},
}
