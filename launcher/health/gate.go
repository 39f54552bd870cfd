package health

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/wideep/wideep-launch/launcher/deploy"
)

// healthPoll is how often the gate asks the frontend.
const healthPoll = time.Second

// TimeoutError is a deployment that did not become ready in time. Its
// message names what never registered.
type TimeoutError struct {
	After   time.Duration
	Missing []string
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("deployment not ready after %v: %s", e.After.Round(time.Second), strings.Join(e.Missing, "; "))
}

// WaitReady polls baseURL's /health and /v1/models until exp is met and
// returns how long that took. Every `every` (default 30 s) it calls progress
// with the elapsed time and what is still missing, e.g. "prefill 0/1,
// decode 1/1, model deepseek-ai/DeepSeek-R1 not listed". After timeout it
// returns a *TimeoutError naming what never registered; if ctx ends
// first, ctx's cause wrapped with what was missing.
//
// The timeout is checked between polls, never in the middle of one, so the
// error always describes a complete look at the frontend (a poll is bounded
// by the client's timeout, 10 s by default).
func WaitReady(ctx context.Context, client *http.Client, baseURL string, exp Expect,
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
			return now.Sub(start), &TimeoutError{After: now.Sub(start), Missing: r.problems(exp, baseURL, "never registered")}
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
	health      Status
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
	hs, perr := Parse(body)
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

func (r readiness) modelListed(exp Expect) bool {
	if r.modelsErr != nil || r.frontendErr != nil {
		return false
	}
	if exp.Model == "" {
		return len(r.models) > 0
	}
	return slices.Contains(r.models, exp.Model)
}

func (r readiness) ready(exp Expect) bool {
	return r.frontendErr == nil && r.health.Prefill >= exp.Prefill && r.health.Decode >= exp.Decode && r.modelListed(exp)
}

func modelName(exp Expect) string {
	if exp.Model == "" {
		return "any model"
	}
	return "model " + exp.Model
}

// summary is the progress line: counts always, then what else is missing.
func (r readiness) summary(exp Expect) string {
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
// problems are the unmet parts of exp, each naming what is missing;
// absentWord says how a missing worker is missing ("never registered" before
// READY, "no longer registered" after).
func (r readiness) problems(exp Expect, baseURL, absentWord string) []string {
	if r.frontendErr != nil {
		return []string{fmt.Sprintf("frontend %s never answered usefully (last: %v)", baseURL, r.frontendErr)}
	}
	var out []string
	for _, role := range []struct {
		role       deploy.Role
		have, want int
	}{{deploy.RolePrefill, r.health.Prefill, exp.Prefill}, {deploy.RoleDecode, r.health.Decode, exp.Decode}} {
		if role.have >= role.want {
			continue
		}
		msg := fmt.Sprintf("%s instances: %d of %d registered", role.role, role.have, role.want)
		if who := r.unregistered(exp, role.role, role.want-role.have, absentWord); who != "" {
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
func (r readiness) unregistered(exp Expect, role deploy.Role, missing int, absentWord string) string {
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
		return absentWord + ": " + strings.Join(absent, ", ")
	}
	return "expected from: " + strings.Join(all, ", ")
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
