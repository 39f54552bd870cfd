package node

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/wideep/wideep-launch/launcher/health"
	"github.com/wideep/wideep-launch/launcher/supervise"
)

// teardown undoes whatever the phases got to, whatever the reason the node
// stops: processes (one SIGTERM, grace, SIGKILL, no orphan), the runtime,
// the endpoint file, the rendezvous (node 0 first collects every node's
// timeline).
func (r *run) teardown() {
	r.finalReport()
	if s := r.supervisor(); s != nil {
		start := r.n.Now()
		// The gate must not announce READY while processes stop (its ctx
		// has ended, so it returns at once).
		r.gate.Wait()
		if r.idx == 0 {
			// The deployment is gone: nobody may find its URL.
			_ = os.Remove(r.endpointFile())
		}
		for _, e := range s.Shutdown(shutdownReason(r.ctx)) {
			r.log.Debug().Str("process", e.Name).Int("code", supervise.ExitCodeOf(e)).Msg("process ended")
		}
		r.removeLocalDir()
		if r.prepared {
			// Bounded: a hung `enroot remove` (a dead filesystem) must not
			// hold the launcher until Slurm's KillWait SIGKILLs it unheard.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), runtimeCleanupLimit)
			if err := r.n.Runtime.Cleanup(cctx); err != nil {
				r.log.Warn().Err(err).Str("runtime", r.n.Runtime.Name()).Msg("cleaning up the runtime")
			}
			cancel()
		}
		d := r.n.Now().Sub(start)
		r.addTiming(Timing{Name: "teardown", Start: start, Duration: d})
		r.log.Info().Str("phase", "teardown").Dur("duration", d).Msg("phase done")
	}
	// Node 0's own client goes first: its goodbye is what tells the server
	// not to wait for node 0's timeline.
	if r.client != nil {
		r.client.Close()
	}
	if r.server != nil {
		r.printAllTimelines()
		r.server.Close()
	}
}

// runtimeCleanupLimit bounds the runtime's cleanup (removing the job's
// container: an unpacked image, seconds on a local disk).
const runtimeCleanupLimit = 60 * time.Second

// healthGate runs on node 0: it waits until the frontend serves the model
// with every worker registered, then says READY and publishes the endpoint.
func (r *run) healthGate(ctx context.Context, limit time.Duration) {
	exp := health.ExpectFor(r.plan)
	progress := func(elapsed time.Duration, missing string) {
		r.log.Info().Dur("elapsed", elapsed).Str("waiting_for", missing).Msg("deployment not ready yet")
		if line := r.jobProgress(); line != "" {
			r.log.Info().Dur("elapsed", elapsed).Msg("start-up: " + line)
		}
	}
	_, err := health.WaitReady(ctx, r.n.HTTP, r.plan.Frontend, exp, progress, r.n.Options.HealthProgress, limit)
	if ctx.Err() != nil {
		// Stopping: whatever the last poll said, the deployment is going away.
		return
	}
	if err != nil {
		r.cancel(fmt.Errorf("health gate: %w", err))
		return
	}
	line := fmt.Sprintf("READY %s model=%s prefill=%d decode=%d after %s",
		r.plan.Frontend, r.plan.Model, exp.Prefill, exp.Decode, r.n.Now().Sub(r.started).Round(time.Millisecond))
	r.log.Info().Msg(line)
	fmt.Fprintln(r.n.Output, line)
	if err := publishFile(r.endpointFile(), []byte(r.plan.Frontend+"\n")); err != nil {
		r.log.Error().Err(err).Msg("writing the endpoint file")
	}
	r.readyAt = r.n.Now()
	// Every node stops watching its workers' start-up.
	r.server.Notify(noticeReady, nil)
	r.watchHealth(ctx, exp)
}

// watchHealth keeps watching a READY deployment: when it stays below the
// plan (a worker deregistered, the frontend silent) or the canary keeps
// failing, nobody may find its URL any more and the job ends.
func (r *run) watchHealth(ctx context.Context, exp health.Expect) {
	o := r.n.Options
	err := health.Watch(ctx, r.n.HTTP, r.plan.Frontend, exp, health.WatchOptions{
		Interval: o.HealthInterval, LostTimeout: o.HealthLostTimeout,
		CanaryInterval: o.CanaryInterval, CanaryFailures: o.CanaryFailures,
		OnChange: func(degraded bool, what string) {
			if degraded {
				r.log.Warn().Str("missing", what).Dur("lost_after", o.HealthLostTimeout).Msg("deployment degraded after READY")
			} else {
				r.log.Info().Msg("deployment serving again: " + what)
			}
		},
	})
	if err == nil || ctx.Err() != nil {
		return
	}
	_ = os.Remove(r.endpointFile())
	r.cancel(err)
}
