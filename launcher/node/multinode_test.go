package node

// The in-process multi-node test: 8 NodeRuntimes in this test process, as 8
// nodes of one job — no root, no Slurm. Every address in 127.0.0.0/8 is
// local on Linux, so node N binds 127.0.0.(N+1) and all nodes use the same
// ports, as on a cluster. The processes are the simulation stand-ins (this
// test binary re-executed) and a real etcd.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/launcher/address"
	"github.com/wideep/wideep-launch/launcher/deploy"
	"github.com/wideep/wideep-launch/launcher/exitcode"
	"github.com/wideep/wideep-launch/launcher/rendezvous"
	"github.com/wideep/wideep-launch/launcher/sim"
	"github.com/wideep/wideep-launch/launcher/testport"
	"github.com/wideep/wideep-launch/slurm"
)

// syncBuffer is a bytes.Buffer several goroutines write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// cluster is one job of n in-process nodes.
type cluster struct {
	t       *testing.T
	work    string
	jobID   string
	hosts   []string
	nodes   []*NodeRuntime
	sigs    []chan os.Signal
	logs    []*syncBuffer
	results []chan error
}

// nodeAddr is node i's own loopback address.
func nodeAddr(i int) string { return fmt.Sprintf("127.0.0.%d", i+1) }

// newCluster prepares an 8-node job with the reference layout (1P×4 +
// 1D×4); env is added to every stand-in's environment.
func newCluster(t *testing.T, env ...string) *cluster {
	t.Helper()
	return newClusterWith(t, "77", nil, env...)
}

// newClusterWith is newCluster for job jobID, with edit (if not nil)
// applied to the spec after the test's defaults.
func newClusterWith(t *testing.T, jobID string, edit func(*deploy.Spec), env ...string) *cluster {
	t.Helper()
	const n = 8
	work := t.TempDir()
	c := &cluster{t: t, work: work, jobID: jobID}
	spec := deploy.DefaultSpec()
	spec.ResolveGPUs(0)
	spec.ModelPath = filepath.Join(work, "model")
	spec.CacheDir = filepath.Join(work, "cache")
	spec.LogDir = filepath.Join(work, "logs")
	spec.LocalDir = filepath.Join(work, "local-%j")
	// One machine plays every node: each needs its own "node-local" disk.
	spec.DGLocalDir = filepath.Join(work, "dg-%h")
	spec.PrecompileTimeout = time.Minute
	spec.Iface = "lo"
	spec.NoNATS = true
	require.NoError(t, os.MkdirAll(spec.ModelPath, 0o755))
	base := testport.Window(t, 24)
	spec.DistInitPort = base // SGLang uses it and up to +13
	spec.HTTPPort, spec.BootstrapPort, spec.SGLangPort, spec.NCCLPort = base+16, base+17, base+18, base+19
	spec.EtcdClientPort, spec.EtcdPeerPort, spec.RendezvousPort = base+20, base+21, base+22
	spec.GPUModel = "test GPU"
	if edit != nil {
		edit(&spec)
	}
	self, err := os.Executable()
	require.NoError(t, err)
	records := filepath.Join(work, "records")
	require.NoError(t, os.MkdirAll(records, 0o755))

	for i := range n {
		c.hosts = append(c.hosts, fmt.Sprintf("node%d", i+1))
	}
	for i := range n {
		addr := netip.MustParseAddr(nodeAddr(i))
		sigs := make(chan os.Signal, 4)
		logBuf := &syncBuffer{}
		rt := &NodeRuntime{
			Spec: spec,
			Slurm: &slurm.Env{JobID: c.jobID, StepID: "0", InStep: true, Nodes: c.hosts,
				NodeIndex: i, Host: c.hosts[i]},
			RendezvousHost: nodeAddr(0),
			Options: Options{Grace: 3 * time.Second, RendezvousTimeout: 30 * time.Second,
				InfraTimeout: 30 * time.Second, HealthTimeout: time.Minute,
				HealthProgress: time.Second},
			Runtime: Simulation{Self: self, Bind: nodeAddr(i),
				Env: append([]string{helperEnv + "=sim", "WIDEEP_SIM_RECORD_DIR=" + records}, env...)},
			Reaper:    testReaper,
			Environ:   append(os.Environ(), "SLURMD_NODENAME="+c.hosts[i]),
			LookupEnv: func(string) (string, bool) { return "", false },
			LogWriter: logBuf,
			LogLevel:  zerolog.InfoLevel,
			Output:    &syncBuffer{},
			Signals:   sigs,
			Resolver: address.Resolver{Interfaces: func() ([]address.Interface, error) {
				return []address.Interface{{Name: "lo", Flags: net.FlagUp | net.FlagLoopback, Addrs: []netip.Addr{addr}}}, nil
			}},
		}
		c.nodes = append(c.nodes, rt)
		c.sigs = append(c.sigs, sigs)
		c.logs = append(c.logs, logBuf)
		c.results = append(c.results, make(chan error, 1))
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.report()
		}
	})
	return c
}

