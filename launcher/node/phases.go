package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/wideep/wideep-launch/launcher/deploy"
	"github.com/wideep/wideep-launch/launcher/preflight"
	"github.com/wideep/wideep-launch/launcher/rendezvous"
	"github.com/wideep/wideep-launch/launcher/supervise"
	"github.com/wideep/wideep-launch/slurm"
)

// makePlan plans the whole deployment from host names: every node computes
// the same plan, and this node finds its part in it.
func (r *run) makePlan(context.Context, time.Duration) error {
	offline, err := deploy.NewPlan(r.n.Spec, r.env.JobID, r.env.Nodes, nil)
	if err != nil {
		return err
	}
	r.offline = offline
	me := offline.Nodes[r.idx]
	// Every line from here on carries the role.
	r.log = r.log.With().Str("role", string(me.Role)).Logger()
	r.log.Info().Int("nodes", len(r.env.Nodes)).Str("nodelist", slurm.Compress(r.env.Nodes)).
		Str("runtime", r.n.Runtime.Name()).Str("runtime_from", r.n.RuntimeReason).
		Str("gpu_model", r.n.Spec.GPUModel).Str("gpu_model_from", r.n.GPUModelFrom).Msg("wideep-launch starting")
	if r.n.Spec.GPUModel == "" && r.n.Spec.PlansPrecompile() {
		r.log.Warn().Str("why", r.n.GPUModelFrom).Msg("no GPU model for the DeepGEMM cache key: kernels compiled on " +
			"one GPU model could be reused on another; pass --gpu-model")
	}
	return nil
}

// resolveAddress finds the address the other nodes reach this one at.
func (r *run) resolveAddress(ctx context.Context, _ time.Duration) error {
	a, how, err := r.n.Resolver.Resolve(ctx, r.n.Spec.Iface, r.host)
	if err != nil {
		return r.causeOr(&deploy.ConfigError{Err: fmt.Errorf("node %d (%s): resolving its address: %w", r.idx, r.host, err)})
	}
	r.addr = a.String()
	r.log.Info().Str("addr", r.addr).Str("from", how).Msg("address resolved")
	return nil
}

// preflight checks this node; what it finds goes to node 0 with the join,
// and node 0 tells every node, so the phase itself does not fail.
func (r *run) preflight(context.Context, time.Duration) error {
	me := r.offline.Nodes[r.idx]
	cfg := preflight.Config{
		CacheDir:   r.n.Spec.CacheDir,
		LogDir:     r.jobDir,
		GPUsOnNode: r.env.GPUsOnNode,
		Simulate:   !r.n.Runtime.UsesGPUs(),
		LookPath:   r.n.Runtime.LookPath,
		BindHost:   r.n.Runtime.BindHost(),
	}
	seen := map[string]bool{}
	cfg.PortUse = map[int]string{}
	for _, p := range me.Processes {
		for _, port := range p.Ports {
			if p.Oneshot && !slices.ContainsFunc(me.Processes, func(q deploy.Process) bool { return !q.Oneshot && hasPort(q, port.Port) }) {
				// Only the precompile binds it, and only on a cache miss,
				// which node 0 decides later: checked before it starts.
				continue
			}
			cfg.Ports = append(cfg.Ports, port.Port)
			if _, ok := cfg.PortUse[port.Port]; !ok {
				cfg.PortUse[port.Port] = portUse(me, r.n.Spec, port)
			}
		}
		if exe := r.n.Runtime.Executable(p); !seen[exe] {
			seen[exe] = true
			cfg.Executables = append(cfg.Executables, exe)
		}
		// The SGLang worker is named after its role.
		if p.Name == string(me.Role) {
			cfg.GPUs = r.offline.GPUsPerNode
			cfg.RDMA = preflight.RDMAUsers(p.Argv)
		}
	}
	if me.Role != deploy.RoleInfra {
		if p, ok := r.n.Runtime.HostPath(r.n.Spec.ModelPath); ok {
			cfg.ModelPath = p
		} else {
			r.log.Info().Str("model_path", r.n.Spec.ModelPath).
				Msg("the model path is inside the image (under no --container-mount): the workers find it there or fail at start")
		}
	}
	r.namedChecks(&cfg)
	rep := preflight.Run(cfg)
	r.problems = rep.Problems
	r.facts = map[string]string{}
	if rep.GPUModel != "" {
		r.facts[factGPUModel] = rep.GPUModel
	}
	if r.n.Spec.GPUModel != "" {
		r.facts[factKernelGPU] = r.n.Spec.GPUModel
	}
	if rep.GPUs != "" {
		r.log.Info().Str("gpus", rep.GPUs).Msg("GPUs (nvidia-smi)")
	}
	for _, w := range rep.Warnings {
		r.log.Warn().Str("warning", w).Msg("preflight warning")
	}
	for _, p := range r.problems {
		r.log.Error().Str("problem", p).Msg("preflight failed")
	}
	return nil
}

