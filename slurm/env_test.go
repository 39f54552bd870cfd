package slurm

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-multierror"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/slurm/slurmtest"
)

// The fixtures are real SLURM_* environments measured on Slurm 22.05.8
// (slurm-lab): task SLURM_PROCID=3 of `sbatch -N 8 --ntasks-per-node=1` →
// `srun`, the same with --gpus-per-node=8, and that job's batch script.
const (
	stepTask     = "example-env-step-task.txt"
	stepTaskGPUs = "example-env-step-task-gpus.txt"
	batchScript  = "example-env-batch-script.txt"
)

// loadEnv reads a fixture of NAME=value lines; '#' lines are comments.
func loadEnv(t *testing.T, name string) map[string]string {
	t.Helper()
	env := slurmtest.EnvFile(t, filepath.Join("testdata", "env", name))
	require.Contains(t, env, "SLURM_JOB_ID")
	return env
}

// envEdit is a change to a fixture: variables to set, then variables to unset.
type envEdit struct {
	set   map[string]string
	unset []string
}

func (ed envEdit) apply(base map[string]string) func(string) (string, bool) {
	env := make(map[string]string, len(base)+len(ed.set))
	for k, v := range base {
		env[k] = v
	}
	for k, v := range ed.set {
		env[k] = v
	}
	for _, k := range ed.unset {
		delete(env, k)
	}
	return func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
}

// envProblems returns the individual messages of a ReadEnv error, checking its
// shape: *EnvError wrapping a *multierror.Error.
func envProblems(t *testing.T, err error) []string {
	t.Helper()
	var envErr *EnvError
	require.ErrorAs(t, err, &envErr)
	merr, ok := envErr.Err.(*multierror.Error)
	require.True(t, ok, "EnvError.Err is %T, want *multierror.Error", envErr.Err)
	var msgs []string
	for _, e := range merr.WrappedErrors() {
		msgs = append(msgs, e.Error())
	}
	return msgs
}

func TestReadEnvRealDumps(t *testing.T) {
	node1to8 := []string{"node1", "node2", "node3", "node4", "node5", "node6", "node7", "node8"}
	ones := []int{1, 1, 1, 1, 1, 1, 1, 1}
	tests := map[string]struct {
		file string
		want Env
	}{
		"step task": {stepTask, Env{
			JobID: "2", JobName: "wideep-test", StepID: "0", InStep: true,
			Nodes: node1to8, NodeListVar: "SLURM_STEP_NODELIST", NodeIndex: 3, Host: "node4",
			JobNodes: node1to8, NNodes: 8, StepNumNodes: 8,
			ProcID: 3, LocalID: 0, NTasks: 8, TasksPerNode: ones,
			GPUsOnNode: 0, SubmitDir: "/tmp",
		}},
		"step task with GPUs": {stepTaskGPUs, Env{
			JobID: "3", JobName: "wideep-test", StepID: "0", InStep: true,
			Nodes: node1to8, NodeListVar: "SLURM_STEP_NODELIST", NodeIndex: 3, Host: "node4",
			JobNodes: node1to8, NNodes: 8, StepNumNodes: 8,
			ProcID: 3, LocalID: 0, NTasks: 8, TasksPerNode: ones,
			GPUsOnNode: 8, SubmitDir: "/tmp",
		}},
		"batch script": {batchScript, Env{
			JobID: "2", JobName: "wideep-test", StepID: "", InStep: false,
			Nodes: node1to8, NodeListVar: "SLURM_NODELIST", NodeIndex: 0, Host: "node1",
			JobNodes: node1to8, NNodes: 8, StepNumNodes: 0,
			ProcID: 0, LocalID: 0, NTasks: 8, TasksPerNode: ones,
			GPUsOnNode: 0, SubmitDir: "/tmp",
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ReadEnv(envEdit{}.apply(loadEnv(t, tc.file)))
			require.NoError(t, err)
			assert.Equal(t, &tc.want, got)
		})
	}
}

