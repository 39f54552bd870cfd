package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wideep/wideep-launch/launcher/deploy"
	"github.com/wideep/wideep-launch/launcher/exitcode"
	"github.com/wideep/wideep-launch/launcher/rendezvous"
)

// Notices node 0 sends every node.
const noticeReady = "ready"

// nodeReport is what a node tells node 0 about itself: its start-up
// timeline, how its processes are doing, and why it failed, if it did.
// Node 0 keeps each node's last one (the job-wide progress line, the
// summary).
type nodeReport struct {
	Timeline []Timing              `json:"timeline,omitempty"`
	Phase    string                `json:"phase"` // starting, ready, failed
	Procs    map[string]ProcStatus `json:"procs,omitempty"`
	Failure  *Failure              `json:"failure,omitempty"`
	// Final marks the node's last report (finalReport).
	Final bool `json:"final,omitempty"`
}

// Failure is the first failure of a job as the summary shows it.
type Failure struct {
	Node      int      `json:"node"`
	Host      string   `json:"host"`
	Process   string   `json:"process,omitempty"`
	Code      int      `json:"code,omitempty"`
	Message   string   `json:"message"`
	LastLines []string `json:"last_lines,omitempty"`
}

// StallError is a worker that showed no sign of life for the stall
// timeout during start-up.
type StallError struct {
	Node    int
	Host    string
	Process string
	Worker  int
	Silent  time.Duration
	Last    string // its last milestone
}

func (e *StallError) Error() string {
	last := e.Last
	if last == "" {
		last = "none"
	}
	return fmt.Sprintf("node %d (%s): %s worker %d stalled: no output for %s during start-up (last milestone: %s)",
		e.Node, e.Host, e.Process, e.Worker, e.Silent.Round(time.Second), last)
}

// ExitCode is the launcher's exit code for a stalled worker.
func (e *StallError) ExitCode() int { return exitcode.Launcher }

// watchNotices turns node 0's notices into this node's state.
func (r *run) watchNotices() {
	for {
		select {
		case <-r.ctx.Done():
			return
		case n, ok := <-r.client.Notices():
			if !ok {
				return
			}
			if n.Kind == noticeReady {
				r.readyOnce.Do(func() {
					close(r.ready)
					r.log.Info().Msg("deployment READY (node 0): start-up watch over")
				})
			}
		}
	}
}

// isReady says whether node 0 announced READY.
func (r *run) isReady() bool {
	select {
	case <-r.ready:
		return true
	default:
		return false
	}
}

// watchStartup follows this node's workers from their start until READY:
// it reports their progress to node 0 every reportEvery, and stops the node
// when one stays silent for the stall timeout. Silence is the symptom of
// the start-ups that go wrong quietly (an RDMA setup that hangs NCCL or
// DeepEP); a worker slow but printing is alive.
func (r *run) watchStartup(ctx context.Context) {
	stall := r.n.Options.StallTimeout
	every := min(10*time.Second, max(stall/5, 100*time.Millisecond))
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.ready:
			r.sendReport(ctx, "ready", nil)
			return
		case <-t.C:
		}
		r.sendReport(ctx, "starting", nil)
		for _, name := range r.workerNames() {
			st, ok := r.tracker.status(name, false)
			if ok && !st.StartedUp && st.Silent >= stall && !r.isReady() {
				r.stalled(ctx, name, st)
				return
			}
		}
	}
}

// workerNames are this node's SGLang workers (not the frontend, which
// says little while it waits).
func (r *run) workerNames() []string {
	if r.me.Worker < 0 {
		return nil
	}
	return []string{string(r.me.Role)}
}

// stalled reports a silent worker with its last lines and, when py-spy is
// in the runtime, its Python stacks, then stops the node: the gang rule
// ends the job.
func (r *run) stalled(ctx context.Context, name string, st ProcStatus) {
	st, _ = r.tracker.status(name, true)
	e := &StallError{Node: r.idx, Host: r.host, Process: name, Worker: r.me.Worker, Silent: st.Silent, Last: st.Milestone}
	r.log.Error().Int("pid", st.PID).Dur("silent", st.Silent).Str("last_milestone", st.Milestone).
		Strs("last_lines", st.LastLines).Msg(e.Error())
	if dump := r.pySpy(ctx, st.PID); dump != "" {
		r.log.Error().Int("pid", st.PID).Str("py_spy_dump", dump).Msg("stacks of the stalled worker (py-spy dump)")
	}
	r.failure = &Failure{Node: r.idx, Host: r.host, Process: name, Message: e.Error(), LastLines: st.LastLines}
	r.cancel(e)
}

