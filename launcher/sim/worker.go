package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sethvargo/go-retry"
)

// Instance is what a worker registers in etcd under InstanceKey, and what the
// sim frontend lists in /health. The stand-in registers ONE instance per
// worker, from node rank 0 (Dynamo's SGLang workers register their serving
// endpoint from the leader node only; ranks >0 register nothing), so a
// deployment of P prefill and D decode workers shows P+D instances.
type Instance struct {
	Namespace  string `json:"namespace"`
	Component  string `json:"component"` // "prefill", or "backend" for decode and aggregated workers
	Endpoint   string `json:"endpoint"`  // "generate"
	InstanceID int64  `json:"instance_id"`
	// Host is the address the worker advertises (DYN_TCP_RPC_HOST, else the
	// node name); Node is the node name.
	Host               string `json:"host"`
	Node               string `json:"node"`
	NodeRank           int    `json:"node_rank"`
	NNodes             int    `json:"nnodes"`
	Model              string `json:"model"` // --served-model-name, else --model-path
	ModelPath          string `json:"model_path"`
	DisaggregationMode string `json:"disaggregation_mode"`
	BootstrapPort      int    `json:"bootstrap_port,omitempty"`
}

// InstancePrefix is the etcd prefix of all instances; the frontend reads it.
const InstancePrefix = "v1/instances/"

// InstanceKey is v1/instances/<namespace>/<component>/<endpoint>/<id in hex>,
// the layout of Dynamo's etcd discovery (the instance ID is the lease ID).
func InstanceKey(in Instance) string {
	return fmt.Sprintf("%s%s/%s/%s/%x", InstancePrefix, in.Namespace, in.Component, in.Endpoint, in.InstanceID)
}

// workerConfig is the part of the SGLang flags the stand-in acts on.
type workerConfig struct {
	role          string
	nnodes, rank  int
	distInit      string // host:port, "" when not given
	distPort      string
	bindHost      string // --host: SGLang binds its HTTP and bootstrap servers there
	port          int    // --port, -1 when not given
	bootstrapPort int    // prefill only
	model         string
	modelPath     string
	namespace     string
	component     string
	endpoint      string
	distTimeout   time.Duration
	// checkPorts are the ports SGLang's PortArgs.init_new test-binds on every
	// node of the worker before anything else (with DP attention: the
	// dist-init port and the 5 above it, and --nccl-port).
	checkPorts []portCheck
}

// portCheck is a port SGLang refuses to start without, and why.
type portCheck struct {
	port int
	name string
}

const (
	defaultBootstrapPort = 8998 // SGLang's default --disaggregation-bootstrap-port
	defaultDistTimeout   = 30 * time.Minute
	registerTimeout      = time.Minute
)

