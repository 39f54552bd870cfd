package main

// End-to-end tests: the real wideep-launch binary, run by a real Slurm
// (Debian's slurmctld/slurmd 22.05, 8 nodes, each in its own network
// namespace with its own address) through examples/wideep-sim.sbatch, with
// real etcd and nats-server and the simulation stand-ins for SGLang and
// Dynamo. They need root; CI runs them as root.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/slurm/slurmtest"
)

var launcherBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "wideep-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	launcherBin = filepath.Join(dir, "wideep-launch")
	// The same static build users get (CGO off), not the test binary.
	build := exec.Command("go", "build", "-trimpath", "-o", launcherBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building wideep-launch: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// e2eJob is one submitted simulated deployment.
type e2eJob struct {
	t       *testing.T
	c       *slurmtest.Cluster
	id      string
	work    string // WIDEEP_SIM_WORK: model, cache, logs (jobs may share one)
	records string // WIDEEP_SIM_RECORD_DIR, the job's own
	started time.Time
}

func (j *e2eJob) logDir() string    { return filepath.Join(j.work, "logs", j.id) }
func (j *e2eJob) recordDir() string { return j.records }

// launcherLog is node host's launcher log (console format lines, or JSON).
func (j *e2eJob) launcherLog(host string) string {
	b, _ := os.ReadFile(filepath.Join(j.logDir(), host+".launcher.log"))
	return string(b)
}

// kernels lists the DeepGEMM kernels the precompiles wrote to the shared cache.
func (j *e2eJob) kernels() []string {
	var out []string
	_ = filepath.WalkDir(filepath.Join(j.work, "cache"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "kernel.cubin" {
			out = append(out, path)
		}
		return nil
	})
	return out
}

func (j *e2eJob) stdout() string {
	b, _ := os.ReadFile(filepath.Join(j.c.WorkDir(), "wideep-sim-"+j.id+".out"))
	return string(b)
}

// submit runs examples/wideep-sim.sbatch on the lab's 8 nodes with the
// given WIDEEP_* settings.
func submit(t *testing.T, c *slurmtest.Cluster, env map[string]string) *e2eJob {
	t.Helper()
	return submitN(t, c, 8, env)
}

// submitN is submit on n nodes. A WIDEEP_SIM_WORK in env shares a work
// directory (model, cache) with other jobs; by default each job has its own.
func submitN(t *testing.T, c *slurmtest.Cluster, n int, env map[string]string) *e2eJob {
	t.Helper()
	work := env["WIDEEP_SIM_WORK"]
	if work == "" {
		work = t.TempDir()
	}
	records := t.TempDir()
	vars := []string{"LAUNCHER=" + launcherBin, "WIDEEP_SIM_WORK=" + work,
		"WIDEEP_SIM_RECORD_DIR=" + records,
		// Not /tmp/wideep-%j: labs of test processes running side by side
		// number their jobs alike, and one job's teardown would remove the
		// other's directory (a real cluster's job ids are unique).
		"WIDEEP_LOCAL_DIR=" + filepath.Join(records, "local-%j"),
		// Grace below the lab's KillWait (5 s): the launcher, not Slurm, stops the workers.
		"WIDEEP_GRACE=3s", "WIDEEP_LOG_FORMAT=json"}
	for k, v := range env {
		vars = append(vars, k+"="+v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	script := filepath.Join("..", "..", "examples", "wideep-sim.sbatch")
	// --exclusive, as GPU jobs are: two jobs on one node would share ports.
	id, err := c.SbatchEnv(ctx, vars, script, "-N", strconv.Itoa(n), "--exclusive")
	require.NoError(t, err)
	t.Logf("job %s submitted, work dir %s", id, work)
	j := &e2eJob{t: t, c: c, id: id, work: work, records: records, started: time.Now()}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("job %s stdout:\n%s", id, j.stdout())
			for _, h := range c.Nodes() {
				t.Logf("%s launcher log:\n%s", h, j.launcherLog(h))
			}
		}
		_ = c.Cancel(id)
	})
	return j
}

