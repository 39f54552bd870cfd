package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/wideep/wideep-launch/slurm"
)

// NodeRuntime runs one node's part of the deployment (`wideep-launch run`).
// Data flows one way: Slurm env → plan → phases → processes.
type NodeRuntime struct {
	Spec  Spec
	Slurm *slurm.Env
	// Role is "auto" or the role the user asserts this node has.
	Role string
	// RendezvousHost is how the nodes reach node 0; "" is its Slurm node
	// name, which must then resolve on every node.
	RendezvousHost string

	Grace             time.Duration
	HealthTimeout     time.Duration
	RendezvousTimeout time.Duration
	InfraTimeout      time.Duration
	PrecompileTimeout time.Duration
	// HealthProgress is how often node 0 says what the deployment still waits for.
	HealthProgress time.Duration
	// StopSettle is how long a node whose rendezvous broke waits for its own
	// stop signal before it calls the break a failure.
	StopSettle time.Duration

	// Self is this binary, re-executed as `Self sim <argv>` in simulation.
	Self      string
	Environ   []string
	LookupEnv func(string) (string, bool)
	LogWriter io.Writer
	LogLevel  zerolog.Level
	// Output receives the prefixed output of every process and the timeline.
	Output   io.Writer
	Signals  <-chan os.Signal
	Now      func() time.Time
	Resolver AddressResolver
	HTTP     *http.Client
	// ExitCode is the CLI's error → exit code mapping, so the node's last
	// log line says the code srun will see from this task.
	ExitCode func(error) int

	log      zerolog.Logger
	ctx      context.Context // the node's: ends when the node stops
	started  time.Time
	phases   []PhaseTiming
	logFiles []io.Closer
}

// Stop causes, recorded when the node decides to stop.
type stopBySignal struct{ sig syscall.Signal }

func (s stopBySignal) Error() string { return "stopped by " + signalName(s.sig) }

type stopByExit struct{ exit Exit }

func (s stopByExit) Error() string { return "process " + s.exit.Name + " exited" }

// Run runs the node until the deployment stops, and returns nil, or the error
// whose exit code the launcher exits with.
func (n *NodeRuntime) Run(ctx context.Context) error {
	err := n.run(ctx)
	if err != nil {
		// Already logged with the node's context by run; don't print it again.
		return &reportedError{err}
	}
	return nil
}

type reportedError struct{ error }

func (e *reportedError) Unwrap() error  { return e.error }
func (e *reportedError) Reported() bool { return true }

