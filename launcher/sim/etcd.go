package sim

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// EtcdClient speaks etcd's v3 HTTP/JSON gateway (/v3/kv/..., /v3/lease/...),
// which every etcd since 3.4 serves on its client port. The stand-ins need a
// handful of calls, not the gRPC client library and its dependencies.
type EtcdClient struct {
	// Endpoints are base URLs such as http://10.0.0.1:2379; the first that
	// answers is used (ETCD_ENDPOINTS is a comma-separated list of them).
	Endpoints []string
	HTTP      *http.Client
}

// NewEtcdClient parses an ETCD_ENDPOINTS value. An empty value means
// http://localhost:2379, Dynamo's default.
func NewEtcdClient(endpoints string) *EtcdClient {
	var eps []string
	for _, e := range strings.Split(endpoints, ",") {
		e = strings.TrimRight(strings.TrimSpace(e), "/")
		if e == "" {
			continue
		}
		if !strings.Contains(e, "://") {
			e = "http://" + e
		}
		eps = append(eps, e)
	}
	if len(eps) == 0 {
		eps = []string{"http://localhost:2379"}
	}
	return &EtcdClient{Endpoints: eps, HTTP: &http.Client{Timeout: 5 * time.Second}}
}

// KV is one key of a range answer.
type KV struct {
	Key   string
	Value []byte
	Lease int64
}

// EtcdError is an error answered by etcd itself (as opposed to a transport
// failure): {"error":..., "code":...}.
type EtcdError struct {
	Code    int
	Message string
}

func (e *EtcdError) Error() string { return fmt.Sprintf("etcd: %s (code %d)", e.Message, e.Code) }

// Put stores value under key, attached to lease when lease != 0.
func (c *EtcdClient) Put(ctx context.Context, key string, value []byte, lease int64) error {
	req := map[string]any{"key": b64(key), "value": base64.StdEncoding.EncodeToString(value)}
	if lease != 0 {
		req["lease"] = strconv.FormatInt(lease, 10)
	}
	return c.call(ctx, "/v3/kv/put", req, nil)
}

// GetPrefix returns every key starting with prefix, in key order.
func (c *EtcdClient) GetPrefix(ctx context.Context, prefix string) ([]KV, error) {
	var resp struct {
		Kvs []struct {
			Key   string `json:"key"`
			Value string `json:"value"`
			Lease string `json:"lease"`
		} `json:"kvs"`
	}
	req := map[string]any{"key": b64(prefix), "range_end": b64(prefixEnd(prefix))}
	if err := c.call(ctx, "/v3/kv/range", req, &resp); err != nil {
		return nil, err
	}
	out := make([]KV, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		k, err := base64.StdEncoding.DecodeString(kv.Key)
		if err != nil {
			return nil, fmt.Errorf("etcd range: bad key encoding: %w", err)
		}
		v, err := base64.StdEncoding.DecodeString(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("etcd range: bad value encoding for %q: %w", k, err)
		}
		var lease int64
		if kv.Lease != "" {
			lease, _ = strconv.ParseInt(kv.Lease, 10, 64)
		}
		out = append(out, KV{Key: string(k), Value: v, Lease: lease})
	}
	return out, nil
}

// Delete removes key.
func (c *EtcdClient) Delete(ctx context.Context, key string) error {
	return c.call(ctx, "/v3/kv/deleterange", map[string]any{"key": b64(key)}, nil)
}

// Grant creates a lease of ttl seconds and returns its ID.
func (c *EtcdClient) Grant(ctx context.Context, ttl int64) (int64, error) {
	var resp struct {
		ID    string `json:"ID"`
		Error string `json:"error"`
	}
	if err := c.call(ctx, "/v3/lease/grant", map[string]any{"TTL": strconv.FormatInt(ttl, 10)}, &resp); err != nil {
		return 0, err
	}
	if resp.Error != "" {
		return 0, fmt.Errorf("etcd lease grant: %s", resp.Error)
	}
	id, err := strconv.ParseInt(resp.ID, 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("etcd lease grant: bad lease ID %q", resp.ID)
	}
	return id, nil
}

// ErrLeaseExpired is returned by KeepAlive when etcd no longer knows the
// lease: everything attached to it is gone.
var ErrLeaseExpired = errors.New("etcd lease expired")

// KeepAlive refreshes the lease once and returns its new TTL in seconds.
func (c *EtcdClient) KeepAlive(ctx context.Context, lease int64) (int64, error) {
	// The gateway maps the streaming RPC to one JSON object per request,
	// wrapped in "result".
	var resp struct {
		Result struct {
			TTL string `json:"TTL"`
		} `json:"result"`
	}
	if err := c.call(ctx, "/v3/lease/keepalive", map[string]any{"ID": strconv.FormatInt(lease, 10)}, &resp); err != nil {
		return 0, err
	}
	ttl, _ := strconv.ParseInt(resp.Result.TTL, 10, 64)
	if ttl <= 0 {
		return 0, ErrLeaseExpired
	}
	return ttl, nil
}

// Revoke deletes the lease and every key attached to it. Revoking a lease
// that already expired is not an error.
func (c *EtcdClient) Revoke(ctx context.Context, lease int64) error {
	err := c.call(ctx, "/v3/lease/revoke", map[string]any{"ID": strconv.FormatInt(lease, 10)}, nil)
	var ee *EtcdError
	if errors.As(err, &ee) && strings.Contains(ee.Message, "lease not found") {
		return nil
	}
	return err
}

// call POSTs req to path on the first endpoint that answers and decodes the
// answer into resp (when non-nil).
func (c *EtcdClient) call(ctx context.Context, path string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	var errs []error
	for _, ep := range c.Endpoints {
		err := c.callOne(ctx, ep+path, body, resp)
		if err == nil {
			return nil
		}
		var ee *EtcdError
		if errors.As(err, &ee) || ctx.Err() != nil {
			return err // etcd answered, or we were told to stop: no point in trying others
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c *EtcdClient) callOne(ctx context.Context, url string, body []byte, resp any) error {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	hresp, err := hc.Do(hreq)
	if err != nil {
		return err
	}
	defer hresp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(hresp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("etcd %s: %w", url, err)
	}
	var e struct {
		Error   string `json:"error"`
		Message string `json:"message"`
		Code    int    `json:"code"`
	}
	if json.Unmarshal(data, &e) == nil && (e.Error != "" || e.Message != "") {
		msg := e.Message
		if msg == "" {
			msg = e.Error
		}
		return &EtcdError{Code: e.Code, Message: msg}
	}
	if hresp.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd %s: HTTP %d: %s", url, hresp.StatusCode, bytes.TrimSpace(data))
	}
	if resp == nil {
		return nil
	}
	if err := json.Unmarshal(data, resp); err != nil {
		return fmt.Errorf("etcd %s: bad answer %q: %w", url, data, err)
	}
	return nil
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// prefixEnd is the range_end that selects every key starting with prefix:
// the prefix with its last byte incremented (trailing 0xff bytes dropped).
func prefixEnd(prefix string) string {
	end := []byte(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return string(end[:i+1])
		}
	}
	return "\x00" // every key
}
