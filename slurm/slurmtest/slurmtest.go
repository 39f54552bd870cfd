// Package slurmtest starts a real Slurm cluster on this machine for tests, the
// way net/http/httptest starts a real HTTP server: one slurmctld and N slurmd
// "nodes" from Debian's packages, each node in its own network, UTS and mount
// namespace with its own IPv4 address and hostname. It drives the project's
// slurm/lab/up.sh and down.sh; see slurm/lab/README.md for what the lab is and
// the facts measured on it.
//
//	c := slurmtest.Start(t, slurmtest.Options{})   // skips unless root
//	id, err := c.Sbatch(ctx, script, "-N", "8", "--ntasks-per-node=1")
//	job, err := c.WaitJob(ctx, id)                 // job.State == "COMPLETED"
//
// Several clusters can run at once on one machine (tests of several packages
// in parallel, next to a developer's `make cluster-up`): each gets its own
// state directory, network names, subnet, slurmctld port and cgroup subtree.
package slurmtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options configures Start. The zero value is the lab's default cluster:
// 8 nodes, proctrack/cgroup, KillWait 5 s, no GPUs.
type Options struct {
	Nodes int // compute nodes, 1..250; 0 means 8

	// Proctrack is the ProctrackType, e.g. "proctrack/pgid". "" keeps the
	// lab's default: proctrack/cgroup when the cgroup v1 freezer is mounted
	// (what real clusters run), else proctrack/linuxproc.
	Proctrack string

	KillWait int // seconds from SIGTERM to SIGKILL when a job ends; 0 means 5
	GPUs     int // fake GPUs per node (gres/gpu backed by dummy device nodes)
	CPUs     int // CPUs each node advertises; 0 means 4

	// Dir is the lab's state directory (config, logs, spool), which up.sh
	// wipes and recreates. "" means a fresh temporary directory, removed when
	// the test passes and kept (and logged) when it fails or SLURMTEST_KEEP=1.
	Dir string

	NodePrefix string // node names are <NodePrefix><i>; "" means "node"
	NodeWidth  int    // zero-pad <i> to this width (3 gives node001)

	ExtraConf []string      // lines appended to slurm.conf
	Timeout   time.Duration // limit for each start-up stage of up.sh; 0 means 60 s
}

// Cluster is a running lab cluster. Its methods may be called from several
// goroutines.
type Cluster struct {
	tb      testing.TB
	scripts string // directory holding up.sh and down.sh
	dir     string // SLURM_LAB_DIR
	tmpRoot string // temp dir Start created around dir; removed after a passing test
	slot    slot
	nodes   []node
	slurmd  map[string]int // node name -> pid of its slurmd

	// running is set once up.sh has succeeded. Until then Stop leaves down.sh
	// alone: a failing up.sh cleans up after itself, and one that refused
	// to start (a lab already running in Options.Dir) must not have that
	// other lab stopped for it.
	running  bool
	stopOnce sync.Once
	stopErr  error
}

type node struct {
	name  string
	addr  string
	netns string // name under /run/netns
}

const (
	defaultNodes = 8
	// up.sh's own stages are bounded by Options.Timeout; this bounds the whole
	// script, which may first have to apt-get the packages, or wait for
	// another lab that is doing so.
	upLimit   = 15 * time.Minute
	downLimit = 3 * time.Minute
	// cmdLimit bounds a single Slurm client call made without a context.
	cmdLimit = 60 * time.Second
	// DefaultWait bounds WaitJob and WaitState when their context has no deadline.
	DefaultWait = 2 * time.Minute
)