func (n *NodeRuntime) run(ctx context.Context) (err error) {
	n.defaults()
	n.started = n.Now()
	env := n.Slurm
	idx, host := env.NodeIndex, env.Host
	jobDir := filepath.Join(n.Spec.LogDir, env.JobID)
	n.log = n.newLogger(jobDir, idx, host)
	defer n.closeLogs()
	// A requeued job keeps its id: a consumer must not find the last run's URL.
	_ = os.Remove(filepath.Join(jobDir, "endpoint"))

	var offline *Plan
	planErr := n.phase("plan", func() error {
		var err error
		offline, err = NewPlan(n.Spec, env.JobID, env.Nodes, nil)
		if err != nil {
			return err
		}
		me := offline.Nodes[idx]
		// Every line from here on carries the role.
		n.log = n.log.With().Str("role", string(me.Role)).Logger()
		if n.Role != "auto" && Role(n.Role) != me.Role {
			return &ConfigError{Err: fmt.Errorf("--role %s, but the plan gives node %d (%s) the role %s (worker %d, node rank %d); "+
				"use --role auto or fix the layout flags", n.Role, idx, host, me.Role, me.Worker, me.NodeRank)}
		}
		return nil
	})
	n.log.Info().Int("nodes", len(env.Nodes)).Str("nodelist", slurm.Compress(env.Nodes)).Bool("simulate", n.Spec.Simulate).
		Msg("wideep-launch starting")

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	n.ctx = ctx

	// Signals are watched from here on (they queue in the channel until
	// then); until processes run, a stop signal just cancels the phase in
	// progress.
	var sup *Supervisor
	var supMu sync.Mutex
	// Closed after the teardown defers below have run, so signals are still
	// forwarded while processes stop.
	sigDone := make(chan struct{})
	defer close(sigDone)
	go n.watchSignals(ctx, cancel, sigDone, func() *Supervisor { supMu.Lock(); defer supMu.Unlock(); return sup })

	defer func() {
		n.printTimeline(n.Output, idx, host)
		n.logEnd(idx, host, err)
	}()
	if planErr != nil {
		return planErr
	}
	me := offline.Nodes[idx]

	var addr string
	if err := n.phase("address", func() error {
		a, how, err := n.Resolver.Resolve(ctx, n.Spec.Iface, host)
		if ctx.Err() != nil {
			return n.causeOr(ctx, ctx.Err())
		}
		if err != nil {
			return &ConfigError{Err: fmt.Errorf("node %d (%s): resolving its address: %w", idx, host, err)}
		}
		addr = a.String()
		n.log.Info().Str("addr", addr).Str("from", how).Msg("address resolved")
		return nil
	}); err != nil {
		return err
	}

	var problems []string
	_ = n.phase("preflight", func() error {
		problems = Preflight(n.preflightConfig(offline, me, jobDir))
		for _, p := range problems {
			n.log.Error().Str("problem", p).Msg("preflight failed")
		}
		return nil
	})

	var client *RendezvousClient
	var table []Member
	var server *RendezvousServer
	if err := n.phase("rendezvous", func() error {
		cfg := RendezvousConfig{
			JobID: env.JobID, Token: JobToken(n.LookupEnv, env.JobID, env.StepID),
			Size: len(env.Nodes), Hosts: env.Nodes, Deadline: n.RendezvousTimeout, Log: n.log,
		}
		rvHost := env.Nodes[0]
		if n.RendezvousHost != "" {
			rvHost = n.RendezvousHost
		}
		target := net.JoinHostPort(rvHost, fmt.Sprint(offline.RendezvousPort))
		if idx == 0 {
			ln, err := net.Listen("tcp", fmt.Sprintf(":%d", offline.RendezvousPort))
			if err != nil {
				return fmt.Errorf("node 0 (%s): rendezvous port %d: %w (set --rendezvous-port)", host, offline.RendezvousPort, err)
			}
			server, err = ServeRendezvous(ctx, ln, cfg)
			if err != nil {
				return err
			}
			// Node 0 reaches itself without depending on name resolution.
			target = net.JoinHostPort("127.0.0.1", fmt.Sprint(offline.RendezvousPort))
		}
		// A node that failed preflight exits 2 at once, so under
		// --kill-on-bad-exit Slurm may SIGTERM this node just before node 0's
		// verdict arrives: keep listening for it a moment, so every node
		// reports the same preflight failure instead of "stopped".
		jctx, jcancel := context.WithCancel(context.WithoutCancel(ctx))
		defer jcancel()
		stopLater := context.AfterFunc(ctx, func() { time.AfterFunc(time.Second, jcancel) })
		defer stopLater()
		var err error
		client, table, err = JoinRendezvous(jctx, target, cfg, Member{Index: idx, Host: host, Addr: addr, Problems: problems})
		if err != nil {
			return err
		}
		n.log.Info().Int("nodes", len(table)).Msg("all nodes joined")
		return nil
	}); err != nil {
		if server != nil {
			server.Close()
		}
		return n.settle(ctx, err)
	}
	defer func() {
		if server != nil {
			n.printAllTimelines(server, jobDir)
			server.Close()
		}
		client.Close()
	}()

	addrs := make([]string, len(table))
	for i, m := range table {
		addrs[i] = m.Addr
	}
	plan, err := NewPlan(n.Spec, env.JobID, env.Nodes, addrs)
	if err != nil {
		return err
	}
	me = plan.Nodes[idx]
	n.log.Info().Int("worker", me.Worker).Int("node_rank", me.NodeRank).Str("head", me.Head).
		Str("processes", processNames(me.Processes)).Msg("plan for this node")

	if err := BecomeSubreaper(); err != nil {
		n.log.Warn().Err(err).Msg("cannot become a child subreaper: orphans of crashed workers may escape")
	}
	s := &Supervisor{Log: n.log, Output: n.Output, Prefix: host, Grace: n.Grace}
	supMu.Lock()
	sup = s
	supMu.Unlock()
	go n.watchExits(ctx, cancel, s)
	var gate sync.WaitGroup
	defer func() {
		_ = n.phase("teardown", func() error {
			// The gate must not announce READY while processes stop (its ctx
			// has ended, so it returns at once).
			gate.Wait()
			if idx == 0 {
				// The deployment is gone: nobody may find its URL.
				_ = os.Remove(filepath.Join(jobDir, "endpoint"))
			}
			exits := s.Shutdown(shutdownReason(ctx))
			for _, e := range exits {
				n.log.Debug().Str("process", e.Name).Int("code", ExitCodeOf(e)).Msg("process ended")
			}
			n.removeLocalDir(plan)
			return nil
		})
	}()

	procs := n.runnable(me.Processes)
	var infra, oneshots, services []ProcSpec
	for i, p := range me.Processes {
		switch {
		case p.Name == ProcEtcd || p.Name == ProcNATS:
			infra = append(infra, procs[i])
		case p.Oneshot:
			oneshots = append(oneshots, procs[i])
		default:
			services = append(services, procs[i])
		}
	}

	if err := n.phase("infra", func() error {
		problem := ""
		if me.Infra {
			if err := n.startInfra(ctx, s, plan, me, infra); err != nil {
				if c := context.Cause(ctx); c != nil && ctx.Err() != nil {
					return c
				}
				problem = err.Error()
				n.log.Error().Err(err).Msg("infra services failed")
			}
		}
		bctx, bcancel := context.WithTimeout(ctx, n.InfraTimeout+n.RendezvousTimeout)
		defer bcancel()
		return client.Barrier(bctx, "infra", problem)
	}); err != nil {
		return n.settle(ctx, err)
	}

	if err := n.phase("precompile", func() error {
		problem := ""
		for _, p := range oneshots {
			if err := n.runOneshot(ctx, s, p); err != nil {
				if c := context.Cause(ctx); c != nil && ctx.Err() != nil {
					return c
				}
				problem = err.Error()
				break
			}
		}
		bctx, bcancel := context.WithTimeout(ctx, n.PrecompileTimeout)
		defer bcancel()
		return client.Barrier(bctx, "precompile", problem)
	}); err != nil {
		return n.settle(ctx, err)
	}

	if err := n.phase("start", func() error {
		for _, p := range services {
			// A stop (or a process exit) decided meanwhile: start nothing more.
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			if err := s.Start(p); err != nil {
				return fmt.Errorf("starting %s: %w", p.Name, err)
			}
		}
		return nil
	}); err != nil {
		return n.causeOr(ctx, err)
	}
	// Node 0 prints every node's startup timeline at exit.
	if ctx.Err() == nil {
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		if err := client.Report(rctx, n.phases); err != nil && ctx.Err() == nil {
			n.log.Warn().Err(err).Msg("could not report the timeline to node 0")
		}
		rcancel()
	}

	serveStart := n.Now()
	if idx == 0 {
		gate.Add(1)
		go func() {
			defer gate.Done()
			n.healthGate(ctx, cancel, plan, jobDir)
		}()
	}
	<-ctx.Done()
	n.phases = append(n.phases, PhaseTiming{Name: "serve", Start: serveStart, Duration: n.Now().Sub(serveStart)})
	return n.stopError(context.Cause(ctx))
}