// newWorkerConfig applies the checks SGLang's ServerArgs and torch make
// after parsing; their failures are runtime errors (exit 1), not usage.
func newWorkerConfig(a *args, env func(string) string) (*workerConfig, error) {
	c := &workerConfig{
		nnodes:    a.int("--nnodes", 1),
		rank:      a.int("--node-rank", 0),
		distInit:  a.str("--dist-init-addr", ""),
		bindHost:  a.str("--host", "127.0.0.1"),
		port:      a.int("--port", -1),
		modelPath: a.str("--model-path", ""),
		namespace: "dynamo",
		endpoint:  "generate",
	}
	c.model = a.str("--served-model-name", c.modelPath)
	switch a.str("--disaggregation-mode", "null") {
	case "prefill":
		c.role, c.component = rolePrefill, "prefill"
		c.bootstrapPort = a.int("--disaggregation-bootstrap-port", defaultBootstrapPort)
	case "decode":
		c.role, c.component = roleDecode, "backend"
	default:
		c.role, c.component = roleAggregated, "backend"
	}
	if ns := env("DYN_NAMESPACE"); ns != "" {
		c.namespace = ns
	}
	if ns := a.str("--namespace", ""); ns != "" {
		c.namespace = ns
	}
	if ep := a.str("--endpoint", ""); ep != "" {
		parts := strings.Split(strings.TrimPrefix(ep, "dyn://"), ".")
		if !strings.HasPrefix(ep, "dyn://") || len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			return nil, fmt.Errorf("--endpoint %q: want dyn://namespace.component.endpoint", ep)
		}
		c.namespace, c.component, c.endpoint = parts[0], parts[1], parts[2]
	}
	c.distTimeout = defaultDistTimeout
	if a.has("--dist-timeout") {
		c.distTimeout = time.Duration(a.int("--dist-timeout", 0)) * time.Second
	}
	if c.nnodes < 1 {
		return nil, fmt.Errorf("--nnodes %d: must be at least 1", c.nnodes)
	}
	if c.rank < 0 || c.rank >= c.nnodes {
		return nil, fmt.Errorf("--node-rank %d: must be in 0..%d for --nnodes %d", c.rank, c.nnodes-1, c.nnodes)
	}
	if tp := a.int("--tp-size", 1); tp%c.nnodes != 0 {
		return nil, fmt.Errorf("--tp-size %d is not a multiple of --nnodes %d", tp, c.nnodes)
	}
	if a.bool("--enable-dp-attention") {
		if tp, dp := a.int("--tp-size", 1), a.int("--dp-size", 1); dp < 1 || tp%dp != 0 {
			return nil, fmt.Errorf("--enable-dp-attention: --tp-size %d must be a multiple of --dp-size %d", tp, dp)
		}
	}
	if c.distInit == "" && c.nnodes > 1 {
		return nil, fmt.Errorf("--nnodes %d needs --dist-init-addr", c.nnodes)
	}
	if c.distInit != "" {
		host, port, err := net.SplitHostPort(c.distInit)
		if err != nil || host == "" {
			return nil, fmt.Errorf("--dist-init-addr %q: want host:port", c.distInit)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("--dist-init-addr %q: bad port", c.distInit)
		}
		c.distPort = port
		if a.bool("--enable-dp-attention") {
			p, _ := strconv.Atoi(port)
			for i, name := range []string{"dist_init_port", "tokenizer_port", "detokenizer_port", "rpc_port", "metrics_port", "scheduler_input_port"} {
				c.checkPorts = append(c.checkPorts, portCheck{p + i, name})
			}
			if n := a.int("--nccl-port", 0); n > 0 {
				c.checkPorts = append(c.checkPorts, portCheck{n, "nccl_port"})
			}
		}
	}
	return c, nil
}

// checkFree does what SGLang's wait_port_available does on every node: a
// port already in use ends the worker at start, with SGLang's complaint.
func (s *standIn) checkFree(checks []portCheck) error {
	for _, c := range checks {
		ln, err := listenTCP(s.bindHost(""), c.port)
		if err != nil {
			return fmt.Errorf("ValueError: Port is already in use. %s=%d (%v)", c.name, c.port, err)
		}
		ln.Close()
	}
	return nil
}

func (s *standIn) runWorker(argv []string) int {
	const prog = "python3 -m " + ModuleWorker
	a, err := parseArgs(workerGrammar(), argv)
	if code, done := s.argsDone(workerGrammar(), err); done {
		return code
	}
	cfg, err := newWorkerConfig(a, s.getenv)
	if err != nil {
		fmt.Fprintf(s.stderr, "%s: error: %v\n", prog, err)
		return exitError
	}
	names := s.nodeNames()
	s.prefix = fmt.Sprintf("sim %s worker [%s node-rank %d/%d]: ", cfg.role, names[0], cfg.rank, cfg.nnodes)
	fails, termDelay, err := s.commonEnv()
	if err != nil {
		s.logf("%v", err)
		return exitUsage
	}
	ttl := int64(10)
	if v := s.getenv(EnvLeaseTTL); v != "" {
		if ttl, err = strconv.ParseInt(v, 10, 64); err != nil || ttl < 1 {
			s.logf("%s=%q: want a whole number of seconds >= 1", EnvLeaseTTL, v)
			return exitUsage
		}
	}

	rec := s.newRecord(cfg.role, ModuleWorker)
	rec.NodeRank, rec.NNodes, rec.DistInitAddr, rec.Model = cfg.rank, cfg.nnodes, cfg.distInit, cfg.model
	rec.Listen = map[string]string{}
	// What DeepGEMM would find precompiled; the rest it compiles at run time.
	rec.CacheDir = s.cacheDir()
	rec.Kernels, _ = filepath.Glob(filepath.Join(rec.CacheDir, "cache", "kernel.*", "kernel.cubin"))
	s.save(rec)
	if err := s.checkFree(cfg.checkPorts); err != nil {
		s.logf("%v", err)
		return s.finish(rec, exitError, err.Error())
	}
	if fl, ok := findFailure(fails, names, cfg.role, StageStartup); ok {
		s.logf("injected failure %s: exiting with code %d at startup", fl, fl.Code)
		return s.finish(rec, fl.Code, "injected failure at startup")
	}

	w := &worker{standIn: s, cfg: cfg, rec: rec, ttl: ttl, names: names}
	defer w.cleanup()
	ctx, stop := s.terminated()
	defer stop()

	code, reason := w.run(ctx, fails)
	if isTerminated(ctx) && code == 0 {
		if termDelay > 0 {
			s.logf("stopping in %v", termDelay)
			time.Sleep(termDelay) // the point of the knob: a worker that is slow to stop
		}
		reason = terminationReason(ctx)
	}
	w.cleanup()
	if code != 0 {
		s.logf("exiting with code %d: %s", code, reason)
	} else {
		s.logf("exiting: %s", reason)
	}
	return s.finish(rec, code, reason)
}

