package rendezvous

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
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
	writers   sync.WaitGroup
	once      sync.Once
	stopPulse chan struct{}

	mu          sync.Mutex
	closed      bool
	conns       map[net.Conn]struct{}
	pending     []net.Conn // not yet authenticated, oldest first
	nodes       []*rvNode  // by index, nil until joined
	joined      int
	state       rvState
	failure     []byte // the aggregated join failure, also for nodes that come later
	aborted     []byte // the abort every node gets once the job is ending
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
	m         Member
	conn      net.Conn
	out       chan []byte
	gone      string       // "", "disconnected", "left", "lost" or "closed"
	told      bool         // it has been sent why the job ends: a verdict or an abort
	lastHeard atomic.Int64 // unix nanoseconds of the last line it sent
}

// Serve serves the rendezvous on ln until Stop or Close; ctx only bounds
// the start. The deadline for all nodes to join starts now.
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
		cfg:       cfg,
		ln:        ln,
		log:       cfg.Log,
		start:     time.Now(),
		stopPulse: make(chan struct{}),
		conns:     map[net.Conn]struct{}{},
		nodes:     make([]*rvNode, cfg.Size),
		rejected:  map[int]string{},
		barriers:  map[string]*rvBarrier{},
		reports:   map[int]json.RawMessage{},
		changed:   make(chan struct{}),
	}
	s.joinTimer = time.AfterFunc(cfg.Deadline, s.joinDeadline)
	s.wg.Add(2)
	go s.acceptLoop()
	go s.pulse()
	s.log.Info().Str("listen", ln.Addr().String()).Int("nodes", cfg.Size).Dur("deadline", cfg.Deadline).
		Dur("peer_timeout", cfg.PeerTimeout).Msg("rendezvous server started")
	return s, nil
}

// Stop tells every connected node that node 0 is stopping, and why (unless
// the job is aborting already, which says more), then closes the server.
func (s *Server) Stop(reason string) {
	s.mu.Lock()
	if !s.closed {
		s.abort(message{Type: msgAbort, Node: 0, Error: reason, Stopped: true}, -1)
	}
	s.mu.Unlock()
	s.Close()
}

// Close stops the server and drops every connection. Nodes still connected
// that have not been told why are told that node 0 closed.
func (s *Server) Close() {
	s.once.Do(func() {
		s.mu.Lock()
		if s.state == rvReleased && s.aborted == nil {
			// Not to a node told already (a failed barrier's verdict may
			// still be on its way to it; this would race it).
			bye := s.message(message{Type: msgAbort, Node: 0, Stopped: true,
				Error: fmt.Sprintf("%s closed the rendezvous", s.cfg.nodeName(0))})
			for _, n := range s.nodes {
				if n != nil && !n.told {
					s.tell(n, bye)
				}
			}
		}
		s.closed = true
		close(s.stopPulse)
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

// Notify tells every node's client news about the job (kind, with an
// optional payload): they get it on Client.Notices. Nothing is answered, and
// a job already ending tells nothing more.
func (s *Server) Notify(kind string, payload json.RawMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.aborted != nil {
		return
	}
	b := s.message(message{Type: msgNotice, Notice: kind, Payload: payload})
	for _, n := range s.nodes {
		if n != nil {
			s.send(n, b)
		}
	}
}

// Latest returns the last report of every node that sent one, without
// waiting for the others.
func (s *Server) Latest() map[int]json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int]json.RawMessage, len(s.reports))
	for i, r := range s.reports {
		out[i] = r
	}
	return out
}

// Reports waits until every node has sent its report or is gone (or ctx
// ends, or the server closes), then returns the reports by node index.
func (s *Server) Reports(ctx context.Context) map[int]json.RawMessage {
	return s.ReportsWhere(ctx, nil)
}