func (n *NodeRuntime) defaults() {
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
	if n.StopSettle == 0 {
		n.StopSettle = 2 * time.Second
	}
	if n.HealthProgress == 0 {
		n.HealthProgress = 30 * time.Second
	}
	if n.RendezvousTimeout == 0 {
		n.RendezvousTimeout = DefaultRendezvousDeadline
	}
	if n.InfraTimeout == 0 {
		n.InfraTimeout = 5 * time.Minute
	}
	if n.PrecompileTimeout == 0 {
		n.PrecompileTimeout = 90 * time.Minute
	}
	if n.HealthTimeout == 0 {
		n.HealthTimeout = 60 * time.Minute
	}
}

// newLogger logs to the launcher's stderr and to <jobdir>/<host>.launcher.log,
// every line carrying job, node index, host (and role, once known).
func (n *NodeRuntime) newLogger(jobDir string, idx int, host string) zerolog.Logger {
	out := n.LogWriter
	path := filepath.Join(jobDir, host+".launcher.log")
	var file *os.File
	err := os.MkdirAll(jobDir, 0o755)
	if err == nil {
		file, err = os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	}
	if err == nil {
		n.logFiles = append(n.logFiles, file)
		out = zerolog.MultiLevelWriter(n.LogWriter, file)
	} else {
		// The preflight reports an unwritable log dir to every node; this says
		// why this node's own log file is missing.
		fmt.Fprintf(n.LogWriter, "wideep-launch: no launcher log file %s: %v\n", path, err)
	}
	return zerolog.New(out).Level(n.LogLevel).With().Timestamp().
		Str("job", n.Slurm.JobID).Int("node", idx).Str("host", host).Logger()
}

