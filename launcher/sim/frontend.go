package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wideep/wideep-launch/launcher/argspec"
)

// The sim frontend answers like dynamo.frontend: /live, /health (the Dynamo
// shape, built from the instances registered in etcd), /v1/models and a
// canned /v1/chat/completions.

// HealthResponse is the body of the frontend's /health, in the shape of
// Dynamo's newest handler (ai-dynamo/dynamo lib/llm/src/http/service/health.rs
// @0ab2b3f52fdb5bc39da3c907bf258302ec0e67bd): status "healthy" with HTTP 200
// once the initial model discovery completed (whether or not any worker has
// registered), else "not_ready" (or "shutting_down") with HTTP 503; the
// endpoints sorted and deduplicated; every registered instance listed.
type HealthResponse struct {
	Status                   string           `json:"status"` // healthy, not_ready, shutting_down
	Message                  string           `json:"message"`
	InitialDiscoveryComplete bool             `json:"initial_discovery_complete"`
	InitialDiscoveryError    *string          `json:"initial_discovery_error"`
	Endpoints                []string         `json:"endpoints"`
	Instances                []HealthInstance `json:"instances"`
}

// HealthInstance is one entry of /health's instances: Dynamo's instance
// fields (component, endpoint, namespace, instance_id), then two of the
// stand-in's own: host (real instances carry a "transport" object, whose
// address launcher/health reads the host from) and model.
type HealthInstance struct {
	Component  string `json:"component"`
	Endpoint   string `json:"endpoint"`
	Namespace  string `json:"namespace"`
	InstanceID int64  `json:"instance_id"`
	Host       string `json:"host,omitempty"`
	Model      string `json:"model,omitempty"`
}

type frontend struct {
	*standIn
	etcd     *EtcdClient
	started  int64
	stopping atomic.Bool
	hung     atomic.Bool // an injected hang
	requests atomic.Int64

	// The initial model discovery: complete after the first successful
	// read of the instances; until then, the last read's error.
	discoveryMu  sync.Mutex
	discovered   bool
	discoveryErr string
}

func (s *standIn) runFrontend(argv []string) int {
	const prog = "python3 -m " + ModuleFrontend
	a, err := parseArgs(frontendGrammar(), argv)
	var pe *argspec.Error
	if errors.As(err, &pe) && pe.Unrecognized != nil {
		// dynamo.frontend parses with parse_known_args and refuses the
		// left-overs itself (main.py @ed34fa25): a log line and exit 1,
		// not argparse's usage error.
		fmt.Fprintf(s.stderr, "ERROR dynamo.frontend: Unknown arguments specified: %s\n", pyListRepr(pe.Unrecognized))
		return exitError
	}
	if code, done := s.argsDone(frontendGrammar(), err); done {
		return code
	}
	port := 8000
	if v := s.getenv("DYN_HTTP_PORT"); v != "" {
		if port, err = strconv.Atoi(v); err != nil {
			fmt.Fprintf(s.stderr, "%s: error: DYN_HTTP_PORT=%q is not a port number\n", prog, v)
			return exitUsage
		}
	}
	port = a.int("--http-port", port)
	host := a.str("--http-host", "0.0.0.0")
	names := s.nodeNames()
	s.prefix = fmt.Sprintf("sim frontend [%s]: ", names[0])
	fails, termDelay, err := s.commonEnv()
	if err != nil {
		s.logf("%v", err)
		return exitUsage
	}
	rec := s.newRecord(roleFrontend, ModuleFrontend)
	rec.Listen = map[string]string{}
	if fl, ok := findFailure(fails, names, roleFrontend, StageStartup); ok {
		s.logf("injected failure %s: exiting with code %d at startup", fl, fl.Code)
		return s.finish(rec, fl.Code, "injected failure at startup")
	}

	fe := &frontend{standIn: s, etcd: NewEtcdClient(s.getenv("ETCD_ENDPOINTS")), started: time.Now().Unix()}
	ln, err := listenTCP(s.bindHost(host), port)
	if err != nil {
		s.logf("%v", err)
		return s.finish(rec, exitError, err.Error())
	}
	rec.Listen["http"] = ln.Addr().String()
	srv := &http.Server{Handler: fe.handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	ctx, stop := s.terminated()
	defer stop()
	go fe.discover(ctx)

	rec.State = "serving"
	s.save(rec)
	s.logf("listening on %s (etcd %s)", ln.Addr(), strings.Join(fe.etcd.Endpoints, ","))
	if s.onServing != nil {
		s.onServing(*rec)
	}

	var failAfter <-chan time.Time
	failFl, willFail := findFailure(fails, names, roleFrontend, StageServe)
	if willFail {
		t := time.NewTimer(failFl.After)
		defer t.Stop()
		failAfter = t.C
	}
	hangFl, willHang := findFailure(fails, names, roleFrontend, StageHang)
	if willHang {
		time.AfterFunc(hangFl.After, func() {
			s.logf("injected failure %s: no more answers", hangFl)
			fe.hung.Store(true)
		})
	}
	code, reason := 0, ""
	select {
	case <-ctx.Done():
		reason = terminationReason(ctx)
		fe.stopping.Store(true)
		if termDelay > 0 {
			s.logf("stopping in %v", termDelay)
			time.Sleep(termDelay) // the point of the knob: a frontend that is slow to stop
		}
	case err := <-served:
		code, reason = exitError, fmt.Sprintf("HTTP server: %v", err)
	case <-failAfter:
		code, reason = failFl.Code, fmt.Sprintf("injected failure %s after serving %v", failFl, failFl.After)
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	srv.Shutdown(shutdown)
	cancel()
	s.logf("exiting with code %d: %s", code, reason)
	return s.finish(rec, code, reason)
}

// handler serves the frontend's routes, unless an injected hang has made it
// alive but silent: then a request waits until its client gives up.
func (fe *frontend) handler() http.Handler {
	routes := fe.routes()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fe.hung.Load() {
			<-r.Context().Done()
			return
		}
		routes.ServeHTTP(w, r)
	})
}