// report logs what explains a failed test first — every node's warnings and
// errors, the end of every process log — then the whole node logs, so a CI
// output cut to its first lines still names the node and the cause.
func (c *cluster) report() {
	var b strings.Builder
	for i, l := range c.logs {
		for _, line := range strings.Split(l.String(), "\n") {
			if strings.Contains(line, `"level":"warn"`) || strings.Contains(line, `"level":"error"`) {
				fmt.Fprintf(&b, "node %d: %s\n", i, line)
			}
		}
	}
	c.t.Logf("job %s, warnings and errors of every node:\n%s", c.jobID, b.String())
	logs, _ := filepath.Glob(filepath.Join(c.work, "logs", c.jobID, "*.log"))
	for _, f := range logs {
		data, _ := os.ReadFile(f)
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		c.t.Logf("job %s, end of %s:\n%s", c.jobID, filepath.Base(f), strings.Join(lines[max(0, len(lines)-8):], "\n"))
	}
	for i, l := range c.logs {
		c.t.Logf("job %s, node %d log:\n%s", c.jobID, i, l.String())
	}
}

func (c *cluster) start() {
	for i, rt := range c.nodes {
		go func() { c.results[i] <- rt.Run(context.Background()) }()
	}
	// Whatever happens, no node outlives the test.
	c.t.Cleanup(func() {
		for _, s := range c.sigs {
			s <- syscall.SIGTERM
		}
		c.wait(time.Minute)
	})
}

// wait returns every node's result, in node order.
func (c *cluster) wait(timeout time.Duration) []error {
	c.t.Helper()
	errs := make([]error, len(c.nodes))
	deadline := time.After(timeout)
	for i, ch := range c.results {
		select {
		case err := <-ch:
			errs[i] = err
			ch <- err // later waits see it too
		case <-deadline:
			require.FailNowf(c.t, "node did not end", "node %d still running after %s", i, timeout)
		}
	}
	return errs
}

// waitLog waits until every node's log has a line containing all of parts.
func (c *cluster) waitLog(timeout time.Duration, parts ...string) {
	c.t.Helper()
	require.Eventually(c.t, func() bool {
		for _, l := range c.logs {
			if !hasLine(l.String(), parts...) {
				return false
			}
		}
		return true
	}, timeout, 10*time.Millisecond, "every node logs %q", parts)
}

func hasLine(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

func (c *cluster) endpointFile() string { return filepath.Join(c.work, "logs", c.jobID, "endpoint") }

// ourChildren lists the live processes whose parent is this test process.
func ourChildren(t *testing.T) []string {
	t.Helper()
	var out []string
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	me := strconv.Itoa(os.Getpid())
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 && f[1] == me && f[0] != "Z" {
			out = append(out, e.Name()+" "+string(b[:bytes.LastIndexByte(b, ')')+1]))
		}
	}
	return out
}

func exitCode(err error) int {
	var c exitcode.Coder
	if errors.As(err, &c) {
		return c.ExitCode()
	}
	return -1
}

