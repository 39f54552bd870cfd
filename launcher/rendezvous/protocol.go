// Package rendezvous is how the launchers of one job meet and stay together:
// node 0 runs a Server, every node (node 0 included) keeps one TCP connection
// to it (a Client) for the whole job and exchanges newline-delimited JSON
// messages on it.
//
// Every connection is authenticated first by a challenge–response on the
// job's key (HMAC-SHA256; the key itself is never sent), so only holders of
// the job's secret can join; what an unauthenticated peer can cost is
// bounded (pending connections, bytes and seconds before authentication).
//
// The server answers every node at once: the address table when all have
// joined, one barrier's release (with node 0's payload, so node 0 can
// broadcast a decision) when all have arrived, or one aggregated failure that
// every node reports identically. Both sides read the connection all the
// time and send heartbeats: a node that fails tells node 0, which tells every
// node (an abort); a node whose connection closes without a word, or that
// stays silent longer than the peer timeout, is declared lost and the job is
// aborted the same way; when node 0 is lost, every client aborts by itself.
package rendezvous

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/wideep/wideep-launch/launcher/exitcode"
)

// Member is one node as it joins: who it is, where it is reachable, what
// its preflight found wrong (nothing, normally), and facts about it that
// only make sense next to the other nodes' (Config.Check compares them).
type Member struct {
	Index    int               `json:"index"`
	Host     string            `json:"host"`
	Addr     string            `json:"addr"`
	Problems []string          `json:"problems,omitempty"`
	Facts    map[string]string `json:"facts,omitempty"`
}

// Config is shared by the server and the clients; every node must have the
// same JobID, Key and Size.
type Config struct {
	JobID string
	// Key authenticates every connection (see LoadKey). It never goes on the
	// wire, in a log or in an error.
	Key  []byte
	Size int // number of nodes
	// Hosts are the expected host names by node index; they name the nodes
	// in errors and are checked against what joining nodes claim. May be nil.
	Hosts []string
	// Deadline bounds the join: the server fails the rendezvous this long
	// after it starts, and a client stops trying to reach the server this
	// long after it starts. Zero means DefaultDeadline.
	Deadline time.Duration
	// PeerTimeout is how long a peer may stay silent before it is declared
	// lost; heartbeats go every PeerTimeout/3. Zero means DefaultPeerTimeout.
	PeerTimeout time.Duration
	Log         zerolog.Logger
	// Check, on node 0, judges the nodes that joined side by side (say, the
	// GPUs of one worker's nodes from their Facts) before the verdict: what
	// it returns by node index counts as that node's preflight problems.
	// May be nil.
	Check func(members []Member) map[int][]string
}

// DefaultDeadline leaves room for nodes whose launcher starts late
// (slow prolog, container image pull on first use).
const DefaultDeadline = 5 * time.Minute

// DefaultPeerTimeout is long enough for a loaded node's scheduler hiccup
// (three heartbeats missed in a row), short enough that a dead node ends the
// job within seconds instead of leaving 31 GPUs hanging in NCCL.
const DefaultPeerTimeout = 10 * time.Second

const (
	// Before a connection has authenticated it gets little of everything:
	// it may be anything that found the port. maxPending unauthenticated
	// connections at most, or twice the job's nodes when that is more (all
	// nodes of a large job connect at once); the oldest is dropped for a new
	// one, so a flood cannot lock the real nodes out: they authenticate
	// within a millisecond of connecting, and retry if dropped. authTimeout
	// in all to authenticate, and maxAuthLine bytes for the join.
	maxPending  = 64
	authTimeout = 5 * time.Second
	maxAuthLine = 64 << 10

	maxServerLine = 1 << 20
	maxClientLine = 64 << 20 // the table of a very large job
	writeTimeout  = 10 * time.Second
	// A client keeps waiting this much longer than the server's deadline so
	// that it gets the server's explanation rather than its own timeout.
	answerSlack = 5 * time.Second
	outQueue    = 16
	// closeFlush bounds how long Close waits for queued messages to go out.
	closeFlush = 2 * time.Second
	nonceBytes = 16
)

const (
	msgChallenge = "challenge" // server → client, first: the server's nonce
	msgJoin      = "join"      // client → server: member, client nonce, MAC
	msgWelcome   = "welcome"   // server → client: the server's MAC (mutual authentication)
	msgTable     = "table"
	msgBarrier   = "barrier"
	msgRelease   = "release"
	msgReport    = "report"
	msgAck       = "ack"
	msgFail      = "fail"   // aggregated failure, the same for every node
	msgReject    = "reject" // this connection is refused
	msgAbort     = "abort"  // the job is ending because of one node
	msgPing      = "ping"   // heartbeat, both directions
	msgNotice    = "notice" // server → every client: news about the job (READY), nothing to answer
	msgBye       = "bye"
)