func (fe *frontend) routes() http.Handler {
	mux := http.NewServeMux()
	// /live as health.rs @0ab2b3f5 answers it.
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, r *http.Request) {
		if fe.stopping.Load() {
			writeJSONResponse(w, http.StatusServiceUnavailable, map[string]string{"status": "shutting_down", "message": "Service is shutting down"})
			return
		}
		writeJSONResponse(w, http.StatusOK, map[string]string{"status": "live", "message": "Service is live"})
	})
	mux.HandleFunc("GET /health", fe.health)
	mux.HandleFunc("GET /v1/models", fe.models)
	mux.HandleFunc("POST /v1/chat/completions", fe.chat)
	return mux
}

// instances reads the registered instances from etcd, sorted by component
// and ID. Keys that do not decode are skipped: they are not ours to judge.
func (fe *frontend) instances(ctx context.Context) ([]Instance, error) {
	kvs, err := fe.etcd.GetPrefix(ctx, InstancePrefix)
	if ctx.Err() == nil {
		fe.noteDiscovery(err) // a read cut short by its caller says nothing
	}
	if err != nil {
		return nil, err
	}
	out := make([]Instance, 0, len(kvs))
	for _, kv := range kvs {
		var in Instance
		if json.Unmarshal(kv.Value, &in) == nil && in.Component != "" {
			out = append(out, in)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Component != out[j].Component {
			return out[i].Component < out[j].Component
		}
		return out[i].InstanceID < out[j].InstanceID
	})
	return out, nil
}

// discover is the initial model discovery: it reads the instances until
// one read succeeds.
func (fe *frontend) discover(ctx context.Context) {
	for {
		if _, err := fe.instances(ctx); err == nil || fe.discoveryDone() {
			return
		}
		if !sleepCtx(ctx, 500*time.Millisecond) {
			return
		}
	}
}

func (fe *frontend) discoveryDone() bool {
	fe.discoveryMu.Lock()
	defer fe.discoveryMu.Unlock()
	return fe.discovered
}

// noteDiscovery records the outcome of a read of the instances for the
// initial discovery; after it completed, failures no longer matter.
func (fe *frontend) noteDiscovery(err error) {
	fe.discoveryMu.Lock()
	defer fe.discoveryMu.Unlock()
	switch {
	case fe.discovered:
	case err == nil:
		fe.discovered, fe.discoveryErr = true, ""
	default:
		fe.discoveryErr = err.Error()
	}
}

