package sim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/sethvargo/go-retry"
)

// The torch-style rendezvous of one SGLang worker: node rank 0 listens on the
// port of --dist-init-addr (on every interface, like torch's TCPStore), the
// other ranks connect to --dist-init-addr and say who they are; rank 0 checks
// that everybody agrees on --nnodes and the role and that ranks are unique,
// then acknowledges all at once. Connections stay open for the life of the
// worker, as the real store's do.

const rdzvProto = "wideep-sim-rdzv/1"

// Hello is what each node rank tells rank 0.
type Hello struct {
	Proto  string `json:"proto,omitempty"`
	Rank   int    `json:"rank"`
	NNodes int    `json:"nnodes"`
	Role   string `json:"role"`
	Node   string `json:"node"`
	// Addr is the peer's address as rank 0 saw the connection.
	Addr string `json:"addr,omitempty"`
}

type rdzvReply struct {
	OK     bool    `json:"ok"`
	Error  string  `json:"error,omitempty"`
	NNodes int     `json:"nnodes,omitempty"`
	Peers  []Hello `json:"peers,omitempty"`
}

// RendezvousError is a rendezvous that cannot succeed: a rejected or
// rejecting peer. It is not retried.
type RendezvousError struct{ Msg string }

func (e *RendezvousError) Error() string { return "rendezvous: " + e.Msg }

// rendezvous is a completed rendezvous; Close releases its port and
// connections.
type rendezvous struct {
	Record RendezvousRecord

	mu      sync.Mutex
	ln      net.Listener
	conns   []net.Conn
	closing bool
}

func (r *rendezvous) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closing = true
	if r.ln != nil {
		r.ln.Close()
	}
	for _, c := range r.conns {
		c.Close()
	}
}

// quiet stops reporting lost peers: the worker is stopping, and so are its
// peers, in any order.
func (r *rendezvous) quiet() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closing = true
}

func (r *rendezvous) isClosing() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closing
}

type helloResult struct {
	conn  net.Conn
	hello Hello
	err   error
}

// helloTimeout bounds how long a connected peer may take to say hello; a
// client that connects and says nothing (a port scanner) must not block the
// rendezvous.
const helloTimeout = 10 * time.Second

// serveRendezvous is node rank 0's side. logf reports late or broken peers.
func serveRendezvous(ctx context.Context, host, port string, me Hello, timeout time.Duration, logf func(string, ...any)) (*rendezvous, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, fmt.Errorf("rendezvous: listen on port %s of --dist-init-addr: %w", port, err)
	}
	r := &rendezvous{ln: ln}
	r.Record.Listen = ln.Addr().String()
	me.Addr = r.Record.Listen
	peers := []Hello{me}

	// One accept loop for the life of the listener: hellos go to the
	// rendezvous until it is complete (stopAccept), then they are late.
	results := make(chan helloResult)
	stopAccept := make(chan struct{})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				h, err := readHello(c)
				select {
				case results <- helloResult{c, h, err}:
				case <-stopAccept:
					r.rejectLate(c, h, err, logf)
				}
			}()
		}
	}()
	if me.NNodes <= 1 {
		close(stopAccept)
		r.Record.Peers = peers
		return r, nil
	}

	fail := func(err error) (*rendezvous, error) {
		close(stopAccept)
		for _, c := range r.conns {
			writeJSON(c, rdzvReply{Error: err.Error()})
		}
		r.Close()
		return nil, err
	}

	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for len(peers) < me.NNodes {
		select {
		case <-ctx.Done():
			return fail(context.Cause(ctx))
		case <-deadline.C:
			return fail(&RendezvousError{fmt.Sprintf("timed out after %v waiting for node ranks %v of %d (listening on %s)",
				timeout, missingRanks(peers, me.NNodes), me.NNodes, r.Record.Listen)})
		case res := <-results:
			if res.err != nil {
				logf("rendezvous: ignoring connection from %s: %v", res.conn.RemoteAddr(), res.err)
				res.conn.Close()
				continue
			}
			h := res.hello
			h.Addr = res.conn.RemoteAddr().String()
			r.conns = append(r.conns, res.conn)
			if msg := checkPeer(me, peers, h); msg != "" {
				return fail(&RendezvousError{msg})
			}
			peers = append(peers, h)
		}
	}
	close(stopAccept)
	// peers[i+1] arrived on conns[i]; the acknowledgement lists them by rank.
	sorted := append([]Hello(nil), peers...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Rank < sorted[j].Rank })
	r.Record.Peers = sorted
	for i, c := range r.conns {
		if err := writeJSON(c, rdzvReply{OK: true, NNodes: me.NNodes, Peers: sorted}); err != nil {
			logf("rendezvous: acknowledging %s: %v", c.RemoteAddr(), err)
		}
		go r.watchPeer(c, peers[i+1], logf)
	}
	return r, nil
}

// checkPeer returns why rank 0 rejects h, or "".
func checkPeer(me Hello, peers []Hello, h Hello) string {
	from := fmt.Sprintf("node %s (%s)", h.Node, h.Addr)
	switch {
	case h.NNodes != me.NNodes:
		return fmt.Sprintf("%s says --nnodes %d, but node rank 0 (%s) has --nnodes %d", from, h.NNodes, me.Node, me.NNodes)
	case h.Role != me.Role:
		return fmt.Sprintf("%s is a %s worker, but node rank 0 (%s) at this --dist-init-addr is a %s worker", from, h.Role, me.Node, me.Role)
	case h.Rank <= 0 || h.Rank >= me.NNodes:
		return fmt.Sprintf("%s says --node-rank %d, want 1..%d", from, h.Rank, me.NNodes-1)
	}
	for _, p := range peers {
		if p.Rank == h.Rank {
			return fmt.Sprintf("duplicate node rank %d: node %s (%s) and node %s (%s)", h.Rank, p.Node, p.Addr, h.Node, h.Addr)
		}
	}
	return ""
}

