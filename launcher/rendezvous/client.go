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

	"github.com/sethvargo/go-retry"
)

// Client is one node's connection to the rendezvous, kept for the whole
// job. A reader goroutine reads it all the time (answers, heartbeats, an
// abort) and a heartbeat goroutine writes to it, so a lost node 0 is noticed
// within the peer timeout whatever the node is doing. Requests (Barrier,
// Report) are serialized.
type Client struct {
	cfg  Config
	addr string
	self Member

	conn      net.Conn
	br        *bufio.Reader
	writeMu   sync.Mutex
	reqMu     sync.Mutex
	replies   chan message // answers to the one request in flight
	lastHeard atomic.Int64
	closing   atomic.Bool
	final     atomic.Bool   // the join failed: the server will hang up
	done      chan struct{} // closed when the reader and heartbeats have stopped
	broken    error         // under reqMu: the connection cannot be trusted to be in step

	abortOnce sync.Once
	aborted   chan struct{}
	abortErr  *AbortError
	notices   chan Notice
}

// Notice is news node 0 sent every node (Server.Notify).
type Notice struct {
	Kind    string
	Payload json.RawMessage
}

// Notices delivers node 0's notices, in order. A client that does not read
// them loses the newest ones, never its connection.
func (c *Client) Notices() <-chan Notice { return c.notices }

// Join connects to the server at addr (retrying until the deadline: node 0
// may start later than this node), authenticates, joins as self and waits
// until the server answers. It returns the address table indexed by node, or
// the one aggregated failure every node gets: a *VerdictError with Config set
// when preflight failed somewhere or this node was refused, so that every
// node exits with code 2; an *AbortError when the job ended meanwhile.
func Join(ctx context.Context, addr string, cfg Config, self Member) (*Client, []Member, error) {
	cfg, err := cfg.check()
	if err != nil {
		return nil, nil, err
	}
	server := cfg.nodeName(0)
	c, err := connect(ctx, addr, cfg, self)
	if err != nil {
		return nil, nil, err
	}
	c.lastHeard.Store(time.Now().UnixNano())
	go c.run()

	c.reqMu.Lock()
	defer c.reqMu.Unlock()
	reply, err := c.await(ctx, cfg.Deadline+answerSlack)
	if err == nil {
		switch reply.Type {
		case msgTable:
			if err = checkTable(reply.Members, cfg.Size); err == nil {
				return c, reply.Members, nil
			}
			err = fmt.Errorf("rendezvous: bad address table from %s: %w", server, err)
		default:
			err = c.failure(reply)
		}
	} else {
		var ae *AbortError
		if !errors.As(err, &ae) {
			err = fmt.Errorf("rendezvous: joining %s at %s as %s: %w", server, addr, cfg.nodeName(self.Index), err)
		}
	}
	// A goodbye: an abort can come right behind the table (a fast node
	// failed the first barrier already), and leaving without a word would
	// have node 0 declare this node lost, telling everyone a vaguer story.
	c.shut(true)
	return nil, nil, err
}

// connect reaches the server and authenticates, retrying until the
// deadline: node 0 may not listen yet, and a server under a flood of
// connections may have dropped this one before it authenticated. A verdict
// (a refusal, another job) is final at once.
func connect(ctx context.Context, addr string, cfg Config, self Member) (*Client, error) {
	server := cfg.nodeName(0)
	dctx, cancel := context.WithTimeout(ctx, cfg.Deadline)
	defer cancel()
	var last error
	d := net.Dialer{Timeout: time.Second}
	b := retry.WithCappedDuration(time.Second, retry.WithJitterPercent(20, retry.NewExponential(20*time.Millisecond)))
	c, err := retry.DoValue(dctx, b, func(ctx context.Context) (*Client, error) {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			last = err
			return nil, retry.RetryableError(err)
		}
		c := &Client{cfg: cfg, addr: addr, self: self, conn: conn, br: bufio.NewReaderSize(conn, 64<<10),
			replies: make(chan message, 1), done: make(chan struct{}), aborted: make(chan struct{}),
			notices: make(chan Notice, 16)}
		if err := c.handshake(); err != nil {
			conn.Close()
			var ve *VerdictError
			if errors.As(err, &ve) {
				return nil, err
			}
			last = err
			return nil, retry.RetryableError(err)
		}
		return c, nil
	})
	if err == nil {
		return c, nil
	}
	var ve *VerdictError
	if errors.As(err, &ve) {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("rendezvous: joining %s at %s: %w", server, addr, context.Cause(ctx))
	}
	return nil, fmt.Errorf("rendezvous: could not reach the server on %s at %s within %s (last error: %v)", server, addr, cfg.Deadline, last)
}

