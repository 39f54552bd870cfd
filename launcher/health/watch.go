package health

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// WatchOptions say how a READY deployment is watched.
type WatchOptions struct {
	// Interval is how often the frontend is asked (default 10 s).
	Interval time.Duration
	// LostTimeout is how long the deployment may stay below the plan (a
	// worker deregistered, the frontend not answering) before it is
	// declared lost (default 60 s): a worker restarting its scheduler may
	// miss a few polls.
	LostTimeout time.Duration
	// CanaryInterval, when set, sends a one-token chat completion through the
	// frontend that often: alive but not serving is the failure instance
	// counts do not show. CanaryFailures consecutive failures (default 3)
	// lose the deployment; each request may take CanaryTimeout (default 60 s).
	CanaryInterval time.Duration
	CanaryFailures int
	CanaryTimeout  time.Duration
	// OnChange is told when the deployment degrades (what is missing) and
	// when it recovers.
	OnChange func(degraded bool, what string)
}

func (o *WatchOptions) defaults() {
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	if o.LostTimeout <= 0 {
		o.LostTimeout = 60 * time.Second
	}
	if o.CanaryFailures <= 0 {
		o.CanaryFailures = 3
	}
	if o.CanaryTimeout <= 0 {
		o.CanaryTimeout = 60 * time.Second
	}
	if o.OnChange == nil {
		o.OnChange = func(bool, string) {}
	}
}

// LostError is a deployment that was READY and is no longer serving.
type LostError struct {
	For     time.Duration // how long it has been degraded
	Missing []string      // what is missing, each naming the worker or the frontend
	Canary  string        // the canary's last failure, when the canary lost it
}

func (e *LostError) Error() string {
	if e.Canary != "" {
		return fmt.Sprintf("deployment lost after READY: the canary request failed %s", e.Canary)
	}
	return fmt.Sprintf("deployment lost after READY: below the plan for %s: %s", e.For.Round(100*time.Millisecond), strings.Join(e.Missing, "; "))
}

// Watch watches a READY deployment at baseURL until ctx ends (nil) or it is
// lost (a *LostError): the registered instances fall below exp, or the
// frontend stops answering, for longer than LostTimeout; or the canary
// fails CanaryFailures times in a row.
func Watch(ctx context.Context, client *http.Client, baseURL string, exp Expect, o WatchOptions) error {
	o.defaults()
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	baseURL = strings.TrimRight(baseURL, "/")
	poll := time.NewTicker(o.Interval)
	defer poll.Stop()
	var canary <-chan time.Time
	if o.CanaryInterval > 0 {
		t := time.NewTicker(o.CanaryInterval)
		defer t.Stop()
		canary = t.C
	}
	var degradedSince time.Time
	canaryFails := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-canary:
			err := sendCanary(ctx, client, baseURL, exp.Model, o.CanaryTimeout)
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				canaryFails = 0
				continue
			}
			canaryFails++
			o.OnChange(true, fmt.Sprintf("canary request failed (%d of %d in a row): %v", canaryFails, o.CanaryFailures, err))
			if canaryFails >= o.CanaryFailures {
				return &LostError{Canary: fmt.Sprintf("%d times in a row (last: %v)", canaryFails, err)}
			}
		case <-poll.C:
			r := probeReadiness(ctx, client, baseURL)
			if ctx.Err() != nil {
				return nil
			}
			now := time.Now()
			if r.ready(exp) {
				if !degradedSince.IsZero() {
					o.OnChange(false, fmt.Sprintf("recovered after %s", now.Sub(degradedSince).Round(time.Second)))
					degradedSince = time.Time{}
				}
				continue
			}
			if degradedSince.IsZero() {
				degradedSince = now
				o.OnChange(true, r.summary(exp))
			}
			if d := now.Sub(degradedSince); d >= o.LostTimeout {
				return &LostError{For: d, Missing: r.problems(exp, baseURL, "no longer registered")}
			}
		}
	}
}

// sendCanary asks the frontend for one token, as a client would.
func sendCanary(ctx context.Context, client *http.Client, baseURL, model string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	body, _ := json.Marshal(map[string]any{
		"model": model, "max_tokens": 1, "stream": false,
		"messages": []map[string]string{{"role": "user", "content": "ping"}},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, bytes.TrimSpace(b))
	}
	var out struct {
		Choices []json.RawMessage `json:"choices"`
	}
	if err := json.Unmarshal(b, &out); err != nil || len(out.Choices) == 0 {
		return fmt.Errorf("no completion in the answer: %.200s", bytes.TrimSpace(b))
	}
	return nil
}