// Variations a real Slurm produces that must be accepted.
func TestReadEnvAccepts(t *testing.T) {
	tests := map[string]struct {
		file  string
		edit  envEdit
		check func(t *testing.T, e *Env)
	}{
		"non-contiguous padded list keeps its order": {stepTask, envEdit{set: map[string]string{
			"SLURM_STEP_NODELIST": "node[001,003,005-006]", "SLURM_JOB_NODELIST": "node[001-006]",
			"SLURM_NNODES": "4", "SLURM_STEP_NUM_NODES": "4", "SLURM_NTASKS": "4",
			"SLURM_STEP_TASKS_PER_NODE": "1(x4)", "SLURM_NODEID": "2", "SLURM_PROCID": "2",
			"SLURMD_NODENAME": "node005",
		}}, func(t *testing.T, e *Env) {
			assert.Equal(t, []string{"node001", "node003", "node005", "node006"}, e.Nodes)
			assert.Equal(t, 2, e.NodeIndex)
			assert.Equal(t, "node005", e.Host)
			assert.Len(t, e.JobNodes, 6)
		}},
		"list is never re-sorted": {stepTask, envEdit{set: map[string]string{
			// Slurm's hostlist_sort puts node9 before node10; a string sort would not.
			"SLURM_STEP_NODELIST": "node[9-10],node08", "SLURM_NNODES": "3", "SLURM_STEP_NUM_NODES": "3",
			"SLURM_NTASKS": "3", "SLURM_STEP_TASKS_PER_NODE": "1(x3)",
			"SLURM_NODEID": "1", "SLURM_PROCID": "1", "SLURMD_NODENAME": "node10",
		}}, func(t *testing.T, e *Env) {
			assert.Equal(t, []string{"node9", "node10", "node08"}, e.Nodes)
			assert.Equal(t, "node10", e.Host)
		}},
		"step on part of the allocation uses the step list": {stepTask, envEdit{set: map[string]string{
			"SLURM_STEP_NODELIST": "node[3-4]", "SLURM_NNODES": "2", "SLURM_STEP_NUM_NODES": "2",
			"SLURM_NTASKS": "2", "SLURM_STEP_TASKS_PER_NODE": "1(x2)", "SLURM_TASKS_PER_NODE": "1(x2)",
			"SLURM_NODEID": "1", "SLURM_PROCID": "1",
		}}, func(t *testing.T, e *Env) {
			assert.Equal(t, []string{"node3", "node4"}, e.Nodes)
			assert.Equal(t, "node4", e.Host)
			assert.Len(t, e.JobNodes, 8, "JobNodes is the allocation")
		}},
		"step without SLURM_STEP_TASKS_PER_NODE uses SLURM_TASKS_PER_NODE": {stepTask, envEdit{
			set:   map[string]string{"SLURM_TASKS_PER_NODE": "1(x8)"},
			unset: []string{"SLURM_STEP_TASKS_PER_NODE"},
		}, func(t *testing.T, e *Env) {
			assert.Equal(t, []int{1, 1, 1, 1, 1, 1, 1, 1}, e.TasksPerNode)
		}},
		"batch script falls back to SLURM_JOB_NODELIST": {batchScript, envEdit{
			unset: []string{"SLURM_NODELIST"},
		}, func(t *testing.T, e *Env) {
			assert.Equal(t, "SLURM_JOB_NODELIST", e.NodeListVar)
			assert.Len(t, e.Nodes, 8)
			assert.Equal(t, "node1", e.Host)
		}},
		"batch script of a two-tasks-per-node job": {batchScript, envEdit{set: map[string]string{
			// The batch script is one process; these counts are for the job's steps.
			"SLURM_TASKS_PER_NODE": "2(x8)", "SLURM_NTASKS": "16",
		}}, func(t *testing.T, e *Env) {
			assert.Equal(t, 16, e.NTasks)
			assert.Equal(t, []int{2, 2, 2, 2, 2, 2, 2, 2}, e.TasksPerNode)
		}},
		"batch script without SLURM_NTASKS": {batchScript, envEdit{
			unset: []string{"SLURM_NTASKS"},
		}, func(t *testing.T, e *Env) {
			assert.Zero(t, e.NTasks)
		}},
		"GPUs unset": {stepTaskGPUs, envEdit{unset: []string{"SLURM_GPUS_ON_NODE"}}, func(t *testing.T, e *Env) {
			assert.Zero(t, e.GPUsOnNode)
		}},
		"GPUs set": {stepTask, envEdit{set: map[string]string{"SLURM_GPUS_ON_NODE": "4"}}, func(t *testing.T, e *Env) {
			assert.Equal(t, 4, e.GPUsOnNode)
		}},
		"optional strings unset": {stepTask, envEdit{
			unset: []string{"SLURM_JOB_NAME", "SLURM_SUBMIT_DIR", "SLURM_JOB_NODELIST", "SLURM_NODELIST"},
		}, func(t *testing.T, e *Env) {
			assert.Empty(t, e.JobName)
			assert.Empty(t, e.SubmitDir)
			assert.Nil(t, e.JobNodes)
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ReadEnv(tc.edit.apply(loadEnv(t, tc.file)))
			require.NoError(t, err)
			tc.check(t, got)
		})
	}
}

