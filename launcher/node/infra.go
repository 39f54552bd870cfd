package node

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/wideep/wideep-launch/launcher/deploy"
	"github.com/wideep/wideep-launch/launcher/infra"
)

// startControlPlane starts etcd and NATS on the infra node and waits until
// they answer, so that no worker starts before the control plane is up.
func (r *run) startControlPlane(ctx context.Context) error {
	planned := map[string]deploy.Process{}
	for _, p := range r.me.Processes {
		planned[p.Name] = p
	}
	for _, p := range r.procs.infra {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if err := writeFiles(planned[p.Name].Files); err != nil {
			return fmt.Errorf("writing files for %s: %w", p.Name, err)
		}
		if p.Name == deploy.ProcEtcd {
			// etcd keeps its data in <data-dir>/member. Data left there by an
			// earlier job (job ids restart on a new cluster, and a crashed job
			// skips the cleanup) would serve that job's worker registrations,
			// and node 0 could announce READY for workers that do not exist.
			member := filepath.Join(r.n.Spec.JobEtcdDataDir(r.plan.JobID), "member")
			if err := os.RemoveAll(member); err != nil {
				return fmt.Errorf("clearing stale etcd data %s: %w", member, err)
			}
		}
		if err := r.sup.Start(p); err != nil {
			return fmt.Errorf("starting %s: %w", p.Name, err)
		}
	}
	return r.waitControlPlane(ctx, planned)
}

func (r *run) waitControlPlane(ctx context.Context, planned map[string]deploy.Process) error {
	spec, me := r.n.Spec, r.me
	wctx, cancel := context.WithTimeout(ctx, r.n.Options.InfraTimeout)
	defer cancel()
	// External services are checked too: a typo in --etcd-endpoints must
	// stop the job here, not after every worker has started.
	if spec.EtcdEndpoints != "" {
		if err := infra.WaitEtcd(wctx, spec.EtcdEndpoints); err != nil {
			return fmt.Errorf("external etcd --etcd-endpoints %s not reachable from node %d (%s): %w", spec.EtcdEndpoints, me.Index, me.Host, err)
		}
		r.log.Info().Str("endpoints", spec.EtcdEndpoints).Msg("external etcd ready")
	}
	if spec.NATSServer != "" && !spec.NoNATS {
		if err := infra.WaitNATS(wctx, spec.NATSServer); err != nil {
			return fmt.Errorf("external NATS --nats-server %s not reachable from node %d (%s): %w", spec.NATSServer, me.Index, me.Host, err)
		}
		r.log.Info().Str("server", spec.NATSServer).Msg("external NATS ready")
	}
	if _, ok := planned[deploy.ProcEtcd]; ok {
		ep := fmt.Sprintf("http://%s", net.JoinHostPort(me.Addr, fmt.Sprint(spec.EtcdClientPort)))
		if err := infra.WaitEtcd(wctx, ep); err != nil {
			return fmt.Errorf("etcd on node %d (%s) not ready: %w", me.Index, me.Host, err)
		}
		r.log.Info().Str("endpoint", ep).Msg("etcd ready")
	}
	if _, ok := planned[deploy.ProcNATS]; ok {
		addr := net.JoinHostPort(me.Addr, fmt.Sprint(spec.NATSPort))
		if err := infra.WaitNATS(wctx, addr); err != nil {
			return fmt.Errorf("NATS on node %d (%s) not ready: %w", me.Index, me.Host, err)
		}
		r.log.Info().Str("addr", addr).Msg("NATS ready")
	}
	return nil
}

// removeLocalDir deletes the infra node's node-local scratch (etcd data,
// JetStream store) after the job, but only a directory that is this job's
// own: one whose path the job id made unique.
func (r *run) removeLocalDir() {
	if !r.me.Infra || !strings.Contains(r.n.Spec.LocalDir, "%j") {
		return
	}
	dir := r.n.Spec.JobLocalDir(r.plan.JobID)
	if err := os.RemoveAll(dir); err != nil {
		r.log.Warn().Err(err).Str("dir", dir).Msg("removing node-local scratch")
	}
}
