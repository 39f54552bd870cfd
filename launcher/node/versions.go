package node

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"time"

	"github.com/wideep/wideep-launch/launcher/deploy"
)

// probeVersions asks the image which SGLang and Dynamo it holds, on every
// node (a host runtime could differ per node), and refuses, before any GPU
// work, a plan made for another SGLang: its ports and flags would be wrong.
// Every node gets one report naming each node that differs, and exits 2.
func (r *run) probeVersions(ctx context.Context, limit time.Duration) error {
	for _, w := range r.n.Spec.Deprecations() {
		r.log.Warn().Msg(w)
	}
	bctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	v, err := r.runVersionProbe(ctx)
	if err != nil {
		if r.stopping() {
			return context.Cause(ctx)
		}
		// A probe that crashes or hangs is this node's trouble, not the
		// user's input: the job fails (125), it is not refused (2).
		return r.client.Barrier(bctx, "versions", err.Error())
	}
	r.versions = v
	r.detail = v.String()
	r.log.Info().Str("sglang", v.SGLang).Str("dynamo", v.Dynamo).Msg("versions in the image")
	return r.client.CheckBarrier(bctx, "versions", r.n.Spec.CheckImage(v))
}

// runVersionProbe runs deploy.VersionProbe where the processes run.
func (r *run) runVersionProbe(ctx context.Context) (deploy.Versions, error) {
	p := deploy.Process{Name: "versions", Argv: []string{"python3", "-c", deploy.VersionProbe}}
	argv, env := r.n.Runtime.Command(p, r.n.Environ)
	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(pctx, argv[0], argv[1:]...)
	cmd.Env = env
	// A grandchild holding stdout must not keep us past the timeout.
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return deploy.Versions{}, fmt.Errorf("asking the image for its SGLang and Dynamo versions (python3 -c ...): %v: %s",
			err, bytes.TrimSpace(lastBytes(stderr.Bytes(), 500)))
	}
	return deploy.ParseVersions(out)
}

func lastBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
