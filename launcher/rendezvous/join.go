package rendezvous

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"time"
)

// join registers an authenticated node; welcome is queued before anything
// else it gets. It returns the node, or a message to send before closing
// (the rendezvous already failed, or the job is ending), or why the
// connection is refused.
func (s *Server) join(c net.Conn, m Member, welcome []byte) (*rvNode, []byte, string) {
	if m.Index < 0 || m.Index >= s.cfg.Size {
		return nil, nil, fmt.Sprintf("node index %d out of range: the job has %d nodes (0-%d)", m.Index, s.cfg.Size, s.cfg.Size-1)
	}
	if s.cfg.Hosts != nil && m.Host != s.cfg.Hosts[m.Index] {
		return nil, nil, fmt.Sprintf("node %d claims to be host %q, but the job's node list has %q at index %d", m.Index, m.Host, s.cfg.Hosts[m.Index], m.Index)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, "rendezvous server is shutting down"
	}
	if s.state == rvFailed && s.nodes[m.Index] == nil {
		return nil, s.failure, ""
	}
	if s.aborted != nil && s.nodes[m.Index] == nil {
		return nil, s.aborted, ""
	}
	if prev := s.nodes[m.Index]; prev != nil {
		return nil, nil, fmt.Sprintf("node %d already joined from %s (host %s)", m.Index, prev.conn.RemoteAddr(), prev.m.Host)
	}
	n := &rvNode{m: m, conn: c, out: make(chan []byte, outQueue)}
	n.lastHeard.Store(time.Now().UnixNano())
	n.out <- welcome
	s.nodes[m.Index] = n
	s.joined++
	s.wg.Add(1)
	s.writers.Add(1)
	go s.writer(n)
	s.log.Debug().Int("index", m.Index).Str("host", m.Host).Str("addr", m.Addr).Strs("problems", m.Problems).Int("joined", s.joined).Msg("rendezvous: node joined")
	if s.joined == s.cfg.Size {
		s.complete()
	}
	return n, nil, ""
}

// complete answers every node at once (s.mu held).
func (s *Server) complete() {
	s.lastArrival = time.Now()
	s.joinTimer.Stop()
	if lines, failing := s.preflightProblems(); failing > 0 {
		s.fail(fmt.Sprintf("preflight failed on %d of %d nodes", failing, s.cfg.Size), lines, true)
		return
	}
	s.state = rvReleased
	table := make([]Member, s.cfg.Size)
	for i, n := range s.nodes {
		table[i] = n.m
	}
	b := s.message(message{Type: msgTable, Members: table})
	for _, n := range s.nodes {
		s.send(n, b)
	}
	s.log.Info().Int("nodes", s.cfg.Size).Dur("after", time.Since(s.start)).Msg("rendezvous complete: address table sent to every node")
}

// fail ends the join with one report for every node (s.mu held).
func (s *Server) fail(summary string, lines []string, config bool) {
	s.state = rvFailed
	s.joinTimer.Stop()
	text := failureText(summary, lines)
	s.failure = s.message(message{Type: msgFail, Error: text, Config: config})
	for _, n := range s.nodes {
		if n != nil {
			s.tell(n, s.failure)
		}
	}
	s.log.Error().Msg(text)
	s.notify()
}

// preflightProblems lists the problems of the nodes that joined, their own
// and Config.Check's, one line each, and counts the nodes that have any
// (s.mu held).
func (s *Server) preflightProblems() (lines []string, failing int) {
	var checked map[int][]string
	if s.cfg.Check != nil {
		var members []Member
		for _, n := range s.nodes {
			if n != nil {
				members = append(members, n.m)
			}
		}
		checked = s.cfg.Check(members)
	}
	for i, n := range s.nodes {
		if n == nil {
			continue
		}
		problems := slices.Concat(n.m.Problems, checked[i])
		for _, p := range problems {
			lines = append(lines, fmt.Sprintf("%s: %s", s.cfg.nodeName(i), p))
		}
		if len(problems) > 0 {
			failing++
		}
	}
	return lines, failing
}

// failureText is the summary, then one indented line each.
func failureText(summary string, lines []string) string {
	if len(lines) == 0 {
		return summary
	}
	return summary + ":\n  " + strings.Join(lines, "\n  ")
}

func (s *Server) joinDeadline() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != rvJoining || s.closed {
		return
	}
	var missing []string
	for i, n := range s.nodes {
		if n == nil {
			line := s.cfg.nodeName(i) + " never arrived"
			if r, ok := s.rejected[i]; ok {
				line += " (" + r + ")"
			}
			missing = append(missing, line)
		}
	}
	problems, failing := s.preflightProblems()
	summary := fmt.Sprintf("rendezvous failed: %d of %d nodes never arrived within %s", len(missing), s.cfg.Size, s.cfg.Deadline)
	if failing > 0 {
		summary += fmt.Sprintf("; preflight failed on %d of %d nodes", failing, s.cfg.Size)
	}
	s.fail(summary, append(missing, problems...), failing > 0)
}

func (s *Server) writer(n *rvNode) {
	defer s.wg.Done()
	defer s.writers.Done()
	// No write deadline per message (arming one costs more than the
	// heartbeat itself on a 1,000-node job): a node that stops reading fills
	// its queue and send drops it, and a dead one is lost by its silence.
	for b := range n.out {
		if _, err := n.conn.Write(b); err != nil {
			// The reader sees the closed connection and reports the node gone.
			n.conn.Close()
		}
	}
}

// send queues a message for a node (s.mu held). The protocol has a few
// answers and heartbeats outstanding per node at most, so a full queue means
// a node that does not read: drop it rather than block everyone.
// tell sends n why the job ends (a failed barrier, a failed join, an
// abort) and remembers it: node 0's closing must not race that answer
// with a vaguer "node 0 closed" (s.mu held).
func (s *Server) tell(n *rvNode, b []byte) {
	n.told = true
	s.send(n, b)
}

func (s *Server) send(n *rvNode, b []byte) {
	if n.gone != "" {
		return
	}
	select {
	case n.out <- b:
	default:
		s.log.Warn().Str("node", s.cfg.nodeName(n.m.Index)).Msg("rendezvous: node does not read its connection; dropping it")
		n.conn.Close()
	}
}

func (s *Server) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// nodeGone handles a node's connection ending: a goodbye ("left") is
// normal; a connection that closes without one, once every node has
// joined, is a lost node: its launcher was killed or its node went down,
// and the job ends.
func (s *Server) nodeGone(n *rvNode, how string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n.gone != "" {
		return
	}
	n.gone = how
	close(n.out)
	if s.closed {
		return
	}
	name := s.cfg.nodeName(n.m.Index)
	ev := s.log.Warn()
	if how == "left" {
		ev = s.log.Debug()
	}
	ev.Str("node", name).Msg("rendezvous: node " + how)
	if s.state == rvJoining {
		s.fail(fmt.Sprintf("rendezvous failed: %s %s before every node arrived", name, how), nil, false)
		return
	}
	if how == "disconnected" && s.state == rvReleased {
		s.abort(message{Type: msgAbort, Node: n.m.Index, Lost: true,
			Error: fmt.Sprintf("%s lost: its launcher's connection closed without a word (the launcher was killed, or its node went down)", name)}, n.m.Index)
	}
	s.settleAll()
}

// settleAll decides the barriers that a gone node makes undecidable.
func (s *Server) settleAll() {
	for name, b := range s.barriers {
		s.settle(name, b)
	}
	s.notify()
}
