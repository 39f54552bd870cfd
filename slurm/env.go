// Package slurm knows Slurm: hostlist expressions, the SLURM_* environment of
// a job step, and (in slurmtest) a real local Slurm cluster for tests.
package slurm

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/hashicorp/go-multierror"
)

// EnvError lists every problem found in the SLURM_* environment.
type EnvError struct{ Err error }

func (e *EnvError) Error() string { return e.Err.Error() }
func (e *EnvError) Unwrap() error { return e.Err }

// Env is the validated SLURM_* environment of one wideep-launch task: a job
// step with exactly one task per node, or the batch script itself.
type Env struct {
	JobID   string // SLURM_JOB_ID
	JobName string // SLURM_JOB_NAME ("" when unset)
	StepID  string // SLURM_STEP_ID ("" outside a step)
	InStep  bool   // SLURM_STEP_ID is set: this is an srun task, not the batch script

	// Nodes is the expansion of NodeListVar in Slurm's order, never re-sorted:
	// SLURM_NODEID indexes it. NodeListVar is SLURM_STEP_NODELIST in a step;
	// outside one it is SLURM_NODELIST, or SLURM_JOB_NODELIST when that is unset.
	Nodes       []string
	NodeListVar string
	NodeIndex   int    // SLURM_NODEID
	Host        string // Nodes[NodeIndex], checked equal to SLURMD_NODENAME

	// JobNodes is the job's allocation (SLURM_JOB_NODELIST, else
	// SLURM_NODELIST); a step may run on fewer nodes. Nil when both are unset.
	JobNodes []string

	NNodes       int // SLURM_NNODES (the step's node count in a step)
	StepNumNodes int // SLURM_STEP_NUM_NODES; 0 when unset (outside a step)

	ProcID  int // SLURM_PROCID
	LocalID int // SLURM_LOCALID
	NTasks  int // SLURM_NTASKS; 0 when unset (possible in a batch script)

	// TasksPerNode has one count per entry of Nodes: SLURM_STEP_TASKS_PER_NODE
	// (else SLURM_TASKS_PER_NODE) in a step, SLURM_TASKS_PER_NODE outside one.
	// Nil when unset outside a step.
	TasksPerNode []int

	GPUsOnNode int    // SLURM_GPUS_ON_NODE; 0 when unset
	SubmitDir  string // SLURM_SUBMIT_DIR ("" when unset)
}

// ReadEnv reads the SLURM_* environment through lookup (os.LookupEnv in
// production) and checks that it describes one task per node whose node list,
// index and node name agree.
//
// Without SLURM_JOB_ID it returns ErrNotInSlurm. Otherwise every problem found
// is reported at once in an *EnvError wrapping a *multierror.Error, one entry
// per problem, each naming the variables and values involved; invalid
// hostlists are wrapped so errors.As finds their *HostlistError.
//
// Outside a step (the batch script itself) SLURM_NTASKS and
// SLURM_TASKS_PER_NODE describe the steps the job will run, not this single
// process, so only their syntax and length are checked there.
func ReadEnv(lookup func(string) (string, bool)) (*Env, error) {
	jobID, ok := lookup("SLURM_JOB_ID")
	if !ok || jobID == "" {
		return nil, ErrNotInSlurm
	}
	r := &envReader{lookup: lookup, hostlists: map[string]hostlistResult{}}
	e := &Env{JobID: jobID}
	r.checkID("SLURM_JOB_ID", jobID)
	e.JobName, _ = lookup("SLURM_JOB_NAME")
	e.SubmitDir, _ = lookup("SLURM_SUBMIT_DIR")
	e.StepID, e.InStep = lookup("SLURM_STEP_ID")
	if e.InStep {
		r.checkID("SLURM_STEP_ID", e.StepID)
	}

	nodesOK := r.readNodes(e)
	if v, ok := firstSet(lookup, "SLURM_JOB_NODELIST", "SLURM_NODELIST"); ok {
		e.JobNodes, _ = r.hostlist(v)
	}

	var idxOK bool
	e.NodeIndex, idxOK = r.count("SLURM_NODEID", true)
	idxOK = idxOK && nodesOK
	if idxOK && e.NodeIndex >= len(e.Nodes) {
		r.problemf("%s is out of range: %s has %d nodes (SLURM_NODEID 0-%d)",
			r.kv("SLURM_NODEID"), r.kv(e.NodeListVar), len(e.Nodes), len(e.Nodes)-1)
		idxOK = false
	}
	if idxOK {
		e.Host = e.Nodes[e.NodeIndex]
	}
	nodeName, hasNodeName := r.required("SLURMD_NODENAME")
	if hasNodeName && idxOK && nodeName != e.Host {
		r.problemf("%s but %s has %s at %s",
			r.kv("SLURMD_NODENAME"), r.kv(e.NodeListVar), e.Host, r.kv("SLURM_NODEID"))
	}

	var nnodesOK, stepNodesOK bool
	e.NNodes, nnodesOK = r.count("SLURM_NNODES", true)
	e.StepNumNodes, stepNodesOK = r.count("SLURM_STEP_NUM_NODES", e.InStep)
	if nodesOK && stepNodesOK && e.StepNumNodes != len(e.Nodes) {
		r.problemf("%s but %s has %d nodes",
			r.kv("SLURM_STEP_NUM_NODES"), r.kv(e.NodeListVar), len(e.Nodes))
	}
	if nodesOK && nnodesOK && e.NNodes != len(e.Nodes) {
		hint := ""
		if e.InStep {
			hint = " (srun -E/--preserve-env passes the job's SLURM_NNODES to a smaller step: run srun without it)"
		}
		r.problemf("%s but %s has %d nodes%s", r.kv("SLURM_NNODES"), r.kv(e.NodeListVar), len(e.Nodes), hint)
	}

	r.readTasks(e, nodesOK, idxOK)

	e.GPUsOnNode, _ = r.count("SLURM_GPUS_ON_NODE", false)

	if len(r.problems) > 0 {
		header := nodeName
		if header == "" {
			header = e.Host
		}
		return nil, &EnvError{Err: &multierror.Error{
			Errors:      r.problems,
			ErrorFormat: problemList(header),
		}}
	}
	return e, nil
}

