// Package node runs one node's part of the deployment (`wideep-launch run`):
// a declared pipeline of phases (plan → address → preflight → rendezvous →
// container → versions → routes → infra → precompile → start → serve, then teardown), each a small function
// with its own timeout and timeline entry, run by one loop that handles
// cancellation, stop reasons and verdicts in one place. Its processes run in
// a Runtime (the host, the simulation stand-ins, a container).
//
// Data flows one way: Slurm env → plan → phases → processes.
package node

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/wideep/wideep-launch/launcher/address"
	"github.com/wideep/wideep-launch/launcher/deploy"
	"github.com/wideep/wideep-launch/launcher/rendezvous"
	"github.com/wideep/wideep-launch/launcher/sharedcache"
	"github.com/wideep/wideep-launch/launcher/supervise"
	"github.com/wideep/wideep-launch/slurm"
)

// Options are the node's timings. DefaultOptions is the one place their
// defaults are written; the CLI shows them as its flags' defaults.
type Options struct {
	// Grace is the SIGTERM → SIGKILL delay for the node's processes; it must
	// stay below Slurm's KillWait.
	Grace time.Duration
	// RendezvousTimeout bounds the nodes' wait for each other at the start.
	RendezvousTimeout time.Duration
	// InfraTimeout bounds the wait for etcd and NATS to answer.
	InfraTimeout time.Duration
	// HealthTimeout bounds node 0's wait for the frontend to serve the model
	// with every worker registered.
	HealthTimeout time.Duration
	// StallTimeout: a worker with no output for this long during start-up
	// is stalled, and the job ends (HealthTimeout stays the outer bound).
	StallTimeout time.Duration
	// HealthProgress is how often a waiting node says what it still waits
	// for: node 0 for the deployment's health, every node for a DeepGEMM
	// compile.
	HealthProgress time.Duration
	// StopSettle is how long a node told that another node was stopped waits
	// for its own stop signal (scancel reaches the nodes a moment apart)
	// before it calls the stop the job's failure.
	StopSettle time.Duration
	// PeerTimeout is how long a node may stay silent on the rendezvous
	// before it is declared lost and the job ends.
	PeerTimeout time.Duration
	// After READY, node 0 asks the frontend every HealthInterval; a
	// deployment below the plan for HealthLostTimeout is lost and the job
	// ends. CanaryInterval (0: off) sends a one-token request that often;
	// CanaryFailures in a row lose the deployment.
	HealthInterval    time.Duration
	HealthLostTimeout time.Duration
	CanaryInterval    time.Duration
	CanaryFailures    int
	// ImageTimeout bounds the runtime's preparation: an image import and
	// the container's creation.
	ImageTimeout time.Duration
	// CPUAffinity is CPUAffinityAll (default: the processes get every CPU
	// the job may use on the node) or CPUAffinityInherit (the launcher's).
	CPUAffinity string
	// PassSlurmEnv passes the launcher step's own SLURM_CPU_BIND*,
	// SLURM_TRES_PER_TASK, ... on to the processes.
	PassSlurmEnv bool
	// SkipRoutes skips the check of the connections between nodes on the
	// workers' planned ports, made before anything starts.
	SkipRoutes bool
	// SkipChecks waives named preflight checks (preflight.Checks).
	SkipChecks []string
	// PreflightSysroot is where the fabric checks read sys/, proc/ and
	// dev/shm: a fake tree, which makes them run in simulation too. ""
	// is "/" on a GPU node; a simulated node then skips them.
	PreflightSysroot string
}

// DefaultOptions are the timings of a production job.
func DefaultOptions() Options {
	return Options{
		Grace:             supervise.DefaultGrace,
		RendezvousTimeout: rendezvous.DefaultDeadline,
		InfraTimeout:      5 * time.Minute,
		HealthTimeout:     60 * time.Minute,
		HealthProgress:    30 * time.Second,
		StallTimeout:      15 * time.Minute,
		StopSettle:        2 * time.Second,
		PeerTimeout:       rendezvous.DefaultPeerTimeout,
		ImageTimeout:      60 * time.Minute,
		HealthInterval:    10 * time.Second,
		HealthLostTimeout: 60 * time.Second,
		CanaryFailures:    3,
	}
}

