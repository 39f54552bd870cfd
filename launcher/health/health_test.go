package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/launcher/deploy"
	"github.com/wideep/wideep-launch/launcher/sim"
	"github.com/wideep/wideep-launch/launcher/sim/simtest"
)

func TestParse(t *testing.T) {
	tests := map[string]struct {
		body    string
		want    Status
		wantErr string
	}{
		// Real bodies (testdata/dynamo) are parsed in TestParseRealBodies;
		// the cases here are shapes no real body shows.
		//
		// No real body has a prefill component or a transport with a
		// host:port address (the docs' instances use nats_tcp subjects).
		"prefill with a tcp transport address": {
			body: `{"status":"healthy","endpoints":["dyn://dynamo.prefill.generate","dyn://dynamo.backend.generate"],
				"instances":[
				 {"component":"prefill","endpoint":"generate","namespace":"dynamo","instance_id":7587888160958628000,"transport":{"tcp":"10.0.0.1:34567"}},
				 {"component":"backend","endpoint":"generate","namespace":"dynamo","instance_id":7587888160958628001,"transport":{"nats_tcp":"dynamo_backend.generate-694d997dbae9a315"}},
				 {"component":"backend","endpoint":"clear_kv_blocks","namespace":"dynamo","instance_id":7587888160958628001}]}`,
			want: Status{Status: "healthy", Prefill: 1, Decode: 1, Instances: []Instance{
				{Component: "prefill", Endpoint: "generate", Namespace: "dynamo", InstanceID: "7587888160958628000", Host: "10.0.0.1"},
				{Component: "backend", Endpoint: "generate", Namespace: "dynamo", InstanceID: "7587888160958628001"},
				{Component: "backend", Endpoint: "clear_kv_blocks", Namespace: "dynamo", InstanceID: "7587888160958628001"},
			}},
		},
		// No real body shows a "decode" component, a "host" field (the
		// simulation's frontend adds one) or an id beyond i64.
		"decode component, host field, u64 id": {
			body: `{"status":"healthy","instances":[{"component":"decode","endpoint":"generate","instance_id":18446744073709551615,"host":"gpu05"}]}`,
			want: Status{Status: "healthy", Decode: 1, Instances: []Instance{
				{Component: "decode", Endpoint: "generate", InstanceID: "18446744073709551615", Host: "gpu05"},
			}},
		},
		// No real body lists an instance twice.
		"an instance listed twice counts once": {
			body: `{"status":"healthy","instances":[{"component":"prefill","endpoint":"generate","instance_id":1},{"component":"prefill","endpoint":"generate","instance_id":1},{"component":"prefill","endpoint":"generate","instance_id":2}]}`,
			want: Status{Status: "healthy", Prefill: 2, Instances: []Instance{
				{Component: "prefill", Endpoint: "generate", InstanceID: "1"},
				{Component: "prefill", Endpoint: "generate", InstanceID: "1"},
				{Component: "prefill", Endpoint: "generate", InstanceID: "2"},
			}},
		},
		// No real body has a component other than backend.
		"other components do not count": {
			body: `{"status":"healthy","instances":[{"component":"router","endpoint":"generate","instance_id":"9"}]}`,
			want: Status{Status: "healthy", Instances: []Instance{{Component: "router", Endpoint: "generate", InstanceID: "9"}}},
		},
		// No source answers HTTP 200 with "unhealthy" (the research found
		// none); the gate parses bodies whatever the status, so this stays
		// as a defensive case.
		"unhealthy with empty lists": {
			body: `{"status":"unhealthy","endpoints":[],"instances":[]}`,
			want: Status{Status: "unhealthy"},
		},
		// Malformed answers: no real body, by definition.
		"not JSON":           {body: `<html>502 Bad Gateway</html>`, wantErr: "not a JSON object"},
		"neither field":      {body: `{"uptime":3}`, wantErr: "neither status nor instances"},
		"array":              {body: `[]`, wantErr: "not a JSON object"},
		"instances not list": {body: `{"status":"healthy","instances":{}}`, wantErr: "not a JSON object"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := Parse([]byte(tc.body))
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

// hgFrontend is a scripted frontend: its answers can be changed while the
// gate polls it.
type hgFrontend struct {
	mu     sync.Mutex
	health string
	models string
	polls  atomic.Int64
}

func (f *hgFrontend) set(health, models string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.health, f.models = health, models
}

func (f *hgFrontend) start(t *testing.T) string {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		f.polls.Add(1)
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.health == hgUnhealthy {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprint(w, f.health)
	})
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		fmt.Fprint(w, f.models)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

const (
	hgModel    = "deepseek-ai/DeepSeek-R1"
	hgNoModels = `{"object":"list","data":[]}`
	hgModels   = `{"object":"list","data":[{"id":"deepseek-ai/DeepSeek-R1","object":"model"}]}`
	// Hand-written: no real body has a prefill instance (see testdata/dynamo).
	hgPrefillOne = `{"status":"healthy","instances":[{"component":"prefill","endpoint":"generate","instance_id":1,"host":"10.0.0.1"}]}`
	hgBoth       = `{"status":"healthy","instances":[{"component":"prefill","endpoint":"generate","instance_id":1},{"component":"backend","endpoint":"generate","instance_id":2}]}`
)

// hgUnhealthy is a real frontend's answer before any worker registered
// (Dynamo docs @09f25a13), served with its real status, 503.
var hgUnhealthy = string(realBody(nil, "docs-09f25a13-2025-09-frontend-unhealthy-503.json"))

// hgLongWait bounds waits that must end for another reason; it is never what
// makes a test pass.
const hgLongWait = 30 * time.Second

// hgFailWait is the health timeout of gates that must time out (the gate
// always completes one poll, however short the timeout).
const hgFailWait = 50 * time.Millisecond

func hgExpect1P1D() Expect {
	return Expect{Model: hgModel, Prefill: 1, Decode: 1, Workers: []Worker{
		{Role: deploy.RolePrefill, Name: "prefill worker 0 (head node 0, gpu01)", Hosts: []string{"gpu01", "10.0.0.1"}},
		{Role: deploy.RoleDecode, Name: "decode worker 0 (head node 4, gpu05)", Hosts: []string{"gpu05", "10.0.0.5"}},
	}}
}

func TestWaitReadyReportsProgressUntilReady(t *testing.T) {
	fe := &hgFrontend{}
	fe.set(hgUnhealthy, hgNoModels)
	url := fe.start(t)

	var reports []string
	progress := func(elapsed time.Duration, missing string) {
		reports = append(reports, missing)
		switch len(reports) {
		case 1:
			fe.set(hgPrefillOne, hgNoModels)
		case 2:
			fe.set(hgBoth, hgModels)
		}
	}
	took, err := WaitReady(context.Background(), nil, url+"/", hgExpect1P1D(), progress, time.Millisecond, hgLongWait)
	require.NoError(t, err)
	assert.Positive(t, took)
	assert.Equal(t, []string{
		"prefill 0/1, decode 0/1, model deepseek-ai/DeepSeek-R1 not listed",
		"prefill 1/1, decode 0/1, model deepseek-ai/DeepSeek-R1 not listed",
	}, reports)
}

func TestWaitReadyNeedsTheModelToo(t *testing.T) {
	fe := &hgFrontend{}
	fe.set(hgBoth, hgNoModels)
	url := fe.start(t)
	var reports []string
	progress := func(_ time.Duration, missing string) {
		reports = append(reports, missing)
		fe.set(hgBoth, hgModels)
	}
	_, err := WaitReady(context.Background(), nil, url, hgExpect1P1D(), progress, time.Millisecond, hgLongWait)
	require.NoError(t, err)
	assert.Equal(t, []string{"prefill 1/1, decode 1/1, model deepseek-ai/DeepSeek-R1 not listed"}, reports)
}

func TestWaitReadyTimeout(t *testing.T) {
	t.Parallel() // waits for a deadline on purpose
	twoDecode := hgExpect1P1D()
	twoDecode.Decode = 2
	twoDecode.Workers = append(twoDecode.Workers,
		Worker{Role: deploy.RoleDecode, Name: "decode worker 1 (head node 6, gpu07)", Hosts: []string{"gpu07", "10.0.0.7"}})
	tests := map[string]struct {
		health string
		models string
		exp    Expect
		want   []string
		not    []string
	}{
		"decode never registered": {
			health: hgPrefillOne, models: hgNoModels, exp: hgExpect1P1D(),
			want: []string{
				"decode instances: 0 of 1 registered (never registered: decode worker 0 (head node 4, gpu05))",
				"model deepseek-ai/DeepSeek-R1 not listed by /v1/models (listed: none)",
			},
			not: []string{"prefill instances"},
		},
		"which of two decode workers is missing": {
			health: `{"status":"healthy","instances":[{"component":"prefill","endpoint":"generate","instance_id":1,"host":"10.0.0.1"},
				{"component":"backend","endpoint":"generate","instance_id":2,"transport":{"tcp":"10.0.0.7:4000"}}]}`,
			models: hgModels, exp: twoDecode,
			want: []string{"decode instances: 1 of 2 registered (never registered: decode worker 0 (head node 4, gpu05))"},
			not:  []string{"decode worker 1", "not listed"},
		},
		"instances without hosts: candidates": {
			health: hgBoth, models: hgModels, exp: twoDecode,
			want: []string{"decode instances: 1 of 2 registered (expected from: decode worker 0 (head node 4, gpu05), decode worker 1 (head node 6, gpu07))"},
		},
		"no worker names": {
			health: hgUnhealthy, models: hgNoModels, exp: Expect{Model: hgModel, Prefill: 1, Decode: 1},
			want: []string{"prefill instances: 0 of 1 registered; decode instances: 0 of 1 registered; model"},
		},
		"wrong model served": {
			health: hgBoth, models: `{"data":[{"id":"other"}]}`, exp: hgExpect1P1D(),
			want: []string{"model deepseek-ai/DeepSeek-R1 not listed by /v1/models (listed: other)"},
		},
		"frontend answers garbage": {
			health: `<html>`, models: hgModels, exp: hgExpect1P1D(),
			want: []string{"never answered usefully (last: /health body is not a JSON object"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fe := &hgFrontend{}
			fe.set(tc.health, tc.models)
			url := fe.start(t)
			_, err := WaitReady(context.Background(), nil, url, tc.exp, nil, time.Hour, hgFailWait)
			var te *TimeoutError
			require.ErrorAs(t, err, &te)
			assert.Contains(t, err.Error(), "deployment not ready after")
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			for _, n := range tc.not {
				assert.NotContains(t, err.Error(), n)
			}
			assert.Positive(t, fe.polls.Load())
		})
	}
}

func TestWaitReadyFrontendDown(t *testing.T) {
	t.Parallel() // waits for a deadline on purpose
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	_, err := WaitReady(context.Background(), nil, url, hgExpect1P1D(), nil, time.Hour, hgFailWait)
	var te *TimeoutError
	require.ErrorAs(t, err, &te)
	assert.Contains(t, err.Error(), "frontend "+url+" never answered usefully")
	assert.Contains(t, err.Error(), "connection refused")
}

func TestWaitReadyStopsWithItsContext(t *testing.T) {
	fe := &hgFrontend{}
	fe.set(hgUnhealthy, hgNoModels)
	url := fe.start(t)
	ctx, cancel := context.WithCancelCause(context.Background())
	stopped := errors.New("worker died")
	progress := func(time.Duration, string) { cancel(stopped) }
	_, err := WaitReady(ctx, nil, url, hgExpect1P1D(), progress, time.Millisecond, hgLongWait)
	require.ErrorIs(t, err, stopped)
	var te *TimeoutError
	assert.False(t, errors.As(err, &te), "not a timeout")
	assert.Contains(t, err.Error(), "waiting for prefill 0/1, decode 0/1")
}

func TestExpectFor(t *testing.T) {
	p := &deploy.Plan{
		Model: hgModel,
		Nodes: []deploy.NodePlan{
			{Index: 0, Host: "gpu01", Addr: "10.0.0.1"}, {Index: 1, Host: "gpu02", Addr: "10.0.0.2"},
			{Index: 2, Host: "gpu03"}, {Index: 3, Host: "gpu04"},
		},
		Workers: []deploy.WorkerPlan{
			{Role: deploy.RolePrefill, Index: 0, Nodes: []int{0}, Head: "10.0.0.1"},
			{Role: deploy.RolePrefill, Index: 1, Nodes: []int{1}, Head: "10.0.0.2"},
			{Role: deploy.RoleDecode, Index: 0, Nodes: []int{2, 3}, Head: "gpu03"},
		},
	}
	assert.Equal(t, Expect{Model: hgModel, Prefill: 2, Decode: 1, Workers: []Worker{
		{Role: deploy.RolePrefill, Name: "prefill worker 0 (head node 0, gpu01)", Hosts: []string{"gpu01", "10.0.0.1"}},
		{Role: deploy.RolePrefill, Name: "prefill worker 1 (head node 1, gpu02)", Hosts: []string{"gpu02", "10.0.0.2"}},
		{Role: deploy.RoleDecode, Name: "decode worker 0 (head node 2, gpu03)", Hosts: []string{"gpu03"}},
	}}, ExpectFor(p))
}

// The gate against the simulation's frontend and workers over real etcd: the
// shapes they produce are the shapes the gate parses.
func TestWaitReadyWithSimFrontend(t *testing.T) {
	etcd := simtest.StartEtcd(t)
	port := simtest.FreePort(t)
	start := func(node string, argv ...string) simStandIn { return startSimStandIn(etcd.URL, node, argv...) }
	worker := func(mode string, extra ...string) []string {
		return append([]string{"python3", "-m", "dynamo.sglang", "--model-path", "/model/",
			"--served-model-name", hgModel, "--disaggregation-mode", mode, "--host", "127.0.0.1"}, extra...)
	}
	procs := []simStandIn{
		start("gpu01", "python3", "-m", "dynamo.frontend", "--http-port="+strconv.Itoa(port)),
		start("gpu01", worker("prefill", "--disaggregation-bootstrap-port", "0")...),
		start("gpu05", worker("decode")...),
	}
	took, err := WaitReady(context.Background(), nil, "http://127.0.0.1:"+strconv.Itoa(port), hgExpect1P1D(), nil, time.Hour, hgLongWait)
	require.NoError(t, err)
	assert.Positive(t, took)
	for _, p := range procs {
		p.stop(t)
	}
}

// simStandIn is a simulation stand-in (frontend or worker) run in this
// test process, on the node named, against etcd.
type simStandIn struct {
	sigs chan os.Signal
	exit chan int
}

func startSimStandIn(etcdURL, node string, argv ...string) simStandIn {
	s := simStandIn{sigs: make(chan os.Signal, 1), exit: make(chan int, 1)}
	env := map[string]string{"ETCD_ENDPOINTS": etcdURL, "SLURMD_NODENAME": node, "DYN_TCP_RPC_HOST": node}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	go func() { s.exit <- sim.Main(argv, lookup, io.Discard, io.Discard, s.sigs) }()
	return s
}

// stop terminates the stand-in as Slurm would and checks it ended cleanly.
func (s simStandIn) stop(t *testing.T) {
	t.Helper()
	s.sigs <- syscall.SIGTERM
	select {
	case code := <-s.exit:
		assert.Equal(t, 0, code)
	case <-time.After(hgLongWait):
		t.Fatal("stand-in did not stop")
	}
}