// handshake answers the server's challenge and checks the server's proof.
func (c *Client) handshake() error {
	server := c.cfg.nodeName(0)
	_ = c.conn.SetDeadline(time.Now().Add(authTimeout))
	defer c.conn.SetDeadline(time.Time{})
	read := func() (message, error) {
		line, err := readLine(c.br, maxClientLine)
		if err != nil {
			return message{}, fmt.Errorf("rendezvous: authenticating with %s at %s: %w", server, c.addr, err)
		}
		var m message
		if err := json.Unmarshal(line, &m); err != nil {
			return message{}, fmt.Errorf("rendezvous: malformed answer from %s at %s: %w", server, c.addr, err)
		}
		return m, nil
	}
	ch, err := read()
	if err != nil {
		return err
	}
	if ch.Type != msgChallenge || ch.Nonce == "" {
		return fmt.Errorf("rendezvous: %s at %s did not send a challenge (got %q): not a wideep-launch rendezvous?", server, c.addr, ch.Type)
	}
	if ch.Job != c.cfg.JobID {
		return &VerdictError{Config: true, Msg: fmt.Sprintf("rendezvous: the server at %s serves job %q, not job %q (another job on the same port? set --rendezvous-port)", c.addr, ch.Job, c.cfg.JobID)}
	}
	nonce := newNonce()
	join := message{Type: msgJoin, Job: c.cfg.JobID, Member: &c.self, Nonce: nonce,
		MAC: joinMAC(c.cfg.Key, c.cfg.JobID, c.self, ch.Nonce, nonce)}
	if _, err := c.conn.Write(encode(join)); err != nil {
		return fmt.Errorf("rendezvous: sending the join to %s at %s: %w", server, c.addr, err)
	}
	w, err := read()
	if err != nil {
		return err
	}
	switch {
	case w.Type == msgReject:
		return c.failure(w)
	case w.Type != msgWelcome || !validMAC(w.MAC, welcomeMAC(c.cfg.Key, c.cfg.JobID, ch.Nonce, nonce)):
		return &VerdictError{Config: true, Msg: fmt.Sprintf("rendezvous: the server at %s did not prove it knows job %s's secret: another user's listener on the rendezvous port?", c.addr, c.cfg.JobID)}
	}
	return nil
}

// run reads every message and sends heartbeats until the connection ends.
func (c *Client) run() {
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() { c.heartbeats(stop) })
	defer func() {
		close(stop)
		wg.Wait()
		close(c.done)
	}()
	for {
		line, err := readLine(c.br, maxClientLine)
		if err != nil {
			if !c.closing.Load() && !c.final.Load() {
				c.abort(&AbortError{Node: 0, Lost: true, Msg: fmt.Sprintf("%s lost: its launcher's connection closed without a word (%v)", c.cfg.nodeName(0), err)})
			}
			return
		}
		c.lastHeard.Store(time.Now().UnixNano())
		if isPing(line) {
			continue
		}
		var m message
		if err := json.Unmarshal(line, &m); err != nil {
			c.abort(&AbortError{Node: 0, Lost: true, Msg: fmt.Sprintf("%s sent a malformed message: %v", c.cfg.nodeName(0), err)})
			c.conn.Close()
			return
		}
		switch m.Type {
		case msgPing:
		case msgAbort:
			c.abort(&AbortError{Node: m.Node, Msg: m.Error, Stopped: m.Stopped, Lost: m.Lost, Config: m.Config})
		case msgNotice:
			select {
			case c.notices <- Notice{Kind: m.Notice, Payload: m.Payload}:
			default:
			}
		default:
			if m.Type == msgFail || m.Type == msgReject {
				// The server's last word on the join: its hanging up after
				// it is no lost node 0.
				c.final.Store(m.Barrier == "")
			}
			select {
			case c.replies <- m:
			default:
				// Nobody asked: the protocol is out of step.
				c.abort(&AbortError{Node: 0, Lost: true, Msg: fmt.Sprintf("%s sent an unexpected %q message", c.cfg.nodeName(0), m.Type)})
				c.conn.Close()
				return
			}
		}
	}
}

