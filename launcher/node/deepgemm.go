package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wideep/wideep-launch/launcher/deploy"
	"github.com/wideep/wideep-launch/launcher/dgcache"
	"github.com/wideep/wideep-launch/launcher/sharedcache"
	"github.com/wideep/wideep-launch/launcher/supervise"
)

// The DeepGEMM phase: rank 0 leads. Node 0 alone looks at the shared cache
// and takes a lock per missing kernel set, then tells every node at one
// barrier who compiles what (kernelPlan). Only the nodes of the first
// worker of a missing layout compile, all of that worker's nodes together
// (compile_deep_gemm starts a whole multi-node SGLang server), each into
// node-local storage; the worker's node rank 0 judges the run and publishes
// its kernels. At the next barrier node 0 releases its locks, and every
// worker node copies its set from the shared cache to node-local storage.

// kernelDecision is node 0's decision about one kernel set.
type kernelDecision struct {
	Role  string `json:"role"`
	Key   string `json:"key"`
	Entry string `json:"entry"`
	// Hit: the entry is published; nobody compiles it.
	Hit bool `json:"hit"`
	// Compile: the worker on Nodes compiles it; Replace publishes over the
	// entry (--precompile always).
	Compile bool  `json:"compile"`
	Replace bool  `json:"replace,omitempty"`
	Nodes   []int `json:"nodes,omitempty"`
	// Waited is how long node 0 waited for another job compiling the same
	// set: that job published it.
	Waited time.Duration `json:"waited,omitempty"`
	// Published says who published the entry that is used (job, host).
	Published string `json:"published,omitempty"`
}

func (d kernelDecision) name() string { return dgcache.EntryName(d.Role, d.Key) }

// kernelPlan is what node 0 broadcasts at the "deepgemm" barrier.
type kernelPlan struct {
	Sets []kernelDecision `json:"sets"`
}

// kernelRun is this node's part of the phase, for the timeline and summary.
type kernelRun struct {
	plan     kernelPlan
	compiled map[string]int // set name → kernels this node's compile published
	here     int            // kernels in this node's local copy after seeding
	copied   int            // files the seeding copied from the shared cache
	claims   []*dgcache.Claim
}

func (r *run) dgCache() *dgcache.Cache {
	return &dgcache.Cache{
		Dir: r.n.Spec.DGCacheRoot(), Log: r.log, Now: r.n.Now,
		ProgressEvery: r.n.Options.HealthProgress, Alive: r.n.JobAlive,
	}
}

func (r *run) owner() sharedcache.Owner {
	return sharedcache.Owner{JobID: r.env.JobID, Host: r.host, PID: os.Getpid()}
}

// deepgemm is the precompile phase (see above). Its own limit is
// PrecompileTimeout per wait: node 0's wait for another job's compile, then
// the compile.
func (r *run) deepgemm(ctx context.Context, _ time.Duration) error {
	timeout := r.n.Spec.PrecompileTimeout
	var payload json.RawMessage
	problem := ""
	if r.idx == 0 {
		defer r.releaseClaims()
		kp, err := r.decideKernels(ctx, timeout)
		if err != nil {
			if r.stopping() {
				return context.Cause(ctx)
			}
			problem = err.Error()
		}
		payload, _ = json.Marshal(kp) // plain strings, ints and bools always marshal
	}
	bctx, cancel := context.WithTimeout(ctx, timeout+r.n.Options.RendezvousTimeout)
	defer cancel()
	raw, err := r.waiting(bctx, "node 0 to check the DeepGEMM cache", func(ctx context.Context) (json.RawMessage, error) {
		return r.client.BarrierWith(ctx, "deepgemm", problem, payload)
	})
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, &r.kernels.plan); err != nil {
		return fmt.Errorf("node 0's DeepGEMM decision: %w", err)
	}
	r.logKernelPlan()

	problem = r.compileKernels(ctx, timeout)
	if r.stopping() {
		return context.Cause(ctx)
	}
	bctx, cancel = context.WithTimeout(ctx, timeout+r.n.Options.RendezvousTimeout)
	defer cancel()
	if _, err := r.waiting(bctx, r.compilingWhat(), func(ctx context.Context) (json.RawMessage, error) {
		return nil, r.client.Barrier(ctx, "precompile", problem)
	}); err != nil {
		return err
	}
	if r.idx == 0 {
		r.releaseClaims()
	}
	err = r.seedKernels()
	r.detail = r.kernelSummary()
	return err
}