// commonEnv reads the variables every stand-in understands.
func (s *standIn) commonEnv() ([]Failure, time.Duration, error) {
	fails, err := ParseFailures(s.getenv(EnvFail))
	if err != nil {
		return nil, 0, err
	}
	delay, err := s.durationEnv(EnvTermDelay, 0)
	if err != nil {
		return nil, 0, err
	}
	return fails, delay, nil
}

type worker struct {
	*standIn
	cfg   *workerConfig
	rec   *Record
	ttl   int64
	names []string

	rdzv    *rendezvous
	servers []*http.Server
	etcd    *EtcdClient
	lease   int64
	cleaned bool
}

// run takes the worker from rendezvous to serving and returns when it should
// exit, with the exit code and why. A termination signal returns code 0.
func (w *worker) run(ctx context.Context, fails []Failure) (int, string) {
	cfg := w.cfg
	fatal := func(err error) (int, string) {
		if isTerminated(ctx) {
			return 0, terminationReason(ctx)
		}
		return exitError, err.Error()
	}

	if cfg.distInit != "" {
		me := Hello{Proto: rdzvProto, Rank: cfg.rank, NNodes: cfg.nnodes, Role: cfg.role, Node: w.names[0]}
		var err error
		if cfg.rank == 0 {
			w.logf("rendezvous: waiting for %d node(s) on port %s", cfg.nnodes-1, cfg.distPort)
			w.rdzv, err = serveRendezvous(ctx, w.bindHost(""), cfg.distPort, me, cfg.distTimeout, w.logf)
		} else {
			w.logf("rendezvous: joining node rank 0 at %s", cfg.distInit)
			w.rdzv, err = joinRendezvous(ctx, cfg.distInit, me, cfg.distTimeout, w.logf)
		}
		if err != nil {
			return fatal(err)
		}
		w.rec.Rendezvous = &w.rdzv.Record
		if w.rdzv.Record.Listen != "" {
			w.rec.Listen["dist_init"] = w.rdzv.Record.Listen
		}
		w.logf("rendezvous complete: %d node(s)", len(w.rdzv.Record.Peers))
	}

	if err := w.startUp(ctx, fails); err != nil {
		return fatal(err)
	}

	if cfg.rank == 0 {
		if cfg.port >= 0 {
			if err := w.listen("http", cfg.bindHost, cfg.port); err != nil {
				return fatal(err)
			}
		}
		if cfg.role == rolePrefill {
			if err := w.listen("bootstrap", cfg.bindHost, cfg.bootstrapPort); err != nil {
				return fatal(err)
			}
		}
	}

	leaseLost := make(chan error, 1)
	if cfg.rank == 0 {
		if fl, ok := findFailure(fails, w.names, cfg.role, StageNoRegister); ok {
			w.logf("injected failure %s: not registering in etcd", fl)
		} else if err := w.register(ctx, leaseLost); err != nil {
			return fatal(err)
		}
	}

	if s := w.getenv(EnvOrphan); s == "1" {
		w.startOrphan()
	}
	w.rec.State = "serving"
	w.save(w.rec)
	w.logf("serving")
	if w.onServing != nil {
		w.onServing(*w.rec)
	}

	failFl, willFail := findFailure(fails, w.names, cfg.role, StageServe)
	failAfter := after(willFail, failFl.After)
	deregFl, willDereg := findFailure(fails, w.names, cfg.role, StageDeregister)
	deregAfter := after(willDereg && w.lease != 0, deregFl.After)
	hangFl, willHang := findFailure(fails, w.names, cfg.role, StageHang)
	hangAfter := after(willHang, hangFl.After)
	for {
		select {
		case <-ctx.Done():
			if w.rdzv != nil {
				w.rdzv.quiet()
			}
			return 0, terminationReason(ctx)
		case err := <-leaseLost:
			return exitError, err.Error()
		case <-failAfter:
			return failFl.Code, fmt.Sprintf("injected failure %s after serving %v", failFl, failFl.After)
		case <-deregAfter:
			deregAfter = nil
			w.logf("injected failure %s: deregistering from etcd, still running", deregFl)
			w.deregister()
		case <-hangAfter:
			hangAfter = nil
			w.logf("injected failure %s: hanging, silent from now on", hangFl)
			w.hang()
		}
	}
}

