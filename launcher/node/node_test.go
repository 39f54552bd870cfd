package node

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/launcher/deploy"
	"github.com/wideep/wideep-launch/launcher/rendezvous"
	"github.com/wideep/wideep-launch/launcher/supervise"
	"github.com/wideep/wideep-launch/slurm"
)

// testRun is node 1 of a 2-node job, before its first phase.
func testRun() *run {
	n := &NodeRuntime{
		Spec:  deploy.DefaultSpec(),
		Slurm: &slurm.Env{JobID: "42", Nodes: []string{"gpu01", "gpu02"}, NodeIndex: 1, Host: "gpu02"},
	}
	n.defaults()
	r := &run{n: n, env: n.Slurm, idx: 1, host: "gpu02", jobDir: "logs/42", log: zerolog.Nop()}
	r.ctx, r.cancel = context.WithCancelCause(context.Background())
	return r
}

func TestStopError(t *testing.T) {
	for name, tc := range map[string]struct {
		cause    error
		wantNil  bool
		wantCode int
		wantMsg  string
	}{
		"scancel": {cause: stopBySignal{syscall.SIGTERM}, wantCode: 143,
			wantMsg: "node 1 (gpu02) stopped by SIGTERM"},
		"ctrl-c": {cause: stopBySignal{syscall.SIGINT}, wantCode: 130,
			wantMsg: "node 1 (gpu02) stopped by SIGINT"},
		"time limit near (USR1) is a planned stop": {cause: stopBySignal{syscall.SIGUSR1}, wantNil: true},
		"worker exit 3": {cause: stopByExit{supervise.Exit{Name: "decode", Pid: 7, Code: 3}}, wantCode: 3,
			wantMsg: "node 1 (gpu02): process decode exited with code 3"},
		"worker killed": {cause: stopByExit{supervise.Exit{Name: "decode", Pid: 7, Code: -1, Signal: syscall.SIGKILL}}, wantCode: 137,
			wantMsg: "node 1 (gpu02): process decode killed by SIGKILL (exit code 137)"},
		"service exit 0 is not success": {cause: stopByExit{supervise.Exit{Name: "etcd", Pid: 7, Code: 0}}, wantCode: 125,
			wantMsg: "process etcd exited with code 0, but it should serve until the job ends"},
	} {
		t.Run(name, func(t *testing.T) {
			err := testRun().stopError(tc.cause)
			if tc.wantNil {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			var ec interface{ ExitCode() int }
			require.ErrorAs(t, err, &ec)
			assert.Equal(t, tc.wantCode, ec.ExitCode())
			assert.Contains(t, err.Error(), tc.wantMsg)
		})
	}
}

func TestOutcome(t *testing.T) {
	meeting := phase{name: "rendezvous", meets: true}
	t.Run("a verdict is final at once", func(t *testing.T) {
		verdict := &rendezvous.VerdictError{Msg: "preflight failed on 1 of 8 nodes", Config: true}
		r := testRun()
		r.n.Options.StopSettle = time.Hour // would hang if it waited
		assert.Same(t, verdict, r.outcome(meeting, verdict))
	})
	t.Run("a broken rendezvous during a stop is a stop", func(t *testing.T) {
		r := testRun()
		// Our own SIGTERM has already arrived, a moment after node 0's.
		r.cancel(stopBySignal{syscall.SIGTERM})
		err := r.outcome(meeting, errors.New("the server closed the connection"))
		var st *StoppedError
		require.ErrorAs(t, err, &st)
		assert.Equal(t, 143, st.ExitCode())
	})
	t.Run("a stop arriving while it settles is a stop", func(t *testing.T) {
		r := testRun()
		r.n.Options.StopSettle = time.Hour
		time.AfterFunc(10*time.Millisecond, func() { r.cancel(stopBySignal{syscall.SIGTERM}) })
		var st *StoppedError
		require.ErrorAs(t, r.outcome(meeting, errors.New("the server closed the connection")), &st)
	})
	t.Run("a broken rendezvous without a stop is a failure", func(t *testing.T) {
		broken := errors.New("the server closed the connection")
		r := testRun()
		r.n.Options.StopSettle = 10 * time.Millisecond
		// No stop signal comes: the break is the node's failure.
		assert.Same(t, broken, r.outcome(meeting, broken))
		assert.Equal(t, 125, codeOf(broken), "the launcher failed")
	})
}

func TestProcesses(t *testing.T) {
	r := testRun()
	r.n.Environ = []string{"PATH=/usr/bin", "ETCD_ENDPOINTS=http://stale:2379", "HOME=/root"}
	procs := []deploy.Process{
		{Name: deploy.ProcEtcd, Argv: []string{"etcd", "--name", "gpu01"}},
		{Name: "decode", Argv: []string{"python3", "-m", "dynamo.sglang", "--node-rank", "1"},
			Env: map[string]string{"ETCD_ENDPOINTS": "http://10.0.0.1:2379", "SGLANG_DG_CACHE_DIR": "/c/dg"}},
	}

	base, dropped := r.inherited()
	assert.Equal(t, []string{"ETCD_ENDPOINTS"}, dropped)
	real := []supervise.ProcSpec{r.procSpec(procs[0], base), r.procSpec(procs[1], base)}
	assert.Equal(t, []string{"python3", "-m", "dynamo.sglang", "--node-rank", "1"}, real[1].Argv)
	assert.Equal(t, []string{"PATH=/usr/bin", "HOME=/root", "ETCD_ENDPOINTS=http://10.0.0.1:2379", "SGLANG_DG_CACHE_DIR=/c/dg"},
		real[1].Env, "the plan's env replaces inherited values, in a stable order")
	assert.Equal(t, "logs/42/gpu02.decode.log", real[1].LogPath)

	r.n.Runtime = Simulation{Self: "/opt/bin/wideep-launch"}
	sim := []supervise.ProcSpec{r.procSpec(procs[0], base), r.procSpec(procs[1], base)}
	assert.Equal(t, []string{"etcd", "--name", "gpu01"}, sim[0].Argv, "etcd stays real in simulation")
	assert.Equal(t, []string{"/opt/bin/wideep-launch", "sim", "python3", "-m", "dynamo.sglang", "--node-rank", "1"}, sim[1].Argv,
		"the stand-in gets the real argv")
	assert.Equal(t, real[1].Env, sim[1].Env, "and the real environment")
}

func TestInheritedEnvironmentHygiene(t *testing.T) {
	r := testRun()
	r.n.Environ = []string{"PATH=/usr/bin", "NATS_SERVER=nats://stale:4222", "MASTER_ADDR=node1", "MASTER_PORT=61234",
		"RANK=3", "WORLD_SIZE=8", "SLURM_CPU_BIND=quiet,mask_cpu:0x1", "SLURM_CPU_BIND_TYPE=mask_cpu:",
		"SLURM_TRES_PER_TASK=cpu:4", "SLURM_JOB_ID=42", "WIDEEP_SECRET=s3cret-s3cret-s3cret"}
	// --no-nats: the plan sets no NATS_SERVER, and none may come through.
	worker := deploy.Process{Name: "decode", Argv: []string{"python3"}, Env: map[string]string{"ETCD_ENDPOINTS": "http://10.0.0.1:2379"}}
	base, dropped := r.inherited()
	assert.ElementsMatch(t, []string{"NATS_SERVER", "MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "SLURM_CPU_BIND",
		"SLURM_CPU_BIND_TYPE", "SLURM_TRES_PER_TASK", "WIDEEP_SECRET"}, dropped)
	assert.Equal(t, []string{"PATH=/usr/bin", "SLURM_JOB_ID=42", "ETCD_ENDPOINTS=http://10.0.0.1:2379"}, r.procSpec(worker, base).Env)

	r.n.Options.PassSlurmEnv = true
	base, _ = r.inherited()
	assert.Contains(t, r.procSpec(worker, base).Env, "SLURM_CPU_BIND=quiet,mask_cpu:0x1", "--pass-slurm-env keeps the step's")
	assert.NotContains(t, r.procSpec(worker, base).Env, "MASTER_ADDR=node1", "but never the PyTorch hook's")
}