// readNodes fills Nodes and NodeListVar and reports whether Nodes is usable.
func (r *envReader) readNodes(e *Env) bool {
	name, ok := firstSet(r.lookup, "SLURM_STEP_NODELIST", "SLURM_NODELIST", "SLURM_JOB_NODELIST")
	switch {
	case !ok:
		r.problemf("no node list: none of SLURM_STEP_NODELIST, SLURM_NODELIST, SLURM_JOB_NODELIST is set")
		return false
	case e.InStep && name != "SLURM_STEP_NODELIST":
		// In a step SLURM_NODELIST is the whole allocation, and SLURM_NODEID
		// indexes the step's list: falling back would pick the wrong host.
		r.problemf("SLURM_STEP_NODELIST is not set although %s is (in a step %s lists the whole allocation, not the step's nodes)",
			r.kv("SLURM_STEP_ID"), name)
		return false
	}
	e.NodeListVar = name
	nodes, ok := r.hostlist(name)
	if !ok {
		return false
	}
	e.Nodes = nodes
	if dups := duplicates(nodes); len(dups) > 0 {
		r.problemf("%s lists %s more than once", r.kv(name), strings.Join(dups, ", "))
		return false
	}
	return true
}

// readTasks fills the task fields and checks for one task per node.
func (r *envReader) readTasks(e *Env, nodesOK, idxOK bool) {
	var procOK, localOK, ntasksOK bool
	e.ProcID, procOK = r.count("SLURM_PROCID", true)
	e.LocalID, localOK = r.count("SLURM_LOCALID", true)
	e.NTasks, ntasksOK = r.count("SLURM_NTASKS", e.InStep)

	tpnVars := []string{"SLURM_TASKS_PER_NODE"}
	if e.InStep {
		tpnVars = []string{"SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"}
	}
	tpnVar, tpnSet := firstSet(r.lookup, tpnVars...)
	tpnOK := false
	switch {
	case !tpnSet && e.InStep:
		r.problemf("neither SLURM_STEP_TASKS_PER_NODE nor SLURM_TASKS_PER_NODE is set")
	case tpnSet:
		v, _ := r.lookup(tpnVar)
		counts, err := ParseTasksPerNode(v)
		if err != nil {
			r.problems = append(r.problems, fmt.Errorf("%s is not a valid tasks-per-node list: %w", r.kv(tpnVar), err))
			break
		}
		e.TasksPerNode = counts
		tpnOK = true
		if nodesOK && len(counts) != len(e.Nodes) {
			r.problemf("%s has %d entries but %s has %d nodes",
				r.kv(tpnVar), len(counts), r.kv(e.NodeListVar), len(e.Nodes))
			tpnOK = false
		}
	}

	const fix = "wideep-launch needs exactly one task per node: run it with srun --ntasks-per-node=1"
	onePerNode := true
	if e.InStep && tpnOK && idxOK && e.TasksPerNode[e.NodeIndex] != 1 {
		r.problemf("%s puts %d tasks on %s (%s); %s",
			r.kv(tpnVar), e.TasksPerNode[e.NodeIndex], e.Host, r.kv("SLURM_NODEID"), fix)
		onePerNode = false
	}
	if localOK && e.LocalID != 0 {
		r.problemf("%s: this is not the only task on its node; %s", r.kv("SLURM_LOCALID"), fix)
		onePerNode = false
	}
	if e.InStep && ntasksOK && nodesOK && e.NTasks != len(e.Nodes) {
		r.problemf("%s but %s has %d nodes; %s", r.kv("SLURM_NTASKS"), r.kv(e.NodeListVar), len(e.Nodes), fix)
		onePerNode = false
	}
	// With several tasks per node the rank differs from the node index by
	// construction; that is already reported above.
	if onePerNode && procOK && idxOK && e.ProcID != e.NodeIndex {
		r.problemf("%s but %s: with one task per node the task rank must equal the node index "+
			"(tasks are not laid out in node order; check srun --distribution and SLURM_HOSTFILE)",
			r.kv("SLURM_PROCID"), r.kv("SLURM_NODEID"))
	}
}

