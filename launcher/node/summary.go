package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wideep/wideep-launch/launcher/deploy"
	"github.com/wideep/wideep-launch/launcher/dgcache"
	"github.com/wideep/wideep-launch/launcher/exitcode"
	"github.com/wideep/wideep-launch/launcher/rendezvous"
)

// SummaryFile is the job summary node 0 writes in the job's log directory.
const SummaryFile = "summary.json"

// Outcomes of a job, as the summary says them.
const (
	OutcomeReadyStopped = "ready, then stopped"
	OutcomeStopped      = "stopped before ready"
	OutcomeTimeLimit    = "stopped before the time limit"
	OutcomeFailed       = "failed"
	OutcomeStalled      = "stalled"
	OutcomeRefused      = "refused before start"
)

// Summary is what node 0 knows of the whole job when it ends: how it
// ended, the first failure, every node's start-up, the caches, and where
// the logs are. `wideep-launch summary DIR` prints it again.
type Summary struct {
	Job     string `json:"job"`
	Model   string `json:"model"`
	Layout  string `json:"layout"`
	Runtime string `json:"runtime"`
	Image   string `json:"image,omitempty"`
	// Versions are what node 0 found in the image.
	Versions   *deploy.Versions `json:"versions,omitempty"`
	Outcome    string           `json:"outcome"`
	Reason     string           `json:"reason,omitempty"`
	ExitCode   int              `json:"exit_code"` // node 0's
	Ready      bool             `json:"ready"`
	ReadyAfter time.Duration    `json:"ready_after_ns,omitempty"`
	Endpoint   string           `json:"endpoint,omitempty"`
	Started    time.Time        `json:"started"`
	Ended      time.Time        `json:"ended"`
	// FirstFailure is the failure that ended the job, with the last lines of
	// the process that failed when its node could send them.
	FirstFailure *Failure       `json:"first_failure,omitempty"`
	Nodes        []NodeSummary  `json:"nodes"`
	DeepGEMM     []KernelResult `json:"deepgemm,omitempty"`
	LogDir       string         `json:"log_dir"`
}

// NodeSummary is one node in the summary.
type NodeSummary struct {
	Index    int                   `json:"index"`
	Host     string                `json:"host"`
	Role     string                `json:"role"`
	Worker   int                   `json:"worker"`
	Rank     int                   `json:"node_rank"`
	Phase    string                `json:"phase,omitempty"` // its last report: starting, ready, failed; "" none
	Timeline []Timing              `json:"timeline,omitempty"`
	Procs    map[string]ProcStatus `json:"procs,omitempty"`
	Logs     string                `json:"logs"` // glob of its log files
}

// KernelResult is one DeepGEMM kernel set in the summary: reused (a hit)
// or compiled, how many kernels its published entry holds, and by whom.
type KernelResult struct {
	Set       string `json:"set"`
	Hit       bool   `json:"hit"`
	Compiled  []int  `json:"compiled_on,omitempty"`
	Kernels   int    `json:"kernels,omitempty"`
	Published string `json:"published_by,omitempty"` // "job 81 on gpu01"
}

// writeSummary is node 0's last act: summary.json (atomically) and a short
// human version on the job's output.
func (r *run) writeSummary(err error) {
	if r.idx != 0 || r.plan == nil && r.offline == nil {
		return
	}
	s := r.summary(err)
	b, merr := json.MarshalIndent(s, "", "  ")
	if merr != nil {
		return
	}
	path := filepath.Join(r.jobDir, SummaryFile)
	if werr := publishFile(path, append(b, '\n')); werr != nil {
		r.log.Warn().Err(werr).Msg("writing the job summary")
	}
	_ = WriteSummaryText(r.n.Output, s)
	r.log.Info().Str("summary", path).Str("outcome", s.Outcome).Msg("job summary written")
}

func (r *run) summary(err error) Summary {
	plan := r.plan
	if plan == nil {
		plan = r.offline
	}
	s := Summary{Job: r.env.JobID, Model: plan.Model, Layout: plan.Layout, Runtime: r.n.Runtime.Name(),
		Image: r.n.Spec.Image, ExitCode: codeOf(err), Started: r.started, Ended: r.n.Now(), LogDir: r.jobDir}
	s.Outcome, s.Reason = outcome(err, !r.readyAt.IsZero())
	if r.versions != (deploy.Versions{}) {
		v := r.versions
		s.Versions = &v
	}
	if !r.readyAt.IsZero() {
		s.Ready, s.ReadyAfter, s.Endpoint = true, r.readyAt.Sub(r.started), plan.Frontend
	}
	for _, n := range plan.Nodes {
		ns := NodeSummary{Index: n.Index, Host: n.Host, Role: string(n.Role), Worker: n.Worker, Rank: n.NodeRank,
			Logs: filepath.Join(r.jobDir, n.Host+".*.log")}
		if rep, ok := r.reports[n.Index]; ok {
			ns.Phase, ns.Timeline, ns.Procs = rep.Phase, rep.Timeline, rep.Procs
		}
		s.Nodes = append(s.Nodes, ns)
	}
	s.FirstFailure = r.firstFailure(err)
	for _, d := range r.kernels.plan.Sets {
		k := KernelResult{Set: d.name(), Hit: d.Hit}
		if d.Compile {
			k.Compiled = d.Nodes
		}
		if c, err := dgcache.ReadComplete(d.Entry); err == nil {
			k.Kernels, k.Published = c.Kernels, fmt.Sprintf("job %s on %s", c.JobID, c.Host)
		}
		s.DeepGEMM = append(s.DeepGEMM, k)
	}
	return s
}

