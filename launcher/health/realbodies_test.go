package health

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/launcher/sim/simtest"
)

// realBody reads one of the real Dynamo bodies in testdata/dynamo (see its
// README). t may be nil (package-level test data): a missing file panics.
func realBody(t testing.TB, name string) []byte {
	body, err := os.ReadFile(filepath.Join("testdata", "dynamo", name))
	if t == nil {
		if err != nil {
			panic(err)
		}
		return body
	}
	t.Helper()
	require.NoError(t, err)
	return body
}

// realCode is the HTTP status a real body was served with, from its name.
func realCode(t testing.TB, name string) int {
	t.Helper()
	base := strings.TrimSuffix(name, ".json")
	code, err := strconv.Atoi(base[strings.LastIndexByte(base, '-')+1:])
	require.NoError(t, err, name)
	return code
}

// Every real body parses, with what it says counted as the gate counts it.
func TestParseRealBodies(t *testing.T) {
	backendID := "7587888160958628000" // as written: jq's rendering, kept as text
	tests := map[string]struct {
		want Status
		// ready: would the gate count the deployment 0 prefill + 1 decode
		// as registered from this body.
		ready bool
	}{
		// The first /health (2025-05): endpoints only, no instances. A
		// frontend that old never lists instances, so the gate can never
		// count a worker on it.
		"pr1037-2025-05-frontend-healthy-200.json":   {want: Status{Status: "healthy"}},
		"pr1037-2025-05-frontend-unhealthy-503.json": {want: Status{Status: "unhealthy"}},
		"docs-09f25a13-2025-09-frontend-healthy-200.json": {ready: true, want: Status{Status: "healthy", Decode: 1, Instances: []Instance{
			{Component: "backend", Endpoint: "clear_kv_blocks", Namespace: "dynamo", InstanceID: backendID},
			{Component: "backend", Endpoint: "generate", Namespace: "dynamo", InstanceID: backendID},
			{Component: "backend", Endpoint: "load_metrics", Namespace: "dynamo", InstanceID: backendID},
		}}},
		"docs-09f25a13-2025-09-frontend-unhealthy-503.json": {want: Status{Status: "unhealthy"}},
		// Not /health bodies of the frontend, but what a misdirected poll
		// (the /live path, a worker's system port) gets: they parse and
		// count nothing.
		"docs-09f25a13-2025-09-frontend-live-200.json":          {want: Status{Status: "live"}},
		"docs-09f25a13-2025-09-worker-system-ready-200.json":    {want: Status{Status: "ready"}},
		"docs-09f25a13-2025-09-worker-system-notready-503.json": {want: Status{Status: "notready"}},
	}
	files, err := filepath.Glob(filepath.Join("testdata", "dynamo", "*.json"))
	require.NoError(t, err)
	require.Len(t, files, len(tests), "every real body has its expected verdict")
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			tc, ok := tests[name]
			require.True(t, ok, "no expectation for %s", name)
			got, err := Parse(realBody(t, name))
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			r := readiness{health: got, models: []string{hgModel}}
			assert.Equal(t, tc.ready, r.ready(Expect{Model: hgModel, Decode: 1}))
		})
	}
}

// The real ids exceed 2^53: decoding them as float64 loses digits, which is
// why Parse keeps them as text.
func TestRealInstanceIDsNeedText(t *testing.T) {
	var body struct {
		Instances []struct {
			InstanceID float64 `json:"instance_id"`
		} `json:"instances"`
	}
	require.NoError(t, json.Unmarshal([]byte(`{"instances":[{"instance_id":7587888160958628001}]}`), &body))
	assert.NotEqual(t, "7587888160958628001", strconv.FormatFloat(body.Instances[0].InstanceID, 'f', -1, 64))
	got, err := Parse([]byte(`{"status":"healthy","instances":[{"component":"backend","endpoint":"generate","instance_id":7587888160958628001}]}`))
	require.NoError(t, err)
	assert.Equal(t, "7587888160958628001", got.Instances[0].InstanceID)
}

