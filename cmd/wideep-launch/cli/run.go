package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/wideep/wideep-launch/launcher/deploy"
	"github.com/wideep/wideep-launch/launcher/node"
	"github.com/wideep/wideep-launch/launcher/preflight"
	"github.com/wideep/wideep-launch/launcher/rendezvous"
	"github.com/wideep/wideep-launch/launcher/supervise"
	"github.com/wideep/wideep-launch/slurm"
)

func init() {
	register(command{name: "run", summary: "run this node's part of the deployment (srun wideep-launch run, one task per node)", run: runRun})
}

const runDescription = `Run this node's part of the deployment. Start it once per node of the job,
as one Slurm step with one task per node:

  srun --ntasks-per-node=1 --kill-on-bad-exit=1 wideep-launch run --role auto

Every node works out its role, worker and node rank from SLURM_NODEID and
SLURM_STEP_NODELIST, resolves its address, checks itself (preflight), meets
the others on node 0 (an authenticated rendezvous: WIDEEP_SECRET or
--secret-file), readies its runtime (--runtime enroot: node 0 imports the
image once, every node creates the job's container), checks the routes
between the nodes, then: the infra node starts etcd, NATS and the Dynamo
frontend; the worker nodes precompile DeepGEMM kernels; the workers start;
node 0 waits until the frontend serves the model with every prefill and
decode worker registered and logs one line
  READY http://<address>:8000 model=<name> prefill=N decode=M after <time>
writes <log-dir>/<job id>/endpoint, and keeps watching the deployment.

A job is a gang: when a process of any node exits, or a node's launcher
dies or goes silent, every node stops its processes (one SIGTERM, --grace,
SIGKILL) and the job ends failed, each log naming the node and why; the
launcher does this itself, --kill-on-bad-exit is recommended, not needed.
SIGTERM and SIGINT (scancel, time limit) and SIGUSR1 (sbatch
--signal=USR1@T before the time limit) stop the node the same way (exit
128+N; 0 after SIGUSR1). SIGHUP, SIGQUIT and SIGUSR2 are forwarded to every
process group; SIGCONT is ignored. Keep --grace below the cluster's KillWait
('scontrol show config | grep KillWait', 30 s by default).

--simulate runs the same plan with stand-ins for SGLang, the Dynamo frontend
and the DeepGEMM precompile (real etcd and nats-server): rehearse a job
template without GPUs.

Every flag also reads the WIDEEP_* variable named in its help; the command
line wins over the environment. List flags read one entry per line.`

// runCommand is run's flags and what they are bound to.
type runCommand struct {
	spec        deploy.Spec
	opts        node.Options
	rf          runtimeFlags
	role        *string
	simulate    *bool
	rvHost      *string
	checkRoutes *bool
	secretFile  *string
	logFormat   *string
	logLevel    *string
	dryRun      *bool
}

func runRun(sys System, args []string) (err error) {
	c := &runCommand{spec: deploy.DefaultSpec(), opts: node.DefaultOptions()}
	fs := c.flags(sys)
	defer func() { err = withEnvSources(fs, sys.LookupEnv, err) }()
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := applyEnvDefaults(fs, sys.LookupEnv); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageErrorf("run takes no arguments (got %q)", fs.Arg(0))
	}
	if err := c.check(); err != nil {
		return err
	}
	logOut, level, err := c.logger(sys)
	if err != nil {
		return err
	}
	env, err := slurm.ReadEnv(sys.LookupEnv)
	if err != nil {
		return err
	}
	if *c.dryRun {
		return c.printPlan(sys, fs, env)
	}
	runtime, why, gpuFrom, err := c.prepare(sys, fs, env)
	if err != nil {
		return err
	}

	// Signals are caught from here on, before anything starts: a SIGTERM
	// during the rendezvous must still stop the node cleanly.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, supervise.ForwardSignals()...)
	defer signal.Stop(sigs)

	rt := &node.NodeRuntime{
		Spec:           c.spec,
		Slurm:          env,
		RendezvousHost: *c.rvHost,
		SecretFile:     *c.secretFile,
		Options:        c.opts,
		Runtime:        runtime,
		RuntimeReason:  why,
		// The program's one reaper of child processes.
		Reaper:       supervise.NewReaper(),
		JobAlive:     squeueAlive,
		GPUModelFrom: gpuFrom,
		Environ:      sys.Environ(),
		LookupEnv:    sys.LookupEnv,
		LogWriter:    logOut,
		LogLevel:     level,
		Output:       sys.Stdout,
		Signals:      sigs,
		Now:          sys.Now,
	}
	return rt.Run(context.Background())
}

