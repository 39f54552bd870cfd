// Package infra probes the control plane the workers need before they start:
// etcd (GET /health) and NATS (its INFO line, JetStream on). Each wait is
// bounded by its context and keeps the last failed attempt, so the user sees
// "connection refused" or "health false", not just "deadline exceeded".
package infra

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sethvargo/go-retry"
)

// Readiness checks of the control plane (etcd, NATS), run on the infra node
// before the other nodes are released. ctx bounds the wait; the error keeps
// the last failed attempt so the user sees "connection refused" or "health
// false", not just "deadline exceeded".

// infraBackoff is a fresh backoff for one wait (backoffs keep state).
func infraBackoff() retry.Backoff {
	return retry.WithCappedDuration(2*time.Second, retry.WithJitterPercent(10, retry.NewExponential(100*time.Millisecond)))
}

// infraAttemptTimeout bounds one probe, so a server that accepts but never
// answers does not eat the whole wait.
const infraAttemptTimeout = 3 * time.Second

// WaitEtcd waits until etcd answers GET <endpoint>/health with
// {"health":"true"}. endpoint is a client URL (http://host:2379) or an
// ETCD_ENDPOINTS list, ready when any member is healthy.
func WaitEtcd(ctx context.Context, endpoint string) error {
	eps := splitEndpoints(endpoint, "http")
	if len(eps) == 0 {
		return fmt.Errorf("no etcd endpoint given")
	}
	client := &http.Client{Timeout: infraAttemptTimeout}
	var lastErr error
	err := retry.Do(ctx, infraBackoff(), func(ctx context.Context) error {
		var errs []error
		for _, ep := range eps {
			err := etcdHealth(ctx, client, ep)
			if err == nil {
				return nil
			}
			errs = append(errs, err)
		}
		err := errors.Join(errs...)
		keepLast(&lastErr, err, ctx)
		return retry.RetryableError(err)
	})
	if err != nil {
		return waitError("etcd", endpoint, err, lastErr)
	}
	return nil
}

func etcdHealth(ctx context.Context, client *http.Client, ep string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(ep, "/")+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("%s/health: %w", ep, err)
	}
	var h struct {
		Health string `json:"health"`
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal(body, &h); err != nil {
		return fmt.Errorf("%s/health: HTTP %d, not an etcd answer: %.120q", ep, resp.StatusCode, body)
	}
	if h.Health != "true" {
		msg := fmt.Sprintf("%s/health: HTTP %d, health %q", ep, resp.StatusCode, h.Health)
		if h.Reason != "" {
			msg += " (" + h.Reason + ")"
		}
		return errors.New(msg)
	}
	return nil
}

// NATSInfo is the part of a NATS server's INFO line the launcher checks.
type NATSInfo struct {
	ServerID     string `json:"server_id"`
	Version      string `json:"version"`
	MaxPayload   int64  `json:"max_payload"`
	JetStream    bool   `json:"jetstream"`
	AuthRequired bool   `json:"auth_required"`
}

// ErrNoJetStream is a NATS server without JetStream: Dynamo's NATS client
// needs it ("JetStream not available"), so waiting longer will not help.
var ErrNoJetStream = errors.New("JetStream is not enabled (start nats-server with -js)")

// WaitNATS waits until a NATS server accepts connections at addr (host:port
// or a NATS_SERVER value such as nats://host:4222, or a list of them) and
// sends a valid INFO line reporting JetStream.
func WaitNATS(ctx context.Context, addr string) error {
	addrs := splitEndpoints(addr, "nats")
	if len(addrs) == 0 {
		return fmt.Errorf("no NATS address given")
	}
	var lastErr error
	err := retry.Do(ctx, infraBackoff(), func(ctx context.Context) error {
		var errs []error
		for _, a := range addrs {
			info, err := ProbeNATS(ctx, a)
			if err == nil && !info.JetStream {
				return fmt.Errorf("NATS at %s (server %s, version %s): %w", a, info.ServerID, info.Version, ErrNoJetStream)
			}
			if err == nil {
				return nil
			}
			errs = append(errs, err)
		}
		err := errors.Join(errs...)
		keepLast(&lastErr, err, ctx)
		return retry.RetryableError(err)
	})
	if err != nil {
		if errors.Is(err, ErrNoJetStream) {
			return err
		}
		return waitError("NATS", addr, err, lastErr)
	}
	return nil
}

// ProbeNATS connects once to the NATS server at addr (host:port) and reads
// its INFO line, which the server sends first on every connection.
func ProbeNATS(ctx context.Context, addr string) (NATSInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, infraAttemptTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return NATSInfo{}, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	// The INFO line is bounded by the server's max_control_line (4 KiB by
	// default, more with cluster URLs): 64 KiB is plenty.
	line, err := bufio.NewReaderSize(io.LimitReader(c, 64<<10), 64<<10).ReadString('\n')
	if err != nil {
		return NATSInfo{}, fmt.Errorf("%s: reading INFO: %w", addr, err)
	}
	line = strings.TrimRight(line, "\r\n")
	payload, ok := strings.CutPrefix(line, "INFO ")
	if !ok {
		return NATSInfo{}, fmt.Errorf("%s: not a NATS server: first line %.120q", addr, line)
	}
	var info NATSInfo
	if err := json.Unmarshal([]byte(payload), &info); err != nil {
		return NATSInfo{}, fmt.Errorf("%s: bad INFO %.120q: %v", addr, payload, err)
	}
	return info, nil
}

// splitEndpoints turns "a:1,nats://u:p@b:2" into host:port (scheme "nats")
// or base URLs (scheme "http").
func splitEndpoints(list, scheme string) []string {
	var out []string
	for _, e := range strings.Split(list, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if scheme == "http" {
			if !strings.Contains(e, "://") {
				e = "http://" + e
			}
			out = append(out, strings.TrimRight(e, "/"))
			continue
		}
		if strings.Contains(e, "://") {
			if u, err := url.Parse(e); err == nil && u.Host != "" {
				e = u.Host
			}
		}
		out = append(out, e)
	}
	return out
}

// keepLast remembers err as the last error, unless the attempt only failed
// because the wait itself ended: that says nothing about the server.
func keepLast(last *error, err error, ctx context.Context) {
	if ctx.Err() == nil || *last == nil {
		*last = err
	}
}

func waitError(what, where string, err, last error) error {
	if last != nil {
		return fmt.Errorf("%s at %s: %w (last: %v)", what, where, err, last)
	}
	return fmt.Errorf("%s at %s: %w", what, where, err)
}