// Start starts a cluster and registers its Stop with tb.Cleanup. It skips the
// test when not running as root (the lab creates network namespaces and runs
// slurmd), and fails it, with the tail of the lab's logs, when the cluster
// does not come up. The packages are apt-get installed first if missing.
func Start(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("slurmtest: needs root (the lab creates network namespaces and runs slurmctld/slurmd); " +
			"CI runs as root")
	}
	scripts, err := labScripts()
	if err != nil {
		tb.Fatalf("slurmtest: %v", err)
	}
	c := &Cluster{tb: tb, scripts: scripts}
	if opts.Dir != "" {
		if !filepath.IsAbs(opts.Dir) {
			tb.Fatalf("slurmtest: Options.Dir %q must be absolute", opts.Dir)
		}
		c.dir = filepath.Clean(opts.Dir)
	} else {
		// up.sh wants a directory that does not exist yet (or one it made), and
		// unix socket paths under it must stay short (108 bytes)
		base := os.TempDir()
		if len(base) > 40 {
			base = "/tmp"
		}
		c.tmpRoot, err = os.MkdirTemp(base, "slurmtest-")
		if err != nil {
			tb.Fatalf("slurmtest: %v", err)
		}
		// munged refuses a socket under a directory that not everybody can traverse
		if err := os.Chmod(c.tmpRoot, 0o755); err != nil {
			tb.Fatalf("slurmtest: %v", err)
		}
		c.dir = filepath.Join(c.tmpRoot, "lab")
	}

	tb.Cleanup(func() {
		if err := c.Stop(); err != nil {
			tb.Errorf("slurmtest: %v", err)
		}
		if c.tmpRoot == "" {
			return
		}
		if tb.Failed() || os.Getenv("SLURMTEST_KEEP") == "1" {
			tb.Logf("slurmtest: lab logs kept in %s", filepath.Join(c.dir, "log"))
			return
		}
		_ = os.RemoveAll(c.tmpRoot)
	})

	c.slot, err = claimSlot(c.dir, c.reclaim)
	if err != nil {
		tb.Fatalf("slurmtest: %v", err)
	}
	if err := c.up(opts); err != nil {
		tb.Fatalf("slurmtest: %v", err)
	}
	return c
}

func (c *Cluster) up(opts Options) error {
	n := opts.Nodes
	if n == 0 {
		n = defaultNodes
	}
	env := append(c.Env(),
		"SLURM_LAB_DIR="+c.dir,
		"SLURM_LAB_MODE=netns",
		"SLURM_LAB_NODES="+strconv.Itoa(n),
		"SLURM_LAB_NET="+c.slot.net,
		"SLURM_LAB_SUBNET="+c.slot.subnet,
		"SLURM_LAB_CTLD_PORT="+strconv.Itoa(c.slot.port),
	)
	set := func(name, value string, ok bool) {
		if ok {
			env = append(env, name+"="+value)
		}
	}
	set("SLURM_LAB_PROCTRACK", opts.Proctrack, opts.Proctrack != "")
	set("SLURM_LAB_KILLWAIT", strconv.Itoa(opts.KillWait), opts.KillWait > 0)
	set("SLURM_LAB_GPUS", strconv.Itoa(opts.GPUs), opts.GPUs > 0)
	set("SLURM_LAB_CPUS", strconv.Itoa(opts.CPUs), opts.CPUs > 0)
	set("SLURM_LAB_NODE_PREFIX", opts.NodePrefix, opts.NodePrefix != "")
	set("SLURM_LAB_NODE_WIDTH", strconv.Itoa(opts.NodeWidth), opts.NodeWidth > 0)
	set("SLURM_LAB_EXTRA_CONF", strings.Join(opts.ExtraConf, "\n"), len(opts.ExtraConf) > 0)
	set("SLURM_LAB_TIMEOUT", strconv.Itoa(int(opts.Timeout.Round(time.Second)/time.Second)), opts.Timeout >= time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), c.limit(upLimit))
	defer cancel()
	out, err := c.script(ctx, "up.sh", env)
	if err != nil {
		return fmt.Errorf("%s failed: %w\n%s%s", filepath.Join(c.scripts, "up.sh"), err,
			tail(out, 40), tailFile(filepath.Join(c.dir, "log", "slurmctld.log"), 15))
	}
	c.running = true
	if c.nodes, err = readNodes(filepath.Join(c.dir, "nodes")); err != nil {
		return err
	}
	if c.slurmd, err = readSlurmdPids(filepath.Join(c.dir, "pids")); err != nil {
		return err
	}
	// sbatch runs from here, so jobs' default working dir and slurm-<id>.out
	// land in the lab, not in the package under test
	return os.MkdirAll(c.WorkDir(), 0o755)
}