func (n *NodeRuntime) closeLogs() {
	for _, c := range n.logFiles {
		_ = c.Close()
	}
}

// phase runs one phase, logging and recording its duration.
func (n *NodeRuntime) phase(name string, fn func() error) error {
	start := n.Now()
	err := fn()
	d := n.Now().Sub(start)
	n.phases = append(n.phases, PhaseTiming{Name: name, Start: start, Duration: d})
	switch {
	case err == nil:
		n.log.Info().Str("phase", name).Dur("duration", d).Msg("phase done")
	case n.stopping():
		// The node is being stopped; how it ends is logged once, at the end.
		n.log.Info().Str("phase", name).Dur("duration", d).Msg("phase interrupted")
	default:
		n.log.Error().Err(err).Str("phase", name).Dur("duration", d).Msg("phase failed")
	}
	return err
}

// settle handles a rendezvous or barrier that failed without a verdict on
// the job: node 0 said it is stopping, or the connection was lost. When the
// job is being stopped, node 0 often gets Slurm's SIGTERM a moment before
// this node does: wait briefly for our own, so the node reports "stopped",
// not a failure. A verdict (a failed preflight or barrier, nodes that never
// arrived) is final at once: every node reports the same.
func (n *NodeRuntime) settle(ctx context.Context, err error) error {
	var ce *ConfigError
	var ve *VerdictError
	if errors.As(err, &ce) || errors.As(err, &ve) {
		return err
	}
	if ctx.Err() == nil {
		t := time.NewTimer(n.StopSettle)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	return n.causeOr(ctx, err)
}

// stopping reports whether the node has decided to stop.
func (n *NodeRuntime) stopping() bool { return n.ctx != nil && n.ctx.Err() != nil }

// causeOr prefers the reason the node was stopped (a signal, a process exit)
// over the error it produced in the phase that was interrupted.
func (n *NodeRuntime) causeOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		if c := context.Cause(ctx); c != nil {
			return n.stopError(c)
		}
	}
	return err
}

func (n *NodeRuntime) watchSignals(ctx context.Context, cancel context.CancelCauseFunc, done <-chan struct{}, sup func() *Supervisor) {
	for {
		var sig os.Signal
		var ok bool
		select {
		case <-done:
			return
		case sig, ok = <-n.Signals:
		}
		if !ok {
			return
		}
		ss, _ := sig.(syscall.Signal)
		// The stop is recorded before anything is forwarded: a process that
		// dies of the forwarded signal must not look like a crash.
		if StopsNode(ss) && ctx.Err() == nil {
			n.log.Warn().Str("signal", signalName(ss)).
				Msg("stop requested by signal (scancel, time limit, or another node failed under --kill-on-bad-exit)")
			cancel(stopBySignal{ss})
		}
		// Forwarding goes on during teardown: Slurm may signal again.
		if s := sup(); s != nil {
			s.HandleSignal(sig)
		}
	}
}

// watchExits implements fail-fast: any exit of a long-running process, or a
// failed oneshot, stops the node.
func (n *NodeRuntime) watchExits(ctx context.Context, cancel context.CancelCauseFunc, s *Supervisor) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-s.Exits():
			if !ok {
				return
			}
			if e.Oneshot {
				// runOneshot reports oneshots itself.
				continue
			}
			n.log.Error().Str("process", e.Name).Int("pid", e.Pid).Int("exit_code", ExitCodeOf(e)).
				Msg("process exited: stopping this node")
			cancel(stopByExit{e})
			return
		}
	}
}

