package launcher

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/sethvargo/go-retry"
)

// The rendezvous: node 0 runs a server, every node (node 0 included) keeps one
// TCP connection to it for the whole job and exchanges newline-delimited JSON
// messages. The server answers every node at once: the address table when all
// have joined, one barrier's release when all have arrived, or one aggregated
// failure that every node reports identically.

// Member is one node as it joins: who it is, where it is reachable, and what
// its preflight found wrong (nothing, normally).
type Member struct {
	Index    int      `json:"index"`
	Host     string   `json:"host"`
	Addr     string   `json:"addr"`
	Problems []string `json:"problems,omitempty"`
}

// PhaseTiming is one phase of a node's run, for the timeline printed at exit.
type PhaseTiming struct {
	Name     string        `json:"name"`
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration_ns"`
}

// RendezvousConfig is shared by the server and the clients; every node must
// have the same JobID, Token and Size.
type RendezvousConfig struct {
	JobID string
	Token string // see JobToken
	Size  int    // number of nodes
	// Hosts are the expected host names by node index; they name the nodes
	// in errors and are checked against what joining nodes claim. May be nil.
	Hosts []string
	// Deadline bounds the join: the server fails the rendezvous this long
	// after it starts, and a client stops trying to reach the server this
	// long after it starts. Zero means DefaultRendezvousDeadline.
	Deadline time.Duration
	Log      zerolog.Logger
}

// DefaultRendezvousDeadline leaves room for nodes whose launcher starts late
// (slow prolog, container image pull on first use).
const DefaultRendezvousDeadline = 5 * time.Minute

// JobTokenEnv overrides the derived job token, for sites that want a secret.
const JobTokenEnv = "WIDEEP_JOB_TOKEN"

const (
	// Before a connection has identified itself it gets little of everything:
	// it may be anything that found the port.
	joinReadTimeout = 10 * time.Second
	maxServerLine   = 1 << 20
	maxClientLine   = 64 << 20 // the table of a very large job
	writeTimeout    = 10 * time.Second
	// A client keeps waiting this much longer than the server's deadline so
	// that it gets the server's explanation rather than its own timeout.
	answerSlack = 5 * time.Second
	outQueue    = 8
	// closeFlush bounds how long Close waits for queued messages to go out.
	closeFlush = 2 * time.Second
)

// JobToken is WIDEEP_JOB_TOKEN if set, else derived from the job and step ids:
// the derived token keeps jobs apart, it is not a secret.
func JobToken(lookup func(string) (string, bool), jobID, stepID string) string {
	if v, ok := lookup(JobTokenEnv); ok && v != "" {
		return v
	}
	sum := sha256.Sum256([]byte("wideep:" + jobID + "." + stepID))
	return hex.EncodeToString(sum[:])[:32]
}

const (
	msgJoin    = "join"
	msgTable   = "table"
	msgBarrier = "barrier"
	msgRelease = "release"
	msgReport  = "report"
	msgAck     = "ack"
	msgFail    = "fail"   // aggregated failure, the same for every node
	msgReject  = "reject" // this connection is refused; carries no token
	msgBye     = "bye"
)

type rvMessage struct {
	Type     string        `json:"type"`
	Job      string        `json:"job"`
	Token    string        `json:"token,omitempty"`
	Member   *Member       `json:"member,omitempty"`
	Members  []Member      `json:"members,omitempty"`
	Barrier  string        `json:"barrier,omitempty"`
	Problem  string        `json:"problem,omitempty"`
	Timeout  time.Duration `json:"timeout_ns,omitempty"`
	Timeline []PhaseTiming `json:"timeline,omitempty"`
	Error    string        `json:"error,omitempty"`
	Config   bool          `json:"config,omitempty"`   // the failure is the user's to fix: exit 2
	Stopping bool          `json:"stopping,omitempty"` // node 0 is stopping; not a verdict on this node
}

func encode(m rvMessage) []byte {
	b, err := json.Marshal(m)
	if err != nil {
		panic(err) // only plain data types: cannot happen
	}
	return append(b, '\n')
}

