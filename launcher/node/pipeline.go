package node

import (
	"context"
	"errors"
	"time"

	"github.com/wideep/wideep-launch/launcher/deploy"
	"github.com/wideep/wideep-launch/launcher/rendezvous"
)

// phase is one step of a node's start-up.
type phase struct {
	name string
	// limit is the phase's own time bound (0: none); run applies it where its
	// wait is (a barrier, a join), so that the rendezvous can still name the
	// nodes that are late before this node gives up.
	limit func(Options) time.Duration
	run   func(r *run, ctx context.Context, limit time.Duration) error
	// meets marks phases that wait on other nodes: when one breaks without a
	// verdict, this node may be about to be stopped too (see settle).
	meets bool
}

// pipeline is a node's start-up, in order. Every node runs every phase; what
// a phase does depends on the node's plan (only the infra node starts etcd).
var pipeline = []phase{
	{name: "plan", run: (*run).makePlan},
	{name: "address", run: (*run).resolveAddress},
	{name: "preflight", run: (*run).preflight},
	{name: "rendezvous", run: (*run).meet, meets: true,
		limit: func(o Options) time.Duration { return o.RendezvousTimeout }},
	{name: "container", run: (*run).prepareRuntime, meets: true,
		limit: func(o Options) time.Duration { return o.ImageTimeout }},
	{name: "versions", run: (*run).probeVersions, meets: true,
		limit: func(o Options) time.Duration { return o.RendezvousTimeout }},
	{name: "routes", run: (*run).checkRoutes, meets: true,
		limit: func(o Options) time.Duration { return o.RendezvousTimeout }},
	{name: "infra", run: (*run).startInfra, meets: true,
		// The others wait at the barrier while the infra node starts etcd.
		limit: func(o Options) time.Duration { return o.InfraTimeout + o.RendezvousTimeout }},
	// Bounded inside, wait by wait (Spec.PrecompileTimeout).
	{name: "precompile", run: (*run).deepgemm, meets: true},
	{name: "start", run: (*run).startServices},
	{name: "serve", run: (*run).serve,
		limit: func(o Options) time.Duration { return o.HealthTimeout }},
}

// execute runs the pipeline and then the teardown, and returns why the node
// ended (nil: a planned stop).
func (r *run) execute(parent context.Context) (err error) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	r.ctx, r.cancel = ctx, cancel
	// Signals are watched from the start (they queue in the channel until
	// then); until processes run, a stop signal just cancels the phase in
	// progress. Forwarding goes on until the teardown is over.
	sigDone := make(chan struct{})
	defer close(sigDone)
	go r.watchSignals(sigDone)
	defer func() {
		r.printTimeline()
		r.logEnd(err)
		r.writeSummary(err)
	}()
	defer r.teardown()

	err = r.runPipeline()
	// The start-up watch may be reporting a stall right now: its verdict
	// (r.failure) is settled before the node says why it ends.
	r.watchers.Wait()
	r.announce(err)
	return r.consequence(err)
}

func (r *run) runPipeline() error {
	for _, p := range pipeline {
		if err := r.runPhase(p); err != nil {
			return r.outcome(p, err)
		}
	}
	// serve returns only when the node stops.
	return r.stopError(context.Cause(r.ctx))
}

// runPhase runs one phase, logging it and recording its duration.
func (r *run) runPhase(p phase) error {
	var limit time.Duration
	if p.limit != nil {
		limit = p.limit(r.n.Options)
	}
	start := r.n.Now()
	err := p.run(r, r.ctx, limit)
	d := r.n.Now().Sub(start)
	r.addTiming(Timing{Name: p.name, Start: start, Duration: d, Detail: r.detail})
	r.detail = ""
	switch {
	case err == nil:
		r.log.Info().Str("phase", p.name).Dur("duration", d).Msg("phase done")
	case r.stopping():
		// The node is being stopped; how it ends is logged once, at the end.
		r.log.Info().Str("phase", p.name).Dur("duration", d).Msg("phase interrupted")
	default:
		r.log.Error().Err(err).Str("phase", p.name).Dur("duration", d).Msg("phase failed")
	}
	return err
}

// outcome is the one place that decides what a failed phase means for the
// node: a verdict on the job (every node reports the same) is final at
// once; a stop decided meanwhile (a signal, a process exit) wins over the
// error it caused; a broken meeting with the other nodes waits briefly for
// this node's own stop (see settle).
func (r *run) outcome(p phase, err error) error {
	if isVerdict(err) {
		return err
	}
	var ae *rendezvous.AbortError
	if errors.As(err, &ae) && !r.stopping() {
		return r.stopError(stopByPeer{ae})
	}
	if p.meets {
		r.settle()
	}
	if r.stopping() {
		if c := context.Cause(r.ctx); c != nil {
			return r.stopError(c)
		}
	}
	return err
}

// isVerdict reports whether err is a decision about the whole job or the
// user's configuration, rather than this node's trouble.
func isVerdict(err error) bool {
	var ce *deploy.ConfigError
	var ve *rendezvous.VerdictError
	return errors.As(err, &ce) || errors.As(err, &ve)
}

// settle handles a meeting that broke without a verdict: node 0 said it is
// stopping, or the connection was lost. When the job is being stopped, node
// 0 often gets Slurm's SIGTERM a moment before this node does: wait briefly
// for our own, so the node reports "stopped", not a failure.
func (r *run) settle() {
	if r.stopping() {
		return
	}
	t := time.NewTimer(r.n.Options.StopSettle)
	defer t.Stop()
	select {
	case <-r.ctx.Done():
	case <-t.C:
	}
}

// stopping reports whether the node has decided to stop.
func (r *run) stopping() bool { return r.ctx != nil && r.ctx.Err() != nil }

// causeOr prefers the reason the node was stopped (a signal, a process exit)
// over the error it produced in the phase that was interrupted.
func (r *run) causeOr(err error) error {
	if r.stopping() {
		if c := context.Cause(r.ctx); c != nil {
			return c
		}
	}
	return err
}
