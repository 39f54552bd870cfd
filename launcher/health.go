package launcher

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"
)

// The health gate: node 0 polls the Dynamo frontend until the model is served
// and every expected prefill and decode worker has registered. Per-node ports
// say nothing about readiness (a worker's system port binds before its
// scheduler is ready); the frontend's instance list is what counts.

// HealthExpect is what the deployment must show before it is READY.
type HealthExpect struct {
	Model   string // served model name; "" accepts any listed model
	Prefill int    // prefill instances (component "prefill")
	Decode  int    // decode instances (component "decode", or "backend" on older Dynamo)
	// Workers optionally names the expected workers so that a timeout can
	// say which never registered.
	Workers []ExpectedWorker
}

// ExpectedWorker is one worker the health gate waits for.
type ExpectedWorker struct {
	Role Role   // RolePrefill or RoleDecode
	Name string // how to name it in messages, e.g. "decode worker 1 (head node 6, gpu07)"
	// Hosts are the names and addresses its instance may advertise (the
	// head node's host name and address): an instance whose host is one of
	// them is this worker's.
	Hosts []string
}

// HealthExpectFor is the expectation for a plan: its served model, one
// instance per worker (Dynamo SGLang workers register from node rank 0
// only), each worker named by its head node.
func HealthExpectFor(p *Plan) HealthExpect {
	exp := HealthExpect{Model: p.Model}
	for _, w := range p.Workers {
		ew := ExpectedWorker{Role: w.Role, Name: fmt.Sprintf("%s worker %d", w.Role, w.Index)}
		if len(w.Nodes) > 0 && w.Nodes[0] >= 0 && w.Nodes[0] < len(p.Nodes) {
			head := p.Nodes[w.Nodes[0]]
			ew.Name += fmt.Sprintf(" (head node %d, %s)", head.Index, head.Host)
			ew.Hosts = appendUnique(ew.Hosts, head.Host, head.Addr)
		}
		ew.Hosts = appendUnique(ew.Hosts, w.Head)
		switch w.Role {
		case RolePrefill:
			exp.Prefill++
		case RoleDecode:
			exp.Decode++
		default:
			continue
		}
		exp.Workers = append(exp.Workers, ew)
	}
	return exp
}

func appendUnique(list []string, vals ...string) []string {
	for _, v := range vals {
		if v != "" && !slices.Contains(list, v) {
			list = append(list, v)
		}
	}
	return list
}

// HealthStatus is a parsed /health body.
type HealthStatus struct {
	Status  string // as reported: "healthy", "unhealthy" (older frontends, HTTP 200), ...
	Prefill int    // distinct instances with endpoint "generate" and component "prefill"
	Decode  int    // distinct instances with endpoint "generate" and component "decode" or "backend"
	// Instances are all instances listed, whatever their endpoint.
	Instances []HealthInstance
}

// HealthInstance is one entry of /health's instances.
type HealthInstance struct {
	Component  string
	Endpoint   string
	Namespace  string
	InstanceID string // a u64 in Dynamo: kept as text so no precision is lost
	// Host is the host the instance advertises when the body tells it (a
	// "host" field, or the host of a host:port transport address).
	Host string
}

