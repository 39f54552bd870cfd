package cli

import (
	"bytes"
	"errors"
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

func runPlan(sys System, args []string) error {
	spec := deploy.DefaultSpec()
	fs := newFlagSet(sys, "plan", "wideep-launch plan [flags]", planDescription)
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

	var hosts []string
	slurmGPUs := 0
	if *nodelist != "" {
		h, err := slurm.Expand(*nodelist)
		if err != nil {
			return err
		}
		hosts, spec.NodeSource = h, "--nodelist"
		if v, ok := sys.LookupEnv("SLURM_GPUS_ON_NODE"); ok && v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return usageErrorf("SLURM_GPUS_ON_NODE=%q: want a number of GPUs (or pass --gpus-per-node)", v)
			}
			slurmGPUs = n
		}
		if *jobID == "" {
			*jobID, _ = sys.LookupEnv("SLURM_JOB_ID")
		}
	} else {
		env, err := slurm.ReadEnv(sys.LookupEnv)
		if errors.Is(err, slurm.ErrNotInSlurm) {
			return usageErrorf("no nodes to plan for: pass --nodelist (e.g. --nodelist 'gpu[01-08]') or run inside a Slurm job")
		}
		if err != nil {
			return err
		}
		hosts, spec.NodeSource, slurmGPUs = env.Nodes, env.NodeListVar, env.GPUsOnNode
		if *jobID == "" {
			*jobID = env.JobID
		}
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