// pySpy dumps pid's Python stacks through the runtime, "" when py-spy is not
// there or fails.
func (r *run) pySpy(ctx context.Context, pid int) string {
	if pid <= 0 {
		return ""
	}
	if _, err := r.n.Runtime.LookPath("py-spy"); err != nil {
		r.log.Info().Msg("py-spy is not in the runtime: no stack dump of the stalled worker")
		return ""
	}
	argv, env := r.n.Runtime.Command(deploy.Process{Name: "py-spy", Argv: []string{"py-spy", "dump", "--pid", strconv.Itoa(pid)}}, r.n.Environ)
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(dctx, argv[0], argv[1:]...)
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.log.Warn().Err(err).Str("output", string(bytes.TrimSpace(out))).Msg("py-spy dump failed")
		return ""
	}
	const maxDump = 64 << 10
	if len(out) > maxDump {
		out = append(out[:maxDump], "\n… (cut)"...)
	}
	return string(out)
}

// finalReport is the node's last word to node 0, for the summary: how far
// it got (its whole timeline) and its workers' last state.
func (r *run) finalReport() {
	if r.client == nil || r.supervisor() == nil {
		return
	}
	phase := "starting"
	switch {
	case r.failure != nil:
		phase = "failed"
	case r.isReady():
		phase = "ready"
	}
	r.report(r.ctx, nodeReport{Phase: phase, Failure: r.failure, Final: true})
}

// sendReport tells node 0 how this node is doing; the failure, if any,
// goes along (the summary's first failure).
func (r *run) sendReport(ctx context.Context, phase string, f *Failure) {
	r.report(ctx, nodeReport{Phase: phase, Failure: f})
}

func (r *run) report(ctx context.Context, rep nodeReport) {
	if r.client == nil {
		return
	}
	rep.Timeline, rep.Procs = r.timeline(), map[string]ProcStatus{}
	for _, name := range r.workerNames() {
		if st, ok := r.tracker.status(name, rep.Failure != nil); ok {
			rep.Procs[name] = st
		}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := r.client.Report(rctx, b); err != nil && ctx.Err() == nil {
		r.log.Debug().Err(err).Msg("could not report to node 0")
	}
}

// jobProgress is node 0's one line for the whole job during start-up: per
// role, how many nodes have reported which phase, and the node that is
// furthest behind (the longest silent worker) with its last milestone.
func (r *run) jobProgress() string {
	if r.server == nil {
		return ""
	}
	reports := map[int]nodeReport{}
	for i, b := range r.server.Latest() {
		var rep nodeReport
		if json.Unmarshal(b, &rep) == nil {
			reports[i] = rep
		}
	}
	return progressLine(r.plan, reports)
}

// progressLine is jobProgress from the plan and the nodes' latest reports.
func progressLine(plan *deploy.Plan, reports map[int]nodeReport) string {
	var parts []string
	for _, role := range []deploy.Role{deploy.RolePrefill, deploy.RoleDecode} {
		phases := map[string]int{}
		total, slowest, silent := 0, -1, time.Duration(-1)
		var milestone string
		for _, n := range plan.Nodes {
			if n.Role != role {
				continue
			}
			total++
			rep, ok := reports[n.Index]
			if !ok {
				phases["not started"]++
				continue
			}
			phases[rep.Phase]++
			if st, ok := rep.Procs[string(role)]; ok && st.Silent > silent {
				slowest, silent, milestone = n.Index, st.Silent, st.Milestone
			}
		}
		if total == 0 {
			continue
		}
		var counts []string
		for _, k := range slices.Sorted(maps.Keys(phases)) {
			counts = append(counts, fmt.Sprintf("%d %s", phases[k], k))
		}
		part := fmt.Sprintf("%s %d nodes: %s", role, total, strings.Join(counts, ", "))
		if slowest >= 0 {
			part += fmt.Sprintf(" (quietest: node %d (%s), silent %s, last milestone %q)", slowest,
				plan.Nodes[slowest].Host, silent.Round(time.Second), cmpOr(milestone, "none"))
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, "; ")
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// isStall says whether the job ended because a worker stalled, from the
// message every node got.
func isStall(err error) bool {
	var se *StallError
	if errors.As(err, &se) {
		return true
	}
	var ae *rendezvous.AbortError
	return errors.As(err, &ae) && strings.Contains(ae.Msg, " stalled: ")
}