func missingRanks(peers []Hello, nnodes int) []int {
	seen := map[int]bool{}
	for _, p := range peers {
		seen[p.Rank] = true
	}
	var out []int
	for r := 0; r < nnodes; r++ {
		if !seen[r] {
			out = append(out, r)
		}
	}
	return out
}

// watchPeer notices a node rank that went away. A real worker would fail in
// its next collective; the stand-in only logs, since the launcher on that
// node reports the death itself and a teardown closes connections in any
// order.
func (r *rendezvous) watchPeer(c net.Conn, p Hello, logf func(string, ...any)) {
	var buf [64]byte
	for {
		if _, err := c.Read(buf[:]); err != nil {
			if !r.isClosing() {
				logf("rendezvous: lost node rank %d (%s, %s): %v", p.Rank, p.Node, p.Addr, err)
			}
			return
		}
	}
}

// rejectLate answers a connection after the rendezvous completed (or
// failed): a node that arrives now (restarted, or from a wrong plan) must
// fail, not hang.
func (r *rendezvous) rejectLate(c net.Conn, h Hello, helloErr error, logf func(string, ...any)) {
	defer c.Close()
	if helloErr != nil || r.isClosing() {
		return
	}
	logf("rendezvous: rejecting node %s (node rank %d) from %s: rendezvous already complete", h.Node, h.Rank, c.RemoteAddr())
	writeJSON(c, rdzvReply{Error: fmt.Sprintf("rendezvous already complete (node rank %d arrived late from %s)", h.Rank, c.RemoteAddr())})
}

func readHello(c net.Conn) (Hello, error) {
	c.SetReadDeadline(time.Now().Add(helloTimeout))
	line, err := bufio.NewReader(c).ReadBytes('\n')
	c.SetReadDeadline(time.Time{})
	if err != nil {
		return Hello{}, fmt.Errorf("reading hello: %w", err)
	}
	var h Hello
	if err := json.Unmarshal(line, &h); err != nil || h.Proto != rdzvProto {
		return Hello{}, fmt.Errorf("not a rendezvous hello: %.80q", line)
	}
	return h, nil
}

func writeJSON(c net.Conn, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Write(append(data, '\n'))
	c.SetWriteDeadline(time.Time{})
	return err
}

// joinRendezvous is a node rank >0's side: connect to addr, say hello, wait
// for the acknowledgement, retrying while rank 0 is not up yet. A
// connection that ends before any answer is no answer either: rank 0 test-
// binds its ports before it listens for good (SGLang's wait_port_available,
// as this stand-in does), and a connection that lands on that short-lived
// socket is reset.
func joinRendezvous(ctx context.Context, addr string, me Hello, timeout time.Duration, logf func(string, ...any)) (*rendezvous, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, timeout,
		&RendezvousError{fmt.Sprintf("node rank 0 at %s did not complete the rendezvous within %v", addr, timeout)})
	defer cancel()

	me.Proto = rdzvProto
	var lastErr error
	var c net.Conn
	var reply rdzvReply
	b := retry.WithCappedDuration(time.Second, retry.NewExponential(50*time.Millisecond))
	err := retry.Do(ctx, b, func(ctx context.Context) error {
		d := net.Dialer{Timeout: 2 * time.Second}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			lastErr = err
			return retry.RetryableError(err)
		}
		line, err := helloAndAnswer(ctx, conn, me)
		if err != nil {
			conn.Close()
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			lastErr = fmt.Errorf("node rank 0 at %s closed the connection before answering: %v", addr, err)
			logf("rendezvous: %v; trying again", lastErr)
			return retry.RetryableError(lastErr)
		}
		if err := json.Unmarshal(line, &reply); err != nil {
			conn.Close()
			return &RendezvousError{fmt.Sprintf("bad answer from %s: %.80q", addr, line)}
		}
		c = conn
		return nil
	})
	if err != nil {
		if isTerminated(ctx) {
			return nil, context.Cause(ctx)
		}
		var re *RendezvousError
		if lastErr != nil && !errors.As(err, &re) {
			return nil, fmt.Errorf("%w (last: %v)", err, lastErr)
		}
		return nil, err
	}
	if !reply.OK {
		c.Close()
		return nil, &RendezvousError{fmt.Sprintf("node rank 0 at %s rejected node rank %d: %s", addr, me.Rank, reply.Error)}
	}
	if reply.NNodes != me.NNodes {
		c.Close()
		return nil, &RendezvousError{fmt.Sprintf("node rank 0 at %s has %d nodes, this node has --nnodes %d", addr, reply.NNodes, me.NNodes)}
	}
	r := &rendezvous{conns: []net.Conn{c}}
	r.Record.ConnectedTo = c.RemoteAddr().String()
	r.Record.LocalAddr = c.LocalAddr().String()
	r.Record.Peers = reply.Peers
	go r.watchPeer(c, Hello{Rank: 0, Node: nodeOfRank(reply.Peers, 0), Addr: r.Record.ConnectedTo}, logf)
	return r, nil
}

// helloAndAnswer says hello on c and reads rank 0's one-line answer.
// Waiting for the other nodes may take long; a termination must not: ctx
// ending closes c.
func helloAndAnswer(ctx context.Context, c net.Conn, me Hello) ([]byte, error) {
	if err := writeJSON(c, me); err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	return bufio.NewReader(c).ReadBytes('\n')
}

func nodeOfRank(peers []Hello, rank int) string {
	for _, p := range peers {
		if p.Rank == rank {
			return p.Node
		}
	}
	return "?"
}
