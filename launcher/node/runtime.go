package node

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/rs/zerolog"

	"github.com/wideep/wideep-launch/launcher/deploy"
	"github.com/wideep/wideep-launch/launcher/rendezvous"
	"github.com/wideep/wideep-launch/launcher/sim"
	"github.com/wideep/wideep-launch/launcher/supervise"
)

// Runtime is where a node's processes run: on the host, as simulation
// stand-ins, in a container. The node plans processes; the runtime says how
// each one is started and what preflight must find for it.
type Runtime interface {
	// Name names the runtime in logs and plans ("host", "simulation").
	Name() string
	// Prepare readies the runtime on this node once the nodes have met
	// (a container to create, an image to import on node 0 while the
	// others wait at a barrier).
	Prepare(ctx context.Context, n Node) error
	// Command is what the supervisor runs for the planned process p, given
	// the full environment it must see.
	Command(p deploy.Process, env []string) (argv, cmdEnv []string)
	// Executable is the program preflight must find for p, and LookPath
	// finds a program where the processes will run.
	Executable(p deploy.Process) string
	LookPath(name string) (string, error)
	// UsesGPUs says whether the processes need the node's GPUs (stand-ins
	// do not).
	UsesGPUs() bool
	// BindHost is the address the processes bind where the plan says "every
	// address" (0.0.0.0); "" means every address. Preflight checks ports
	// there.
	BindHost() string
	// HostPath is where a path as the processes see it is on the node, for
	// the launcher's own checks: a container's bind mount maps it to its
	// source; false when it exists only inside an image the launcher has
	// not started yet.
	HostPath(p string) (string, bool)
	// Cleanup undoes Prepare at the end of the job, whatever its end.
	Cleanup(ctx context.Context) error
}

// Node is what a Runtime learns about the node it prepares.
type Node struct {
	Index int
	Host  string
	JobID string
	Log   zerolog.Logger
	// Processes are the node's planned processes, for what the runtime
	// must check it can run.
	Processes []deploy.Process
	// Barrier meets every node; node 0's payload is what every node gets
	// back (see rendezvous.Client.BarrierWith).
	Barrier func(ctx context.Context, name, problem string, payload json.RawMessage) (json.RawMessage, error)
}

// Host runs the planned processes as they are, on the node itself, or
// inside the container pyxis already put the launcher in (Pyxis set).
type Host struct{ Pyxis bool }

func (h Host) Name() string {
	if h.Pyxis {
		return "pyxis"
	}
	return "host"
}
func (Host) Prepare(context.Context, Node) error                         { return nil }
func (Host) Command(p deploy.Process, env []string) ([]string, []string) { return p.Argv, env }
func (Host) Executable(p deploy.Process) string                          { return p.Argv[0] }
func (Host) LookPath(name string) (string, error)                        { return exec.LookPath(name) }
func (Host) UsesGPUs() bool                                              { return true }
func (Host) BindHost() string                                            { return "" }

// HostPath is p: on the host, or inside pyxis's container with the
// launcher, the processes and the launcher see the same files.
func (Host) HostPath(p string) (string, bool) { return p, true }
func (Host) Cleanup(context.Context) error    { return nil }

// Simulation runs this binary's stand-ins (`Self sim <the real argv>`) for
// the Python processes (SGLang, the Dynamo frontend, the precompile), with
// the real argv and environment; etcd and nats-server stay real.
type Simulation struct {
	// Self is this binary.
	Self string
	// Env is added to every stand-in's environment (test knobs of the
	// stand-ins, WIDEEP_SIM_*).
	Env []string
	// Bind, when set, is the one address the stand-ins bind instead of every
	// address: several simulated nodes then share one host, each on its own
	// loopback address (127.0.0.N), with the same ports.
	Bind string
}

func (Simulation) Name() string                        { return "simulation" }
func (Simulation) Prepare(context.Context, Node) error { return nil }
func (Simulation) UsesGPUs() bool                      { return false }
func (s Simulation) BindHost() string                  { return s.Bind }
func (Simulation) HostPath(p string) (string, bool)    { return p, true }
func (Simulation) Cleanup(context.Context) error       { return nil }

func (s Simulation) Command(p deploy.Process, env []string) ([]string, []string) {
	if !standIn(p) {
		return p.Argv, env
	}
	argv := append([]string{s.Self, "sim"}, p.Argv...)
	env = append(env, s.Env...)
	if s.Bind != "" {
		env = append(env, sim.EnvBindHost+"="+s.Bind)
	}
	return argv, env
}

func (s Simulation) Executable(p deploy.Process) string {
	if standIn(p) {
		return s.Self
	}
	return p.Argv[0]
}

func (Simulation) LookPath(name string) (string, error) { return exec.LookPath(name) }