// stopError turns the stop cause into the error the launcher exits with.
func (n *NodeRuntime) stopError(cause error) error {
	idx, host := n.Slurm.NodeIndex, n.Slurm.Host
	var bySig stopBySignal
	var byExit stopByExit
	switch {
	case errors.As(cause, &bySig):
		if bySig.sig == syscall.SIGUSR1 {
			// sbatch --signal=USR1@T: a planned stop before the time limit.
			n.log.Info().Msg("stopped gracefully on SIGUSR1 (time limit approaching)")
			return nil
		}
		return &stoppedError{node: idx, host: host, sig: bySig.sig}
	case errors.As(cause, &byExit):
		e := byExit.exit
		ee := &ExitError{Node: idx, Host: host, Process: e.Name, Code: ExitCodeOf(e)}
		if e.Signal != 0 {
			ee.Signal = signalName(e.Signal)
		}
		if e.Err != nil {
			return fmt.Errorf("%s: %w", ee.Error(), e.Err)
		}
		return ee
	}
	return cause
}

// stoppedError is a node stopped from outside (scancel, time limit, another
// node's failure): it failed nothing itself, so its log says "stopped".
type stoppedError struct {
	node int
	host string
	sig  syscall.Signal
}

func (e *stoppedError) Error() string {
	return fmt.Sprintf("node %d (%s) stopped by %s", e.node, e.host, signalName(e.sig))
}
func (e *stoppedError) ExitCode() int { return 128 + int(e.sig) }

// logEnd is the node's last word: why it ended and the exit code srun gets
// from it. Under --kill-on-bad-exit srun itself reports 137, so this line
// is where the real reason is.
func (n *NodeRuntime) logEnd(idx int, host string, err error) {
	code := -1 // unknown without the CLI's mapping
	if n.ExitCode != nil {
		code = n.ExitCode(err)
	}
	var st *stoppedError
	var ee *ExitError
	switch {
	case err == nil:
		n.log.Info().Int("exit_code", code).Msgf("node %d (%s) finished", idx, host)
	case errors.As(err, &st):
		n.log.Warn().Int("exit_code", code).Msg(err.Error() + ": processes stopped gracefully; this node did not fail")
	case errors.As(err, &ee):
		// ExitError names the node itself.
		n.log.Error().Str("process", ee.Process).Int("exit_code", code).Msg("NODE FAILED: " + err.Error())
	default:
		// The error in the message, not a field: the console shows its lines as lines.
		n.log.Error().Int("exit_code", code).Msgf("NODE FAILED: node %d (%s): %v", idx, host, err)
	}
}

func shutdownReason(ctx context.Context) string {
	if c := context.Cause(ctx); c != nil && ctx.Err() != nil {
		return c.Error()
	}
	return "launcher exiting"
}

// runnable turns planned processes into what the supervisor starts: in
// simulation the Python programs are replaced by this binary's stand-ins,
// which get the same argv and environment.
func (n *NodeRuntime) runnable(ps []Process) []ProcSpec {
	base := n.Environ
	out := make([]ProcSpec, len(ps))
	jobDir := filepath.Join(n.Spec.LogDir, n.Slurm.JobID)
	for i, p := range ps {
		argv := p.Argv
		if n.standIn(p) {
			argv = append([]string{n.Self, "sim"}, p.Argv...)
		}
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
		out[i] = ProcSpec{
			Name: p.Name, Argv: argv, Env: env, Oneshot: p.Oneshot,
			LogPath: filepath.Join(jobDir, n.Slurm.Host+"."+p.Name+".log"),
		}
	}
	return out
}

// standIn reports whether p runs as this binary's simulation stand-in: in
// simulation every Python process does; etcd and nats-server stay real.
func (n *NodeRuntime) standIn(p Process) bool {
	return n.Spec.Simulate && p.Name != ProcEtcd && p.Name != ProcNATS
}

func processNames(ps []Process) string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name
	}
	return strings.Join(names, ",")
}

// writeFiles publishes the files a process needs (the NATS config) by
// write-temp-and-rename, so a process never reads a half-written file.
func writeFiles(files map[string]string) error {
	for path, content := range files {
		if err := publishFile(path, []byte(content)); err != nil {
			return err
		}
	}
	return nil
}

func publishFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	// CreateTemp makes 0600 files; these are for the job's users to read.
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	cerr := f.Close()
	if werr != nil || cerr != nil {
		os.Remove(tmp)
		return errors.Join(werr, cerr)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func signalName(s syscall.Signal) string {
	if name := unix.SignalName(s); name != "" {
		return name
	}
	return fmt.Sprintf("signal %d", int(s))
}