// health answers like health.rs @0ab2b3f5: the status from the service's
// state, the instances whatever the status (an empty list when they cannot
// be read, as list_all_instances failing gives).
func (fe *frontend) health(w http.ResponseWriter, r *http.Request) {
	ins, err := fe.instances(r.Context())
	fe.discoveryMu.Lock()
	resp := HealthResponse{InitialDiscoveryComplete: fe.discovered, Endpoints: []string{}, Instances: make([]HealthInstance, 0, len(ins))}
	if fe.discoveryErr != "" {
		msg := fe.discoveryErr
		resp.InitialDiscoveryError = &msg
	}
	fe.discoveryMu.Unlock()
	code := http.StatusServiceUnavailable
	switch {
	case fe.stopping.Load():
		resp.Status, resp.Message = "shutting_down", "Service is shutting down"
	case resp.InitialDiscoveryError != nil:
		resp.Status, resp.Message = "not_ready", "Initial model discovery failed: "+*resp.InitialDiscoveryError
	case !resp.InitialDiscoveryComplete:
		resp.Status, resp.Message = "not_ready", "Initial model discovery in progress"
	default:
		code, resp.Status, resp.Message = http.StatusOK, "healthy", "Service is healthy"
	}
	if err != nil {
		ins = nil
	}
	for _, in := range ins {
		resp.Endpoints = append(resp.Endpoints, fmt.Sprintf("dyn://%s.%s.%s", in.Namespace, in.Component, in.Endpoint))
		resp.Instances = append(resp.Instances, HealthInstance{
			Component: in.Component, Endpoint: in.Endpoint, Namespace: in.Namespace,
			InstanceID: in.InstanceID, Host: in.Host, Model: in.Model,
		})
	}
	sort.Strings(resp.Endpoints)
	resp.Endpoints = slices.Compact(resp.Endpoints)
	writeJSONResponse(w, code, resp)
}

// servedModels are the models of the instances that answer requests: decode
// (component backend/decode) and aggregated workers, not prefill ones.
func servedModels(ins []Instance) []string {
	var models []string
	for _, in := range ins {
		if in.Component != "prefill" && in.Endpoint == "generate" && in.Model != "" && !slices.Contains(models, in.Model) {
			models = append(models, in.Model)
		}
	}
	sort.Strings(models)
	return models
}

func modelList(models []string, created int64) map[string]any {
	data := make([]map[string]any, 0, len(models))
	for _, m := range models {
		data = append(data, map[string]any{"id": m, "object": "model", "created": created, "owned_by": "nvidia"})
	}
	return map[string]any{"object": "list", "data": data}
}

func (fe *frontend) models(w http.ResponseWriter, r *http.Request) {
	ins, err := fe.instances(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "discovery: "+err.Error())
		return
	}
	writeJSONResponse(w, http.StatusOK, modelList(servedModels(ins), fe.started))
}

// simReply is the canned answer of every chat completion.
const simReply = "This is a simulated reply from wideep-launch: no model ran."

func (fe *frontend) chat(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model    string `json:"model"`
		Messages []struct {
			Content any `json:"content"` // a string, or a list of parts
		} `json:"messages"`
		Stream bool `json:"stream"`
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil || json.Unmarshal(body, &req) != nil {
		writeError(w, http.StatusBadRequest, "request body is not a JSON chat completion request")
		return
	}
	if len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "messages must not be empty")
		return
	}
	ins, err := fe.instances(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "discovery: "+err.Error())
		return
	}
	models := servedModels(ins)
	switch {
	case len(models) == 0:
		writeError(w, http.StatusServiceUnavailable, "no model is ready: no decode worker registered")
		return
	case !slices.Contains(models, req.Model):
		writeError(w, http.StatusNotFound, fmt.Sprintf("model %q not found (serving %s)", req.Model, strings.Join(models, ", ")))
		return
	}
	n := fe.requests.Add(1)
	id := fmt.Sprintf("chatcmpl-sim-%d", n)
	now := time.Now().Unix()
	// Words stand in for tokens: the numbers only need to be plausible.
	promptTokens := 0
	for _, m := range req.Messages {
		if text, ok := m.Content.(string); ok {
			promptTokens += len(strings.Fields(text))
		}
	}
	completionTokens := len(strings.Fields(simReply))
	if req.Stream {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		for _, chunk := range []map[string]any{
			{"index": 0, "delta": map[string]string{"role": "assistant", "content": simReply}, "finish_reason": nil},
			{"index": 0, "delta": map[string]string{}, "finish_reason": "stop"},
		} {
			data, _ := json.Marshal(map[string]any{
				"id": id, "object": "chat.completion.chunk", "created": now, "model": req.Model,
				"choices": []any{chunk},
			})
			fmt.Fprintf(w, "data: %s\n\n", data)
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
		return
	}
	writeJSONResponse(w, http.StatusOK, map[string]any{
		"id": id, "object": "chat.completion", "created": now, "model": req.Model,
		"choices": []any{map[string]any{
			"index":         0,
			"message":       map[string]string{"role": "assistant", "content": simReply},
			"finish_reason": "stop",
		}},
		"usage": map[string]int{
			"prompt_tokens": promptTokens, "completion_tokens": completionTokens,
			"total_tokens": promptTokens + completionTokens,
		},
	})
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSONResponse(w, code, map[string]any{"error": map[string]any{
		"message": msg, "type": http.StatusText(code), "code": code,
	}})
}

func writeJSONResponse(w http.ResponseWriter, code int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(data, '\n'))
}
