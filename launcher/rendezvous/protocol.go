// Package rendezvous is how the launchers of one job meet: node 0 runs a
// Server, every node (node 0 included) keeps one TCP connection to it for the
// whole job (a Client) and exchanges newline-delimited JSON messages. The
// server answers every node at once: the address table when all have joined,
// one barrier's release (with node 0's payload, so node 0 can broadcast a
// decision) when all have arrived, or one aggregated failure that every node
// reports identically.
package rendezvous

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"github.com/wideep/wideep-launch/launcher/exitcode"
)

// Member is one node as it joins: who it is, where it is reachable, and what
// its preflight found wrong (nothing, normally).
type Member struct {
	Index    int      `json:"index"`
	Host     string   `json:"host"`
	Addr     string   `json:"addr"`
	Problems []string `json:"problems,omitempty"`
}

// Config is shared by the server and the clients; every node must
// have the same JobID, Token and Size.
type Config struct {
	JobID string
	Token string // see JobToken
	Size  int    // number of nodes
	// Hosts are the expected host names by node index; they name the nodes
	// in errors and are checked against what joining nodes claim. May be nil.
	Hosts []string
	// Deadline bounds the join: the server fails the rendezvous this long
	// after it starts, and a client stops trying to reach the server this
	// long after it starts. Zero means DefaultDeadline.
	Deadline time.Duration
	Log      zerolog.Logger
}

// DefaultDeadline leaves room for nodes whose launcher starts late
// (slow prolog, container image pull on first use).
const DefaultDeadline = 5 * time.Minute

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
	Type     string          `json:"type"`
	Job      string          `json:"job"`
	Token    string          `json:"token,omitempty"`
	Member   *Member         `json:"member,omitempty"`
	Members  []Member        `json:"members,omitempty"`
	Barrier  string          `json:"barrier,omitempty"`
	Problem  string          `json:"problem,omitempty"`
	Timeout  time.Duration   `json:"timeout_ns,omitempty"`
	Payload  json.RawMessage `json:"payload,omitempty"` // a report; node 0's barrier arrival, echoed in the release
	Error    string          `json:"error,omitempty"`
	Config   bool            `json:"config,omitempty"`   // the failure is the user's to fix: exit 2
	Stopping bool            `json:"stopping,omitempty"` // node 0 is stopping; not a verdict on this node
}

func encode(m rvMessage) []byte {
	b, err := json.Marshal(m)
	if err != nil {
		panic(err) // only plain data types: cannot happen
	}
	return append(b, '\n')
}

func (cfg Config) check() (Config, error) {
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
		cfg.Deadline = DefaultDeadline
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, fmt.Errorf("rendezvous config: %w", err)
	}
	return cfg, nil
}

func (cfg Config) nodeName(i int) string {
	if i >= 0 && i < len(cfg.Hosts) {
		return fmt.Sprintf("node %d (%s)", i, cfg.Hosts[i])
	}
	return fmt.Sprintf("node %d", i)
}

// Server runs on node 0.
// VerdictError is node 0's decision about the whole job (a barrier failed on
// some node, nodes never arrived, a failed preflight): every node gets the
// same one. Config marks a verdict the user has to fix (a failed preflight, a
// connection refused for a wrong job token): nothing heavy was started.
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

// PeerStoppedError says node 0 is stopping (it was signalled, or one of its
// processes ended); Reason says why. It is no verdict on this node.
type PeerStoppedError struct{ Reason string }

func (e *PeerStoppedError) Error() string { return "rendezvous: " + e.Reason }

// ExitCode is exitcode.Launcher: this node did not fail, but it cannot go
// on without node 0. (A node that is itself being stopped reports its stop
// instead.)
func (e *PeerStoppedError) ExitCode() int { return exitcode.Launcher }