func TestReadEnvNotInSlurm(t *testing.T) {
	// A real SLURM_JOB_ID in the process environment must not leak in:
	// ReadEnv reads only through lookup.
	t.Setenv("SLURM_JOB_ID", "42")
	tests := map[string]struct {
		file string // "" for an empty environment
		edit envEdit
	}{
		"empty environment":         {"", envEdit{}},
		"everything but the job ID": {stepTask, envEdit{unset: []string{"SLURM_JOB_ID"}}},
		"job ID set but empty":      {stepTask, envEdit{set: map[string]string{"SLURM_JOB_ID": ""}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			base := map[string]string{}
			if tc.file != "" {
				base = loadEnv(t, tc.file)
			}
			got, err := ReadEnv(tc.edit.apply(base))
			assert.Nil(t, got)
			require.ErrorIs(t, err, ErrNotInSlurm)
			assert.Contains(t, err.Error(), "SLURM_JOB_ID is not set")
			assert.Contains(t, err.Error(), "srun wideep-launch run")
			assert.Contains(t, err.Error(), "wideep-launch plan --nodelist", "must tell how to see the plan offline")
		})
	}
}

// Each problem alone, from a valid fixture, gives exactly the listed messages.
func TestReadEnvProblems(t *testing.T) {
	const fix = "wideep-launch needs exactly one task per node: run it with srun --ntasks-per-node=1"
	tests := map[string]struct {
		file string
		edit envEdit
		want []string
	}{
		"SLURMD_NODENAME differs from the node at SLURM_NODEID": {stepTask,
			envEdit{set: map[string]string{"SLURMD_NODENAME": "node5"}},
			[]string{"SLURMD_NODENAME=node5 but SLURM_STEP_NODELIST=node[1-8] has node4 at SLURM_NODEID=3"}},
		"SLURM_NODEID out of range": {stepTask,
			envEdit{set: map[string]string{"SLURM_NODEID": "8"}},
			[]string{"SLURM_NODEID=8 is out of range: SLURM_STEP_NODELIST=node[1-8] has 8 nodes (SLURM_NODEID 0-7)"}},
		"SLURM_STEP_NUM_NODES disagrees with the list": {stepTask,
			envEdit{set: map[string]string{"SLURM_STEP_NUM_NODES": "7"}},
			[]string{"SLURM_STEP_NUM_NODES=7 but SLURM_STEP_NODELIST=node[1-8] has 8 nodes"}},
		"SLURM_NNODES disagrees with the step list": {stepTask,
			envEdit{set: map[string]string{"SLURM_NNODES": "16"}},
			[]string{"SLURM_NNODES=16 but SLURM_STEP_NODELIST=node[1-8] has 8 nodes " +
				"(srun -E/--preserve-env passes the job's SLURM_NNODES to a smaller step: run srun without it)"}},
		"SLURM_NNODES disagrees with the batch list": {batchScript,
			envEdit{set: map[string]string{"SLURM_NNODES": "4"}},
			[]string{"SLURM_NNODES=4 but SLURM_NODELIST=node[1-8] has 8 nodes"}},
		"two tasks on this node per SLURM_STEP_TASKS_PER_NODE": {stepTask,
			envEdit{set: map[string]string{"SLURM_STEP_TASKS_PER_NODE": "1(x3),2,1(x4)"}},
			[]string{"SLURM_STEP_TASKS_PER_NODE=1(x3),2,1(x4) puts 2 tasks on node4 (SLURM_NODEID=3); " + fix}},
		"not the first task on this node": {stepTask,
			envEdit{set: map[string]string{"SLURM_LOCALID": "1"}},
			[]string{"SLURM_LOCALID=1: this is not the only task on its node; " + fix}},
		"more tasks than nodes": {stepTask,
			envEdit{set: map[string]string{"SLURM_NTASKS": "9"}},
			[]string{"SLURM_NTASKS=9 but SLURM_STEP_NODELIST=node[1-8] has 8 nodes; " + fix}},
		"srun --ntasks-per-node=2": {stepTask,
			envEdit{set: map[string]string{
				"SLURM_STEP_TASKS_PER_NODE": "2(x8)", "SLURM_TASKS_PER_NODE": "2(x8)", "SLURM_NTASKS": "16",
				"SLURM_PROCID": "6",
			}},
			[]string{
				"SLURM_STEP_TASKS_PER_NODE=2(x8) puts 2 tasks on node4 (SLURM_NODEID=3); " + fix,
				"SLURM_NTASKS=16 but SLURM_STEP_NODELIST=node[1-8] has 8 nodes; " + fix,
			}},
		"SLURM_PROCID differs from SLURM_NODEID": {stepTask,
			envEdit{set: map[string]string{"SLURM_PROCID": "5"}},
			[]string{"SLURM_PROCID=5 but SLURM_NODEID=3: with one task per node the task rank must equal the node index " +
				"(tasks are not laid out in node order; check srun --distribution and SLURM_HOSTFILE)"}},
		"SLURM_STEP_TASKS_PER_NODE shorter than the list": {stepTask,
			envEdit{set: map[string]string{"SLURM_STEP_TASKS_PER_NODE": "1(x7)"}},
			[]string{"SLURM_STEP_TASKS_PER_NODE=1(x7) has 7 entries but SLURM_STEP_NODELIST=node[1-8] has 8 nodes"}},
		"step without its own node list": {stepTask,
			envEdit{unset: []string{"SLURM_STEP_NODELIST"}},
			[]string{"SLURM_STEP_NODELIST is not set although SLURM_STEP_ID=0 is " +
				"(in a step SLURM_NODELIST lists the whole allocation, not the step's nodes)"}},
		"no node list at all": {batchScript,
			envEdit{unset: []string{"SLURM_NODELIST", "SLURM_JOB_NODELIST"}},
			[]string{"no node list: none of SLURM_STEP_NODELIST, SLURM_NODELIST, SLURM_JOB_NODELIST is set"}},
		"node listed twice": {stepTask,
			envEdit{set: map[string]string{"SLURM_STEP_NODELIST": "node[1-4,3-6]"}},
			[]string{"SLURM_STEP_NODELIST=node[1-4,3-6] lists node3, node4 more than once"}},
		"no tasks per node in a step": {stepTask,
			envEdit{unset: []string{"SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"}},
			[]string{"neither SLURM_STEP_TASKS_PER_NODE nor SLURM_TASKS_PER_NODE is set"}},
		"non-numeric SLURM_JOB_ID": {stepTask,
			envEdit{set: map[string]string{"SLURM_JOB_ID": "2_1"}},
			[]string{"SLURM_JOB_ID=2_1 is not a non-negative integer"}},
		"non-numeric SLURM_STEP_ID": {stepTask,
			envEdit{set: map[string]string{"SLURM_STEP_ID": "batch"}},
			[]string{"SLURM_STEP_ID=batch is not a non-negative integer"}},
		"negative SLURM_NODEID": {stepTask,
			envEdit{set: map[string]string{"SLURM_NODEID": "-1"}},
			[]string{"SLURM_NODEID=-1 is not a non-negative integer"}},
		"empty SLURM_PROCID": {stepTask,
			envEdit{set: map[string]string{"SLURM_PROCID": ""}},
			[]string{`SLURM_PROCID="" is not a non-negative integer`}},
		"SLURM_NTASKS with a space": {stepTask,
			envEdit{set: map[string]string{"SLURM_NTASKS": " 8"}},
			[]string{`SLURM_NTASKS=" 8" is not a non-negative integer`}},
		"huge SLURM_NNODES": {stepTask,
			envEdit{set: map[string]string{"SLURM_NNODES": "99999999999"}},
			[]string{"SLURM_NNODES=99999999999 is too large"}},
	}
	for _, name := range []string{"SLURM_NODEID", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NNODES",
		"SLURM_STEP_NUM_NODES", "SLURM_NTASKS", "SLURM_GPUS_ON_NODE"} {
		tests["non-numeric "+name] = struct {
			file string
			edit envEdit
			want []string
		}{stepTask, envEdit{set: map[string]string{name: "eight"}}, []string{name + "=eight is not a non-negative integer"}}
	}
	for _, name := range []string{"SLURM_NODEID", "SLURM_PROCID", "SLURM_LOCALID", "SLURMD_NODENAME",
		"SLURM_NNODES", "SLURM_STEP_NUM_NODES", "SLURM_NTASKS"} {
		tests["missing "+name] = struct {
			file string
			edit envEdit
			want []string
		}{stepTask, envEdit{unset: []string{name}}, []string{name + " is not set"}}
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ReadEnv(tc.edit.apply(loadEnv(t, tc.file)))
			assert.Nil(t, got)
			assert.Equal(t, tc.want, envProblems(t, err))
		})
	}
}