// firstFailure is the failure that ended the job: the report of the node
// that ended it (with its last lines) when it sent one, else what every node
// was told. A failed barrier names the failing nodes on its own lines.
func (r *run) firstFailure(err error) *Failure {
	var ae *rendezvous.AbortError
	var ve *rendezvous.VerdictError
	switch {
	case err == nil || isStopped(err):
		return nil
	case errors.As(err, &ae):
		if rep, ok := r.reports[ae.Node]; ok && rep.Failure != nil {
			return rep.Failure
		}
		if f := barrierFailure(ae.Msg); f != nil {
			return f // a failed barrier, told to this node before it got there
		}
		return &Failure{Node: ae.Node, Host: r.hostOf(ae.Node), Message: ae.Msg}
	case errors.As(err, &ve):
		if f := barrierFailure(ve.Msg); f != nil {
			return f
		}
	}
	if r.failure != nil {
		return r.failure
	}
	return &Failure{Node: r.idx, Host: r.host, Message: err.Error()}
}

// barrierFailure is the first node named on a failed barrier's or
// preflight's own lines, nil if msg has none.
func barrierFailure(msg string) *Failure {
	m := problemLine().FindStringSubmatch(msg)
	if m == nil {
		return nil
	}
	n, _ := strconv.Atoi(m[1])
	return &Failure{Node: n, Host: m[2], Message: m[3]}
}

// problemLine is the first node named on a failed barrier's or preflight's
// own lines: "  node 4 (gpu05): what went wrong".
var problemLine = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`(?m)^\s+node (\d+) \(([^)]*)\): (.*)$`) })

func (r *run) hostOf(i int) string {
	if r.plan != nil && i >= 0 && i < len(r.plan.Nodes) {
		return r.plan.Nodes[i].Host
	}
	return ""
}

func isStopped(err error) bool {
	var st *StoppedError
	var ae *rendezvous.AbortError
	return errors.As(err, &st) || errors.As(err, &ae) && ae.Stopped
}

// outcome names how the job ended, from node 0's end.
func outcome(err error, ready bool) (string, string) {
	switch {
	case err == nil:
		return OutcomeTimeLimit, "SIGUSR1 (sbatch --signal): stopped gracefully"
	case isStall(err):
		return OutcomeStalled, err.Error()
	case isStopped(err) && ready:
		return OutcomeReadyStopped, err.Error()
	case isStopped(err):
		return OutcomeStopped, err.Error()
	case codeOf(err) == exitcode.Input:
		return OutcomeRefused, err.Error()
	}
	return OutcomeFailed, err.Error()
}

// ReadSummary reads a job's summary.json from its log directory.
func ReadSummary(dir string) (Summary, error) {
	var s Summary
	b, err := os.ReadFile(filepath.Join(dir, SummaryFile))
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%s: %w", filepath.Join(dir, SummaryFile), err)
	}
	return s, nil
}

// WriteSummaryText writes the summary for people: a dozen lines.
func WriteSummaryText(w io.Writer, s Summary) error {
	var b strings.Builder
	fmt.Fprintf(&b, "job %s summary: %s", s.Job, strings.ToUpper(s.Outcome))
	if s.Reason != "" {
		fmt.Fprintf(&b, " (%s)", firstLine(s.Reason))
	}
	fmt.Fprintf(&b, "\n  %s, %s, runtime %s, %s in total, exit code %d\n", s.Model, s.Layout, s.Runtime,
		s.Ended.Sub(s.Started).Round(time.Second), s.ExitCode)
	if s.Versions != nil {
		fmt.Fprintf(&b, "  image: %s\n", s.Versions)
	}
	if s.Ready {
		fmt.Fprintf(&b, "  READY after %s at %s\n", s.ReadyAfter.Round(time.Millisecond), s.Endpoint)
	}
	if f := s.FirstFailure; f != nil {
		fmt.Fprintf(&b, "  first failure: node %d (%s)", f.Node, f.Host)
		if f.Process != "" {
			fmt.Fprintf(&b, ", process %s", f.Process)
			if f.Code != 0 {
				fmt.Fprintf(&b, ", exit code %d", f.Code)
			}
		}
		// The message names the node itself when it came from it.
		msg := strings.TrimPrefix(firstLine(f.Message), fmt.Sprintf("node %d (%s): ", f.Node, f.Host))
		fmt.Fprintf(&b, ": %s\n", msg)
		for _, l := range f.LastLines {
			fmt.Fprintf(&b, "    | %s\n", l)
		}
	}
	for _, k := range s.DeepGEMM {
		what := "hit"
		if !k.Hit {
			what = "miss"
			if len(k.Compiled) > 0 {
				what = fmt.Sprintf("miss, compiled on nodes %s", joinInts(k.Compiled))
			}
		}
		if k.Kernels > 0 {
			verb := "reused"
			if !k.Hit {
				verb = "published"
			}
			what += fmt.Sprintf("; %d kernels %s (%s)", k.Kernels, verb, k.Published)
		}
		fmt.Fprintf(&b, "  deepgemm %s: %s\n", k.Set, what)
	}
	phases := map[string][]string{}
	for _, n := range s.Nodes {
		p := n.Phase
		if p == "" {
			p = "no report"
		}
		phases[p] = append(phases[p], n.Host)
	}
	keys := make([]string, 0, len(phases))
	for k := range phases {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  nodes %s: %s\n", k, strings.Join(phases[k], ","))
	}
	fmt.Fprintf(&b, "  logs: %s (summary.json, timeline.txt, <host>.<process>.log)\n", s.LogDir)
	_, err := io.WriteString(w, b.String())
	return err
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}