// after is a channel that fires after d when on, else never.
func after(on bool, d time.Duration) <-chan time.Time {
	if !on {
		return nil
	}
	return time.After(d)
}

// deregister takes the instance out of etcd (as a worker whose scheduler
// died behind a live process would be) and stops keeping the lease alive.
func (w *worker) deregister() {
	w.logMu.Lock()
	lease := w.lease
	w.lease = 0
	w.logMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := w.etcd.Revoke(ctx, lease); err != nil {
		w.logf("deregistering: %v", err)
	}
}

// hang silences the stand-in: nothing more is written, to the log or the
// record, until it is stopped.
func (w *worker) hang() {
	w.logMu.Lock()
	w.silent = true
	w.logMu.Unlock()
}

// listen binds what to host:port and answers HTTP there, as SGLang's HTTP
// and bootstrap servers do; a port already in use fails the worker like the
// real one.
func (w *worker) listen(what, host string, port int) error {
	ln, err := listenTCP(w.bindHost(host), port)
	if err != nil {
		return fmt.Errorf("%s server: %w", what, err)
	}
	w.rec.Listen[what] = ln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(rw http.ResponseWriter, _ *http.Request) { rw.WriteHeader(http.StatusOK) })
	mux.HandleFunc("/v1/models", func(rw http.ResponseWriter, _ *http.Request) {
		writeJSONResponse(rw, http.StatusOK, modelList([]string{w.cfg.model}, time.Now().Unix()))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	w.servers = append(w.servers, srv)
	go srv.Serve(ln)
	w.logf("%s server listening on %s", what, ln.Addr())
	return nil
}

// register puts the instance in etcd under a lease kept alive until the
// worker exits; if the lease is lost (etcd down longer than the TTL), the
// worker dies like Dynamo's runtime does.
func (w *worker) register(ctx context.Context, leaseLost chan<- error) error {
	w.etcd = NewEtcdClient(w.getenv("ETCD_ENDPOINTS"))
	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	var lastErr error
	b := retry.WithCappedDuration(2*time.Second, retry.NewExponential(100*time.Millisecond))
	lease, err := retry.DoValue(ctx, b, func(ctx context.Context) (int64, error) {
		id, err := w.etcd.Grant(ctx, w.ttl)
		if err != nil {
			lastErr = err
			return 0, retry.RetryableError(err)
		}
		return id, nil
	})
	if err != nil {
		return fmt.Errorf("cannot reach etcd at %s: %v (last: %v)", strings.Join(w.etcd.Endpoints, ","), err, lastErr)
	}
	w.lease = lease
	host := w.getenv("DYN_TCP_RPC_HOST")
	if host == "" {
		host = w.names[0]
	}
	in := Instance{
		Namespace: w.cfg.namespace, Component: w.cfg.component, Endpoint: w.cfg.endpoint,
		InstanceID: lease, Host: host, Node: w.names[0], NodeRank: w.cfg.rank, NNodes: w.cfg.nnodes,
		Model: w.cfg.model, ModelPath: w.cfg.modelPath, DisaggregationMode: w.cfg.role,
		BootstrapPort: w.cfg.bootstrapPort,
	}
	data, err := json.Marshal(in)
	if err != nil {
		return err
	}
	key := InstanceKey(in)
	if err := w.etcd.Put(ctx, key, data, lease); err != nil {
		return fmt.Errorf("registering %s in etcd: %w", key, err)
	}
	w.rec.Instance, w.rec.EtcdKey = &in, key
	w.logf("registered %s (lease TTL %ds)", key, w.ttl)
	go w.keepAlive(lease, leaseLost)
	return nil
}

func (w *worker) keepAlive(lease int64, leaseLost chan<- error) {
	period := time.Duration(w.ttl) * time.Second / 3
	lastOK := time.Now()
	t := time.NewTicker(period)
	defer t.Stop()
	for range t.C {
		if w.isCleaned() || w.isDeregistered() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), period)
		_, err := w.etcd.KeepAlive(ctx, lease)
		cancel()
		switch {
		case err == nil:
			lastOK = time.Now()
		case errors.Is(err, ErrLeaseExpired):
			leaseLost <- fmt.Errorf("etcd lease %x expired: instance no longer registered", lease)
			return
		case time.Since(lastOK) > time.Duration(w.ttl)*time.Second:
			leaseLost <- fmt.Errorf("etcd unreachable for longer than the lease TTL (%ds): %v", w.ttl, err)
			return
		}
	}
}