// script runs bash <scripts>/<name> with env; the combined output is returned
// and also kept in the lab's log directory.
func (c *Cluster) script(ctx context.Context, name string, env []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(c.scripts, name))
	cmd.Env = env
	cmd.Dir = c.scripts
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// a TERMed script still tears down what it started (its trap turns TERM
	// into exit); KILL only if it does not finish in time
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = time.Minute
	err := cmd.Run()
	if logDir := filepath.Join(c.dir, "log"); isDir(logDir) {
		_ = os.WriteFile(filepath.Join(logDir, name+".out"), out.Bytes(), 0o644)
	}
	return out.Bytes(), err
}

// limit shortens d to the test binary's own deadline, if that is sooner.
func (c *Cluster) limit(d time.Duration) time.Duration {
	if t, ok := c.tb.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := t.Deadline(); ok {
			if left := time.Until(dl) - 5*time.Second; left > 0 && left < d {
				return left
			}
		}
	}
	return d
}

// Stop stops the cluster with down.sh: jobs are cancelled, then every daemon,
// process, namespace and cgroup of the lab goes. Calling it again returns the
// first call's result. Start registers it with tb.Cleanup.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		defer c.slot.release()
		if !c.running {
			return
		}
		env := append(c.Env(), "SLURM_LAB_DIR="+c.dir)
		ctx, cancel := context.WithTimeout(context.Background(), downLimit)
		defer cancel()
		if out, err := c.script(ctx, "down.sh", env); err != nil {
			c.stopErr = fmt.Errorf("down.sh for %s failed: %w\n%s", c.dir, err, tail(out, 30))
		}
	})
	return c.stopErr
}

// reclaim stops a lab left behind by a test process that died without its
// cleanups (a go test -timeout panic, a SIGKILL). claimSlot calls it only
// while holding the slot's lock, which the dead owner held for the lab's
// lifetime, and only for the lab whose info file names the slot's network;
// down.sh touches nothing but that lab's own processes.
func (c *Cluster) reclaim(dir string) error {
	env := append(c.Env(), "SLURM_LAB_DIR="+dir)
	ctx, cancel := context.WithTimeout(context.Background(), downLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(c.scripts, "down.sh"))
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("stopping the stale lab in %s: %w\n%s", dir, err, tail(out, 20))
	}
	c.tb.Logf("slurmtest: stopped a stale lab left in %s", dir)
	return nil
}

// Dir is the lab's state directory (SLURM_LAB_DIR): etc/, log/, spool/, state/.
func (c *Cluster) Dir() string { return c.dir }

// WorkDir is where Sbatch and Command run: the default working directory of
// jobs and of their slurm-<jobid>.out files.
func (c *Cluster) WorkDir() string { return filepath.Join(c.dir, "work") }

// Conf is the path of the cluster's slurm.conf (what SLURM_CONF must name).
func (c *Cluster) Conf() string { return filepath.Join(c.dir, "etc", "slurm.conf") }

// Nodes are the node names, in order (node1 … nodeN by default).
func (c *Cluster) Nodes() []string {
	names := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		names[i] = n.name
	}
	return names
}

// NodeAddr is the IPv4 address of node inside its namespace, reachable from the
// test process (the lab's bridge routes its /24), or "" for an unknown node.
func (c *Cluster) NodeAddr(name string) string {
	if n, ok := c.node(name); ok {
		return n.addr
	}
	return ""
}

// CtlAddr is the test process's own address on the lab's bridge (<subnet>.254):
// where slurmctld listens for the nodes, and where a server started by the test
// (in the root namespace) is reachable from jobs. Inside jobs the real
// hostname of this machine resolves to it.
func (c *Cluster) CtlAddr() string { return c.slot.subnet + ".254" }

func (c *Cluster) node(name string) (node, bool) {
	for _, n := range c.nodes {
		if n.name == name {
			return n, true
		}
	}
	return node{}, false
}

