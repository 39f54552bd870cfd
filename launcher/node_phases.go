package launcher

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// preflightConfig says what this node is about to use, from its plan.
func (n *NodeRuntime) preflightConfig(plan *Plan, me NodePlan, jobDir string) PreflightConfig {
	cfg := PreflightConfig{
		CacheDir:   n.Spec.CacheDir,
		LogDir:     jobDir,
		GPUsOnNode: n.Slurm.GPUsOnNode,
		Simulate:   n.Spec.Simulate,
	}
	seen := map[string]bool{}
	for _, p := range me.Processes {
		cfg.Ports = append(cfg.Ports, p.Ports...)
		exe := p.Argv[0]
		if n.standIn(p) {
			exe = n.Self
		}
		if !seen[exe] {
			seen[exe] = true
			cfg.Executables = append(cfg.Executables, exe)
		}
		// The SGLang worker is named after its role.
		if p.Name == string(me.Role) {
			cfg.GPUs = plan.GPUsPerNode
		}
	}
	if me.Role != RoleInfra {
		cfg.ModelPath = n.Spec.ModelPath
	}
	return cfg
}

// startInfra starts etcd and NATS on the infra node and waits until they
// answer, so that no worker starts before the control plane is up.
func (n *NodeRuntime) startInfra(ctx context.Context, s *Supervisor, plan *Plan, me NodePlan, procs []ProcSpec) error {
	planned := map[string]Process{}
	for _, p := range me.Processes {
		planned[p.Name] = p
	}
	for _, p := range procs {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if err := writeFiles(planned[p.Name].Files); err != nil {
			return fmt.Errorf("writing files for %s: %w", p.Name, err)
		}
		if p.Name == ProcEtcd {
			// etcd keeps its data in <data-dir>/member. Data left there by an
			// earlier job (job ids restart on a new cluster, and a crashed job
			// skips the cleanup) would serve that job's worker registrations,
			// and node 0 could announce READY for workers that do not exist.
			member := filepath.Join(n.Spec.etcdDataDir(plan.JobID), "member")
			if err := os.RemoveAll(member); err != nil {
				return fmt.Errorf("clearing stale etcd data %s: %w", member, err)
			}
		}
		if err := s.Start(p); err != nil {
			return fmt.Errorf("starting %s: %w", p.Name, err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, n.InfraTimeout)
	defer cancel()
	// External services are checked too: a typo in --etcd-endpoints must
	// stop the job here, not after every worker has started.
	if n.Spec.EtcdEndpoints != "" {
		if err := WaitEtcd(wctx, n.Spec.EtcdEndpoints); err != nil {
			return fmt.Errorf("external etcd --etcd-endpoints %s not reachable from node %d (%s): %w", n.Spec.EtcdEndpoints, me.Index, me.Host, err)
		}
		n.log.Info().Str("endpoints", n.Spec.EtcdEndpoints).Msg("external etcd ready")
	}
	if n.Spec.NATSServer != "" && !n.Spec.NoNATS {
		if err := WaitNATS(wctx, n.Spec.NATSServer); err != nil {
			return fmt.Errorf("external NATS --nats-server %s not reachable from node %d (%s): %w", n.Spec.NATSServer, me.Index, me.Host, err)
		}
		n.log.Info().Str("server", n.Spec.NATSServer).Msg("external NATS ready")
	}
	if _, ok := planned[ProcEtcd]; ok {
		ep := fmt.Sprintf("http://%s", net.JoinHostPort(me.Addr, fmt.Sprint(n.Spec.EtcdClientPort)))
		if err := WaitEtcd(wctx, ep); err != nil {
			return fmt.Errorf("etcd on node %d (%s) not ready: %w", me.Index, me.Host, err)
		}
		n.log.Info().Str("endpoint", ep).Msg("etcd ready")
	}
	if _, ok := planned[ProcNATS]; ok {
		addr := net.JoinHostPort(me.Addr, fmt.Sprint(n.Spec.NATSPort))
		if err := WaitNATS(wctx, addr); err != nil {
			return fmt.Errorf("NATS on node %d (%s) not ready: %w", me.Index, me.Host, err)
		}
		n.log.Info().Str("addr", addr).Msg("NATS ready")
	}
	return nil
}

// removeLocalDir deletes the infra node's node-local scratch (etcd data,
// JetStream store) after the job, but only a directory that is this job's
// own: one whose path the job id made unique.
func (n *NodeRuntime) removeLocalDir(plan *Plan) {
	me := plan.Nodes[n.Slurm.NodeIndex]
	if !me.Infra || !strings.Contains(n.Spec.LocalDir, "%j") {
		return
	}
	dir := n.Spec.localDir(plan.JobID)
	if err := os.RemoveAll(dir); err != nil {
		n.log.Warn().Err(err).Str("dir", dir).Msg("removing node-local scratch")
	}
}

// runOneshot runs a process that must finish before the services start.
func (n *NodeRuntime) runOneshot(ctx context.Context, s *Supervisor, p ProcSpec) error {
	// Only the precompile's own timeout stops it here. When the node stops,
	// the teardown's Shutdown stops it together with every other process, in
	// one grace period rather than one after the other.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.PrecompileTimeout)
	type result struct {
		e   Exit
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer cancel()
		e, err := s.RunOneshot(cctx, p)
		done <- result{e, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	e, err := r.e, r.err
	// The barrier names the node; the message says what and where to look.
	if err != nil {
		return fmt.Errorf("%s: %w", p.Name, err)
	}
	if code := ExitCodeOf(e); code != 0 {
		return fmt.Errorf("%s exited with code %d (log: %s)", p.Name, code, p.LogPath)
	}
	return nil
}

// healthGate runs on node 0: it waits until the frontend serves the model
// with every worker registered, then says READY and publishes the endpoint.
func (n *NodeRuntime) healthGate(ctx context.Context, cancel context.CancelCauseFunc, plan *Plan, jobDir string) {
	exp := HealthExpectFor(plan)
	progress := func(elapsed time.Duration, missing string) {
		n.log.Info().Dur("elapsed", elapsed).Str("waiting_for", missing).Msg("deployment not ready yet")
	}
	_, err := WaitReady(ctx, n.HTTP, plan.Frontend, exp, progress, n.HealthProgress, n.HealthTimeout)
	if ctx.Err() != nil {
		// Stopping: whatever the last poll said, the deployment is going away.
		return
	}
	if err != nil {
		cancel(fmt.Errorf("health gate: %w", err))
		return
	}
	line := fmt.Sprintf("READY %s model=%s prefill=%d decode=%d after %s",
		plan.Frontend, plan.Model, exp.Prefill, exp.Decode, n.Now().Sub(n.started).Round(time.Millisecond))
	n.log.Info().Msg(line)
	fmt.Fprintln(n.Output, line)
	if err := publishFile(filepath.Join(jobDir, "endpoint"), []byte(plan.Frontend+"\n")); err != nil {
		n.log.Error().Err(err).Msg("writing the endpoint file")
	}
}

// printTimeline prints this node's phase durations, one screen at most.
func (n *NodeRuntime) printTimeline(w io.Writer, idx int, host string) {
	var b strings.Builder
	fmt.Fprintf(&b, "timeline node %d (%s):", idx, host)
	var total time.Duration
	for _, p := range n.phases {
		fmt.Fprintf(&b, " %s=%s", p.Name, fmtDur(p.Duration))
		total += p.Duration
	}
	fmt.Fprintf(&b, " total=%s", fmtDur(total))
	if kb := peakRSSKiB(); kb > 0 {
		fmt.Fprintf(&b, " launcher_peak_rss=%.1fMiB", float64(kb)/1024)
	}
	// Also in the launcher's log file: under scancel, Slurm may drop the last
	// lines a task writes to stdout.
	n.log.Info().Str("timeline", b.String()).Msg("timeline")
	b.WriteByte('\n')
	fmt.Fprint(w, b.String())
}

// peakRSSKiB is this process's resident-set high-water mark (VmHWM), 0 if
// unknown.
func peakRSSKiB() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
			return kb
		}
	}
	return 0
}

// printAllTimelines prints, on node 0, the startup phases of every node as
// they reported them through the rendezvous.
func (n *NodeRuntime) printAllTimelines(s *RendezvousServer, jobDir string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	all := s.Timelines(ctx)
	if len(all) == 0 {
		return
	}
	var names []string
	seen := map[string]bool{}
	idxs := make([]int, 0, len(all))
	for i, tl := range all {
		idxs = append(idxs, i)
		for _, p := range tl {
			if !seen[p.Name] {
				seen[p.Name] = true
				names = append(names, p.Name)
			}
		}
	}
	sort.Ints(idxs)
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "node\thost\t%s\t\n", strings.Join(names, "\t"))
	for _, i := range idxs {
		d := map[string]time.Duration{}
		for _, p := range all[i] {
			d[p.Name] = p.Duration
		}
		host := ""
		if i < len(n.Slurm.Nodes) {
			host = n.Slurm.Nodes[i]
		}
		fmt.Fprintf(tw, "%d\t%s", i, host)
		for _, name := range names {
			fmt.Fprintf(tw, "\t%s", fmtDur(d[name]))
		}
		fmt.Fprint(tw, "\t\n")
	}
	tw.Flush()
	text := fmt.Sprintf("startup timeline of all %d nodes (as reported to node 0):\n%s", len(idxs), b.String())
	fmt.Fprint(n.Output, text)
	// Also as a file: under scancel, Slurm may drop a task's last stdout lines.
	if err := publishFile(filepath.Join(jobDir, "timeline.txt"), []byte(text)); err != nil {
		n.log.Warn().Err(err).Msg("writing the timeline file")
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Minute:
		return d.Round(time.Second).String()
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	default:
		return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
	}
}