func (c *Client) heartbeats(stop <-chan struct{}) {
	t := time.NewTicker(c.cfg.heartbeat())
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if silent := time.Since(time.Unix(0, c.lastHeard.Load())); silent > c.cfg.PeerTimeout {
			c.abort(&AbortError{Node: 0, Lost: true, Msg: fmt.Sprintf("%s lost: no word from it for %s (its launcher hangs, or its node or the network is down)",
				c.cfg.nodeName(0), silent.Round(time.Millisecond))})
			c.conn.Close()
			return
		}
		_ = c.write(pingLine)
	}
}

func (c *Client) write(b []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := c.conn.Write(b)
	return err
}

func (c *Client) abort(e *AbortError) {
	c.abortOnce.Do(func() {
		c.abortErr = e
		close(c.aborted)
	})
}

// Aborted is closed when the job is ending because of another node (it
// failed, was stopped or was lost) or because node 0 is lost; Err then says
// which and why.
func (c *Client) Aborted() <-chan struct{} { return c.aborted }

// Err is why the job is ending, once Aborted is closed; nil before.
func (c *Client) Err() *AbortError {
	select {
	case <-c.aborted:
		return c.abortErr
	default:
		return nil
	}
}

// FirstAbort waits up to wait for node 0's answer to this node's Abort and
// says which abort ends the job: this node's own (first), or another node's
// that came before it (then this node's failure may be a consequence of
// it). nil when no answer came in time or the connection is gone.
func (c *Client) FirstAbort(wait time.Duration) *AbortError {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-c.aborted:
		return c.abortErr
	case <-c.done:
	case <-t.C:
	}
	return c.Err()
}

// Abort tells node 0, which tells every other node, that the job ends
// because of this node: it failed (msg says how, naming it) or it was
// stopped. It does not wait for an answer; the caller stops next.
func (c *Client) Abort(msg string, stopped bool) {
	if c.Err() != nil || c.closing.Load() {
		return // the job is ending already, or this node has left
	}
	_ = c.write(encode(message{Type: msgAbort, Node: c.self.Index, Error: msg, Stopped: stopped}))
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
func (c *Client) failure(reply message) error {
	switch reply.Type {
	case msgReject:
		return &VerdictError{Config: true, Msg: fmt.Sprintf("rendezvous: the server on %s at %s refused %s: %s", c.cfg.nodeName(0), c.addr, c.cfg.nodeName(c.self.Index), reply.Error)}
	case msgFail:
		return &VerdictError{Msg: reply.Error, Config: reply.Config}
	case msgAbort:
		return &AbortError{Node: reply.Node, Msg: reply.Error, Stopped: reply.Stopped, Lost: reply.Lost, Config: reply.Config}
	}
	return fmt.Errorf("rendezvous: unexpected %q answer from the server on %s", reply.Type, c.cfg.nodeName(0))
}

// request sends one message and waits for its answer (c.reqMu held). wait
// bounds the wait for the answer (0: only ctx does). After an error the
// client is unusable for requests: a late answer would be taken for the next
// one.
func (c *Client) request(ctx context.Context, msg message, wait time.Duration) (message, error) {
	if ae := c.Err(); ae != nil {
		return message{}, ae
	}
	if c.broken != nil {
		return message{}, c.broken
	}
	if c.closing.Load() {
		return message{}, errors.New("rendezvous client is closed")
	}
	msg.Job = c.cfg.JobID
	if err := c.write(encode(msg)); err != nil {
		c.broken = fmt.Errorf("sending to the server: %w", err)
		return message{}, c.broken
	}
	reply, err := c.await(ctx, wait)
	if err != nil {
		c.broken = err
	}
	return reply, err
}

// await waits for the answer to the request in flight (c.reqMu held).
func (c *Client) await(ctx context.Context, wait time.Duration) (message, error) {
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case m := <-c.replies:
		// An answer that raced an abort (a barrier failing because the
		// node that ended the job is gone): the abort says more.
		if ae := c.Err(); ae != nil {
			return message{}, ae
		}
		return m, nil
	case <-c.aborted:
		return message{}, c.abortErr
	case <-ctx.Done():
		return message{}, context.Cause(ctx)
	case <-timeout:
		return message{}, fmt.Errorf("no answer from the server within %s", wait)
	}
}