// kernelSummary is the phase in a few words, for the timeline and the end
// of the run: "prefill hit, decode compiled (3); 6 kernels reused".
func (r *run) kernelSummary() string {
	var parts []string
	for _, d := range r.kernels.plan.Sets {
		what := "miss"
		switch {
		case d.Hit:
			what = "hit"
		case d.Compile:
			what = "compiled by nodes " + joinInts(d.Nodes)
		}
		parts = append(parts, d.Role+" "+what)
	}
	if len(parts) == 0 {
		return ""
	}
	s := strings.Join(parts, ", ")
	if r.kernels.here > 0 {
		s += fmt.Sprintf("; %d kernels here (%d files copied)", r.kernels.here, r.kernels.copied)
	}
	return s
}

// decideKernels is node 0's look at the cache: hit, or a claim per set.
func (r *run) decideKernels(ctx context.Context, timeout time.Duration) (kernelPlan, error) {
	var kp kernelPlan
	cache := r.dgCache()
	// One deadline for all sets: the other nodes wait at the barrier for
	// timeout plus the rendezvous timeout, whatever node 0 waits for.
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, set := range r.plan.DeepGEMM {
		d := kernelDecision{Role: string(set.Role), Key: set.Key, Entry: set.Entry, Nodes: set.CompilerNodes}
		start := r.n.Now()
		onWait := func(holder sharedcache.Owner, waited time.Duration) {
			r.log.Info().Str("kernels", set.Name()).Str("holder", holder.String()).Dur("waited", waited).
				Msg("waiting for another job that compiles these DeepGEMM kernels (it holds the cache lock)")
		}
		var err error
		switch r.n.Spec.Precompile {
		case deploy.PrecompileNever:
			_, d.Hit, err = cache.Lookup(string(set.Role), set.Key)
		case deploy.PrecompileAlways:
			var cl *dgcache.Claim
			if cl, err = cache.ClaimAlways(cctx, string(set.Role), set.Key, r.owner(), onWait); err == nil {
				r.kernels.claims = append(r.kernels.claims, cl)
				d.Compile, d.Replace = true, true
			}
		default:
			var cl *dgcache.Claim
			cl, d.Hit, err = cache.Claim(cctx, string(set.Role), set.Key, r.owner(), onWait)
			if cl != nil {
				r.kernels.claims = append(r.kernels.claims, cl)
				d.Compile = true
			}
		}
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("DeepGEMM kernels %s: another job held the cache lock for the whole --precompile-timeout (%v): %w",
				set.Name(), timeout, err)
		}
		if err != nil {
			return kp, err
		}
		if waited := r.n.Now().Sub(start); d.Hit && waited > time.Second {
			d.Waited = waited
		}
		if d.Hit {
			if c, err := dgcache.ReadComplete(set.Entry); err == nil {
				d.Published = fmt.Sprintf("job %s on %s, %d kernels", c.JobID, c.Host, c.Kernels)
			}
		}
		kp.Sets = append(kp.Sets, d)
	}
	return kp, nil
}

// releaseClaims gives up node 0's locks: after the "precompile" barrier the
// entries are published; on a failure or stop, this frees them for the
// next job (Abandon removes nothing published).
func (r *run) releaseClaims() {
	for _, cl := range r.kernels.claims {
		if err := cl.Abandon(); err != nil {
			r.log.Warn().Err(err).Msg("releasing a DeepGEMM cache lock")
		}
	}
	r.kernels.claims = nil
}

func (r *run) logKernelPlan() {
	for _, d := range r.kernels.plan.Sets {
		ev := r.log.Info().Str("kernels", d.name()).Str("entry", d.Entry)
		switch {
		case d.Hit && d.Waited > 0:
			ev.Dur("waited", d.Waited).Str("published", d.Published).
				Msg("DeepGEMM cache hit: another job compiled these kernels while we waited; nothing to compile")
		case d.Hit:
			ev.Str("published", d.Published).Msg("DeepGEMM cache hit: nothing to compile")
		case d.Compile:
			ev.Ints("nodes", d.Nodes).Bool("replace", d.Replace).Msg("DeepGEMM cache miss: these nodes compile")
		default:
			ev.Msg("DeepGEMM cache miss and --precompile never: the workers compile at run time (slow first requests)")
		}
	}
}

