package rendezvous

import (
	"bufio"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/sethvargo/go-retry"
)

// Client is one node's connection to the rendezvous. Its methods
// are not meant to be called concurrently; they are serialized.
type Client struct {
	cfg  Config
	addr string
	self Member

	mu     sync.Mutex
	conn   net.Conn
	sc     *bufio.Scanner
	broken error // once set, the connection cannot be trusted to be in step
	closed bool
}

// Join connects to the server at addr (retrying until the deadline:
// node 0 may start later than this node), joins as self and waits until the
// server answers. It returns the address table indexed by node, or the one
// aggregated failure every node gets: a *VerdictError with Config set when
// preflight failed somewhere or this node was refused, so that every node
// exits with code 2.
func Join(ctx context.Context, addr string, cfg Config, self Member) (*Client, []Member, error) {
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
	c := &Client{cfg: cfg, addr: addr, self: self, conn: conn, sc: bufio.NewScanner(conn)}
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
func (c *Client) failure(reply rvMessage) error {
	switch reply.Type {
	case msgReject:
		return &VerdictError{Config: true, Msg: fmt.Sprintf("rendezvous: the server on %s at %s refused %s: %s", c.cfg.nodeName(0), c.addr, c.cfg.nodeName(c.self.Index), reply.Error)}
	case msgFail:
		switch {
		case reply.Stopping:
			return &PeerStoppedError{Reason: reply.Error}
		}
		return &VerdictError{Msg: reply.Error, Config: reply.Config}
	}
	return fmt.Errorf("rendezvous: unexpected %q answer from the server on %s", reply.Type, c.cfg.nodeName(0))
}

// roundTrip sends one message and reads the answer (c.mu held). wait bounds
// the wait for the answer (0: only ctx does). After an error the client is
// unusable: a late answer would be taken for the next one.
func (c *Client) roundTrip(ctx context.Context, msg rvMessage, wait time.Duration) (rvMessage, error) {
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

func (c *Client) exchange(ctx context.Context, msg rvMessage, wait time.Duration) (rvMessage, error) {
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
func (c *Client) Barrier(ctx context.Context, name, problem string) error {
	_, err := c.BarrierWith(ctx, name, problem, nil)
	return err
}

// BarrierWith is Barrier carrying node 0's decision: the payload node 0
// arrives with (the others' is ignored) is what every node's BarrierWith
// returns on release, so node 0 can decide while the others wait (who
// compiles what, where an image is) and tell them all at once.
func (c *Client) BarrierWith(ctx context.Context, name, problem string, payload json.RawMessage) (json.RawMessage, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	msg := rvMessage{Type: msgBarrier, Barrier: name, Problem: problem, Payload: payload}
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		if left <= 0 {
			return nil, fmt.Errorf("barrier %q: %w", name, context.DeadlineExceeded)
		}
		// Leave the server time to say who is missing before ctx ends here.
		msg.Timeout = left - min(left/10, time.Second)
	}
	reply, err := c.roundTrip(ctx, msg, 0)
	if err != nil {
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
func (c *Client) Report(ctx context.Context, payload json.RawMessage) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	reply, err := c.roundTrip(ctx, rvMessage{Type: msgReport, Payload: payload}, writeTimeout)
	if err != nil {
		return fmt.Errorf("sending the report: %w", err)
	}
	if reply.Type != msgAck {
		return c.failure(reply)
	}
	return nil
}

// Close says goodbye (node 0 then logs a normal departure, not a lost node)
// and closes the connection.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(true)
}

func (c *Client) closeLocked(bye bool) {
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
