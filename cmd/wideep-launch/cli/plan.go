package cli

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	"github.com/wideep/wideep-launch/launcher/deploy"
	"github.com/wideep/wideep-launch/slurm"
)

func init() {
	register(command{name: "plan", summary: "show who runs what on which node, without starting anything", run: runPlan})
}

const planDescription = `Print the deployment plan: every node's role, worker, node rank and head,
and the processes it will start (etcd, nats, frontend, precompile, worker)
with their exact arguments and environment. Nothing is started and no
Slurm is needed: give the nodes with --nodelist, or run it inside a job to
plan for the job's nodes (SLURM_STEP_NODELIST, SLURM_NODELIST).

Heads and endpoints are host names here; 'run' resolves addresses first.
Every flag also reads the WIDEEP_* variable named in its help; the command
line wins over the environment. List flags read one entry per line.`

func runPlan(sys System, args []string) (err error) {
	spec := deploy.DefaultSpec()
	fs := newFlagSet(sys, "plan", "wideep-launch plan [flags]", planDescription)
	defer func() { err = withEnvSources(fs, sys.LookupEnv, err) }()
	nodelist := fs.String("nodelist", "", `nodes as a Slurm hostlist, e.g. "gpu[01-08]" (env `+EnvName("nodelist")+`; default: the job's nodes)`)
	jobID := fs.String("job-id", "", "job id for node-local paths (env "+EnvName("job-id")+"; default: SLURM_JOB_ID, else offline)")
	output := fs.StringP("output", "o", "table", "output format: table or json (env "+EnvName("output")+")")
	showCommands := fs.Bool("show-commands", false, "after the table, print each node's commands as shell lines (env "+EnvName("show-commands")+")")
	showPorts := fs.Bool("show-ports", false, "after the table, print every port each kind of node binds or needs free, as the preflight checks them (env "+EnvName("show-ports")+")")
	var rf runtimeFlags
	bindSpecFlags(fs, &spec)
	bindRuntimeFlags(fs, &rf, &spec)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := applyEnvDefaults(fs, sys.LookupEnv); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageErrorf("plan takes no arguments (got %q)", fs.Arg(0))
	}
	switch *output {
	case "table", "json":
	default:
		return usageErrorf("--output %q: want table or json", *output)
	}
	if *showCommands && *output != "table" {
		return usageErrorf("--show-commands goes with --output table (the JSON has every command)")
	}
	if *showPorts && *output != "table" {
		return usageErrorf("--show-ports goes with --output table (the JSON lists every process's ports)")
	}

	hosts, source, slurmGPUs, job, err := planNodes(sys, *nodelist)
	if err != nil {
		return err
	}
	spec.NodeSource = source
	if *jobID == "" {
		*jobID = job
	}
	if *jobID == "" {
		*jobID = "offline"
	}
	spec.ResolveGPUs(slurmGPUs)
	finishSpec(fs, sys.LookupEnv, sys.Environ(), &spec)

	if rf.runtime != runtimeAuto {
		// auto depends on where the job's tasks run, not on this machine.
		spec.Runtime = rf.runtime
	}
	plan, err := deploy.NewPlan(spec, *jobID, hosts, nil)
	if err != nil {
		return err
	}
	// On stderr: the plan itself stays parseable (--output json).
	for _, w := range spec.Deprecations() {
		fmt.Fprintln(sys.Stderr, "wideep-launch plan: warning: "+w)
	}
	var wrap deploy.Wrapper
	if spec.Runtime == deploy.RuntimeEnroot {
		c, err := rf.commands(spec, *jobID, "")
		if err != nil {
			return err
		}
		wrap = c
	}
	// Render fully before writing, so a failure leaves stdout empty.
	var out bytes.Buffer
	if *output == "json" {
		err = deploy.WriteJSON(&out, plan)
	} else {
		err = deploy.WriteTable(&out, plan)
		if err == nil && *showPorts {
			out.WriteByte('\n')
			err = deploy.WritePorts(&out, plan)
		}
		if err == nil && *showCommands {
			out.WriteByte('\n')
			err = deploy.WriteCommands(&out, plan, wrap)
		}
	}
	if err != nil {
		return err
	}
	_, err = sys.Stdout.Write(out.Bytes())
	return err
}

// planNodes is what to plan for: the --nodelist hosts, else the Slurm job's
// nodes; where they came from, the GPUs Slurm gives each node, and the job id.
func planNodes(sys System, nodelist string) (hosts []string, source string, gpus int, jobID string, err error) {
	if nodelist == "" {
		env, err := slurm.ReadEnv(sys.LookupEnv)
		if errors.Is(err, slurm.ErrNotInSlurm) {
			return nil, "", 0, "", usageErrorf("no nodes to plan for: pass --nodelist (e.g. --nodelist 'gpu[01-08]') or run inside a Slurm job")
		}
		if err != nil {
			return nil, "", 0, "", err
		}
		return env.Nodes, env.NodeListVar, env.GPUsOnNode, env.JobID, nil
	}
	if hosts, err = slurm.Expand(nodelist); err != nil {
		// The error quotes the expression; say which flag (or variable) it was.
		return nil, "", 0, "", fmt.Errorf("--nodelist: %w", err)
	}
	if v, ok := sys.LookupEnv("SLURM_GPUS_ON_NODE"); ok && v != "" {
		if gpus, err = strconv.Atoi(v); err != nil || gpus < 0 {
			return nil, "", 0, "", usageErrorf("SLURM_GPUS_ON_NODE=%q: want a number of GPUs (or pass --gpus-per-node)", v)
		}
	}
	jobID, _ = sys.LookupEnv("SLURM_JOB_ID")
	return hosts, "--nodelist", gpus, jobID, nil
}