// mySet is the decision about the kernels this node's worker runs, if any.
func (r *run) mySet() (kernelDecision, bool) {
	if r.me.Worker < 0 {
		return kernelDecision{}, false
	}
	i := slices.IndexFunc(r.kernels.plan.Sets, func(d kernelDecision) bool { return d.Role == string(r.me.Role) })
	if i < 0 {
		return kernelDecision{}, false
	}
	return r.kernels.plan.Sets[i], true
}

// compilingWhat says what the nodes wait for at the "precompile" barrier.
func (r *run) compilingWhat() string {
	var parts []string
	for _, d := range r.kernels.plan.Sets {
		if d.Compile {
			parts = append(parts, fmt.Sprintf("the compile of DeepGEMM kernels %s on nodes %s", d.name(), joinInts(d.Nodes)))
		}
	}
	if len(parts) == 0 {
		return "the other nodes"
	}
	return strings.Join(parts, " and ")
}

// compileKernels runs this node's compile if node 0 chose its worker, and
// returns the problem to report ("" when none; the barrier prefixes the
// node). On the worker's node rank 0 the run is judged and its kernels
// published.
func (r *run) compileKernels(ctx context.Context, timeout time.Duration) string {
	d, ok := r.mySet()
	if !ok || !d.Compile || !slices.Contains(d.Nodes, r.idx) {
		return ""
	}
	if len(r.procs.oneshots) == 0 {
		// Every node plans alike; node 0 chose from the same plan.
		return fmt.Sprintf("chosen to compile %s but its plan has no precompile", d.name())
	}
	spec := r.procs.oneshots[0]
	// Its own ports (compile_deep_gemm's HTTP server) were left out of the
	// preflight: on a cache hit nothing binds them.
	if busy := r.portsTaken(deploy.ProcPrecompile); len(busy) > 0 {
		return fmt.Sprintf("DeepGEMM compile %s: %s", d.name(), strings.Join(busy, "; "))
	}
	dir := r.n.Spec.CompileDir(r.env.JobID, r.host, d.name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Sprintf("DeepGEMM compile directory: %v", err)
	}
	if d.Replace {
		// Compile on top of what the cache has: DeepGEMM skips what is there.
		if _, _, err := dgcache.Seed(d.Entry, dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			r.log.Warn().Err(err).Msg("could not start the compile from the cached kernels; compiling all")
		}
	}
	before, _ := dgcache.CountKernels(dir)
	start := r.n.Now()
	r.log.Info().Str("kernels", d.name()).Str("dir", dir).Int("already_here", before).Msg("compiling DeepGEMM kernels")
	e, err := r.runCompile(ctx, spec, timeout)
	if r.stopping() {
		return ""
	}
	after, _ := dgcache.CountKernels(dir)
	took := r.n.Now().Sub(start)
	res := dgcache.Result{ExitCode: supervise.ExitCodeOf(e), LogTail: dgcache.TailLines(spec.LogPath, dgcache.LogTailLines),
		KernelsBefore: before, KernelsAfter: after, Strict: r.n.Spec.PrecompileStrict,
		TimedOut: errors.Is(err, context.DeadlineExceeded), Timeout: timeout}
	if err != nil && !res.TimedOut {
		return fmt.Sprintf("DeepGEMM compile %s: %v", d.name(), err)
	}
	if r.me.NodeRank != 0 {
		// The other ranks wait for rank 0's server and return normally
		// (exit 0) when it ends: any other ending is their own failure, and
		// rank 0 may now wait for them until its timeout, so it is reported
		// at once. Only rank 0 meets the known failure (its last request).
		switch {
		case res.TimedOut:
			return fmt.Sprintf("DeepGEMM compile %s: compile_deep_gemm did not finish within its timeout (%v) (log: %s)",
				d.name(), timeout, spec.LogPath)
		case res.ExitCode != 0:
			return fmt.Sprintf("precompile exited with code %d (log: %s)", res.ExitCode, spec.LogPath)
		}
		return ""
	}
	publish, warning, jerr := dgcache.Judge(res)
	if !publish {
		return fmt.Sprintf("DeepGEMM compile %s failed: %v (log: %s)", d.name(), jerr, spec.LogPath)
	}
	if warning != "" {
		r.log.Warn().Str("kernels", d.name()).Msg(warning + " (--precompile-strict makes this a failure)")
	}
	if r.stopping() {
		// The job ended while it compiled: node 0 gives the claim up, and a
		// publish Slurm may cut short is a leftover for the next job.
		return ""
	}
	set := r.plan.DeepGEMM[slices.IndexFunc(r.plan.DeepGEMM, func(k deploy.KernelSet) bool { return string(k.Role) == d.Role })]
	n, perr := r.dgCache().PublishFor(d.Role, d.Key, dir, dgcache.Complete{
		Inputs: set.Inputs, Image: r.n.Spec.Image, Duration: took, SGLangVersion: r.n.Spec.SGLangVersion, Warning: warning,
	}, r.owner(), d.Replace)
	if errors.Is(perr, sharedcache.ErrExists) {
		// Another job took our lock (it looked stale) and published first:
		// its kernels are as good as ours, and every node seeds from them.
		if c, err := dgcache.ReadComplete(d.Entry); err == nil {
			r.log.Warn().Str("kernels", d.name()).Str("published_by", "job "+c.JobID+" on "+c.Host).
				Msg("another job published these DeepGEMM kernels first; using its entry")
			perr, n = nil, c.Kernels
		}
	}
	if perr != nil {
		return fmt.Sprintf("publishing DeepGEMM kernels %s: %v", d.name(), perr)
	}
	r.kernels.compiled = map[string]int{d.name(): n}
	r.log.Info().Str("kernels", d.name()).Int("count", n).Dur("took", took).Msg("DeepGEMM kernels compiled and published")
	return ""
}