func (c *runCommand) flags(sys System) *pflag.FlagSet {
	def, opts := node.DefaultOptions(), &c.opts
	fs := newFlagSet(sys, "run", "wideep-launch run [flags]", runDescription)
	c.role = fs.String("role", "auto", "this node's role: auto (from the plan), or prefill, decode, infra to assert it (env "+EnvName("role")+")")
	c.dryRun = fs.Bool("dry-run", false, "check everything that needs no other node, print the plan and this node's part, start nothing (env "+EnvName("dry-run")+")")
	c.simulate = fs.Bool("simulate", false, "run stand-ins instead of SGLang, the Dynamo frontend and the precompile (env "+EnvName("simulate")+")")
	fs.DurationVar(&opts.Grace, "grace", def.Grace, "time between SIGTERM and SIGKILL for the node's processes; keep it below Slurm's KillWait (env "+EnvName("grace")+")")
	fs.DurationVar(&opts.HealthTimeout, "health-timeout", def.HealthTimeout, "how long node 0 waits for the frontend to serve the model with every worker registered (env "+EnvName("health-timeout")+")")
	c.rvHost = fs.String("rendezvous-host", "", "address or name the nodes use to reach node 0 (empty: its Slurm node name, which must resolve on every node) (env "+EnvName("rendezvous-host")+")")
	fs.DurationVar(&opts.RendezvousTimeout, "rendezvous-timeout", def.RendezvousTimeout, "how long nodes wait for each other at the start (env "+EnvName("rendezvous-timeout")+")")
	fs.DurationVar(&opts.InfraTimeout, "infra-timeout", def.InfraTimeout, "how long to wait for etcd and NATS to be ready (env "+EnvName("infra-timeout")+")")
	fs.DurationVar(&opts.StallTimeout, "stall-timeout", def.StallTimeout, "during start-up, a worker with no output for this long is stalled and the job ends, naming it with its last lines (--health-timeout stays the outer bound) (env "+EnvName("stall-timeout")+")")
	fs.DurationVar(&opts.HealthProgress, "progress-interval", def.HealthProgress, "how often a waiting node says what it still waits for: node 0 for the deployment's health, every node for a DeepGEMM compile (env "+EnvName("progress-interval")+")")
	fs.DurationVar(&opts.PeerTimeout, "peer-timeout", def.PeerTimeout, "a node silent this long on the rendezvous is lost and the job ends (env "+EnvName("peer-timeout")+")")
	fs.DurationVar(&opts.HealthInterval, "health-interval", def.HealthInterval, "after READY, how often node 0 checks the frontend (env "+EnvName("health-interval")+")")
	fs.DurationVar(&opts.HealthLostTimeout, "health-lost-timeout", def.HealthLostTimeout, "after READY, how long the deployment may stay below the plan before the job ends (env "+EnvName("health-lost-timeout")+")")
	fs.DurationVar(&opts.CanaryInterval, "canary-interval", 0, "after READY, send a one-token chat request this often (0: off) (env "+EnvName("canary-interval")+")")
	fs.IntVar(&opts.CanaryFailures, "canary-failures", def.CanaryFailures, "consecutive canary failures that end the job (env "+EnvName("canary-failures")+")")
	fs.BoolVar(&opts.PassSlurmEnv, "pass-slurm-env", false, "pass the launcher step's own SLURM_CPU_BIND*, SLURM_TRES_PER_TASK, ... to the processes (env "+EnvName("pass-slurm-env")+")")
	fs.StringVar(&opts.CPUAffinity, "cpu-affinity", node.CPUAffinityAll, "CPUs of the node's processes: all (every CPU the job may use on the node, whatever Slurm bound the launcher to) or inherit (the launcher's binding) (env "+EnvName("cpu-affinity")+")")
	fs.StringArrayVar(&opts.SkipChecks, "skip-check", nil, withEnv("skip-check", "waive a named preflight check, repeatable: "+
		strings.Join(preflight.CheckNames(), ", ")+` (README, "Preflight checks")`))
	fs.StringVar(&opts.PreflightSysroot, "preflight-sysroot", "", withEnv("preflight-sysroot",
		"read sys/, proc/ and dev/shm for the fabric checks under this directory, in simulation too (tests: a fake tree)"))
	_ = fs.MarkHidden("preflight-sysroot") // for tests, not for jobs
	c.checkRoutes = fs.Bool("check-routes", true, "before anything starts, test the connections the workers will make between nodes on their planned ports (env "+EnvName("check-routes")+")")
	c.secretFile = fs.String("secret-file", "", "file holding the job's rendezvous secret, mode 0600 (default: env "+rendezvous.SecretEnv+"; see examples/wideep.sbatch) (env "+EnvName("secret-file")+")")
	c.logFormat = fs.String("log-format", "console", "launcher log format: console or json (env "+EnvName("log-format")+")")
	c.logLevel = fs.String("log-level", "info", "launcher log level: debug, info, warn, error (env "+EnvName("log-level")+")")
	bindSpecFlags(fs, &c.spec)
	bindRuntimeFlags(fs, &c.rf, &c.spec)
	return fs
}