func TestMultiNodeReadyThenStopped(t *testing.T) {
	c := newCluster(t)
	c.start()
	require.Eventually(t, func() bool { _, err := os.Stat(c.endpointFile()); return err == nil },
		time.Minute, 20*time.Millisecond, "node 0 publishes the endpoint")
	url, err := os.ReadFile(c.endpointFile())
	require.NoError(t, err)
	assert.Equal(t, fmt.Sprintf("http://%s:%d\n", nodeAddr(0), c.nodes[0].Spec.HTTPPort), string(url))
	assert.True(t, hasLine(c.logs[0].String(), "READY http://"+nodeAddr(0), "prefill=1 decode=1"))

	// Every worker met its head at the planned address.
	for i, host := range c.hosts {
		role, head := "prefill", nodeAddr(0)
		if i >= 4 {
			role, head = "decode", nodeAddr(4)
		}
		rec := readRecord(t, filepath.Join(c.work, "records"), host, role)
		assert.Equal(t, fmt.Sprintf("%s:%d", head, c.nodes[0].Spec.DistInitPort), rec.DistInitAddr, host)
		assert.Equal(t, i%4, rec.NodeRank, host)
	}

	// scancel: Slurm signals node 0 first, the others a moment later.
	c.sigs[0] <- syscall.SIGTERM
	for _, s := range c.sigs[1:] {
		s <- syscall.SIGTERM
	}
	for i, err := range c.wait(time.Minute) {
		var st *StoppedError
		require.ErrorAs(t, err, &st, "node %d", i)
		assert.Equal(t, 143, exitCode(err), "node %d", i)
	}
	assert.NoFileExists(t, c.endpointFile(), "the endpoint goes with the deployment")
	assert.Empty(t, ourChildren(t), "no process left")
}

func TestMultiNodePreflightFailureReportedByEveryNode(t *testing.T) {
	c := newCluster(t)
	// Something holds SGLang's tokenizer port (--dist-init-port+1) on node
	// 6, a decode node that is not its worker's head: SGLang test-binds it
	// there too.
	spec := c.nodes[0].Spec
	ln, err := net.Listen("tcp", net.JoinHostPort(nodeAddr(6), strconv.Itoa(spec.DistInitPort+1)))
	require.NoError(t, err)
	defer ln.Close()
	c.start()
	want := fmt.Sprintf("node 6 (node7): port %d (SGLang tokenizer, from --dist-init-addr node5:%d): "+
		"already in use on this node by PID %d (", spec.DistInitPort+1, spec.DistInitPort, os.Getpid())
	for i, err := range c.wait(time.Minute) {
		require.Error(t, err, "node %d", i)
		assert.Equal(t, exitcode.Input, exitCode(err), "node %d exits 2", i)
		assert.Contains(t, err.Error(), "preflight failed on 1 of 8 nodes", "node %d", i)
		assert.Contains(t, err.Error(), want, "node %d", i)
	}
	entries, _ := os.ReadDir(filepath.Join(c.work, "records"))
	assert.Empty(t, entries, "nothing was started")
	assert.Empty(t, ourChildren(t))
}

// A port taken between the preflight and the worker's start (here: after
// the precompile) stops the node before the worker starts, naming the port
// and its holder.
func TestMultiNodeWorkerPortTakenBeforeStart(t *testing.T) {
	c := newCluster(t, "WIDEEP_SIM_PRECOMPILE_DELAY=1s")
	spec := c.nodes[0].Spec
	c.start()
	c.waitLog(time.Minute, `"process":"precompile"`, "process started")
	ln, err := net.Listen("tcp", net.JoinHostPort(nodeAddr(6), strconv.Itoa(spec.NCCLPort)))
	require.NoError(t, err)
	defer ln.Close()
	errs := c.wait(time.Minute)
	want := fmt.Sprintf("starting decode: port %d (NCCL init (--nccl-port)): already in use on this node by PID %d",
		spec.NCCLPort, os.Getpid())
	require.Error(t, errs[6])
	assert.Contains(t, errs[6].Error(), want)
	_, err = os.Stat(filepath.Join(c.work, "records", "node7.decode.json"))
	assert.True(t, os.IsNotExist(err), "node 6's worker never started")
	for i, err := range errs {
		assert.Error(t, err, "node %d: the job ended", i)
	}
	assert.Empty(t, ourChildren(t))
}

