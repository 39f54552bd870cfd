package rendezvous

import (
	"bufio"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Server runs on node 0.
type Server struct {
	cfg   Config
	ln    net.Listener
	log   zerolog.Logger
	start time.Time
	wg    sync.WaitGroup
	// writers tracks the per-node writer goroutines, so Close can let them
	// deliver a verdict that is still queued.
	writers sync.WaitGroup
	once    sync.Once

	mu          sync.Mutex
	closed      bool
	conns       map[net.Conn]struct{}
	nodes       []*rvNode // by index, nil until joined
	joined      int
	state       rvState
	failure     []byte // the aggregated join failure, also for nodes that come later
	joinTimer   *time.Timer
	rejected    map[int]string // why a connection claiming this index was refused
	barriers    map[string]*rvBarrier
	reports     map[int]json.RawMessage
	changed     chan struct{} // closed and replaced when a node reports or goes
	lastArrival time.Time     // for the release latency benchmark
}

type rvState int

const (
	rvJoining rvState = iota
	rvReleased
	rvFailed
)

type rvNode struct {
	m    Member
	conn net.Conn
	out  chan []byte
	gone string // "", "disconnected", "left" or "closed"
}

type rvBarrier struct {
	arrived  map[int]string // index → problem ("" = fine)
	deadline time.Time
	timeout  time.Duration
	timer    *time.Timer
	payload  json.RawMessage // node 0's, sent to every node on release
	result   []byte          // release or failure, once decided
	failed   bool
}

// Serve serves the rendezvous on ln until ctx ends or Close. The
// deadline for all nodes to join starts now. When ctx ends, every node still
// connected is told that node 0 is stopping, and why (the cause of ctx), so
// that it does not mistake the closed connection for a crash.
func Serve(ctx context.Context, ln net.Listener, cfg Config) (*Server, error) {
	cfg, err := cfg.check()
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		ln.Close()
		return nil, context.Cause(ctx)
	}
	s := &Server{
		cfg:      cfg,
		ln:       ln,
		log:      cfg.Log,
		start:    time.Now(),
		conns:    map[net.Conn]struct{}{},
		nodes:    make([]*rvNode, cfg.Size),
		rejected: map[int]string{},
		barriers: map[string]*rvBarrier{},
		reports:  map[int]json.RawMessage{},
		changed:  make(chan struct{}),
	}
	s.joinTimer = time.AfterFunc(cfg.Deadline, s.joinDeadline)
	s.wg.Add(1)
	go s.acceptLoop()
	s.log.Info().Str("listen", ln.Addr().String()).Int("nodes", cfg.Size).Dur("deadline", cfg.Deadline).Msg("rendezvous server started")
	// Registered last: the server must be complete when it can run.
	context.AfterFunc(ctx, func() {
		s.Stop(fmt.Sprintf("%s is stopping: %v", cfg.nodeName(0), context.Cause(ctx)))
	})
	return s, nil
}

// Stop tells every connected node that node 0 is stopping, and why, then
// closes the server. Nodes waiting in a join or a barrier get a
// *PeerStoppedError carrying the reason.
func (s *Server) Stop(reason string) {
	s.mu.Lock()
	if !s.closed {
		b := s.message(rvMessage{Type: msgFail, Error: reason, Stopping: true})
		for _, n := range s.nodes {
			if n != nil {
				s.send(n, b)
			}
		}
	}
	s.mu.Unlock()
	s.Close()
}

// Close stops the server and drops every connection.
func (s *Server) Close() {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.joinTimer.Stop()
		for _, b := range s.barriers {
			if b.timer != nil {
				b.timer.Stop()
			}
		}
		// Node 0 closes the server right after a failed join: the other
		// nodes must still get the report that is queued for them.
		for _, n := range s.nodes {
			if n != nil && n.gone == "" {
				n.gone = "closed"
				close(n.out)
			}
		}
		s.mu.Unlock()
		flushed := make(chan struct{})
		go func() { s.writers.Wait(); close(flushed) }()
		select {
		case <-flushed:
		case <-time.After(closeFlush):
		}
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.notify()
		s.mu.Unlock()
		s.ln.Close()
		s.wg.Wait()
	})
}

// Reports waits until every node has sent its report or is gone (or ctx
// ends, or the server closes), then returns the reports by node index.
func (s *Server) Reports(ctx context.Context) map[int]json.RawMessage {
	for {
		s.mu.Lock()
		done := s.closed
		if !done {
			done = true
			for i, n := range s.nodes {
				_, reported := s.reports[i]
				if (n == nil && s.state == rvJoining) || (n != nil && !reported && n.gone == "") {
					done = false
					break
				}
			}
		}
		out := make(map[int]json.RawMessage, len(s.reports))
		for i, r := range s.reports {
			out[i] = r
		}
		changed := s.changed
		s.mu.Unlock()
		if done {
			return out
		}
		select {
		case <-ctx.Done():
			return out
		case <-changed:
		}
	}
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait instead of spinning.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Error().Err(err).Msg("rendezvous: accept")
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if tc, ok := c.(*net.TCPConn); ok {
			// A node that vanishes without closing (power loss, network
			// partition) is noticed within about 20 s instead of minutes.
			_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: 5 * time.Second, Count: 3})
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