func (w *worker) isDeregistered() bool {
	w.logMu.Lock()
	defer w.logMu.Unlock()
	return w.lease == 0
}

func (w *worker) isCleaned() bool {
	w.logMu.Lock()
	defer w.logMu.Unlock()
	return w.cleaned
}

// cleanup deregisters (revoking the lease deletes the key at once instead of
// after the TTL) and releases the ports. It runs once.
func (w *worker) cleanup() {
	w.logMu.Lock()
	done := w.cleaned
	w.cleaned = true
	w.logMu.Unlock()
	if done {
		return
	}
	w.logMu.Lock()
	lease := w.lease
	w.logMu.Unlock()
	if lease != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		if err := w.etcd.Revoke(ctx, lease); err != nil {
			w.logf("deregistering: %v", err)
		}
		cancel()
	}
	for _, srv := range w.servers {
		srv.Close()
	}
	if w.rdzv != nil {
		w.rdzv.Close()
	}
}

// startUp prints an SGLang worker's start-up milestones, in its words
// (model_runner.py's "Load weight begin/end", the safetensors loader's
// progress bar, "Capture cuda graph begin/end"), taking
// WIDEEP_SIM_STARTUP_DELAY with a progress line a second; or, for a
// start-up hang, goes silent after "Load weight begin" until terminated.
func (w *worker) startUp(ctx context.Context, fails []Failure) error {
	delay, err := w.durationEnv(EnvStartupDelay, 0)
	if err != nil {
		return err
	}
	w.logf("Load weight begin. avail mem=79.10 GB (simulated)")
	if fl, ok := findFailure(fails, w.names, w.cfg.role, StageStartupHang); ok {
		w.logf("injected failure %s: silent from here on", fl)
		w.save(w.rec)
		<-ctx.Done()
		return context.Cause(ctx)
	}
	const shards = 163
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for time.Since(start) < delay {
		done := int(float64(shards) * float64(time.Since(start)) / float64(delay))
		w.logf("Loading safetensors checkpoint shards: %3d%% Completed | %d/%d (simulated)", 100*done/shards, done, shards)
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-tick.C:
		}
	}
	w.logf("Loading safetensors checkpoint shards: 100%% Completed | %d/%d (simulated)", shards, shards)
	w.logf("Load weight end. type=DeepseekV3ForCausalLM (simulated)")
	w.logf("Capture cuda graph begin. This can take up to several minutes. (simulated)")
	w.logf("Capture cuda graph end. Time elapsed: 0.00 s (simulated)")
	return nil
}