// check refuses the flags that are wrong whatever the job.
func (c *runCommand) check() error {
	opts := c.opts
	if *c.role != "auto" {
		if _, err := deploy.ParseRole(*c.role); err != nil {
			return usageErrorf("--role %q (or %s): want auto, prefill, decode or infra", *c.role, EnvName("role"))
		}
	}
	if err := checkDurations(map[string]time.Duration{
		"grace": opts.Grace, "health-timeout": opts.HealthTimeout, "rendezvous-timeout": opts.RendezvousTimeout,
		"infra-timeout": opts.InfraTimeout, "precompile-timeout": c.spec.PrecompileTimeout, "peer-timeout": opts.PeerTimeout,
		"progress-interval": opts.HealthProgress, "stall-timeout": opts.StallTimeout,
		"health-interval": opts.HealthInterval, "health-lost-timeout": opts.HealthLostTimeout,
	}, map[string]time.Duration{"canary-interval": opts.CanaryInterval}); err != nil {
		return err
	}
	if opts.CPUAffinity != node.CPUAffinityAll && opts.CPUAffinity != node.CPUAffinityInherit {
		return usageErrorf("--cpu-affinity %q (or %s): want all or inherit", opts.CPUAffinity, EnvName("cpu-affinity"))
	}
	if opts.CanaryFailures < 1 {
		return usageErrorf("--canary-failures %d (or %s): must be at least 1", opts.CanaryFailures, EnvName("canary-failures"))
	}
	if err := preflight.ValidateSkips(opts.SkipChecks); err != nil {
		return usageErrorf("--skip-check: %v", err)
	}
	return checkRendezvousHost(*c.rvHost)
}