func TestMultiNodeStoppedDuringPrecompile(t *testing.T) {
	c := newCluster(t, "WIDEEP_SIM_PRECOMPILE_DELAY=60s")
	c.start()
	c.waitLog(time.Minute, `"process":"precompile"`, "process started")
	began := time.Now()
	c.sigs[0] <- syscall.SIGTERM
	time.Sleep(100 * time.Millisecond)
	for _, s := range c.sigs[1:] {
		s <- syscall.SIGTERM
	}
	for i, err := range c.wait(time.Minute) {
		var st *StoppedError
		require.ErrorAs(t, err, &st, "node %d says stopped, not failed", i)
		assert.Equal(t, 143, exitCode(err), "node %d", i)
		assert.True(t, hasLine(c.logs[i].String(), "stopped by SIGTERM", "this node did not fail"), "node %d", i)
	}
	assert.Less(t, time.Since(began), 30*time.Second, "nobody waited for the 60 s precompile")
	assert.Empty(t, ourChildren(t))
}

// readRecord reads what the stand-in for role on host recorded.
func readRecord(t *testing.T, dir, host, role string) sim.Record {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, host+"."+role+".json"))
	require.NoError(t, err, "record of %s on %s", role, host)
	var r sim.Record
	require.NoError(t, json.Unmarshal(b, &r))
	return r
}

// A worker that fails after READY ends the whole job, with no Slurm to help:
// every node stops its processes and names the node and the reason.
func TestMultiNodeWorkerFailureEndsTheJob(t *testing.T) {
	c := newCluster(t, "WIDEEP_SIM_FAIL=node6:serve=1500ms:3")
	c.start()
	errs := c.wait(time.Minute)
	const want = "node 5 (node6): process decode exited with code 3"
	for i, err := range errs {
		require.Error(t, err, "node %d", i)
		if i == 5 {
			var ee *ExitError
			require.ErrorAs(t, err, &ee)
			assert.Equal(t, 3, exitCode(err), "the failing node passes its worker's code through")
			continue
		}
		var ae *rendezvous.AbortError
		require.ErrorAs(t, err, &ae, "node %d", i)
		assert.Equal(t, want, ae.Msg, "node %d", i)
		assert.Equal(t, 125, exitCode(err), "node %d: a failure, not a cancellation", i)
		assert.True(t, hasLine(c.logs[i].String(), "NODE FAILED: "+want), "node %d names the node and why", i)
	}
	assert.True(t, hasLine(c.logs[0].String(), "READY http://"), "it had been READY")
	assert.NoFileExists(t, c.endpointFile())
	assert.Empty(t, ourChildren(t))
}

// A worker that deregisters after READY (alive, no longer serving) ends the
// job after the lost timeout, naming what is missing.
func TestMultiNodeDeregisteredWorkerEndsTheJob(t *testing.T) {
	c := newCluster(t, "WIDEEP_SIM_FAIL=node5/decode:deregister=1s", "WIDEEP_SIM_LEASE_TTL=2")
	for _, n := range c.nodes {
		n.Options.HealthInterval = 100 * time.Millisecond
		n.Options.HealthLostTimeout = time.Second
	}
	c.start()
	errs := c.wait(time.Minute)
	for i, err := range errs {
		require.Error(t, err, "node %d", i)
		assert.Equal(t, 125, exitCode(err), "node %d", i)
		assert.Contains(t, err.Error(), "deployment lost after READY", "node %d", i)
		assert.Contains(t, err.Error(), "decode instances: 0 of 1 registered (no longer registered: decode worker 0 (head node 4, node5))", "node %d", i)
	}
	assert.NoFileExists(t, c.endpointFile())
	assert.Empty(t, ourChildren(t))
}