// Env is the test process's environment for talking to this cluster:
// os.Environ() without the caller's SLURM_*, SLURMD_* and Slurm client input
// variables (SBATCH_*, SRUN_*, SQUEUE_*, …, which would steer sbatch or
// squeue, e.g. when the tests themselves run inside a Slurm job), plus
// SLURM_CONF. Jobs submitted with it inherit it (sbatch --export=ALL).
func (c *Cluster) Env() []string {
	return append(scrubEnv(os.Environ()), "SLURM_CONF="+c.Conf())
}

// Command is a Slurm client command (srun, squeue, scontrol, …) set up for this
// cluster: Env() and WorkDir(). The caller runs it.
func (c *Cluster) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = c.Env()
	cmd.Dir = c.WorkDir()
	return cmd
}

// run runs a Slurm client command and returns its stdout; the error carries
// its stderr.
func (c *Cluster) run(ctx context.Context, name string, args ...string) (string, error) {
	return output(c.Command(ctx, name, args...))
}

func output(cmd *exec.Cmd) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err,
			strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// clientEnvPrefixes are the variables that change what Slurm's client
// commands do or which cluster they talk to.
var clientEnvPrefixes = []string{
	"SLURM_", "SLURMD_", "SBATCH_", "SRUN_", "SALLOC_", "SQUEUE_", "SINFO_",
	"SCANCEL_", "SCONTROL_", "SACCT_", "SSTAT_",
}

func scrubEnv(environ []string) []string {
	out := make([]string, 0, len(environ))
next:
	for _, kv := range environ {
		for _, p := range clientEnvPrefixes {
			if strings.HasPrefix(kv, p) {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}

// labScripts finds slurm/lab: SLURMTEST_LAB_SCRIPTS if set, else next to this
// source file, else above the working directory (builds with -trimpath have no
// usable source path; go test runs in the package's directory).
func labScripts() (string, error) {
	var tried []string
	ok := func(dir string) bool {
		tried = append(tried, dir)
		_, err := os.Stat(filepath.Join(dir, "up.sh"))
		return err == nil
	}
	if dir := os.Getenv("SLURMTEST_LAB_SCRIPTS"); dir != "" {
		if ok(dir) {
			return dir, nil
		}
		return "", fmt.Errorf("SLURMTEST_LAB_SCRIPTS=%s has no up.sh", dir)
	}
	if _, file, _, found := runtime.Caller(0); found && filepath.IsAbs(file) {
		if dir := filepath.Join(filepath.Dir(file), "..", "lab"); ok(dir) {
			return filepath.Clean(dir), nil
		}
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			if dir := filepath.Join(d, "slurm", "lab"); ok(dir) {
				return dir, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return "", fmt.Errorf("cannot find slurm/lab/up.sh (tried %s); set SLURMTEST_LAB_SCRIPTS",
		strings.Join(tried, ", "))
}

// readNodes reads up.sh's nodes file: "<name> <addr> <netns>" per line.
func readNodes(path string) ([]node, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var nodes []node
	for i, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("%s:%d: want \"<node> <addr> <netns>\", got %q", path, i+1, line)
		}
		n := node{name: f[0], addr: f[1], netns: f[2]}
		if n.netns == "-" {
			n.netns = ""
		}
		nodes = append(nodes, n)
	}
	if len(nodes) == 0 {
		return nil, fmt.Errorf("%s lists no nodes", path)
	}
	return nodes, nil
}

// readSlurmdPids reads up.sh's pids file ("<name> <pid>"; slurmds are named
// slurmd:<node>).
func readSlurmdPids(path string) (map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	pids := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, pid, ok := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		node, isSlurmd := strings.CutPrefix(name, "slurmd:")
		if !ok || !isSlurmd {
			continue
		}
		p, err := strconv.Atoi(strings.TrimSpace(pid))
		if err != nil {
			return nil, fmt.Errorf("%s: bad pid in %q", path, sc.Text())
		}
		pids[node] = p
	}
	return pids, sc.Err()
}

func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// tail returns the last n lines of out.
func tail(out []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"…"}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n") + "\n"
}

func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return ""
		}
		return fmt.Sprintf("(%v)\n", err)
	}
	return "--- " + path + "\n" + tail(data, n)
}
