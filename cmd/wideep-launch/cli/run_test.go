package cli

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/slurm/slurmtest"
)

// stepTaskEnv is a real step task's environment: node4, SLURM_NODEID=3, of an
// 8-node job measured on Slurm 22.05 (the slurm package's fixture).
func stepTaskEnv(t *testing.T) map[string]string {
	t.Helper()
	env := slurmtest.EnvFile(t, filepath.Join("..", "..", "..", "slurm", "testdata", "env", "example-env-step-task.txt"))
	require.Equal(t, "node[1-8]", env["SLURM_STEP_NODELIST"], "the fixture this test adjusts")
	return env
}

// sevenNodeStep is stepTaskEnv for a consistent 7-node job and step: a valid
// Slurm environment, but one node short of the default layout (4+4).
func sevenNodeStep(t *testing.T) map[string]string {
	env := stepTaskEnv(t)
	for _, k := range []string{"SLURM_JOB_NODELIST", "SLURM_NODELIST", "SLURM_STEP_NODELIST"} {
		env[k] = "node[1-7]"
	}
	for _, k := range []string{"SLURM_JOB_NUM_NODES", "SLURM_NNODES", "SLURM_STEP_NUM_NODES", "SLURM_NPROCS", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS"} {
		env[k] = "7"
	}
	for _, k := range []string{"SLURM_JOB_CPUS_PER_NODE", "SLURM_JOB_CPUS_PER_NODE_PACK_GROUP_0", "SLURM_TASKS_PER_NODE", "SLURM_STEP_TASKS_PER_NODE"} {
		env[k] = "1(x7)"
	}
	return env
}

// Checks that need no Slurm come first: each of these fails the same way
// inside and outside a job, so none of them reaches the "not inside a Slurm
// job" error.
func TestRunValidation(t *testing.T) {
	for name, tc := range map[string]struct {
		env  map[string]string
		args []string
		want []string
	}{
		"outside Slurm":     {nil, nil, []string{"not inside a Slurm job: SLURM_JOB_ID is not set", "'wideep-launch plan --nodelist"}},
		"bad role":          {nil, []string{"--role", "head"}, []string{`--role "head" (or WIDEEP_ROLE): want auto, prefill, decode or infra`}},
		"bad log format":    {nil, []string{"--log-format", "xml"}, []string{`--log-format "xml": want console or json`}},
		"bad log level":     {nil, []string{"--log-level", "loud"}, []string{`--log-level "loud": want debug, info, warn or error`}},
		"grace zero":        {nil, []string{"--grace", "0s"}, []string{"--grace 0s: must be positive"}},
		"argument":          {nil, []string{"node1"}, []string{`run takes no arguments (got "node1")`}},
		"unknown flag":      {nil, []string{"--nodelist", "n[1-8]"}, []string{"run: unknown flag: --nodelist"}},
		"WIDEEP_ROLE":       {map[string]string{"WIDEEP_ROLE": "bogus"}, nil, []string{`--role "bogus" (or WIDEEP_ROLE)`}},
		"WIDEEP_LOG_FORMAT": {map[string]string{"WIDEEP_LOG_FORMAT": "xml"}, nil, []string{`--log-format "xml"`}},
		// All bad variables at once, each with its flag.
		"WIDEEP_* not parsable": {map[string]string{"WIDEEP_GRACE": "soon", "WIDEEP_PREFILL_WORKERS": "two"}, nil, []string{
			"WIDEEP_GRACE=soon (for --grace)", "WIDEEP_PREFILL_WORKERS=two (for --prefill-workers)"}},
		// The command line beats the environment: with --role auto the bad
		// variable is not used, and the next check fails instead.
		"flag beats WIDEEP_ROLE": {map[string]string{"WIDEEP_ROLE": "bogus"}, []string{"--role", "auto"}, []string{"not inside a Slurm job"}},
		"bad Slurm environment": {map[string]string{"SLURM_JOB_ID": "2", "SLURM_NODEID": "x"}, nil, []string{
			"SLURM_NODEID", "no node list: none of SLURM_STEP_NODELIST, SLURM_NODELIST, SLURM_JOB_NODELIST is set"}},
	} {
		t.Run(name, func(t *testing.T) {
			args := append([]string{"run", "--log-dir", t.TempDir()}, tc.args...)
			code, out, errOut := runCLI(t, tc.env, args...)
			assert.Equal(t, 2, code)
			assert.Empty(t, out, "nothing started, no timeline")
			for _, w := range tc.want {
				assert.Contains(t, errOut, w)
			}
		})
	}
}