// The gate against a frontend answering exactly the real bodies, with
// their real HTTP status.
func TestWaitReadyOnRealBodies(t *testing.T) {
	t.Parallel() // one case waits for its deadline on purpose
	serve := func(t *testing.T, name string) string {
		body, code := realBody(t, name), realCode(t, name)
		mux := http.NewServeMux()
		mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			w.Write(body)
		})
		mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, hgModels) })
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)
		return srv.URL
	}
	exp := Expect{Model: hgModel, Decode: 1}
	t.Run("after workers registered", func(t *testing.T) {
		_, err := WaitReady(context.Background(), nil, serve(t, "docs-09f25a13-2025-09-frontend-healthy-200.json"), exp, nil, time.Hour, hgLongWait)
		require.NoError(t, err)
	})
	for _, name := range []string{"docs-09f25a13-2025-09-frontend-unhealthy-503.json", "pr1037-2025-05-frontend-healthy-200.json"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := WaitReady(context.Background(), nil, serve(t, name), exp, nil, time.Hour, hgFailWait)
			var te *TimeoutError
			require.ErrorAs(t, err, &te)
			assert.Contains(t, err.Error(), "decode instances: 0 of 1 registered")
		})
	}
}

// The simulation's frontend answers /health in the shape of Dynamo's newest
// handler, and Parse reads it as it reads the real bodies: before any worker
// registers, "healthy" with nothing counted (the newest handler's healthy
// means "initial discovery done", not "workers registered"); once a decode
// worker registered, the same verdict as the docs' real healthy body.
func TestParseSimFrontendLikeRealBodies(t *testing.T) {
	etcd := simtest.StartEtcd(t)
	port := simtest.FreePort(t)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	start := func(node string, argv ...string) simStandIn { return startSimStandIn(etcd.URL, node, argv...) }
	fetch := func() (int, []byte) {
		resp, err := http.Get(base + "/health")
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		_, err = buf.ReadFrom(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, buf.Bytes()
	}

	fe := start("gpu01", "python3", "-m", "dynamo.frontend", "--http-port", strconv.Itoa(port))
	var code int
	var body []byte
	require.Eventually(t, func() bool { code, body = fetch(); return code == http.StatusOK }, hgLongWait, 20*time.Millisecond)
	var keys map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(body, &keys))
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	slices.Sort(names)
	assert.Equal(t, []string{"endpoints", "initial_discovery_complete", "initial_discovery_error", "instances", "message", "status"}, names,
		"the fields of health.rs @0ab2b3f5")
	st, err := Parse(body)
	require.NoError(t, err)
	assert.Equal(t, Status{Status: "healthy"}, st)

	worker := start("gpu05", "python3", "-m", "dynamo.sglang", "--model-path", "/model/", "--served-model-name", hgModel,
		"--disaggregation-mode", "decode", "--host", "127.0.0.1")
	require.Eventually(t, func() bool {
		code, body = fetch()
		st, err = Parse(body)
		return err == nil && st.Decode == 1
	}, hgLongWait, 20*time.Millisecond)
	assert.Equal(t, http.StatusOK, code)
	real, err := Parse(realBody(t, "docs-09f25a13-2025-09-frontend-healthy-200.json"))
	require.NoError(t, err)
	assert.Equal(t, real.Status, st.Status)
	assert.Equal(t, real.Prefill, st.Prefill)
	assert.Equal(t, real.Decode, st.Decode)
	require.Len(t, st.Instances, 1)
	in := st.Instances[0]
	assert.Equal(t, Instance{Component: "backend", Endpoint: "generate", Namespace: "dynamo", InstanceID: in.InstanceID, Host: "gpu05"}, in)
	_, err = strconv.ParseUint(in.InstanceID, 10, 64)
	assert.NoError(t, err, "an integer id, kept as text: %q", in.InstanceID)

	worker.stop(t)
	fe.stop(t)
}