// ParseHealth parses the body of the frontend's /health. It counts what is
// registered and does not judge the "status" field: older frontends answer
// HTTP 200 with "status":"unhealthy" until a worker registers.
func ParseHealth(body []byte) (HealthStatus, error) {
	var raw struct {
		Status    *string                      `json:"status"`
		Instances []map[string]json.RawMessage `json:"instances"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return HealthStatus{}, fmt.Errorf("/health body is not a JSON object: %v (body %.200q)", err, body)
	}
	if raw.Status == nil && raw.Instances == nil {
		return HealthStatus{}, fmt.Errorf("/health body has neither status nor instances (body %.200q)", body)
	}
	var hs HealthStatus
	if raw.Status != nil {
		hs.Status = *raw.Status
	}
	seen := map[string]bool{}
	for _, m := range raw.Instances {
		in := HealthInstance{
			Component:  jsonText(m["component"]),
			Endpoint:   jsonText(m["endpoint"]),
			Namespace:  jsonText(m["namespace"]),
			InstanceID: jsonText(m["instance_id"]),
			Host:       instanceHost(m),
		}
		hs.Instances = append(hs.Instances, in)
		if in.Endpoint != "generate" {
			continue
		}
		key := in.Namespace + "/" + in.Component + "/" + in.InstanceID
		if in.InstanceID != "" && seen[key] {
			continue
		}
		seen[key] = true
		switch healthRole(in.Component) {
		case RolePrefill:
			hs.Prefill++
		case RoleDecode:
			hs.Decode++
		}
	}
	return hs, nil
}

// healthRole maps a Dynamo component to the role it counts for.
func healthRole(component string) Role {
	switch component {
	case "prefill":
		return RolePrefill
	case "decode", "backend":
		return RoleDecode
	}
	return ""
}

// jsonText is a JSON string's value, or a number's text.
func jsonText(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}

func instanceHost(m map[string]json.RawMessage) string {
	if h := jsonText(m["host"]); h != "" {
		return h
	}
	var transport map[string]json.RawMessage
	if json.Unmarshal(m["transport"], &transport) != nil {
		return ""
	}
	for _, v := range transport {
		addr, _, _ := strings.Cut(strings.TrimPrefix(jsonText(v), "tcp://"), "/")
		if host, _, err := net.SplitHostPort(addr); err == nil && host != "" {
			return host
		}
	}
	return ""
}

// healthPoll is how often the gate asks the frontend.
const healthPoll = time.Second

// HealthTimeoutError is a deployment that did not become ready in time. Its
// message names what never registered.
type HealthTimeoutError struct {
	After   time.Duration
	Missing []string
}

func (e *HealthTimeoutError) Error() string {
	return fmt.Sprintf("deployment not ready after %v: %s", e.After.Round(time.Second), strings.Join(e.Missing, "; "))
}

// WaitReady polls baseURL's /health and /v1/models until exp is met and
// returns how long that took. Every `every` (default 30 s) it calls progress
// with the elapsed time and what is still missing, e.g. "prefill 0/1,
// decode 1/1, model deepseek-ai/DeepSeek-R1 not listed". After timeout it
// returns a *HealthTimeoutError naming what never registered; if ctx ends
// first, ctx's cause wrapped with what was missing.
//
// The timeout is checked between polls, never in the middle of one, so the
// error always describes a complete look at the frontend (a poll is bounded
// by the client's timeout, 10 s by default).
func WaitReady(ctx context.Context, client *http.Client, baseURL string, exp HealthExpect,
	progress func(elapsed time.Duration, missing string), every, timeout time.Duration) (time.Duration, error) {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	if every <= 0 {
		every = 30 * time.Second
	}
	baseURL = strings.TrimRight(baseURL, "/")
	start := time.Now()
	deadline := start.Add(timeout)
	poll := min(every, healthPoll)
	nextProgress := start.Add(every)
	// r is the last complete poll: one cut short by ctx says nothing.
	var r readiness
	probed := false
	for {
		probe := probeReadiness(ctx, client, baseURL)
		if probe.ready(exp) {
			return time.Since(start), nil
		}
		now := time.Now()
		if ctx.Err() != nil {
			if !probed {
				r = probe
			}
			return now.Sub(start), fmt.Errorf("health gate stopped after %v (waiting for %s): %w",
				now.Sub(start).Round(time.Millisecond), r.summary(exp), context.Cause(ctx))
		}
		r, probed = probe, true
		if !now.Before(deadline) {
			return now.Sub(start), &HealthTimeoutError{After: now.Sub(start), Missing: r.problems(exp, baseURL)}
		}
		if !now.Before(nextProgress) {
			if progress != nil {
				progress(now.Sub(start), r.summary(exp))
			}
			for !nextProgress.After(now) {
				nextProgress = nextProgress.Add(every)
			}
		}
		t := time.NewTimer(min(poll, nextProgress.Sub(now), deadline.Sub(now)))
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// readiness is one look at the frontend.
type readiness struct {
	frontendErr error // /health did not answer usefully
	health      HealthStatus
	modelsErr   error
	models      []string
}

func probeReadiness(ctx context.Context, client *http.Client, baseURL string) readiness {
	var r readiness
	// Newer frontends list instances only when asked; older ones ignore the query.
	body, code, err := httpGet(ctx, client, baseURL+"/health?instances=true")
	if err != nil {
		r.frontendErr = err
		return r
	}
	hs, perr := ParseHealth(body)
	switch {
	case perr != nil && code != http.StatusOK:
		r.frontendErr = fmt.Errorf("/health: HTTP %d: %.200s", code, bytes.TrimSpace(body))
		return r
	case perr != nil:
		r.frontendErr = perr
		return r
	}
	r.health = hs
	body, code, err = httpGet(ctx, client, baseURL+"/v1/models")
	if err != nil {
		r.modelsErr = err
		return r
	}
	if code != http.StatusOK {
		r.modelsErr = fmt.Errorf("/v1/models: HTTP %d: %.200s", code, bytes.TrimSpace(body))
		return r
	}
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		r.modelsErr = fmt.Errorf("/v1/models: %v (body %.200q)", err, body)
		return r
	}
	for _, m := range list.Data {
		r.models = append(r.models, m.ID)
	}
	return r
}

func httpGet(ctx context.Context, client *http.Client, url string) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, resp.StatusCode, fmt.Errorf("reading %s: %w", url, err)
	}
	return body, resp.StatusCode, nil
}

func (r readiness) modelListed(exp HealthExpect) bool {
	if r.modelsErr != nil || r.frontendErr != nil {
		return false
	}
	if exp.Model == "" {
		return len(r.models) > 0
	}
	return slices.Contains(r.models, exp.Model)
}

func (r readiness) ready(exp HealthExpect) bool {
	return r.frontendErr == nil && r.health.Prefill >= exp.Prefill && r.health.Decode >= exp.Decode && r.modelListed(exp)
}

func modelName(exp HealthExpect) string {
	if exp.Model == "" {
		return "any model"
	}
	return "model " + exp.Model
}

// summary is the progress line: counts always, then what else is missing.
func (r readiness) summary(exp HealthExpect) string {
	if r.frontendErr != nil {
		return fmt.Sprintf("frontend not answering (%v)", r.frontendErr)
	}
	s := fmt.Sprintf("prefill %d/%d, decode %d/%d", r.health.Prefill, exp.Prefill, r.health.Decode, exp.Decode)
	switch {
	case r.modelsErr != nil:
		s += fmt.Sprintf(", %s (%v)", modelName(exp), r.modelsErr)
	case !r.modelListed(exp):
		s += fmt.Sprintf(", %s not listed", modelName(exp))
	}
	return s
}

// problems are the unmet parts of exp, each naming what never showed up.
func (r readiness) problems(exp HealthExpect, baseURL string) []string {
	if r.frontendErr != nil {
		return []string{fmt.Sprintf("frontend %s never answered usefully (last: %v)", baseURL, r.frontendErr)}
	}
	var out []string
	for _, role := range []struct {
		role       Role
		have, want int
	}{{RolePrefill, r.health.Prefill, exp.Prefill}, {RoleDecode, r.health.Decode, exp.Decode}} {
		if role.have >= role.want {
			continue
		}
		msg := fmt.Sprintf("%s instances: %d of %d registered", role.role, role.have, role.want)
		if who := r.unregistered(exp, role.role, role.want-role.have); who != "" {
			msg += " (" + who + ")"
		}
		out = append(out, msg)
	}
	switch {
	case r.modelsErr != nil:
		out = append(out, fmt.Sprintf("%s: %v", modelName(exp), r.modelsErr))
	case !r.modelListed(exp):
		out = append(out, fmt.Sprintf("%s not listed by /v1/models (listed: %s)", modelName(exp), listOrNone(r.models)))
	}
	return out
}

// unregistered names the expected workers of role whose instance is not
// listed. When instances do not tell their hosts the match is ambiguous,
// and every expected worker of the role is offered as a candidate.
func (r readiness) unregistered(exp HealthExpect, role Role, missing int) string {
	hosts := map[string]bool{}
	for _, in := range r.health.Instances {
		if in.Endpoint == "generate" && healthRole(in.Component) == role && in.Host != "" {
			hosts[in.Host] = true
		}
	}
	var all, absent []string
	for _, w := range exp.Workers {
		if w.Role != role {
			continue
		}
		all = append(all, w.Name)
		found := false
		for _, h := range w.Hosts {
			found = found || hosts[h]
		}
		if !found {
			absent = append(absent, w.Name)
		}
	}
	switch {
	case len(all) == 0:
		return ""
	case len(absent) == missing:
		return "never registered: " + strings.Join(absent, ", ")
	}
	return "expected from: " + strings.Join(all, ", ")
}
