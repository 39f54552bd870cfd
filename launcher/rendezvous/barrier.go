package rendezvous

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// rvBarrier is one named barrier on the server.
type rvBarrier struct {
	arrived  map[int]string // index → problem ("" = fine)
	deadline time.Time
	timeout  time.Duration
	timer    *time.Timer
	payload  json.RawMessage // node 0's, sent to every node on release
	result   []byte          // release or failure, once decided
	failed   bool
	verdict  string // the failure's text
	config   bool   // a problem is the user's to fix: every node exits 2
}

func (s *Server) handle(n *rvNode, msg message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case msg.Type == msgReport:
		s.reports[n.m.Index] = msg.Payload
		s.send(n, s.message(message{Type: msgAck}))
		s.notify()
	case msg.Type == msgBarrier && s.state == rvReleased:
		s.arrive(n, msg)
	default:
		s.send(n, s.message(message{Type: msgFail, Barrier: msg.Barrier,
			Error: fmt.Sprintf("rendezvous: unexpected %q message from %s", msg.Type, s.cfg.nodeName(n.m.Index))}))
	}
}

func (s *Server) arrive(n *rvNode, msg message) {
	name := msg.Barrier
	b := s.barriers[name]
	if b == nil {
		b = &rvBarrier{arrived: map[int]string{}}
		s.barriers[name] = b
	}
	if _, again := b.arrived[n.m.Index]; again || (b.result != nil && !b.failed) {
		s.send(n, s.message(message{Type: msgFail, Barrier: name,
			Error: fmt.Sprintf("barrier %q: %s arrived twice", name, s.cfg.nodeName(n.m.Index))}))
		return
	}
	if b.result != nil {
		if b.failed {
			s.tell(n, b.result)
		} else {
			s.send(n, b.result)
		}
		return
	}
	b.arrived[n.m.Index] = msg.Problem
	b.config = b.config || (msg.Problem != "" && msg.Config)
	if n.m.Index == 0 {
		b.payload = msg.Payload
	}
	if msg.Timeout > 0 {
		if d := time.Now().Add(msg.Timeout); b.deadline.IsZero() || d.Before(b.deadline) {
			b.deadline, b.timeout = d, msg.Timeout
			if b.timer != nil {
				b.timer.Stop()
			}
			b.timer = time.AfterFunc(msg.Timeout, func() { s.barrierDeadline(name, b) })
		}
	}
	s.settle(name, b)
}

// settle releases or fails a barrier if it can be decided now (s.mu held):
// every node arrived, some node is gone and never will, or a node arrived
// with a problem. The last fails the barrier at once: waiting for the others
// (a precompile can take half an hour) would only delay the same verdict.
// Nodes still on their way get it when they arrive, or are stopped by Slurm
// when the failing node exits (srun --kill-on-bad-exit).
func (s *Server) settle(name string, b *rvBarrier) {
	if b.result != nil {
		return
	}
	var gone []string
	for _, n := range s.nodes {
		if n.gone != "" {
			gone = append(gone, s.cfg.nodeName(n.m.Index)+" "+n.gone)
		}
	}
	if len(gone) > 0 {
		s.decide(name, b, fmt.Sprintf("barrier %q failed: %s", name, strings.Join(gone, ", ")), nil)
		return
	}
	var problems []string
	failing := 0
	for i := range s.cfg.Size {
		if p := b.arrived[i]; p != "" {
			problems = append(problems, fmt.Sprintf("%s: %s", s.cfg.nodeName(i), p))
			failing++
		}
	}
	if failing > 0 {
		summary := fmt.Sprintf("barrier %q failed on %d of %d nodes", name, failing, s.cfg.Size)
		if waiting := s.cfg.Size - len(b.arrived); waiting > 0 {
			summary += fmt.Sprintf(" (%d not there yet)", waiting)
		}
		s.decide(name, b, summary, problems)
		s.tellAbsent(b)
		return
	}
	if len(b.arrived) < s.cfg.Size {
		return
	}
	s.decide(name, b, "", nil)
}

// decide sends a barrier's outcome to every node that arrived (s.mu held);
// nodes arriving later get the same.
func (s *Server) decide(name string, b *rvBarrier, summary string, lines []string) {
	if b.timer != nil {
		b.timer.Stop()
	}
	if summary == "" {
		b.result = s.message(message{Type: msgRelease, Barrier: name, Payload: b.payload})
		s.log.Info().Str("barrier", name).Int("nodes", s.cfg.Size).Msg("rendezvous: barrier released")
	} else {
		text := failureText(summary, lines)
		b.failed, b.verdict = true, text
		b.result = s.message(message{Type: msgFail, Barrier: name, Error: text, Config: b.config})
		s.log.Error().Str("barrier", name).Msg(text)
	}
	idx := make([]int, 0, len(b.arrived))
	for i := range b.arrived {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		if b.failed {
			s.tell(s.nodes[i], b.result)
		} else {
			s.send(s.nodes[i], b.result)
		}
	}
}

// tellAbsent gives a barrier's failure (a node's problem, or nodes missing
// at the deadline; not a node that left: a goodbye ends nothing) to the
// nodes not there yet (s.mu held), as an abort naming the first node with
// a problem and carrying the verdict's text: still compiling, dialling or
// merely slow, they stop now instead of when they arrive, and each says why
// before a --kill-on-bad-exit SIGTERM, sent when a told node exits, can cut
// it short.
func (s *Server) tellAbsent(b *rvBarrier) {
	first := 0
	for i := range s.cfg.Size {
		if b.arrived[i] != "" {
			first = i
			break
		}
	}
	abort := s.message(message{Type: msgAbort, Node: first, Error: b.verdict, Config: b.config})
	for _, n := range s.nodes {
		if n == nil {
			continue
		}
		if _, there := b.arrived[n.m.Index]; !there {
			s.tell(n, abort)
		}
	}
}

func (s *Server) barrierDeadline(name string, b *rvBarrier) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b.result != nil || s.closed {
		return
	}
	var lines []string
	missing := 0
	for i := range s.cfg.Size {
		if _, ok := b.arrived[i]; !ok {
			lines = append(lines, s.cfg.nodeName(i)+" did not arrive")
			missing++
		}
	}
	for i := range s.cfg.Size {
		if p := b.arrived[i]; p != "" {
			lines = append(lines, fmt.Sprintf("%s: %s", s.cfg.nodeName(i), p))
		}
	}
	s.decide(name, b, fmt.Sprintf("barrier %q failed: %d of %d nodes did not arrive within %s", name, missing, s.cfg.Size, b.timeout), lines)
	s.tellAbsent(b)
}