// checkRendezvousHost refuses what no node could dial: the nodes join
// host:port themselves, and a mistake here would only show as every node
// timing out in the rendezvous.
func checkRendezvousHost(h string) error {
	if h == "" || net.ParseIP(h) != nil {
		return nil
	}
	if _, _, err := net.SplitHostPort(h); err == nil {
		return usageErrorf("--rendezvous-host %q: give the host alone (the port is --rendezvous-port)", h)
	}
	if len(h) > 253 || strings.ContainsFunc(h, func(c rune) bool {
		return !(c == '-' || c == '.' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z')
	}) {
		return usageErrorf("--rendezvous-host %q: not a host name or IP address", h)
	}
	return nil
}

// logger is where the launcher logs, and how much.
func (c *runCommand) logger(sys System) (io.Writer, zerolog.Level, error) {
	level, err := zerolog.ParseLevel(*c.logLevel)
	if err != nil || *c.logLevel == "" {
		return nil, 0, usageErrorf("--log-level %q: want debug, info, warn or error", *c.logLevel)
	}
	// Phase durations read best as seconds, and timestamps need sub-second
	// precision to order what 8 nodes did within one second.
	zerolog.DurationFieldUnit = time.Second
	zerolog.TimeFieldFormat = time.RFC3339Nano
	switch *c.logFormat {
	case "console":
		return zerolog.ConsoleWriter{Out: sys.Stderr, NoColor: true, TimeFormat: "15:04:05.000"}, level, nil
	case "json":
		return sys.Stderr, level, nil
	}
	return nil, 0, usageErrorf("--log-format %q: want console or json", *c.logFormat)
}

// prepare finishes the spec for this node and checks all of it before
// anything is written or started: the plan, the role, the rendezvous
// secret. A bad one exits 2 with nothing on stdout and no log directory.
// Then it builds the node's runtime.
// printPlan is --dry-run: the plan this node computes from the job's
// environment and flags, and its own part, with nothing started or written.
// The runtime is taken as given (auto shows as host): a job template can
// be checked outside its container.
func (c *runCommand) printPlan(sys System, fs *pflag.FlagSet, env *slurm.Env) error {
	spec := &c.spec
	spec.NodeSource = env.NodeListVar
	spec.ResolveGPUs(env.GPUsOnNode)
	finishSpec(fs, sys.LookupEnv, sys.Environ(), spec)
	if c.rf.runtime != "auto" {
		spec.Runtime = c.rf.runtime
	}
	plan, err := deploy.NewPlan(*spec, env.JobID, env.Nodes, nil)
	if err != nil {
		return err
	}
	if err := plan.CheckRole(env.NodeIndex, *c.role); err != nil {
		return err
	}
	for _, w := range spec.Deprecations() {
		fmt.Fprintln(sys.Stderr, "wideep-launch run: warning: "+w)
	}
	if err := deploy.WriteTable(sys.Stdout, plan); err != nil {
		return err
	}
	me := plan.Nodes[env.NodeIndex]
	_, err = fmt.Fprintf(sys.Stdout, "\ndry run: this is node %d (%s), %s; it would run %s\n",
		me.Index, me.Host, me.Role, me.ProcessNames())
	return err
}

func (c *runCommand) prepare(sys System, fs *pflag.FlagSet, env *slurm.Env) (rt node.Runtime, why, gpuFrom string, err error) {
	spec := &c.spec
	spec.NodeSource = env.NodeListVar
	spec.ResolveGPUs(env.GPUsOnNode)
	finishSpec(fs, sys.LookupEnv, sys.Environ(), spec)
	gpuFrom = node.GPUModelGiven
	if spec.GPUModel == "" {
		spec.GPUModel, gpuFrom = detectGPUModel(sys, *c.simulate)
	}
	c.opts.SkipRoutes = !*c.checkRoutes
	if spec.Runtime, why, err = c.rf.resolve(sys); err != nil {
		return nil, "", "", err
	}
	plan, err := deploy.NewPlan(*spec, env.JobID, env.Nodes, nil)
	if err != nil {
		return nil, "", "", err
	}
	if err := plan.CheckRole(env.NodeIndex, *c.role); err != nil {
		return nil, "", "", err
	}
	// The node loads the key again at the rendezvous; a missing or
	// world-readable secret file must not wait until after the preflight.
	if _, _, err := rendezvous.LoadKey(sys.LookupEnv, *c.secretFile, env.JobID, env.StepID); err != nil {
		return nil, "", "", &deploy.ConfigError{Err: err}
	}
	rt, err = c.rf.build(sys, *spec, env.JobID, *c.simulate)
	return rt, why, gpuFrom, err
}