func (cfg RendezvousConfig) check() (RendezvousConfig, error) {
	var errs []error
	if cfg.JobID == "" {
		errs = append(errs, errors.New("no job id"))
	}
	if cfg.Token == "" {
		errs = append(errs, errors.New("no job token"))
	}
	if cfg.Size < 1 {
		errs = append(errs, fmt.Errorf("size %d: need at least one node", cfg.Size))
	}
	if cfg.Hosts != nil && len(cfg.Hosts) != cfg.Size {
		errs = append(errs, fmt.Errorf("%d host names for %d nodes", len(cfg.Hosts), cfg.Size))
	}
	if cfg.Deadline < 0 {
		errs = append(errs, fmt.Errorf("negative deadline %s", cfg.Deadline))
	}
	if cfg.Deadline == 0 {
		cfg.Deadline = DefaultRendezvousDeadline
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, fmt.Errorf("rendezvous config: %w", err)
	}
	return cfg, nil
}

func (cfg RendezvousConfig) nodeName(i int) string {
	if i >= 0 && i < len(cfg.Hosts) {
		return fmt.Sprintf("node %d (%s)", i, cfg.Hosts[i])
	}
	return fmt.Sprintf("node %d", i)
}

// RendezvousServer runs on node 0.
type RendezvousServer struct {
	cfg   RendezvousConfig
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
	timelines   map[int][]PhaseTiming
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
	result   []byte // release or failure, once decided
	failed   bool
}