// A valid Slurm environment that does not fit the layout fails in the plan
// phase, the first phase of the node: no address, preflight, rendezvous or
// process.
// A plan that does not fit the job, or a role the plan contradicts, is
// refused before anything runs or is written: exit 2, the reason on stderr,
// nothing on stdout, no log directory.
func TestRunPlanErrorsBeforeAnything(t *testing.T) {
	for name, tc := range map[string]struct {
		env  func(*testing.T) map[string]string
		args []string
		want string
	}{
		"node count": {sevenNodeStep, nil,
			"SLURM_STEP_NODELIST has 7 nodes but the spec needs 8 (1 prefill worker × 4 nodes + 1 decode worker × 4 nodes)"},
		"role not in the plan": {stepTaskEnv, []string{"--role", "decode"},
			"--role decode, but the plan gives node 3 (node4) the role prefill"},
		"WIDEEP_ROLE not in the plan": {func(t *testing.T) map[string]string {
			env := stepTaskEnv(t)
			env["WIDEEP_ROLE"] = "infra"
			return env
		}, nil, "--role infra, but the plan gives node 3 (node4) the role prefill"},
	} {
		t.Run(name, func(t *testing.T) {
			logDir := filepath.Join(t.TempDir(), "logs")
			args := append([]string{"run", "--log-dir", logDir}, tc.args...)
			code, out, errOut := runCLI(t, tc.env(t), args...)
			assert.Equal(t, 2, code)
			assert.Contains(t, errOut, tc.want)
			assert.NotContains(t, errOut, "invalid Slurm environment", "the adjusted environment itself is valid")
			assert.Empty(t, out, "nothing on stdout")
			assert.NoDirExists(t, logDir, "nothing written")
		})
	}
}

// Only the step's node list shrinks: every count that disagrees with it is
// reported at once, before any phase.
func TestRunInconsistentSlurmEnv(t *testing.T) {
	env := stepTaskEnv(t)
	env["SLURM_STEP_NODELIST"] = "node[1-7]"
	code, out, errOut := runCLI(t, env, "run", "--log-dir", t.TempDir())
	assert.Equal(t, 2, code)
	assert.Empty(t, out, "no phase ran, no timeline")
	for _, w := range []string{
		"invalid Slurm environment on node4 (4 problems)",
		"SLURM_STEP_NUM_NODES=8 but SLURM_STEP_NODELIST=node[1-7] has 7 nodes",
		"SLURM_NNODES=8 but SLURM_STEP_NODELIST=node[1-7] has 7 nodes",
		"SLURM_STEP_TASKS_PER_NODE=1(x8) has 8 entries",
		"SLURM_NTASKS=8 but SLURM_STEP_NODELIST=node[1-7] has 7 nodes",
	} {
		assert.Contains(t, errOut, w)
	}
}

func TestRunRuntimePyxisOutsideAContainer(t *testing.T) {
	code, out, errOut := runCLI(t, stepTaskEnv(t), "run", "--runtime", "pyxis", "--log-dir", filepath.Join(t.TempDir(), "logs"))
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "--runtime pyxis (or WIDEEP_RUNTIME), but this task is not inside a pyxis container (no pyxis or enroot marker")
	assert.Empty(t, out)
}

func TestRunRuntimeEnrootNeedsAGoodImage(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"no image":  {[]string{"--runtime", "enroot"}, "--runtime enroot needs --image"},
		"bad image": {[]string{"--runtime", "enroot", "--image", "nvcr.io#org/image@sha256:123"}, `--image "nvcr.io#org/image@sha256:123"`},
		"bad mount": {[]string{"--runtime", "enroot", "--image", "/images/x.sqsh", "--container-mount", "model:/model"}, `--container-mount "model:/model": "model" is not an absolute path`},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := runCLI(t, stepTaskEnv(t), append([]string{"run", "--log-dir", filepath.Join(t.TempDir(), "logs")}, tc.args...)...)
			assert.Equal(t, 2, code)
			assert.Contains(t, errOut, tc.want)
			assert.Empty(t, out)
		})
	}
}