type hostlistResult struct {
	hosts []string
	ok    bool
}

// envReader collects problems while reading variables, so that one pass
// reports all of them.
type envReader struct {
	lookup    func(string) (string, bool)
	problems  []error
	hostlists map[string]hostlistResult // by variable name: each is reported once
}

func (r *envReader) problemf(format string, args ...any) {
	r.problems = append(r.problems, fmt.Errorf(format, args...))
}

// kv formats a variable as NAME=value for messages, quoting values that would
// otherwise be ambiguous (empty, spaces, control characters).
func (r *envReader) kv(name string) string {
	v, ok := r.lookup(name)
	if !ok {
		return name + " (unset)"
	}
	if v == "" || strings.ContainsFunc(v, func(c rune) bool {
		return c <= ' ' || c == '"' || c == '\\' || !strconv.IsPrint(c)
	}) {
		v = strconv.Quote(v)
	}
	return name + "=" + v
}

func (r *envReader) required(name string) (string, bool) {
	v, ok := r.lookup(name)
	if !ok {
		r.problemf("%s is not set", name)
	}
	return v, ok
}

// count parses a non-negative integer variable. It reports whether the value
// is usable; a missing optional variable is not a problem but not usable.
func (r *envReader) count(name string, required bool) (int, bool) {
	v, ok := r.lookup(name)
	if !ok {
		if required {
			r.problemf("%s is not set", name)
		}
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 31)
	if err != nil {
		r.problemf("%s %s", r.kv(name), numberProblem(err))
		return 0, false
	}
	return int(n), true
}

// checkID checks a job or step ID, which Slurm prints as a uint32.
func (r *envReader) checkID(name, v string) {
	if _, err := strconv.ParseUint(v, 10, 32); err != nil {
		r.problemf("%s %s", r.kv(name), numberProblem(err))
	}
}

func numberProblem(err error) string {
	if errors.Is(err, strconv.ErrRange) {
		return "is too large"
	}
	return "is not a non-negative integer"
}

// hostlist expands the hostlist in variable name, reporting a bad one once.
func (r *envReader) hostlist(name string) ([]string, bool) {
	if res, seen := r.hostlists[name]; seen {
		return res.hosts, res.ok
	}
	v, _ := r.lookup(name)
	hosts, err := Expand(v)
	if err != nil {
		r.problems = append(r.problems, fmt.Errorf("%s is not a valid hostlist: %w", r.kv(name), err))
		hosts = nil
	}
	r.hostlists[name] = hostlistResult{hosts: hosts, ok: err == nil}
	return hosts, err == nil
}

func firstSet(lookup func(string) (string, bool), names ...string) (string, bool) {
	for _, n := range names {
		if _, ok := lookup(n); ok {
			return n, true
		}
	}
	return "", false
}

// duplicates returns the hosts listed more than once, in order of first repeat.
func duplicates(hosts []string) []string {
	seen := make(map[string]int, len(hosts))
	var dups []string
	for _, h := range hosts {
		seen[h]++
		if seen[h] == 2 {
			dups = append(dups, h)
		}
	}
	return dups
}

// problemList formats the problems for a human reading one node's output
// among many: where, how many, then one per line.
func problemList(host string) multierror.ErrorFormatFunc {
	return func(es []error) string {
		var b strings.Builder
		b.WriteString("invalid Slurm environment")
		if host != "" {
			b.WriteString(" on " + host)
		}
		noun := "problems"
		if len(es) == 1 {
			noun = "problem"
		}
		fmt.Fprintf(&b, " (%d %s):", len(es), noun)
		for _, err := range es {
			b.WriteString("\n  - " + err.Error())
		}
		return b.String()
	}
}