type message struct {
	Type    string          `json:"type"`
	Job     string          `json:"job,omitempty"`
	Nonce   string          `json:"nonce,omitempty"`
	MAC     string          `json:"mac,omitempty"`
	Member  *Member         `json:"member,omitempty"`
	Members []Member        `json:"members,omitempty"`
	Barrier string          `json:"barrier,omitempty"`
	Problem string          `json:"problem,omitempty"`
	Timeout time.Duration   `json:"timeout_ns,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"` // a report; node 0's barrier arrival, echoed in the release
	Error   string          `json:"error,omitempty"`
	Config  bool            `json:"config,omitempty"` // the failure is the user's to fix: exit 2
	// An abort: which node ends the job, and how.
	Node    int  `json:"node,omitempty"`
	Stopped bool `json:"stopped,omitempty"` // it was stopped (a signal), it did not fail
	Lost    bool `json:"lost,omitempty"`    // it vanished without a word
	// A notice's kind; its content is Payload.
	Notice string `json:"notice,omitempty"`
}

// pingLine is a heartbeat as sent; readers recognise it without decoding
// JSON, which is most of what a large job's node 0 would spend on them.
// Written out rather than encoded at init, which cost every start of the
// binary 0.08 ms of reflection; a test checks it is what encode gives.
var pingLine = []byte(`{"type":"` + msgPing + `"}` + "\n")

func isPing(line []byte) bool { return string(line) == string(pingLine[:len(pingLine)-1]) }

func encode(m message) []byte {
	b, err := json.Marshal(m)
	if err != nil {
		panic(err) // only plain data types: cannot happen
	}
	return append(b, '\n')
}

// readLine reads one line of at most max bytes (without the newline).
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > max+1 {
			return nil, fmt.Errorf("message longer than %d bytes", max)
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return nil, err
		}
	}
}

func (cfg Config) check() (Config, error) {
	var errs []error
	if cfg.JobID == "" {
		errs = append(errs, errors.New("no job id"))
	}
	if len(cfg.Key) == 0 {
		errs = append(errs, errors.New("no job key"))
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
	if cfg.PeerTimeout < 0 {
		errs = append(errs, fmt.Errorf("negative peer timeout %s", cfg.PeerTimeout))
	}
	if cfg.Deadline == 0 {
		cfg.Deadline = DefaultDeadline
	}
	if cfg.PeerTimeout == 0 {
		cfg.PeerTimeout = DefaultPeerTimeout
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, fmt.Errorf("rendezvous config: %w", err)
	}
	return cfg, nil
}

// heartbeat is how often each side says it is alive: three chances per
// peer timeout. (Each heartbeat is one small write and one read per node;
// at 1,024 nodes that is what node 0's launcher spends most of its time on.)
func (cfg Config) heartbeat() time.Duration {
	return max(cfg.PeerTimeout/3, 20*time.Millisecond)
}

func (cfg Config) nodeName(i int) string {
	if i >= 0 && i < len(cfg.Hosts) {
		return fmt.Sprintf("node %d (%s)", i, cfg.Hosts[i])
	}
	return fmt.Sprintf("node %d", i)
}

// VerdictError is node 0's decision about the whole job (a barrier failed on
// some node, nodes never arrived, a failed preflight): every node gets the
// same one. Config marks a verdict the user has to fix (a failed preflight, a
// connection refused for a wrong secret): nothing heavy was started.
type VerdictError struct {
	Msg    string
	Config bool
}

func (e *VerdictError) Error() string { return e.Msg }

// ExitCode is exitcode.Input for a verdict the user has to fix, else
// exitcode.Launcher.
func (e *VerdictError) ExitCode() int {
	if e.Config {
		return exitcode.Input
	}
	return exitcode.Launcher
}

// AbortError is the job ending because of one node: it failed (Msg says
// how, naming it), it was stopped (a signal), or it was lost (its launcher
// vanished, or went silent). Every node gets the same one. A node not yet
// at a barrier that failed gets the verdict as an AbortError too; Config
// then says, as in VerdictError, that the user has to fix it.
type AbortError struct {
	Node    int
	Msg     string
	Stopped bool
	Lost    bool
	Config  bool
}

func (e *AbortError) Error() string { return e.Msg }

// ExitCode is exitcode.Launcher: this node did not fail, but the job did,
// and an afternotok dependency or --requeue must see that. A verdict the
// user has to fix is exitcode.Input on every node, told early or not.
func (e *AbortError) ExitCode() int {
	if e.Config {
		return exitcode.Input
	}
	return exitcode.Launcher
}
