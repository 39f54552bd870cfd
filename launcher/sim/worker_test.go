package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/launcher/sim/simtest"
)

// instances returns the instances registered in etcd.
func registered(t *testing.T, etcd string) []Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kvs, err := NewEtcdClient(etcd).GetPrefix(ctx, InstancePrefix)
	require.NoError(t, err)
	out := make([]Instance, 0, len(kvs))
	for _, kv := range kvs {
		var in Instance
		require.NoError(t, json.Unmarshal(kv.Value, &in), "key %s", kv.Key)
		out = append(out, in)
	}
	return out
}

// eventually polls cond until it holds; it is a readiness wait, bounded by
// waitTimeout, not a timing assertion.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after %v", what, waitTimeout)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}

func TestWorkerPairRendezvousAndRegisters(t *testing.T) {
	etcd := simtest.StartEtcd(t)
	records := t.TempDir()
	dist := freeAddr(t)
	// Each node on its own loopback address, as on its own host: SGLang
	// checks the dist-init ports free on every node.
	env := func(node, addr string) map[string]string {
		return envMap("SLURMD_NODENAME", node, "ETCD_ENDPOINTS", etcd.URL, EnvRecordDir, records,
			"DYN_TCP_RPC_HOST", "127.0.0.1", "NATS_SERVER", "nats://127.0.0.1:4222", EnvBindHost, addr)
	}
	// Rank 1 first: it must wait for rank 0 to come up, as on a real cluster.
	r1 := startStandIn(t, workerArgv("prefill", 2, 1, dist), env("n2", "127.0.0.2"))
	r0 := startStandIn(t, workerArgv("prefill", 2, 0, dist), env("n1", "127.0.0.1"))
	rec0, rec1 := r0.waitServing(), r1.waitServing()

	require.NotNil(t, rec1.Rendezvous)
	assert.Equal(t, dist, rec1.Rendezvous.ConnectedTo, "rank 1 connected to --dist-init-addr")
	require.NotNil(t, rec0.Rendezvous)
	_, port, _ := net.SplitHostPort(dist)
	_, listenPort, _ := net.SplitHostPort(rec0.Listen["dist_init"])
	assert.Equal(t, port, listenPort, "rank 0 listened on the port of --dist-init-addr")
	require.Len(t, rec0.Rendezvous.Peers, 2)
	assert.Equal(t, []int{0, 1}, []int{rec0.Rendezvous.Peers[0].Rank, rec0.Rendezvous.Peers[1].Rank})
	assert.Equal(t, []string{"n1", "n2"}, []string{rec0.Rendezvous.Peers[0].Node, rec0.Rendezvous.Peers[1].Node})
	assert.Equal(t, rec1.Rendezvous.LocalAddr, rec0.Rendezvous.Peers[1].Addr, "both ends saw the same connection")
	assert.Contains(t, rec0.Listen, "bootstrap", "prefill rank 0 serves the bootstrap port")
	assert.NotContains(t, rec1.Listen, "bootstrap", "only rank 0 serves the bootstrap port")

	ins := registered(t, etcd.URL)
	require.Len(t, ins, 1, "one instance per worker, from node rank 0")
	assert.Equal(t, "prefill", ins[0].Component)
	assert.Equal(t, "generate", ins[0].Endpoint)
	assert.Equal(t, "dynamo", ins[0].Namespace)
	assert.Equal(t, "127.0.0.1", ins[0].Host, "advertises DYN_TCP_RPC_HOST")
	assert.Equal(t, "n1", ins[0].Node)
	assert.Equal(t, "deepseek-ai/DeepSeek-R1", ins[0].Model)
	require.NotNil(t, rec0.Instance)
	assert.Equal(t, rec0.Instance.InstanceID, ins[0].InstanceID)
	assert.Equal(t, InstanceKey(ins[0]), rec0.EtcdKey)

	file1 := readRecord(t, records, "n2", "prefill")
	assert.Equal(t, workerArgv("prefill", 2, 1, dist), file1.Argv)
	assert.Equal(t, "serving", file1.State)
	assert.Equal(t, 1, file1.NodeRank)
	assert.Equal(t, 2, file1.NNodes)
	assert.Equal(t, dist, file1.DistInitAddr)
	assert.Equal(t, etcd.URL, file1.Env["ETCD_ENDPOINTS"])
	assert.Equal(t, "nats://127.0.0.1:4222", file1.Env["NATS_SERVER"])

	assert.Equal(t, 0, r1.terminate())
	assert.Equal(t, 0, r0.terminate())
	assert.Empty(t, registered(t, etcd.URL), "graceful exit revokes the lease")
	file0 := readRecord(t, records, "n1", "prefill")
	assert.Equal(t, "exited", file0.State)
	require.NotNil(t, file0.ExitCode)
	assert.Equal(t, 0, *file0.ExitCode)
	assert.Equal(t, "terminated by SIGTERM", file0.Reason)
}

