package node

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Timing is one phase of a node's run, for the timeline printed at exit.
type Timing struct {
	Name     string        `json:"name"`
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration_ns"`
	// Detail is what the phase did, when that varies (the DeepGEMM
	// kernels: hit or compiled).
	Detail string `json:"detail,omitempty"`
}

// addTiming records a phase; the start-up watch reads the timeline meanwhile.
func (r *run) addTiming(t Timing) {
	r.timingMu.Lock()
	defer r.timingMu.Unlock()
	r.timing = append(r.timing, t)
}

// timeline is a copy of the phases so far.
func (r *run) timeline() []Timing {
	r.timingMu.Lock()
	defer r.timingMu.Unlock()
	return slices.Clone(r.timing)
}

// printTimeline prints this node's phase durations, one screen at most.
func (r *run) printTimeline() {
	var b strings.Builder
	fmt.Fprintf(&b, "timeline node %d (%s):", r.idx, r.host)
	var total time.Duration
	for _, p := range r.timeline() {
		fmt.Fprintf(&b, " %s=%s", p.Name, fmtDur(p.Duration))
		if p.Detail != "" {
			fmt.Fprintf(&b, "(%s)", p.Detail)
		}
		total += p.Duration
	}
	fmt.Fprintf(&b, " total=%s", fmtDur(total))
	if kb := peakRSSKiB(); kb > 0 {
		fmt.Fprintf(&b, " launcher_peak_rss=%.1fMiB", float64(kb)/1024)
	}
	// Also in the launcher's log file: under scancel, Slurm may drop the last
	// lines a task writes to stdout.
	r.log.Info().Str("timeline", b.String()).Msg("timeline")
	b.WriteByte('\n')
	fmt.Fprint(r.n.Output, b.String())
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
func (r *run) printAllTimelines() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	all := map[int][]Timing{}
	r.reports = map[int]nodeReport{}
	final := func(b json.RawMessage) bool {
		var rep nodeReport
		return json.Unmarshal(b, &rep) == nil && rep.Final
	}
	for i, b := range r.server.ReportsWhere(ctx, final) {
		var rep nodeReport
		if err := json.Unmarshal(b, &rep); err != nil {
			r.log.Warn().Err(err).Int("from_node", i).Msg("unreadable report")
			continue
		}
		r.reports[i] = rep
		if len(rep.Timeline) > 0 {
			all[i] = rep.Timeline
		}
	}
	if len(all) == 0 {
		return
	}
	text := timelineTable(all, r.env.Nodes)
	fmt.Fprint(r.n.Output, text)
	// Also as a file: under scancel, Slurm may drop a task's last stdout lines.
	if err := publishFile(filepath.Join(r.jobDir, "timeline.txt"), []byte(text)); err != nil {
		r.log.Warn().Err(err).Msg("writing the timeline file")
	}
}

// timelineTable is one row per node, one column per phase.
func timelineTable(all map[int][]Timing, hosts []string) string {
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
		if i < len(hosts) {
			host = hosts[i]
		}
		fmt.Fprintf(tw, "%d\t%s", i, host)
		for _, name := range names {
			fmt.Fprintf(tw, "\t%s", fmtDur(d[name]))
		}
		fmt.Fprint(tw, "\t\n")
	}
	tw.Flush()
	return fmt.Sprintf("startup timeline of all %d nodes (as reported to node 0):\n%s", len(idxs), b.String())
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