func (s *Server) serveConn(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	remote := c.RemoteAddr().String()
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 0, 4096), maxServerLine)

	_ = c.SetReadDeadline(time.Now().Add(joinReadTimeout))
	if !sc.Scan() {
		s.log.Debug().Str("remote", remote).Err(sc.Err()).Msg("rendezvous: connection closed before joining")
		return
	}
	var msg rvMessage
	if err := json.Unmarshal(sc.Bytes(), &msg); err != nil {
		s.reject(c, -1, "malformed message: "+err.Error())
		return
	}
	n, direct, why := s.join(c, msg)
	if why != "" {
		idx := -1
		if msg.Member != nil {
			idx = msg.Member.Index
		}
		s.reject(c, idx, why)
		return
	}
	if direct != nil {
		writeDirect(c, direct)
		return
	}
	_ = c.SetReadDeadline(time.Time{})

	for sc.Scan() {
		var msg rvMessage
		if err := json.Unmarshal(sc.Bytes(), &msg); err != nil {
			s.log.Warn().Str("remote", remote).Err(err).Msg("rendezvous: malformed message; dropping the node's connection")
			break
		}
		if !s.authentic(msg) {
			s.log.Warn().Str("remote", remote).Msg("rendezvous: message with the wrong job id or token; dropping the node's connection")
			break
		}
		if msg.Type == msgBye {
			s.nodeGone(n, "left")
			break
		}
		s.handle(n, msg)
	}
	s.nodeGone(n, "disconnected")
}

func (s *Server) authentic(msg rvMessage) bool {
	return msg.Job == s.cfg.JobID && subtle.ConstantTimeCompare([]byte(msg.Token), []byte(s.cfg.Token)) == 1
}

// message encodes m as this job's: with its id and token. Only a reject
// goes without the token (see reject).
func (s *Server) message(m rvMessage) []byte {
	m.Job, m.Token = s.cfg.JobID, s.cfg.Token
	return encode(m)
}

func writeDirect(c net.Conn, b []byte) {
	_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, _ = c.Write(b)
}

// reject refuses a connection; the peer gets the reason, the log says who.
func (s *Server) reject(c net.Conn, idx int, why string) {
	s.log.Warn().Str("remote", c.RemoteAddr().String()).Int("claimed_index", idx).Str("reason", why).Msg("rendezvous: rejected a connection")
	if idx >= 0 && idx < s.cfg.Size {
		s.mu.Lock()
		s.rejected[idx] = fmt.Sprintf("a connection from %s claiming node %d was rejected: %s", c.RemoteAddr(), idx, why)
		s.mu.Unlock()
	}
	writeDirect(c, encode(rvMessage{Type: msgReject, Job: s.cfg.JobID, Error: why}))
}

// join registers a node. It returns the node, or a message to send before
// closing (the rendezvous already failed), or why the connection is refused.
func (s *Server) join(c net.Conn, msg rvMessage) (*rvNode, []byte, string) {
	if msg.Job != s.cfg.JobID {
		return nil, nil, fmt.Sprintf("job id %q does not match this rendezvous (job %q): another job on the same port?", msg.Job, s.cfg.JobID)
	}
	if subtle.ConstantTimeCompare([]byte(msg.Token), []byte(s.cfg.Token)) != 1 {
		return nil, nil, fmt.Sprintf("job token mismatch for job %s: %s must be the same on every node, or unset on all", s.cfg.JobID, JobTokenEnv)
	}
	if msg.Type != msgJoin || msg.Member == nil {
		return nil, nil, fmt.Sprintf("expected a join message, got %q", msg.Type)
	}
	m := *msg.Member
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
	if prev := s.nodes[m.Index]; prev != nil {
		return nil, nil, fmt.Sprintf("node %d already joined from %s (host %s)", m.Index, prev.conn.RemoteAddr(), prev.m.Host)
	}
	n := &rvNode{m: m, conn: c, out: make(chan []byte, outQueue)}
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
	b := s.message(rvMessage{Type: msgTable, Members: table})
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
	s.failure = s.message(rvMessage{Type: msgFail, Error: text, Config: config})
	for _, n := range s.nodes {
		if n != nil {
			s.send(n, s.failure)
		}
	}
	s.log.Error().Msg(text)
	s.notify()
}

// preflightProblems lists the problems of the nodes that joined, one line
// each, and counts the nodes that have any (s.mu held).
func (s *Server) preflightProblems() (lines []string, failing int) {
	for i, n := range s.nodes {
		if n == nil || len(n.m.Problems) == 0 {
			continue
		}
		for _, p := range n.m.Problems {
			lines = append(lines, fmt.Sprintf("%s: %s", s.cfg.nodeName(i), p))
		}
		failing++
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
	for b := range n.out {
		_ = n.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := n.conn.Write(b); err != nil {
			// The reader sees the closed connection and reports the node gone.
			n.conn.Close()
		}
	}
}

// send queues a message for a node (s.mu held). The protocol has at most a
// couple of answers outstanding per node, so a full queue means a node that
// does not read: drop it rather than block everyone.
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
	ev := s.log.Warn()
	if how == "left" {
		ev = s.log.Debug()
	}
	ev.Str("node", s.cfg.nodeName(n.m.Index)).Msg("rendezvous: node " + how)
	if s.state == rvJoining {
		s.fail(fmt.Sprintf("rendezvous failed: %s %s before every node arrived", s.cfg.nodeName(n.m.Index), how), nil, false)
		return
	}
	for name, b := range s.barriers {
		s.settle(name, b)
	}
	s.notify()
}