func TestWorkerRendezvousRejects(t *testing.T) {
	tests := map[string]struct {
		peers      [][]string // argv of the nodes after rank 0
		rank0      []string
		wantRank0  string
		wantPeer   string
		failedPeer int // index in peers of a node that must name the rejection
	}{
		"nnodes mismatch": {
			rank0:     workerArgv("decode", 2, 0, "ADDR"),
			peers:     [][]string{workerArgv("decode", 3, 1, "ADDR")},
			wantRank0: "says --nnodes 3, but node rank 0 (n0) has --nnodes 2",
			wantPeer:  "rejected node rank 1",
		},
		"duplicate rank": {
			rank0:     workerArgv("decode", 3, 0, "ADDR"),
			peers:     [][]string{workerArgv("decode", 3, 1, "ADDR"), workerArgv("decode", 3, 1, "ADDR")},
			wantRank0: "duplicate node rank 1",
			wantPeer:  "duplicate node rank 1",
		},
		"prefill node at the decode head": {
			rank0:     workerArgv("decode", 2, 0, "ADDR"),
			peers:     [][]string{workerArgv("prefill", 2, 1, "ADDR")},
			wantRank0: "is a prefill worker, but node rank 0 (n0) at this --dist-init-addr is a decode worker",
			wantPeer:  "rejected node rank 1",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dist := freeAddr(t)
			subst := func(argv []string) []string {
				out := append([]string(nil), argv...)
				for i, a := range out {
					if a == "ADDR" {
						out[i] = dist
					}
				}
				return out
			}
			var peers []*standInRun
			for i, argv := range tc.peers {
				// Each peer on its own loopback address, as on its own node:
				// SGLang checks the dist-init ports free on every node.
				peers = append(peers, startStandIn(t, subst(argv), envMap("SLURMD_NODENAME", "p"+strconv.Itoa(i),
					EnvBindHost, fmt.Sprintf("127.0.0.%d", i+2))))
			}
			r0 := startStandIn(t, subst(tc.rank0), envMap("SLURMD_NODENAME", "n0", EnvBindHost, "127.0.0.1"))
			assert.Equal(t, 1, r0.wait())
			assert.Contains(t, r0.stderr.String(), tc.wantRank0)
			for _, p := range peers {
				assert.Equal(t, 1, p.wait())
				assert.Contains(t, p.stderr.String(), tc.wantPeer)
			}
		})
	}
}

func TestWorkerStartupErrors(t *testing.T) {
	tests := map[string]struct {
		argv     []string
		env      map[string]string
		wantCode int
		want     string
	}{
		"non-numeric node rank": {
			argv:     workerArgv("decode", 4, 0, "h:1", "--node-rank", "1st"),
			wantCode: 2, want: "python3 -m dynamo.sglang: error: argument --node-rank: invalid int value: '1st'",
		},
		"unknown flag": {
			argv:     workerArgv("decode", 4, 0, "h:1", "--enable-warp-drive"),
			wantCode: 2, want: "unrecognized arguments: --enable-warp-drive",
		},
		"invalid choice": {
			argv:     workerArgv("decode", 4, 0, "h:1", "--disaggregation-mode", "both"),
			wantCode: 2, want: "argument --disaggregation-mode: invalid choice: 'both'",
		},
		"rank out of range": {
			argv:     workerArgv("decode", 4, 4, "h:1"),
			wantCode: 1, want: "--node-rank 4: must be in 0..3 for --nnodes 4",
		},
		"dist-init-addr without port": {
			argv:     workerArgv("decode", 4, 1, "gpu05"),
			wantCode: 1, want: `--dist-init-addr "gpu05": want host:port`,
		},
		"tp not a multiple of nnodes": {
			argv:     workerArgv("decode", 4, 1, "h:1", "--tp-size", "6"),
			wantCode: 1, want: "--tp-size 6 is not a multiple of --nnodes 4",
		},
		"bad endpoint": {
			argv:     workerArgv("decode", 1, 0, "h:1", "--endpoint", "dynamo.backend.generate"),
			wantCode: 1, want: "want dyn://namespace.component.endpoint",
		},
		"bad WIDEEP_SIM_FAIL": {
			argv: workerArgv("decode", 4, 1, "h:1"), env: envMap(EnvFail, "gpu01:explode:1"),
			wantCode: 2, want: `unknown stage "explode"`,
		},
		"bad term delay": {
			argv: workerArgv("decode", 4, 1, "h:1"), env: envMap(EnvTermDelay, "soon"),
			wantCode: 2, want: "WIDEEP_SIM_TERM_DELAY=\"soon\"",
		},
		"bad lease ttl": {
			argv: workerArgv("decode", 4, 1, "h:1"), env: envMap(EnvLeaseTTL, "0"),
			wantCode: 2, want: "WIDEEP_SIM_LEASE_TTL=\"0\"",
		},
		// The head does not exist: only the injected failure keeps this from
		// waiting for the rendezvous.
		"injected startup failure": {
			argv: workerArgv("decode", 4, 1, "127.0.0.1:1"), env: envMap(EnvFail, "gpu05:noregister,gpu06:startup:3", "SLURMD_NODENAME", "gpu06"),
			wantCode: 3, want: "injected failure gpu06/worker:startup:3",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			code, r := run(t, tc.argv, tc.env)
			assert.Equal(t, tc.wantCode, code)
			assert.Contains(t, r.stderr.String(), tc.want)
		})
	}
}

func TestWorkerPortInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	_, port, _ := net.SplitHostPort(taken.Addr().String())
	argv := workerArgv("prefill", 1, 0, freeAddr(t), "--disaggregation-bootstrap-port", port)
	code, r := run(t, argv, nil)
	assert.Equal(t, 1, code)
	assert.Contains(t, r.stderr.String(), "bootstrap server: listen tcp4 127.0.0.1:"+port+": bind: address already in use")
}

func TestWorkerInjectedFailuresWhileServing(t *testing.T) {
	etcd := simtest.StartEtcd(t)
	t.Run("noregister serves but never registers", func(t *testing.T) {
		r := startStandIn(t, workerArgv("decode", 1, 0, freeAddr(t)),
			envMap("ETCD_ENDPOINTS", etcd.URL, "SLURMD_NODENAME", "gpu07", EnvFail, "gpu07/decode:noregister"))
		rec := r.waitServing()
		assert.Nil(t, rec.Instance)
		assert.Empty(t, registered(t, etcd.URL))
		assert.Equal(t, 0, r.terminate())
	})
	t.Run("serve exits with the code and deregisters", func(t *testing.T) {
		r := startStandIn(t, workerArgv("decode", 1, 0, freeAddr(t)),
			envMap("ETCD_ENDPOINTS", etcd.URL, "SLURMD_NODENAME", "gpu08", EnvFail, "*:serve=10ms:4"))
		rec := r.waitServing()
		assert.NotNil(t, rec.Instance, "registered before failing")
		assert.Equal(t, 4, r.wait())
		assert.Contains(t, r.stderr.String(), "exiting with code 4: injected failure")
		assert.Empty(t, registered(t, etcd.URL))
	})
}

// A worker killed without a chance to deregister disappears from etcd when
// its lease expires, as a crashed Dynamo worker does.
func TestWorkerProcessLeaseAndSignals(t *testing.T) {
	etcd := simtest.StartEtcd(t)
	tests := map[string]struct {
		sig      syscall.Signal
		wantCode int
	}{
		"SIGTERM deregisters at once":                    {sig: syscall.SIGTERM, wantCode: 0},
		"SIGKILL leaves the key until the lease expires": {sig: syscall.SIGKILL, wantCode: -1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			records := t.TempDir()
			cmd, out := helperCommand(t, workerArgv("decode", 1, 0, freeAddr(t)),
				"ETCD_ENDPOINTS="+etcd.URL, EnvLeaseTTL+"=2", EnvRecordDir+"="+records,
				EnvTermDelay+"=10ms", "SLURMD_NODENAME=gpu05")
			require.NoError(t, cmd.Start())
			t.Cleanup(func() { cmd.Process.Kill() })
			exited := make(chan struct{})
			go func() { cmd.Wait(); close(exited) }()
			eventually(t, "the worker's registration", func() bool {
				rec, err := os.ReadFile(records + "/gpu05.decode.json")
				return err == nil && json.Valid(rec) && len(registered(t, etcd.URL)) == 1
			})
			require.NoError(t, cmd.Process.Signal(tc.sig))
			select {
			case <-exited:
			case <-time.After(waitTimeout):
				t.Fatalf("worker did not exit; output:\n%s", out)
			}
			assert.Equal(t, tc.wantCode, cmd.ProcessState.ExitCode(), "output:\n%s", out)
			if tc.sig == syscall.SIGTERM {
				assert.Empty(t, registered(t, etcd.URL))
				return
			}
			eventually(t, "the lease to expire", func() bool { return len(registered(t, etcd.URL)) == 0 })
		})
	}
}