// waitReady waits for node 0 to publish the endpoint file.
func (j *e2eJob) waitReady(timeout time.Duration) string {
	j.t.Helper()
	path := filepath.Join(j.logDir(), "endpoint")
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil {
			return strings.TrimSpace(string(b))
		}
		job, err := j.c.Job(context.Background(), j.id)
		require.NoError(j.t, err)
		if job.State != "PENDING" && job.State != "RUNNING" {
			require.Failf(j.t, "job ended before READY", "state %s exit %d", job.State, job.ExitCode)
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.Failf(j.t, "no READY", "no endpoint file after %s", timeout)
	return ""
}

func (j *e2eJob) wait(timeout time.Duration) slurmtest.Job {
	j.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	job, err := j.c.WaitJob(ctx, j.id)
	require.NoError(j.t, err)
	return job
}

// assertNoLeftovers checks that no process of the job is left on any node.
func assertNoLeftovers(t *testing.T, c *slurmtest.Cluster) {
	t.Helper()
	var left map[string][]slurmtest.Proc
	var err error
	// slurmstepd may still be reaping the step for a moment after the job left squeue.
	ok := assert.Eventually(t, func() bool {
		left, err = c.Leftovers()
		return err == nil && len(left) == 0
	}, 15*time.Second, 100*time.Millisecond)
	if !ok {
		require.Failf(t, "processes left on the nodes", "%v (error: %v)", left, err)
	}
}

type simRecord struct {
	Role         string            `json:"role"`
	Node         string            `json:"node"`
	Env          map[string]string `json:"env"`
	NodeRank     int               `json:"node_rank"`
	NNodes       int               `json:"nnodes"`
	DistInitAddr string            `json:"dist_init_addr"`
	Rendezvous   *struct {
		Listen      string `json:"listen"`
		ConnectedTo string `json:"connected_to"`
		Peers       []any  `json:"peers"`
	} `json:"rendezvous"`
	State    string   `json:"state"`
	Reason   string   `json:"reason"`
	CacheDir string   `json:"cache_dir"`
	Kernels  []string `json:"kernels"`
	CPUs     int      `json:"cpus"`
}

func readRecord(t *testing.T, dir, node, role string) simRecord {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, node+"."+role+".json"))
	require.NoError(t, err, "record of %s on %s", role, node)
	var r simRecord
	require.NoError(t, json.Unmarshal(b, &r))
	return r
}

// planNode is the part of a node of `plan --output json` the tests read.
type planNode struct {
	Index     int    `json:"index"`
	Host      string `json:"host"`
	Role      string `json:"role"`
	Worker    int    `json:"worker"`
	NodeRank  int    `json:"node_rank"`
	Head      string `json:"head"`
	Processes []struct {
		Name string `json:"name"`
	} `json:"processes"`
}

// offlinePlan asks the binary for the offline plan of the lab's nodes.
func offlinePlan(t *testing.T, nodelist string) []planNode {
	t.Helper()
	out, err := exec.Command(launcherBin, "plan", "--nodelist", nodelist, "--output", "json").Output()
	require.NoError(t, err)
	var p struct {
		Nodes []planNode `json:"nodes"`
	}
	require.NoError(t, json.Unmarshal(out, &p))
	return p.Nodes
}