// ServeRendezvous serves the rendezvous on ln until ctx ends or Close. The
// deadline for all nodes to join starts now. When ctx ends, every node still
// connected is told that node 0 is stopping, and why (the cause of ctx), so
// that it does not mistake the closed connection for a crash.
func ServeRendezvous(ctx context.Context, ln net.Listener, cfg RendezvousConfig) (*RendezvousServer, error) {
	cfg, err := cfg.check()
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		ln.Close()
		return nil, context.Cause(ctx)
	}
	s := &RendezvousServer{
		cfg:       cfg,
		ln:        ln,
		log:       cfg.Log,
		start:     time.Now(),
		conns:     map[net.Conn]struct{}{},
		nodes:     make([]*rvNode, cfg.Size),
		rejected:  map[int]string{},
		barriers:  map[string]*rvBarrier{},
		timelines: map[int][]PhaseTiming{},
		changed:   make(chan struct{}),
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
func (s *RendezvousServer) Stop(reason string) {
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
func (s *RendezvousServer) Close() {
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

// Timelines waits until every node has reported its timeline or is gone (or
// ctx ends, or the server closes), then returns the timelines by node index.
func (s *RendezvousServer) Timelines(ctx context.Context) map[int][]PhaseTiming {
	for {
		s.mu.Lock()
		done := s.closed
		if !done {
			done = true
			for i, n := range s.nodes {
				_, reported := s.timelines[i]
				if (n == nil && s.state == rvJoining) || (n != nil && !reported && n.gone == "") {
					done = false
					break
				}
			}
		}
		out := make(map[int][]PhaseTiming, len(s.timelines))
		for i, t := range s.timelines {
			out[i] = append([]PhaseTiming(nil), t...)
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

func (s *RendezvousServer) acceptLoop() {
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

func (s *RendezvousServer) serveConn(c net.Conn) {
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

func (s *RendezvousServer) authentic(msg rvMessage) bool {
	return msg.Job == s.cfg.JobID && subtle.ConstantTimeCompare([]byte(msg.Token), []byte(s.cfg.Token)) == 1
}

// message encodes m as this job's: with its id and token. Only a reject
// goes without the token (see reject).
func (s *RendezvousServer) message(m rvMessage) []byte {
	m.Job, m.Token = s.cfg.JobID, s.cfg.Token
	return encode(m)
}

func writeDirect(c net.Conn, b []byte) {
	_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, _ = c.Write(b)
}

// reject refuses a connection; the peer gets the reason, the log says who.
func (s *RendezvousServer) reject(c net.Conn, idx int, why string) {
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
func (s *RendezvousServer) join(c net.Conn, msg rvMessage) (*rvNode, []byte, string) {
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
func (s *RendezvousServer) complete() {
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
func (s *RendezvousServer) fail(summary string, lines []string, config bool) {
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
func (s *RendezvousServer) preflightProblems() (lines []string, failing int) {
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

func (s *RendezvousServer) joinDeadline() {
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

func (s *RendezvousServer) writer(n *rvNode) {
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
func (s *RendezvousServer) send(n *rvNode, b []byte) {
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

func (s *RendezvousServer) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *RendezvousServer) nodeGone(n *rvNode, how string) {
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

func (s *RendezvousServer) handle(n *rvNode, msg rvMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case msg.Type == msgReport:
		s.timelines[n.m.Index] = msg.Timeline
		s.send(n, s.message(rvMessage{Type: msgAck}))
		s.notify()
	case msg.Type == msgBarrier && s.state == rvReleased:
		s.arrive(n, msg)
	default:
		s.send(n, s.message(rvMessage{Type: msgFail, Barrier: msg.Barrier,
			Error: fmt.Sprintf("rendezvous: unexpected %q message from %s", msg.Type, s.cfg.nodeName(n.m.Index))}))
	}
}

func (s *RendezvousServer) arrive(n *rvNode, msg rvMessage) {
	name := msg.Barrier
	b := s.barriers[name]
	if b == nil {
		b = &rvBarrier{arrived: map[int]string{}}
		s.barriers[name] = b
	}
	if _, again := b.arrived[n.m.Index]; again || (b.result != nil && !b.failed) {
		s.send(n, s.message(rvMessage{Type: msgFail, Barrier: name,
			Error: fmt.Sprintf("barrier %q: %s arrived twice", name, s.cfg.nodeName(n.m.Index))}))
		return
	}
	if b.result != nil {
		s.send(n, b.result)
		return
	}
	b.arrived[n.m.Index] = msg.Problem
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
func (s *RendezvousServer) settle(name string, b *rvBarrier) {
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
		return
	}
	if len(b.arrived) < s.cfg.Size {
		return
	}
	s.decide(name, b, "", nil)
}

// decide sends a barrier's outcome to every node that arrived (s.mu held);
// nodes arriving later get the same.
func (s *RendezvousServer) decide(name string, b *rvBarrier, summary string, lines []string) {
	if b.timer != nil {
		b.timer.Stop()
	}
	if summary == "" {
		b.result = s.message(rvMessage{Type: msgRelease, Barrier: name})
		s.log.Info().Str("barrier", name).Int("nodes", s.cfg.Size).Msg("rendezvous: barrier released")
	} else {
		text := failureText(summary, lines)
		b.failed = true
		b.result = s.message(rvMessage{Type: msgFail, Barrier: name, Error: text})
		s.log.Error().Str("barrier", name).Msg(text)
	}
	idx := make([]int, 0, len(b.arrived))
	for i := range b.arrived {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		s.send(s.nodes[i], b.result)
	}
}

func (s *RendezvousServer) barrierDeadline(name string, b *rvBarrier) {
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
}

// VerdictError is node 0's decision about the whole job (a barrier failed on
// some node, nodes never arrived): every node gets the same one.
type VerdictError struct{ Msg string }

func (e *VerdictError) Error() string { return e.Msg }

// PeerStoppedError says node 0 is stopping (it was signalled, or one of its
// processes ended); Reason says why. It is no verdict on this node.
type PeerStoppedError struct{ Reason string }

func (e *PeerStoppedError) Error() string { return "rendezvous: " + e.Reason }

// RendezvousClient is one node's connection to the rendezvous. Its methods
// are not meant to be called concurrently; they are serialized.
type RendezvousClient struct {
	cfg  RendezvousConfig
	addr string
	self Member

	mu     sync.Mutex
	conn   net.Conn
	sc     *bufio.Scanner
	broken error // once set, the connection cannot be trusted to be in step
	closed bool
}

// JoinRendezvous connects to the server at addr (retrying until the deadline:
// node 0 may start later than this node), joins as self and waits until the
// server answers. It returns the address table indexed by node, or the one
// aggregated failure every node gets: a *ConfigError when preflight failed
// somewhere or this node was refused, so that every node exits with code 2.
func JoinRendezvous(ctx context.Context, addr string, cfg RendezvousConfig, self Member) (*RendezvousClient, []Member, error) {
	cfg, err := cfg.check()
	if err != nil {
		return nil, nil, err
	}
	server := cfg.nodeName(0)
	dctx, cancel := context.WithTimeout(ctx, cfg.Deadline)
	defer cancel()
	var last error
	d := net.Dialer{Timeout: time.Second}
	b := retry.WithCappedDuration(time.Second, retry.WithJitterPercent(20, retry.NewExponential(20*time.Millisecond)))
	conn, err := retry.DoValue(dctx, b, func(ctx context.Context) (net.Conn, error) {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			last = err
			return nil, retry.RetryableError(err)
		}
		return c, nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("rendezvous: joining %s at %s: %w", server, addr, context.Cause(ctx))
		}
		return nil, nil, fmt.Errorf("rendezvous: could not reach the server on %s at %s within %s (last error: %v)", server, addr, cfg.Deadline, last)
	}
	c := &RendezvousClient{cfg: cfg, addr: addr, self: self, conn: conn, sc: bufio.NewScanner(conn)}
	c.sc.Buffer(make([]byte, 0, 64<<10), maxClientLine)

	c.mu.Lock()
	defer c.mu.Unlock()
	reply, err := c.roundTrip(ctx, rvMessage{Type: msgJoin, Member: &self}, cfg.Deadline+answerSlack)
	if err == nil {
		switch reply.Type {
		case msgTable:
			err = checkTable(reply.Members, cfg.Size)
			if err == nil {
				return c, reply.Members, nil
			}
			err = fmt.Errorf("rendezvous: bad address table from %s: %w", server, err)
		default:
			err = c.failure(reply)
		}
	} else {
		err = fmt.Errorf("rendezvous: joining %s at %s as %s: %w", server, addr, cfg.nodeName(self.Index), err)
	}
	c.closeLocked(false)
	return nil, nil, err
}

func checkTable(table []Member, size int) error {
	if len(table) != size {
		return fmt.Errorf("%d entries for %d nodes", len(table), size)
	}
	for i, m := range table {
		if m.Index != i {
			return fmt.Errorf("entry %d is node %d", i, m.Index)
		}
	}
	return nil
}

// failure turns the server's fail or reject answer into this node's error.
func (c *RendezvousClient) failure(reply rvMessage) error {
	switch reply.Type {
	case msgReject:
		return &ConfigError{Err: fmt.Errorf("rendezvous: the server on %s at %s refused %s: %s", c.cfg.nodeName(0), c.addr, c.cfg.nodeName(c.self.Index), reply.Error)}
	case msgFail:
		switch {
		case reply.Stopping:
			return &PeerStoppedError{Reason: reply.Error}
		case reply.Config:
			return &ConfigError{Err: errors.New(reply.Error)}
		}
		return &VerdictError{Msg: reply.Error}
	}
	return fmt.Errorf("rendezvous: unexpected %q answer from the server on %s", reply.Type, c.cfg.nodeName(0))
}

// roundTrip sends one message and reads the answer (c.mu held). wait bounds
// the wait for the answer (0: only ctx does). After an error the client is
// unusable: a late answer would be taken for the next one.
func (c *RendezvousClient) roundTrip(ctx context.Context, msg rvMessage, wait time.Duration) (rvMessage, error) {
	if c.broken != nil {
		return rvMessage{}, c.broken
	}
	if c.closed {
		return rvMessage{}, errors.New("rendezvous client is closed")
	}
	msg.Job, msg.Token = c.cfg.JobID, c.cfg.Token
	reply, err := c.exchange(ctx, msg, wait)
	if err != nil {
		c.broken = err
	}
	return reply, err
}

func (c *RendezvousClient) exchange(ctx context.Context, msg rvMessage, wait time.Duration) (rvMessage, error) {
	_ = c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.conn.Write(encode(msg)); err != nil {
		return rvMessage{}, fmt.Errorf("sending to the server: %w", err)
	}
	var dl time.Time
	if wait > 0 {
		dl = time.Now().Add(wait)
	}
	_ = c.conn.SetReadDeadline(dl)
	// Set after the deadline above so that an already-ended ctx wins.
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = c.conn.SetReadDeadline(time.Unix(1, 0))
		close(fired)
	})
	ok := c.sc.Scan()
	if !stop() {
		// Let it finish, or it could cut short the next exchange's read.
		<-fired
	}
	if !ok {
		if ctx.Err() != nil {
			return rvMessage{}, context.Cause(ctx)
		}
		if err := c.sc.Err(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return rvMessage{}, fmt.Errorf("no answer from the server within %s", wait)
			}
			return rvMessage{}, fmt.Errorf("connection to the server lost: %w", err)
		}
		return rvMessage{}, errors.New("the server closed the connection (did node 0 exit?)")
	}
	var reply rvMessage
	if err := json.Unmarshal(c.sc.Bytes(), &reply); err != nil {
		return rvMessage{}, fmt.Errorf("malformed answer from the server: %w", err)
	}
	if reply.Type == msgReject {
		// A refusal carries no token: the server does not hand it to strangers.
		return reply, nil
	}
	if reply.Job != c.cfg.JobID {
		return rvMessage{}, fmt.Errorf("the server at %s serves job %q, not job %q", c.addr, reply.Job, c.cfg.JobID)
	}
	if subtle.ConstantTimeCompare([]byte(reply.Token), []byte(c.cfg.Token)) != 1 {
		return rvMessage{}, fmt.Errorf("the server at %s answered with a different job token", c.addr)
	}
	return reply, nil
}

// Barrier waits until every node has arrived at the named barrier, then all
// are released together. problem is "" when this node is fine; if any node
// reports a problem, every node gets the same error naming each failing node.
// If ctx has a deadline, the server fails the barrier shortly before it with
// an error naming the nodes that did not arrive; a node that disconnects
// fails the barrier at once.
func (c *RendezvousClient) Barrier(ctx context.Context, name, problem string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	msg := rvMessage{Type: msgBarrier, Barrier: name, Problem: problem}
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		if left <= 0 {
			return fmt.Errorf("barrier %q: %w", name, context.DeadlineExceeded)
		}
		// Leave the server time to say who is missing before ctx ends here.
		msg.Timeout = left - min(left/10, time.Second)
	}
	reply, err := c.roundTrip(ctx, msg, 0)
	if err != nil {
		return fmt.Errorf("barrier %q: %w", name, err)
	}
	if reply.Type == msgRelease && reply.Barrier == name {
		return nil
	}
	return c.failure(reply)
}

// Report sends this node's phase timeline to node 0 and waits until it is
// stored, so that a Close right after cannot lose it.
func (c *RendezvousClient) Report(ctx context.Context, timeline []PhaseTiming) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	reply, err := c.roundTrip(ctx, rvMessage{Type: msgReport, Timeline: timeline}, writeTimeout)
	if err != nil {
		return fmt.Errorf("reporting the timeline: %w", err)
	}
	if reply.Type != msgAck {
		return c.failure(reply)
	}
	return nil
}

// Close says goodbye (node 0 then logs a normal departure, not a lost node)
// and closes the connection.
func (c *RendezvousClient) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(true)
}

func (c *RendezvousClient) closeLocked(bye bool) {
	if c.closed {
		return
	}
	c.closed = true
	if bye && c.broken == nil {
		_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.conn.Write(encode(rvMessage{Type: msgBye, Job: c.cfg.JobID, Token: c.cfg.Token}))
	}
	c.conn.Close()
}