// Invalid hostlists and tasks-per-node lists carry the parser's own message,
// and the *HostlistError stays reachable with errors.As.
func TestReadEnvInvalidLists(t *testing.T) {
	tests := map[string]struct {
		name, value string
		parse       func(string) error
	}{
		"unterminated step list": {"SLURM_STEP_NODELIST", "node[1-8", envExpandErr},
		"empty step list":        {"SLURM_STEP_NODELIST", "", envExpandErr},
		"reversed job list":      {"SLURM_JOB_NODELIST", "node[8-1]", envExpandErr},
		"bad tasks per node":     {"SLURM_STEP_TASKS_PER_NODE", "1(x8", envTasksErr},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			parseErr := tc.parse(tc.value)
			require.Error(t, parseErr, "precondition: %q must not parse", tc.value)
			got, err := ReadEnv(envEdit{set: map[string]string{tc.name: tc.value}}.apply(loadEnv(t, stepTask)))
			assert.Nil(t, got)
			shown := tc.name + "=" + tc.value
			if tc.value == "" {
				shown = tc.name + `=""`
			}
			kind := "hostlist"
			if tc.name == "SLURM_STEP_TASKS_PER_NODE" {
				kind = "tasks-per-node list"
			}
			assert.Equal(t, []string{shown + " is not a valid " + kind + ": " + parseErr.Error()}, envProblems(t, err))
			var want *HostlistError
			if errors.As(parseErr, &want) {
				var gotH *HostlistError
				require.ErrorAs(t, err, &gotH)
				assert.Equal(t, want, gotH)
			}
		})
	}
}