// Barrier waits until every node has arrived at the named barrier, then all
// are released together. problem is "" when this node is fine; if any node
// reports a problem, every node gets the same error naming each failing node.
// If ctx has a deadline, the server fails the barrier shortly before it with
// an error naming the nodes that did not arrive; a node that disconnects
// fails the barrier at once.
func (c *Client) Barrier(ctx context.Context, name, problem string) error {
	_, err := c.BarrierWith(ctx, name, problem, nil)
	return err
}

// BarrierWith is Barrier carrying node 0's decision: the payload node 0
// arrives with (the others' is ignored) is what every node's BarrierWith
// returns on release, so node 0 can decide while the others wait (who
// compiles what, where an image is) and tell them all at once.
func (c *Client) BarrierWith(ctx context.Context, name, problem string, payload json.RawMessage) (json.RawMessage, error) {
	return c.barrier(ctx, message{Type: msgBarrier, Barrier: name, Problem: problem, Payload: payload})
}

// CheckBarrier is Barrier for a check whose problem is the user's to fix
// (the image holds another SGLang than the plan assumes): the failure every
// node gets is a *VerdictError with Config set, so every node exits 2.
func (c *Client) CheckBarrier(ctx context.Context, name, problem string) error {
	_, err := c.barrier(ctx, message{Type: msgBarrier, Barrier: name, Problem: problem, Config: problem != ""})
	return err
}

func (c *Client) barrier(ctx context.Context, msg message) (json.RawMessage, error) {
	name := msg.Barrier
	c.reqMu.Lock()
	defer c.reqMu.Unlock()
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		if left <= 0 {
			return nil, fmt.Errorf("barrier %q: %w", name, context.DeadlineExceeded)
		}
		// Leave the server time to say who is missing before ctx ends here.
		msg.Timeout = left - min(left/10, time.Second)
	}
	reply, err := c.request(ctx, msg, 0)
	if err != nil {
		var ae *AbortError
		if errors.As(err, &ae) {
			return nil, err
		}
		return nil, fmt.Errorf("barrier %q: %w", name, err)
	}
	if reply.Type == msgRelease && reply.Barrier == name {
		return reply.Payload, nil
	}
	return nil, c.failure(reply)
}

// Report sends this node's report (its startup timeline, say) to node 0 and
// waits until it is stored, so that a Close right after cannot lose it.
// Server.Reports returns them; a later report replaces an earlier one.
// Unlike the other requests it still works once the job is aborting: a
// node's last report (why it failed, how far it got) matters most then.
func (c *Client) Report(ctx context.Context, payload json.RawMessage) error {
	c.reqMu.Lock()
	defer c.reqMu.Unlock()
	// A request cut short by the abort (a barrier) leaves the connection out
	// of step for requests, not for this one: its late answer is no ack, and
	// is skipped below.
	select {
	case <-c.done:
		return errors.New("sending the report: the connection to node 0 is gone")
	default:
	}
	if c.closing.Load() {
		return errors.New("sending the report: rendezvous client is closed")
	}
	if err := c.write(encode(message{Type: msgReport, Job: c.cfg.JobID, Payload: payload})); err != nil {
		c.broken = fmt.Errorf("sending to the server: %w", err)
		return fmt.Errorf("sending the report: %w", c.broken)
	}
	t := time.NewTimer(writeTimeout)
	defer t.Stop()
	for {
		select {
		case reply := <-c.replies:
			switch reply.Type {
			case msgAck:
				return nil
			case msgReject:
				return c.failure(reply)
			}
			// A late answer to an earlier, interrupted request.
			continue
		case <-c.done:
			return errors.New("sending the report: the connection to node 0 is gone")
		case <-t.C:
		case <-ctx.Done():
		}
		// The ack may still come: nothing else can be asked on this connection.
		c.broken = errors.New("node 0 did not acknowledge a report")
		return fmt.Errorf("sending the report: %w", c.broken)
	}
}

// Close says goodbye (node 0 then logs a normal departure, not a lost node)
// and closes the connection.
func (c *Client) Close() { c.shut(true) }

func (c *Client) shut(bye bool) {
	if c.closing.Swap(true) {
		<-c.done
		return
	}
	if bye {
		c.writeMu.Lock()
		_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.conn.Write(encode(message{Type: msgBye}))
		c.writeMu.Unlock()
	}
	c.conn.Close()
	<-c.done
}