// meet joins the other nodes on node 0 (node 0 also serves the meeting),
// then plans again with every node's address.
func (r *run) meet(ctx context.Context, limit time.Duration) error {
	key, from, err := rendezvous.LoadKey(r.n.LookupEnv, r.n.SecretFile, r.env.JobID, r.env.StepID)
	if err != nil {
		return &deploy.ConfigError{Err: err}
	}
	if from == rendezvous.KeyFromJobID {
		r.log.Warn().Msgf("no %s and no --secret-file: the rendezvous key is derived from the job id, which every "+
			"user of the cluster can read; set one in the batch script (see examples/wideep.sbatch)", rendezvous.SecretEnv)
	} else {
		r.log.Debug().Str("key_from", from).Msg("rendezvous secret loaded")
	}
	cfg := rendezvous.Config{
		JobID: r.env.JobID, Key: key, Size: len(r.env.Nodes), Hosts: r.env.Nodes,
		Deadline: limit, PeerTimeout: r.n.Options.PeerTimeout, Log: r.log, Check: r.crossCheck,
	}
	port := fmt.Sprint(r.offline.RendezvousPort)
	rvHost := r.env.Nodes[0]
	if r.n.RendezvousHost != "" {
		rvHost = r.n.RendezvousHost
	}
	target := net.JoinHostPort(rvHost, port)
	if r.idx == 0 {
		ln, err := net.Listen("tcp", ":"+port)
		if err != nil {
			return fmt.Errorf("node 0 (%s): rendezvous port %s: %w (set --rendezvous-port)", r.host, port, err)
		}
		if r.server, err = rendezvous.Serve(ctx, ln, cfg); err != nil {
			return err
		}
		// Node 0 reaches itself without depending on name resolution.
		target = net.JoinHostPort("127.0.0.1", port)
	}
	// A node that failed preflight exits 2 at once, so under
	// --kill-on-bad-exit Slurm may SIGTERM this node just before node 0's
	// verdict arrives: keep listening for it a moment, so every node
	// reports the same preflight failure instead of "stopped".
	jctx, jcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer jcancel()
	stopLater := context.AfterFunc(ctx, func() { time.AfterFunc(time.Second, jcancel) })
	defer stopLater()
	client, table, err := rendezvous.Join(jctx, target, cfg,
		rendezvous.Member{Index: r.idx, Host: r.host, Addr: r.addr, Problems: r.problems, Facts: r.facts})
	if err != nil {
		return err
	}
	r.client = client
	go r.watchPeers()
	go r.watchNotices()
	r.log.Info().Int("nodes", len(table)).Msg("all nodes joined")

	addrs := make([]string, len(table))
	for i, m := range table {
		addrs[i] = m.Addr
	}
	spec := r.n.Spec
	spec.RoleGPUModels = r.kernelGPUs(table)
	if r.plan, err = deploy.NewPlan(spec, r.env.JobID, r.env.Nodes, addrs); err != nil {
		return err
	}
	r.me = r.plan.Nodes[r.idx]
	r.log.Info().Int("worker", r.me.Worker).Int("node_rank", r.me.NodeRank).Str("head", r.me.Head).
		Str("processes", r.me.ProcessNames()).Msg("plan for this node")
	return r.startSupervisor()
}

// prepareRuntime readies the runtime on every node: for a container
// runtime, the image (node 0 imports it once) and the job's container.
func (r *run) prepareRuntime(ctx context.Context, limit time.Duration) error {
	r.prepared = true
	pctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	// An image import takes minutes: the nodes that wait for it say so
	// every --progress-interval, as for a DeepGEMM compile.
	barrier := func(ctx context.Context, name, problem string, payload json.RawMessage) (json.RawMessage, error) {
		return r.waiting(ctx, fmt.Sprintf("every node at the %s runtime's %q step (node 0 makes the image available)", r.n.Runtime.Name(), name),
			func(ctx context.Context) (json.RawMessage, error) {
				return r.client.BarrierWith(ctx, name, problem, payload)
			})
	}
	return r.n.Runtime.Prepare(pctx, Node{Index: r.idx, Host: r.host, JobID: r.env.JobID, Log: r.log,
		Processes: r.me.Processes, Barrier: barrier})
}