// runCompile runs the precompile process until it exits or timeout ends.
// When the node stops, the teardown stops it with every other process.
func (r *run) runCompile(ctx context.Context, spec supervise.ProcSpec, timeout time.Duration) (supervise.Exit, error) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	type result struct {
		e   supervise.Exit
		err error
	}
	done := make(chan result, 1)
	go func() {
		e, err := r.sup.RunOneshot(cctx, spec)
		done <- result{e, err}
	}()
	select {
	case res := <-done:
		return res.e, res.err
	case <-ctx.Done():
		return supervise.Exit{}, context.Cause(ctx)
	}
}

// seedKernels copies this node's kernel set from the shared cache into
// node-local storage, where its worker's SGLANG_DG_CACHE_DIR points.
func (r *run) seedKernels() error {
	d, ok := r.mySet()
	if !ok || r.n.Spec.DGCacheMode == deploy.DGCacheShared || !(d.Hit || d.Compile) {
		return nil
	}
	dir := r.n.Spec.DGDir(r.env.JobID, r.host, d.name())
	copied, skipped, err := dgcache.Seed(d.Entry, dir)
	if errors.Is(err, fs.ErrNotExist) {
		// --precompile always in another job swaps the entry with two
		// renames; between them it is missing for a moment.
		time.Sleep(time.Second)
		copied, skipped, err = dgcache.Seed(d.Entry, dir)
	}
	if err != nil {
		return fmt.Errorf("node %d (%s): copying DeepGEMM kernels %s to %s: %w", r.idx, r.host, d.name(), dir, err)
	}
	n, err := dgcache.CountKernels(dir)
	if err != nil {
		return fmt.Errorf("node %d (%s): DeepGEMM kernels in %s: %w", r.idx, r.host, dir, err)
	}
	r.kernels.here, r.kernels.copied = n, copied
	r.log.Info().Str("kernels", d.name()).Str("dir", dir).Int("kernels_here", n).Int("files_copied", copied).
		Int("files_already_there", skipped).Msg("DeepGEMM kernels ready on this node")
	return nil
}

// waiting runs wait, saying every HealthProgress what this node waits for
// and for how long.
func (r *run) waiting(ctx context.Context, what string, wait func(context.Context) (json.RawMessage, error)) (json.RawMessage, error) {
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := r.n.Now()
		t := time.NewTicker(r.n.Options.HealthProgress)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				r.log.Info().Dur("elapsed", r.n.Now().Sub(start).Round(time.Second)).Msg("waiting for " + what)
			}
		}
	}()
	raw, err := wait(ctx)
	close(stop)
	wg.Wait()
	return raw, err
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ",")
}