// ReportsWhere is Reports waiting for a report that final accepts (a node's
// last one) from every node still connected; nil accepts any.
func (s *Server) ReportsWhere(ctx context.Context, final func(json.RawMessage) bool) map[int]json.RawMessage {
	for {
		s.mu.Lock()
		done := s.closed
		if !done {
			done = true
			for i, n := range s.nodes {
				rep, reported := s.reports[i]
				reported = reported && (final == nil || final(rep))
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
			// Besides our heartbeats: the kernel notices a peer that
			// vanished even while our writes sit in its send buffer.
			_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: 5 * time.Second, Count: 3})
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		if len(s.pending) >= max(maxPending, 2*s.cfg.Size) {
			// A flood of idle connections must not lock the nodes out: the
			// oldest unauthenticated one makes room.
			s.pending[0].Close()
			s.pending = s.pending[1:]
		}
		s.pending = append(s.pending, c)
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// authenticated takes c off the pending list.
func (s *Server) authenticated(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, p := range s.pending {
		if p == c {
			s.pending = append(s.pending[:i], s.pending[i+1:]...)
			return
		}
	}
}

func (s *Server) serveConn(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.authenticated(c) // if it never did
		c.Close()
	}()
	n := s.handshake(c)
	if n == nil {
		return
	}
	br := bufio.NewReaderSize(c, 4096)
	for {
		line, err := readLine(br, maxServerLine)
		if err != nil {
			s.log.Debug().Err(err).Str("node", s.cfg.nodeName(n.m.Index)).Msg("rendezvous: read")
			break
		}
		n.lastHeard.Store(time.Now().UnixNano())
		if isPing(line) {
			continue
		}
		var msg message
		if err := json.Unmarshal(line, &msg); err != nil {
			s.log.Warn().Str("node", s.cfg.nodeName(n.m.Index)).Err(err).Msg("rendezvous: malformed message; dropping the node's connection")
			break
		}
		switch msg.Type {
		case msgPing:
		case msgBye:
			s.nodeGone(n, "left")
			return
		case msgAbort:
			s.mu.Lock()
			msg.Node = n.m.Index
			s.abort(msg, n.m.Index)
			// The node learns how its abort ended up: its own back when the
			// job ends because of it, else the one that came first (its
			// failure may be a consequence of that one).
			if s.aborted != nil {
				s.tell(n, s.aborted)
			}
			s.mu.Unlock()
		default:
			s.handle(n, msg)
		}
	}
	s.nodeGone(n, "disconnected")
}

// handshake authenticates c and registers the node it proves to be; nil
// when c is refused (it has been told why) or closed.
func (s *Server) handshake(c net.Conn) *rvNode {
	remote := c.RemoteAddr().String()
	// One absolute deadline for all of it: a peer that trickles bytes
	// (slow loris) gets no more time than one that sends nothing.
	_ = c.SetDeadline(time.Now().Add(authTimeout))
	nonce := newNonce()
	if _, err := c.Write(encode(message{Type: msgChallenge, Job: s.cfg.JobID, Nonce: nonce})); err != nil {
		return nil
	}
	line, err := readLine(bufio.NewReaderSize(c, 4096), maxAuthLine)
	if err != nil {
		s.log.Debug().Str("remote", remote).Err(err).Msg("rendezvous: connection dropped before authenticating")
		return nil
	}
	var msg message
	if err := json.Unmarshal(line, &msg); err != nil || msg.Type != msgJoin || msg.Member == nil {
		s.reject(c, -1, "expected a join message")
		return nil
	}
	if msg.Job != s.cfg.JobID {
		s.reject(c, msg.Member.Index, fmt.Sprintf("job id %q does not match this rendezvous (job %q): another job on the same port?", msg.Job, s.cfg.JobID))
		return nil
	}
	if !validMAC(msg.MAC, joinMAC(s.cfg.Key, s.cfg.JobID, *msg.Member, nonce, msg.Nonce)) || msg.Nonce == "" {
		s.reject(c, msg.Member.Index, fmt.Sprintf("authentication failed for job %s: the job's secret (%s or --secret-file) must be the same on every node, or unset on all", s.cfg.JobID, SecretEnv))
		return nil
	}
	s.authenticated(c)
	_ = c.SetDeadline(time.Time{})
	welcome := encode(message{Type: msgWelcome, MAC: welcomeMAC(s.cfg.Key, s.cfg.JobID, nonce, msg.Nonce)})
	n, direct, why := s.join(c, *msg.Member, welcome)
	switch {
	case why != "":
		s.reject(c, msg.Member.Index, why)
		return nil
	case direct != nil:
		writeDirect(c, welcome)
		writeDirect(c, direct)
		return nil
	}
	return n
}

// message encodes m as this job's.
func (s *Server) message(m message) []byte {
	m.Job = s.cfg.JobID
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
	writeDirect(c, encode(message{Type: msgReject, Job: s.cfg.JobID, Error: why}))
}

// pulse sends every node a heartbeat and declares lost the nodes that have
// been silent for the peer timeout.
func (s *Server) pulse() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.heartbeat())
	defer t.Stop()
	for {
		select {
		case <-s.stopPulse:
			return
		case <-t.C:
		}
		now := time.Now()
		s.mu.Lock()
		for _, n := range s.nodes {
			if n == nil || n.gone != "" {
				continue
			}
			if silent := now.Sub(time.Unix(0, n.lastHeard.Load())); silent > s.cfg.PeerTimeout {
				s.lose(n, fmt.Sprintf("silent for %s (its launcher hangs, or its node or network is down)", silent.Round(time.Millisecond)))
				continue
			}
			s.send(n, pingLine)
		}
		s.mu.Unlock()
	}
}

// lose declares n lost (s.mu held): its connection is cut, and the job ends.
func (s *Server) lose(n *rvNode, why string) {
	n.gone = "lost"
	close(n.out)
	n.conn.Close()
	name := s.cfg.nodeName(n.m.Index)
	s.log.Error().Str("node", name).Msg("rendezvous: node lost: " + why)
	switch s.state {
	case rvJoining:
		s.fail(fmt.Sprintf("rendezvous failed: %s lost before every node arrived: %s", name, why), nil, false)
		return
	case rvFailed:
		return // every node has its verdict already
	}
	s.abort(message{Type: msgAbort, Node: n.m.Index, Lost: true, Error: fmt.Sprintf("%s lost: %s", name, why)}, n.m.Index)
	s.settleAll()
}

// abort ends the job (s.mu held): every node still connected, except the
// one it came from, gets msg. The first abort is the one every node gets;
// later ones are only logged.
func (s *Server) abort(msg message, from int) {
	if s.aborted != nil || s.closed {
		s.log.Debug().Str("reason", msg.Error).Msg("rendezvous: job already aborting")
		return
	}
	s.aborted = s.message(msg)
	ev := s.log.Error()
	if msg.Stopped {
		ev = s.log.Warn()
	}
	ev.Int("from_node", msg.Node).Msg("rendezvous: the job is ending, telling every node: " + msg.Error)
	for _, n := range s.nodes {
		if n != nil && n.m.Index != from {
			s.tell(n, s.aborted)
		}
	}
	s.notify()
}