// NodeRuntime runs one node. Fields are its inputs; nil or zero ones take
// the defaults described on each.
type NodeRuntime struct {
	Spec  deploy.Spec
	Slurm *slurm.Env
	// GPUModelFrom says where Spec.GPUModel came from (for the log): a
	// flag (GPUModelGiven), nvidia-smi, or why it is unknown.
	GPUModelFrom string
	// JobAlive says whether a Slurm job still runs (squeue): a DeepGEMM
	// cache lock held by a job known to be gone is broken at once. nil
	// waits for the lock to go stale.
	JobAlive func(holder sharedcache.Owner) (alive, known bool)
	// RendezvousHost is how the nodes reach node 0; "" is its Slurm node
	// name, which must then resolve on every node.
	RendezvousHost string
	// SecretFile holds the job's rendezvous secret when WIDEEP_SECRET is
	// not set (see rendezvous.LoadKey).
	SecretFile string
	// Options are the timings; a zero field takes DefaultOptions' value.
	Options Options

	// Runtime runs the processes; nil is the host. RuntimeReason says why
	// it was chosen (for the log).
	Runtime       Runtime
	RuntimeReason string
	// Reaper is the program's one reaper of child processes; nil creates
	// one (then this NodeRuntime must be the only one in the program).
	Reaper *supervise.Reaper

	// Environ is the environment the processes inherit, before the plan's.
	Environ   []string
	LookupEnv func(string) (string, bool)
	LogWriter io.Writer // the launcher's own log (stderr)
	LogLevel  zerolog.Level
	// Output receives the prefixed output of every process and the timeline.
	Output   io.Writer
	Signals  <-chan os.Signal
	Now      func() time.Time
	Resolver address.Resolver
	HTTP     *http.Client
}

// Run runs the node until the deployment stops, and returns nil, or an error
// that carries the exit code the launcher exits with (exitcode.Coder) and is
// already logged.
func (n *NodeRuntime) Run(ctx context.Context) error {
	n.defaults()
	r := &run{n: n, env: n.Slurm, idx: n.Slurm.NodeIndex, host: n.Slurm.Host, started: n.Now(), signalled: make(chan struct{}),
		ready: make(chan struct{}), tracker: newProgressTracker(n.Now)}
	r.jobDir = filepath.Join(n.Spec.LogDir, r.env.JobID)
	r.log = r.newLogger()
	defer r.closeLogs()
	// A requeued job keeps its id: a consumer must not find the last run's URL.
	_ = os.Remove(r.endpointFile())
	return coded(r.execute(ctx))
}

