package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// The sim frontend answers like dynamo.frontend: /live, /health (the Dynamo
// shape, built from the instances registered in etcd), /v1/models and a
// canned /v1/chat/completions.

// HealthResponse is the body of the frontend's /health. Like older Dynamo
// frontends, status is "unhealthy" (with HTTP 200) while no instance is
// registered.
type HealthResponse struct {
	Status    string           `json:"status"`
	Message   string           `json:"message,omitempty"`
	Endpoints []string         `json:"endpoints"`
	Instances []HealthInstance `json:"instances"`
}

// HealthInstance is one entry of /health's instances.
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
}

func (s *standIn) runFrontend(argv []string) int {
	const prog = "python3 -m " + ModuleFrontend
	a, err := parseArgs(argv, frontendFlags)
	if code, done := s.argsDone(prog, frontendFlags, err); done {
		return code
	}
	port := 8000
	if v := s.getenv("DYN_HTTP_PORT"); v != "" {
		if port, err = strconv.Atoi(v); err != nil {
			fmt.Fprintf(s.stderr, "%s: error: DYN_HTTP_PORT=%q is not a port number\n", prog, v)
			return exitUsage
		}
	}
	port = a.int("http-port", port)
	host := a.str("http-host", "0.0.0.0")
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
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, r *http.Request) {
		if fe.stopping.Load() {
			writeJSONResponse(w, http.StatusServiceUnavailable, map[string]string{"status": "shutting down"})
			return
		}
		writeJSONResponse(w, http.StatusOK, map[string]string{"status": "live"})
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

func (fe *frontend) health(w http.ResponseWriter, r *http.Request) {
	ins, err := fe.instances(r.Context())
	if err != nil {
		writeJSONResponse(w, http.StatusServiceUnavailable, HealthResponse{
			Status: "unhealthy", Message: "discovery: " + err.Error(), Endpoints: []string{}, Instances: []HealthInstance{},
		})
		return
	}
	resp := HealthResponse{Status: "healthy", Endpoints: []string{}, Instances: make([]HealthInstance, 0, len(ins))}
	seen := map[string]bool{}
	for _, in := range ins {
		ep := fmt.Sprintf("dyn://%s.%s.%s", in.Namespace, in.Component, in.Endpoint)
		if !seen[ep] {
			seen[ep] = true
			resp.Endpoints = append(resp.Endpoints, ep)
		}
		resp.Instances = append(resp.Instances, HealthInstance{
			Component: in.Component, Endpoint: in.Endpoint, Namespace: in.Namespace,
			InstanceID: in.InstanceID, Host: in.Host, Model: in.Model,
		})
	}
	if len(ins) == 0 {
		resp.Status, resp.Message = "unhealthy", "no instances registered"
	}
	writeJSONResponse(w, http.StatusOK, resp)
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