func TestE2ESimulatedDeployment(t *testing.T) {
	c := slurmtest.Start(t, slurmtest.Options{})
	nodes := c.Nodes()
	require.Len(t, nodes, 8)

	t.Run("ready_then_scancel", func(t *testing.T) {
		const secret = "e2e-secret-0123456789abcdef-must-never-show"
		j := submit(t, c, map[string]string{"WIDEEP_SECRET": secret})
		url := j.waitReady(90 * time.Second)
		assertSecretKept(t, c, j, secret)
		addr0 := c.NodeAddr(nodes[0])
		assert.Equal(t, "http://"+addr0+":8000", url, "endpoint file")
		assert.Regexp(t, regexp.MustCompile(`READY http://`+regexp.QuoteMeta(addr0)+`:8000 model=deepseek-ai/DeepSeek-R1 prefill=1 decode=1 after \S+`), j.stdout())
		assert.NotEmpty(t, j.kernels(), "the precompiles wrote their kernels before the workers started")

		// Every worker got the role, node rank and head address of the plan,
		// and really reached its head there.
		plan := offlinePlan(t, "node[1-8]")
		for _, pn := range plan {
			r := readRecord(t, j.recordDir(), pn.Host, pn.Role)
			headAddr := c.NodeAddr(pn.Head)
			assert.Equal(t, pn.NodeRank, r.NodeRank, "%s node rank", pn.Host)
			assert.Equal(t, 4, r.NNodes, "%s nnodes", pn.Host)
			assert.Equal(t, headAddr+":29500", r.DistInitAddr, "%s dist-init-addr", pn.Host)
			require.NotNil(t, r.Rendezvous, "%s rendezvous record", pn.Host)
			if pn.NodeRank == 0 {
				assert.Len(t, r.Rendezvous.Peers, 4, "%s saw every node rank", pn.Host)
			} else {
				host, _, err := net.SplitHostPort(r.Rendezvous.ConnectedTo)
				require.NoError(t, err)
				assert.Equal(t, headAddr, host, "%s connected to its head", pn.Host)
			}
			assert.Equal(t, "http://"+addr0+":2379", r.Env["ETCD_ENDPOINTS"], "%s ETCD_ENDPOINTS", pn.Host)
			assert.Equal(t, "nats://"+addr0+":4222", r.Env["NATS_SERVER"], "%s NATS_SERVER", pn.Host)
		}

		// One chat request through the frontend, from outside the job.
		body := `{"model":"deepseek-ai/DeepSeek-R1","messages":[{"role":"user","content":"hi"}]}`
		resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
		require.NoError(t, err)
		reply, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, string(reply))
		assert.Contains(t, string(reply), `"choices"`)

		require.NoError(t, c.Cancel(j.id))
		job := j.wait(60 * time.Second)
		assert.Equal(t, "CANCELLED", job.State)
		for _, pn := range plan {
			r := readRecord(t, j.recordDir(), pn.Host, pn.Role)
			assert.Equal(t, "exited", r.State, "%s worker state", pn.Host)
			assert.Contains(t, r.Reason, "SIGTERM", "%s worker stopped by SIGTERM", pn.Host)
			log := j.launcherLog(pn.Host)
			assert.Contains(t, log, "did not fail", "%s says it was stopped", pn.Host)
			assert.Contains(t, log, `"exit_code":143`, "%s exits 128+SIGTERM", pn.Host)
		}
		assertNoLeftovers(t, c)
	})

	t.Run("scancel_during_precompile", func(t *testing.T) {
		// Node 0 may get Slurm's SIGTERM before the others and drop the
		// rendezvous; they must still say "stopped", not fail.
		j := submit(t, c, map[string]string{"WIDEEP_SIM_PRECOMPILE_DELAY": "60s"})
		require.Eventually(t, func() bool {
			logs, _ := filepath.Glob(filepath.Join(j.logDir(), "*.precompile.log"))
			return len(logs) == len(nodes)
		}, 60*time.Second, 50*time.Millisecond, "every node started its precompile")
		require.NoError(t, c.Cancel(j.id))
		job := j.wait(60 * time.Second)
		assert.Equal(t, "CANCELLED", job.State)
		for _, h := range nodes {
			log := j.launcherLog(h)
			assert.Contains(t, log, "did not fail", "%s says it was stopped", h)
			assert.NotContains(t, log, "NODE FAILED", "%s did not fail", h)
		}
		assertNoLeftovers(t, c)
	})

	t.Run("worker_exit_3_on_node_5", func(t *testing.T) {
		// Node index 5 is node6: decode worker, node rank 1.
		j := submit(t, c, map[string]string{"WIDEEP_SIM_FAIL": "node6:serve=1s:3"})
		job := j.wait(60 * time.Second)
		assert.NotEqual(t, "COMPLETED", job.State)
		// srun --kill-on-bad-exit reports the highest code of all tasks (the
		// stopped launchers' 143, or 137 for tasks Slurm SIGKILLed), not the
		// failing task's 3: hence the loud log line on node 5.
		assert.NotZero(t, job.ExitCode, "batch script exit code (srun's)")
		assert.NotEqual(t, 3, job.ExitCode, "srun does not report the failing task's code")
		assert.Contains(t, j.stdout(), "node6: task 5: Exited with exit code 3", "srun names the failing task")
		failLog := j.launcherLog("node6")
		assert.Contains(t, failLog, `"message":"NODE FAILED: node 5 (node6): process decode exited with code 3"`)
		assert.Contains(t, failLog, `"exit_code":3`)
		for _, h := range nodes {
			if h != "node6" {
				// Told by node 0 (the launchers' own gang rule), or stopped by
				// Slurm's --kill-on-bad-exit first: either way, not its own failure.
				log := j.launcherLog(h)
				if !strings.Contains(log, "NODE FAILED: node 5 (node6): process decode exited with code 3") {
					assert.Contains(t, log, "did not fail", "%s says it was stopped", h)
				}
			}
		}
		assertNoLeftovers(t, c)
	})

	t.Run("startup_failure_on_node_6", func(t *testing.T) {
		// Node index 6 is node7: decode worker, node rank 2.
		j := submit(t, c, map[string]string{"WIDEEP_SIM_FAIL": "node7:startup:1"})
		job := j.wait(60 * time.Second)
		assert.NotEqual(t, "COMPLETED", job.State)
		assert.Contains(t, j.launcherLog("node7"), `"message":"NODE FAILED: node 6 (node7): process decode exited with code 1"`)
		assertNoLeftovers(t, c)
	})

	t.Run("precompile_failure_fails_fast", func(t *testing.T) {
		// Node index 2 is node3: its precompile fails. The barrier fails at
		// once, without waiting for the others' precompiles: node3 and node 0
		// (which holds the barrier) name node3; every other node either got
		// the same verdict or was stopped by Slurm when node3 exited.
		j := submit(t, c, map[string]string{"WIDEEP_SIM_FAIL": "node3/precompile:startup:4",
			"WIDEEP_SIM_PRECOMPILE_DELAY": "30s"})
		job := j.wait(60 * time.Second)
		assert.Equal(t, "FAILED", job.State)
		// Had anybody waited for the other precompiles, they would have
		// written their kernels.
		assert.Empty(t, j.kernels(), "no precompile ran to its end")
		verdict := "node 2 (node3): precompile exited with code 4"
		for _, h := range nodes {
			log := j.launcherLog(h)
			if h == "node3" || h == "node1" {
				assert.Contains(t, log, verdict, "%s names node3", h)
			}
			if h == "node3" {
				assert.Contains(t, log, `"exit_code":125`, "node3 exits 125")
				continue
			}
			if !strings.Contains(log, verdict) || h == "node1" && !strings.Contains(log, `"exit_code":125`) {
				assert.Contains(t, log, "did not fail", "%s: the verdict, or stopped", h)
			}
		}
		assertNoLeftovers(t, c)
	})

	t.Run("xPyD_with_dedicated_infra_node", func(t *testing.T) {
		// 2 prefill workers of 2 nodes, 1 decode worker of 3, etcd/NATS/frontend on node8.
		j := submit(t, c, map[string]string{
			"WIDEEP_PREFILL_WORKERS": "2", "WIDEEP_PREFILL_NODES_PER_WORKER": "2",
			"WIDEEP_DECODE_NODES_PER_WORKER": "3", "WIDEEP_INFRA_NODE": "dedicated",
		})
		url := j.waitReady(90 * time.Second)
		infra := c.NodeAddr("node8")
		assert.Equal(t, "http://"+infra+":8000", url)
		assert.Regexp(t, `READY http://`+regexp.QuoteMeta(infra)+`:8000 model=deepseek-ai/DeepSeek-R1 prefill=2 decode=1`, j.stdout())
		for _, tc := range []struct {
			host, role, head string
			rank, nnodes     int
		}{
			{"node1", "prefill", "node1", 0, 2}, {"node2", "prefill", "node1", 1, 2},
			{"node3", "prefill", "node3", 0, 2}, {"node4", "prefill", "node3", 1, 2},
			{"node5", "decode", "node5", 0, 3}, {"node6", "decode", "node5", 1, 3}, {"node7", "decode", "node5", 2, 3},
		} {
			r := readRecord(t, j.recordDir(), tc.host, tc.role)
			assert.Equal(t, tc.rank, r.NodeRank, tc.host)
			assert.Equal(t, tc.nnodes, r.NNodes, tc.host)
			assert.Equal(t, c.NodeAddr(tc.head)+":29500", r.DistInitAddr, tc.host)
			assert.Equal(t, "http://"+infra+":2379", r.Env["ETCD_ENDPOINTS"], tc.host)
		}
		procs, err := c.NodeProcesses("node8")
		require.NoError(t, err)
		var comms []string
		for _, p := range procs {
			comms = append(comms, p.Comm)
		}
		assert.Contains(t, comms, "etcd")
		assert.Contains(t, comms, "nats-server")
		require.NoError(t, c.Cancel(j.id))
		j.wait(60 * time.Second)
		assertNoLeftovers(t, c)
	})

	t.Run("preflight_failure_reported_by_all", func(t *testing.T) {
		// Something else holds the workers' NCCL port on node4 (index 3).
		blocker := c.NodeCommand(context.Background(), "node4", "nats-server", "-a", "0.0.0.0", "-p", "29400")
		require.NoError(t, blocker.Start())
		stopBlocker := func() { _ = blocker.Process.Kill(); _ = blocker.Wait() }
		defer stopBlocker()
		require.Eventually(t, func() bool {
			conn, err := net.DialTimeout("tcp", net.JoinHostPort(c.NodeAddr("node4"), "29400"), 200*time.Millisecond)
			if err == nil {
				conn.Close()
			}
			return err == nil
		}, 10*time.Second, 50*time.Millisecond)

		j := submit(t, c, nil)
		job := j.wait(60 * time.Second)
		assert.Equal(t, "FAILED", job.State)
		for _, h := range nodes {
			log := j.launcherLog(h)
			assert.Contains(t, log, "node 3 (node4)", "%s has the aggregated report", h)
			assert.Contains(t, log, "port 29400", "%s names the port", h)
			assert.Contains(t, log, `"exit_code":2`, "%s exits 2", h)
		}
		stopBlocker() // it lives in node4's namespace, so it would count as left over
		assertNoLeftovers(t, c)
	})

	t.Run("blocked_route_to_the_decode_head", func(t *testing.T) {
		// node5 (decode head) refuses connections to its torch-store port,
		// as a site firewall would: the route check names who cannot reach
		// whom, before any precompile or worker starts.
		undo, err := c.RejectPort("node5", 29500)
		require.NoError(t, err)
		defer func() { assert.NoError(t, undo()) }()
		j := submit(t, c, nil)
		job := j.wait(60 * time.Second)
		assert.Equal(t, "FAILED", job.State)
		// Any of the decode worker's other nodes may be the first to report.
		want := regexp.MustCompile(fmt.Sprintf(`node [567] \(node[678]\): cannot reach node 4 \(node5\) at %s:29500 `+
			`\(SGLang torch store of decode worker 0\)`, regexp.QuoteMeta(c.NodeAddr("node5"))))
		for _, h := range nodes {
			log := j.launcherLog(h)
			assert.Contains(t, log, `barrier \"routes\" failed`, h)
			assert.Regexp(t, want, log, h)
		}
		logs, _ := filepath.Glob(filepath.Join(j.logDir(), "*.precompile.log"))
		assert.Empty(t, logs, "nothing heavy started")
		assertNoLeftovers(t, c)
	})

	t.Run("health_timeout_names_missing_decode", func(t *testing.T) {
		j := submit(t, c, map[string]string{"WIDEEP_SIM_FAIL": "node5:noregister", "WIDEEP_HEALTH_TIMEOUT": "15s"})
		job := j.wait(90 * time.Second)
		assert.NotEqual(t, "COMPLETED", job.State)
		log := j.launcherLog("node1")
		assert.Contains(t, log, "health gate")
		assert.Regexp(t, `decode[^"]*0 of 1`, log)
		assertNoLeftovers(t, c)
	})

	t.Run("etcd_killed_after_ready", func(t *testing.T) {
		j := submit(t, c, nil)
		j.waitReady(90 * time.Second)
		procs, err := c.NodeProcesses("node1")
		require.NoError(t, err)
		pid := 0
		for _, p := range procs {
			if p.Comm == "etcd" {
				pid = p.Pid
			}
		}
		require.NotZero(t, pid, "etcd runs on node1: %v", procs)
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
		job := j.wait(60 * time.Second)
		assert.NotEqual(t, "COMPLETED", job.State)
		log := j.launcherLog("node1")
		assert.Contains(t, log, `"message":"NODE FAILED: node 0 (node1): process etcd killed by SIGKILL (exit code 137)"`)
		assertNoLeftovers(t, c)
	})

	t.Run("external_etcd_and_no_nats", func(t *testing.T) {
		etcdURL := startExternalEtcd(t, c.CtlAddr())
		j := submit(t, c, map[string]string{"WIDEEP_ETCD_ENDPOINTS": etcdURL, "WIDEEP_NO_NATS": "true"})
		j.waitReady(90 * time.Second)
		for _, h := range nodes {
			procs, err := c.NodeProcesses(h)
			require.NoError(t, err)
			for _, p := range procs {
				assert.NotEqual(t, "etcd", p.Comm, "no etcd on %s", h)
				assert.NotEqual(t, "nats-server", p.Comm, "no nats-server on %s", h)
			}
		}
		for _, pn := range offlinePlan(t, "node[1-8]") {
			r := readRecord(t, j.recordDir(), pn.Host, pn.Role)
			assert.Equal(t, etcdURL, r.Env["ETCD_ENDPOINTS"], pn.Host)
			_, hasNATS := r.Env["NATS_SERVER"]
			assert.False(t, hasNATS, "%s has no NATS_SERVER", pn.Host)
		}
		require.NoError(t, c.Cancel(j.id))
		j.wait(60 * time.Second)
		assertNoLeftovers(t, c)
	})
}

