package node

import (
	"bytes"
	"regexp"
	"sync"
	"time"
)

// lastLinesKept is how much of a process's output a stall or a failure
// report shows.
const lastLinesKept = 20

// milestones are the steps of an SGLang worker's start-up as its own log
// names them (python/sglang/srt/model_executor/model_runner.py: "Load
// weight begin/end", "Capture cuda graph begin/end"; the safetensors
// loader's tqdm bar; the DeepGEMM JIT lines of deep_gemm_wrapper's
// compile_utils.py: "Entering DeepGEMM JIT Pre-Compile session", "Try
// DeepGEMM JIT Compiling for <...>"; the HTTP
// server's "fired up" line). Any output line is a sign of life; a milestone
// also says how far the worker got.
//
// The last two end a worker's own start-up: after them a node rank >0
// rightly says nothing until requests come, so silence is no stall there.
// Compiled on first use, not at init: every start of the binary would pay.
var milestones = sync.OnceValue(func() []milestone {
	return []milestone{
		{regexp.MustCompile(`Load weight begin`), "loading weights", false},
		{regexp.MustCompile(`Loading safetensors checkpoint shards:\s*(\d+)% Completed`), "loading weights $1%", false},
		{regexp.MustCompile(`Load weight end`), "weights loaded", false},
		{regexp.MustCompile(`DeepGEMM (JIT|Kernels|warmup)`), "compiling DeepGEMM kernels", false},
		{regexp.MustCompile(`Capture cuda graph begin`), "capturing CUDA graphs", false},
		{regexp.MustCompile(`Capture cuda graph end`), "CUDA graphs captured", true},
		{regexp.MustCompile(`fired up and ready to roll`), "serving", true},
	}
})

type milestone struct {
	re   *regexp.Regexp
	name string
	done bool
}

// procProgress is what one process has shown of itself.
type procProgress struct {
	pid         int
	started     time.Time
	lastOutput  time.Time // zero: nothing yet
	milestone   string
	milestoneAt time.Time
	startedUp   bool                  // its last milestone ends the start-up
	lines       [lastLinesKept]string // ring of the last lines
	next        int
	count       int
}

// progressTracker follows the output of a node's processes, fed by the
// supervisor's OnLine hook.
type progressTracker struct {
	mu    sync.Mutex
	now   func() time.Time
	procs map[string]*procProgress
}

func newProgressTracker(now func() time.Time) *progressTracker {
	return &progressTracker{now: now, procs: map[string]*procProgress{}}
}

// line records one piece of a process's output.
func (t *progressTracker) line(pid int, name string, b []byte) {
	now := t.now()
	text := string(bytes.TrimRight(b, "\r\n"))
	// tqdm redraws its bar with carriage returns: the last state counts.
	if i := bytes.LastIndexByte([]byte(text), '\r'); i >= 0 {
		text = text[i+1:]
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.proc(pid, name, now)
	p.lastOutput = now
	if len(text) > 300 {
		text = text[:300] + "…"
	}
	p.lines[p.next] = text
	p.next = (p.next + 1) % lastLinesKept
	p.count++
	for _, m := range milestones() {
		if loc := m.re.FindStringSubmatchIndex(text); loc != nil {
			p.milestone = string(m.re.ExpandString(nil, m.name, text, loc))
			p.milestoneAt, p.startedUp = now, m.done
		}
	}
}

// started marks a process as started now (its silence counts from here).
func (t *progressTracker) started(pid int, name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.proc(pid, name, t.now())
}

func (t *progressTracker) proc(pid int, name string, now time.Time) *procProgress {
	p := t.procs[name]
	switch {
	case p == nil || (pid != 0 && p.pid != 0 && p.pid != pid):
		p = &procProgress{pid: pid, started: now}
		t.procs[name] = p
	case p.pid == 0:
		p.pid = pid
	}
	return p
}

// ProcStatus is a process's progress as reported to node 0 and shown in
// stall reports and the job summary.
type ProcStatus struct {
	PID       int           `json:"pid"`
	Silent    time.Duration `json:"silent_ns"` // since its last output (or its start)
	Lines     int           `json:"lines"`
	Milestone string        `json:"milestone,omitempty"`
	StartedUp bool          `json:"started_up,omitempty"` // past its last start-up milestone
	LastLines []string      `json:"last_lines,omitempty"`
}

// status is name's progress now; withLines adds its last lines.
func (t *progressTracker) status(name string, withLines bool) (ProcStatus, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.procs[name]
	if p == nil {
		return ProcStatus{}, false
	}
	since := p.lastOutput
	if since.IsZero() {
		since = p.started
	}
	st := ProcStatus{PID: p.pid, Silent: t.now().Sub(since), Lines: p.count, Milestone: p.milestone, StartedUp: p.startedUp}
	if withLines {
		st.LastLines = p.lastLines()
	}
	return st, true
}

func (p *procProgress) lastLines() []string {
	n := min(p.count, lastLinesKept)
	out := make([]string, 0, n)
	for i := range n {
		out = append(out, p.lines[(p.next-n+i+lastLinesKept)%lastLinesKept])
	}
	return out
}