func (n *NodeRuntime) defaults() {
	d := DefaultOptions()
	o := &n.Options
	for _, f := range []struct{ v, def *time.Duration }{
		{&o.Grace, &d.Grace}, {&o.RendezvousTimeout, &d.RendezvousTimeout}, {&o.InfraTimeout, &d.InfraTimeout},
		{&o.HealthTimeout, &d.HealthTimeout}, {&o.StallTimeout, &d.StallTimeout},
		{&o.HealthProgress, &d.HealthProgress}, {&o.StopSettle, &d.StopSettle}, {&o.PeerTimeout, &d.PeerTimeout}, {&o.ImageTimeout, &d.ImageTimeout},
		{&o.HealthInterval, &d.HealthInterval}, {&o.HealthLostTimeout, &d.HealthLostTimeout},
	} {
		if *f.v == 0 {
			*f.v = *f.def
		}
	}
	if o.CanaryFailures == 0 {
		o.CanaryFailures = d.CanaryFailures
	}
	if n.Now == nil {
		n.Now = time.Now
	}
	if n.Output == nil {
		n.Output = io.Discard
	}
	if n.LogWriter == nil {
		n.LogWriter = io.Discard
	}
	if n.LookupEnv == nil {
		n.LookupEnv = func(string) (string, bool) { return "", false }
	}
	if n.HTTP == nil {
		n.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	if n.Runtime == nil {
		n.Runtime = Host{}
	}
	if n.Reaper == nil {
		n.Reaper = supervise.NewReaper()
	}
}

// run is the state of one Run, filled in phase by phase.
type run struct {
	n        *NodeRuntime
	env      *slurm.Env
	idx      int
	host     string
	jobDir   string
	log      zerolog.Logger
	started  time.Time
	timing   []Timing // under timingMu
	timingMu sync.Mutex

	ctx    context.Context // the node's: ends when the node stops
	cancel context.CancelCauseFunc

	offline  *deploy.Plan // from host names, before the rendezvous
	plan     *deploy.Plan // with every node's address
	me       deploy.NodePlan
	addr     string
	kernels  kernelRun       // the DeepGEMM phase
	versions deploy.Versions // what the image holds (the versions phase)
	cpus     *unix.CPUSet    // the processes' CPU affinity; nil inherits the launcher's

	tracker   *progressTracker // the processes' output, for stalls and reports
	ready     chan struct{}    // closed when node 0 announces READY
	readyOnce sync.Once
	watchers  sync.WaitGroup     // the start-up watch, ended before the node says why it ends
	failure   *Failure           // why this node failed, for node 0's summary
	reports   map[int]nodeReport // node 0: every node's last report, collected at the teardown
	readyAt   time.Time          // node 0: when the deployment became READY
	detail    string             // the current phase's line in the timeline
	problems  []string           // this node's preflight findings
	facts     map[string]string  // this node's preflight facts, for node 0's crossCheck

	client   *rendezvous.Client
	server   *rendezvous.Server // node 0 only
	prepared bool               // the runtime needs its Cleanup

	supMu sync.Mutex
	sup   *supervise.Supervisor
	// signalled is closed when this node gets a stop signal of its own,
	// whatever stopped it first; ownSignal is which.
	signalled  chan struct{}
	ownSignal  syscall.Signal
	signalOnce sync.Once
	procs      procSet
	gate       sync.WaitGroup // node 0's health gate

	logFiles []io.Closer
}

// procSet is the node's processes by when they start.
type procSet struct {
	infra    []supervise.ProcSpec // etcd, NATS
	oneshots []supervise.ProcSpec // the precompile, run only on a DeepGEMM cache miss
	services []supervise.ProcSpec // frontend, worker
}

func (r *run) supervisor() *supervise.Supervisor {
	r.supMu.Lock()
	defer r.supMu.Unlock()
	return r.sup
}

func (r *run) endpointFile() string { return filepath.Join(r.jobDir, "endpoint") }

// newLogger logs to the launcher's stderr and to <jobdir>/<host>.launcher.log,
// every line carrying job, node index, host (and role, once known).
func (r *run) newLogger() zerolog.Logger {
	n := r.n
	out := n.LogWriter
	path := filepath.Join(r.jobDir, r.host+".launcher.log")
	var file *os.File
	err := os.MkdirAll(r.jobDir, 0o755)
	if err == nil {
		file, err = os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	}
	if err == nil {
		r.logFiles = append(r.logFiles, file)
		out = zerolog.MultiLevelWriter(n.LogWriter, file)
	} else {
		// The preflight reports an unwritable log dir to every node; this says
		// why this node's own log file is missing.
		_, _ = io.WriteString(n.LogWriter, "wideep-launch: no launcher log file "+path+": "+err.Error()+"\n")
	}
	return zerolog.New(out).Level(n.LogLevel).With().Timestamp().
		Str("job", r.env.JobID).Int("node", r.idx).Str("host", r.host).Logger()
}

func (r *run) closeLogs() {
	for _, c := range r.logFiles {
		_ = c.Close()
	}
}