// TestE2EProctrackPgid: with proctrack/pgid Slurm signals only the task's
// process group, and a setsid'd grandchild escapes even Slurm's SIGKILL. The
// launcher must still leave nothing behind.
func TestE2EProctrackPgid(t *testing.T) {
	c := slurmtest.Start(t, slurmtest.Options{Proctrack: "proctrack/pgid"})
	j := submit(t, c, map[string]string{"WIDEEP_SIM_ORPHAN": "1"})
	j.waitReady(90 * time.Second)
	orphans := 0
	for _, h := range c.Nodes() {
		procs, err := c.NodeProcesses(h)
		require.NoError(t, err)
		for _, p := range procs {
			if strings.Contains(p.Cmdline, "sim orphan") {
				orphans++
			}
		}
	}
	require.Positive(t, orphans, "the sim workers started setsid grandchildren")
	require.NoError(t, c.Cancel(j.id))
	job := j.wait(60 * time.Second)
	assert.Equal(t, "CANCELLED", job.State)
	assertNoLeftovers(t, c)
}

// startExternalEtcd runs an etcd outside the job, on the lab's bridge address.
func startExternalEtcd(t *testing.T, host string) string {
	t.Helper()
	port := freePort(t, host)
	peer := freePort(t, host)
	client := fmt.Sprintf("http://%s:%d", host, port)
	peerURL := fmt.Sprintf("http://%s:%d", host, peer)
	cmd := exec.Command("etcd", "--name", "external", "--data-dir", t.TempDir(),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "external="+peerURL)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	require.Eventually(t, func() bool {
		resp, err := http.Get(client + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, 20*time.Second, 100*time.Millisecond, "external etcd: %s", &out)
	return client
}

func freePort(t *testing.T, host string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	require.NoError(t, err)
	defer ln.Close()
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	n, _ := strconv.Atoi(p)
	return n
}

// assertSecretKept checks that the job's rendezvous secret is in no log, no
// record, no job output and no worker's environment.
func assertSecretKept(t *testing.T, c *slurmtest.Cluster, j *e2eJob, secret string) {
	t.Helper()
	for _, h := range c.Nodes() {
		procs, err := c.NodeProcesses(h)
		require.NoError(t, err)
		for _, p := range procs {
			if !strings.Contains(p.Cmdline, " sim python3") {
				continue
			}
			env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.Pid))
			if err != nil {
				continue // it ended meanwhile
			}
			assert.NotContains(t, string(env), "WIDEEP_SECRET=", "%s: %s", h, p.Cmdline)
		}
	}
	files := []string{filepath.Join(j.c.WorkDir(), "wideep-sim-"+j.id+".out")}
	_ = filepath.WalkDir(j.work, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, path)
		}
		return nil
	})
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil {
			assert.NotContains(t, string(b), secret, "the secret leaked into %s", f)
		}
	}
	plan := exec.Command(launcherBin, "plan", "--nodelist", "node[1-8]", "--show-commands")
	plan.Env = append(os.Environ(), "WIDEEP_SECRET="+secret)
	out, err := plan.CombinedOutput()
	require.NoError(t, err)
	assert.NotContains(t, string(out), secret)
}