func envExpandErr(s string) error { _, err := Expand(s); return err }
func envTasksErr(s string) error  { _, err := ParseTasksPerNode(s); return err }

func TestReadEnvReportsAllProblemsTogether(t *testing.T) {
	env := envEdit{set: map[string]string{
		"SLURMD_NODENAME":    "node5",
		"SLURM_NNODES":       "9",
		"SLURM_LOCALID":      "1",
		"SLURM_GPUS_ON_NODE": "eight",
	}}.apply(loadEnv(t, stepTask))

	got, err := ReadEnv(env)
	assert.Nil(t, got)
	want := []string{
		"SLURMD_NODENAME=node5 but SLURM_STEP_NODELIST=node[1-8] has node4 at SLURM_NODEID=3",
		"SLURM_NNODES=9 but SLURM_STEP_NODELIST=node[1-8] has 8 nodes " +
			"(srun -E/--preserve-env passes the job's SLURM_NNODES to a smaller step: run srun without it)",
		"SLURM_LOCALID=1: this is not the only task on its node; " +
			"wideep-launch needs exactly one task per node: run it with srun --ntasks-per-node=1",
		"SLURM_GPUS_ON_NODE=eight is not a non-negative integer",
	}
	msgs := envProblems(t, err)
	assert.Len(t, msgs, 4)
	assert.Equal(t, want, msgs)
	// The header names the node slurmd says it is: that is the machine to look at.
	assert.Equal(t, "invalid Slurm environment on node5 (4 problems):\n  - "+strings.Join(want, "\n  - "), err.Error())
}

func TestReadEnvErrorHeader(t *testing.T) {
	tests := map[string]struct {
		edit envEdit
		want string
	}{
		"one problem, node from the list": {
			envEdit{unset: []string{"SLURMD_NODENAME"}},
			"invalid Slurm environment on node4 (1 problem):\n  - SLURMD_NODENAME is not set",
		},
		"node unknown": {
			envEdit{unset: []string{"SLURMD_NODENAME", "SLURM_NODEID"}},
			"invalid Slurm environment (2 problems):\n  - SLURM_NODEID is not set\n  - SLURMD_NODENAME is not set",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := ReadEnv(tc.edit.apply(loadEnv(t, stepTask)))
			require.Error(t, err)
			assert.Equal(t, tc.want, err.Error())
		})
	}
}