// standIn reports whether p runs as a simulation stand-in: every Python
// process does; etcd and nats-server stay real.
func standIn(p deploy.Process) bool {
	return p.Name != deploy.ProcEtcd && p.Name != deploy.ProcNATS
}

// unplanned are variables no process inherits unless the plan sets them:
// a stale control-plane address (NATS_SERVER with --no-nats makes Dynamo
// connect to NATS anyway), what the enroot PyTorch hook writes (its
// MASTER_ADDR is the first *sorted* host, not the worker's head), and the
// launchers' own secret.
var unplanned = []string{"ETCD_ENDPOINTS", "NATS_SERVER", "MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE",
	"LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", rendezvous.SecretEnv}

// stepOnly says whether a variable describes the launcher's own Slurm step
// (its CPU binding, its tasks): inherited by programs that start steps or
// bind CPUs themselves, they pin a whole worker to the launcher's cores or
// break a nested srun (srt-slurm#125).
func stepOnly(name string) bool {
	for _, p := range []string{"SLURM_CPU_BIND", "SLURM_MEM_BIND", "SLURM_NTASKS"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return name == "SLURM_TRES_PER_TASK" || name == "SLURM_CPUS_PER_TASK"
}

// inherited is the environment the processes inherit, and what was left
// out of it (for the log): the plan sets its own variables on each process.
func (r *run) inherited() (env, dropped []string) {
	for _, kv := range r.n.Environ {
		k, _, _ := strings.Cut(kv, "=")
		if slices.Contains(unplanned, k) || stepOnly(k) && !r.n.Options.PassSlurmEnv {
			dropped = append(dropped, k)
			continue
		}
		env = append(env, kv)
	}
	return env, dropped
}

// processes turns the node's planned processes into what the supervisor
// starts, grouped by when they start.
func (r *run) processes(ps []deploy.Process) procSet {
	base, dropped := r.inherited()
	if len(dropped) > 0 {
		r.log.Info().Strs("not_inherited", dropped).Msg("variables the processes do not inherit (the plan sets its own; --pass-slurm-env keeps the step's SLURM_* ones)")
	}
	var set procSet
	for _, p := range ps {
		spec := r.procSpec(p, base)
		switch {
		case p.Name == deploy.ProcEtcd || p.Name == deploy.ProcNATS:
			set.infra = append(set.infra, spec)
		case p.Oneshot:
			set.oneshots = append(set.oneshots, spec)
		default:
			set.services = append(set.services, spec)
		}
	}
	return set
}

// procSpec is p with the inherited environment base under the plan's (the
// plan wins, in a stable order), as the runtime runs it.
func (r *run) procSpec(p deploy.Process, base []string) supervise.ProcSpec {
	env := make([]string, 0, len(base)+len(p.Env))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, override := p.Env[k]; !override {
			env = append(env, kv)
		}
	}
	keys := make([]string, 0, len(p.Env))
	for k := range p.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+p.Env[k])
	}
	argv, env := r.n.Runtime.Command(p, env)
	return supervise.ProcSpec{
		Name: p.Name, Argv: argv, Env: env, Oneshot: p.Oneshot, CPUs: r.cpus,
		LogPath: filepath.Join(r.jobDir, r.host+"."+p.Name+".log"),
	}
}

// CPU affinity modes (Options.CPUAffinity).
const (
	CPUAffinityAll     = "all"
	CPUAffinityInherit = "inherit"
)

// cpuAffinity decides the CPUs of the node's processes. With one task per
// node, Slurm may bind the launcher to a few cores (--cpu-bind, or a
// template's default), and every worker would inherit them: a 8-GPU worker
// with its schedulers on one core. "all" gives them every CPU the job may
// use on the node; "inherit" keeps the launcher's binding.
func (r *run) cpuAffinity() {
	own, allowed, err := supervise.AllowedCPUs()
	if err != nil {
		r.log.Warn().Err(err).Msg("cannot read the CPUs this job may use on the node; the processes inherit the launcher's")
		return
	}
	if own == allowed {
		r.log.Debug().Int("cpus", own.Count()).Msg("the launcher may run on every CPU of the job on this node")
		return
	}
	if r.n.Options.CPUAffinity == CPUAffinityInherit {
		r.log.Warn().Int("launcher_cpus", own.Count()).Int("job_cpus", allowed.Count()).
			Msgf("the processes inherit the launcher's binding: %d of the %d CPUs the job may use on this node (--cpu-affinity inherit)",
				own.Count(), allowed.Count())
		return
	}
	r.cpus = &allowed
	r.log.Warn().Int("launcher_cpus", own.Count()).Int("job_cpus", allowed.Count()).
		Msgf("the launcher is bound to %d of the %d CPUs the job may use on this node (Slurm's task binding); "+
			"its processes get all %d (--cpu-affinity inherit keeps the binding; srun --cpu-bind=none avoids it)",
			own.Count(), allowed.Count(), allowed.Count())
}