// startSupervisor readies the node to run processes: from here on the
// teardown has processes to stop.
func (r *run) startSupervisor() error {
	if err := supervise.BecomeSubreaper(); err != nil {
		r.log.Warn().Err(err).Msg("cannot become a child subreaper: orphans of crashed workers may escape")
	}
	s := &supervise.Supervisor{Log: r.log, Output: r.n.Output, Prefix: r.host, Grace: r.n.Options.Grace, Reaper: r.n.Reaper,
		OnLine: r.tracker.line}
	r.supMu.Lock()
	r.sup = s
	r.supMu.Unlock()
	go r.watchExits(s)
	r.cpuAffinity()
	r.procs = r.processes(r.me.Processes)
	return nil
}

// startInfra starts etcd and NATS on the infra node; nobody goes on before
// they answer (the "infra" barrier).
func (r *run) startInfra(ctx context.Context, limit time.Duration) error {
	problem := ""
	if r.me.Infra {
		if err := r.startControlPlane(ctx); err != nil {
			if r.stopping() {
				return context.Cause(ctx)
			}
			problem = err.Error()
			r.log.Error().Err(err).Msg("infra services failed")
		}
	}
	bctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	return r.client.Barrier(bctx, "infra", problem)
}

// startServices starts the long-running processes: frontend, worker.
func (r *run) startServices(ctx context.Context, _ time.Duration) error {
	for _, p := range r.procs.services {
		// A stop (or a process exit) decided meanwhile: start nothing more.
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		// The precompile's server has handed its ports over (supervise waits
		// for its leftovers, then kills them); anything else holding one now
		// would kill the worker seconds after it starts.
		if busy := r.portsTaken(p.Name); len(busy) > 0 {
			return fmt.Errorf("starting %s: %s", p.Name, strings.Join(busy, "; "))
		}
		r.tracker.started(0, p.Name)
		if err := r.sup.Start(p); err != nil {
			return r.causeOr(fmt.Errorf("starting %s: %w", p.Name, err))
		}
	}
	return nil
}

// portsTaken re-checks the ports of this node's process name, as the
// preflight did.
func (r *run) portsTaken(name string) []string {
	for _, p := range r.me.Processes {
		if p.Name != name || len(p.Ports) == 0 {
			continue
		}
		ports := make([]int, len(p.Ports))
		use := make(map[int]string, len(p.Ports))
		for i, port := range p.Ports {
			ports[i] = port.Port
			use[port.Port] = portUse(r.offline.Nodes[r.idx], r.n.Spec, port)
		}
		return preflight.CheckPorts(r.n.Runtime.BindHost(), ports, use, "")
	}
	return nil
}

// portUse says what needs port on node n, naming the worker's actual
// --dist-init-addr for SGLang's ports above it.
func portUse(n deploy.NodePlan, s deploy.Spec, port deploy.Port) string {
	if strings.HasPrefix(port.Flag, "--dist-init-port") && n.Head != "" {
		return fmt.Sprintf("%s, from --dist-init-addr %s:%d", port.What, n.Head, s.DistInitPort)
	}
	return port.Describe()
}

// serve reports the startup timeline to node 0, runs node 0's health gate,
// and waits until the node stops.
func (r *run) serve(ctx context.Context, limit time.Duration) error {
	if ctx.Err() == nil {
		r.sendReport(ctx, "starting", nil)
		r.watchers.Add(1)
		go func() {
			defer r.watchers.Done()
			r.watchStartup(ctx)
		}()
	}
	if r.idx == 0 {
		r.gate.Add(1)
		go func() {
			defer r.gate.Done()
			r.healthGate(ctx, limit)
		}()
	}
	<-ctx.Done()
	return context.Cause(ctx)
}

func hasPort(p deploy.Process, port int) bool {
	return slices.ContainsFunc(p.Ports, func(q deploy.Port) bool { return q.Port == port })
}
