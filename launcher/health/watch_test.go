package health

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// changes records what Watch says, from its goroutine.
type changes struct {
	mu  sync.Mutex
	got []string
}

func (c *changes) add(degraded bool, what string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, fmt.Sprintf("%v %s", degraded, what))
}

func (c *changes) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.got...)
}

func watchFast(ch *changes) WatchOptions {
	return WatchOptions{Interval: 10 * time.Millisecond, LostTimeout: 100 * time.Millisecond, OnChange: ch.add}
}

func TestWatchDeregisteredWorkerLosesTheDeployment(t *testing.T) {
	f := &hgFrontend{}
	f.set(hgBoth, hgModels)
	url := f.start(t)
	ch := &changes{}
	done := make(chan error, 1)
	go func() { done <- Watch(context.Background(), nil, url, hgExpect1P1D(), watchFast(ch)) }()
	for f.polls.Load() < 3 {
		time.Sleep(5 * time.Millisecond)
	}
	// The decode worker's instance disappears from the frontend.
	f.set(hgPrefillOne, hgModels)
	var err error
	select {
	case err = <-done:
	case <-time.After(hgLongWait):
		t.Fatal("the watch never declared the deployment lost")
	}
	var lost *LostError
	require.ErrorAs(t, err, &lost)
	assert.GreaterOrEqual(t, lost.For, 100*time.Millisecond, "not before the lost timeout")
	assert.Contains(t, err.Error(), "decode instances: 0 of 1 registered (no longer registered: decode worker 0 (head node 4, gpu05))")
	assert.Equal(t, "true prefill 1/1, decode 0/1", ch.list()[0], "the degradation is said once, when it starts")
}

func TestWatchRecoveryWithinTheLostTimeout(t *testing.T) {
	f := &hgFrontend{}
	f.set(hgBoth, hgModels)
	url := f.start(t)
	ch := &changes{}
	o := watchFast(ch)
	o.LostTimeout = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Watch(ctx, nil, url, hgExpect1P1D(), o) }()
	f.set(hgPrefillOne, hgModels)
	require.Eventually(t, func() bool { return len(ch.list()) == 1 }, hgLongWait, time.Millisecond)
	f.set(hgBoth, hgModels)
	require.Eventually(t, func() bool { return len(ch.list()) == 2 }, hgLongWait, time.Millisecond)
	assert.Contains(t, ch.list()[1], "false recovered after")
	cancel()
	assert.NoError(t, <-done, "a watch that ends with its context is no loss")
}

func TestWatchFrontendGone(t *testing.T) {
	// A frontend that was READY and then went away.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Close()
	err := Watch(context.Background(), &http.Client{Timeout: time.Second}, srv.URL, hgExpect1P1D(), watchFast(&changes{}))
	var lost *LostError
	require.ErrorAs(t, err, &lost)
	assert.Contains(t, err.Error(), "frontend "+srv.URL+" never answered usefully")
}

func TestWatchCanary(t *testing.T) {
	var failing atomic.Bool
	var asked atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, hgBoth) })
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, hgModels) })
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		if failing.Load() {
			http.Error(w, `{"error":"no workers available"}`, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, `{"choices":[{"index":0,"message":{"role":"assistant","content":"p"}}]}`)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	o := WatchOptions{Interval: time.Hour, CanaryInterval: 5 * time.Millisecond, CanaryFailures: 3}
	done := make(chan error, 1)
	go func() { done <- Watch(context.Background(), nil, srv.URL, hgExpect1P1D(), o) }()
	for asked.Load() < 3 {
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("a serving deployment was declared lost: %v", err)
	default:
	}
	// Instances all registered, but no completion comes back.
	failing.Store(true)
	err := <-done
	var lost *LostError
	require.ErrorAs(t, err, &lost)
	assert.Contains(t, err.Error(), "the canary request failed 3 times in a row (last: HTTP 503")
}
