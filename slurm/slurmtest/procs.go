package slurmtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// Proc is a process found on a node.
type Proc struct {
	Pid     int
	PPid    int
	Comm    string // /proc/<pid>/comm, e.g. "sleep"
	Cmdline string // argv joined with spaces
}

func (p Proc) String() string { return fmt.Sprintf("%d(%s: %s)", p.Pid, p.Comm, p.Cmdline) }

// ProcOption changes what NodeProcesses reports.
type ProcOption func(*procFilter)

type procFilter struct{ stepd bool }

// IncludeStepd makes NodeProcesses report slurmstepd processes too. A
// slurmstepd that outlives its job means Slurm could not clean up the step
// (e.g. escaped processes under proctrack/pgid).
func IncludeStepd() ProcOption { return func(f *procFilter) { f.stepd = true } }

// NodeProcesses lists the processes living in node's network namespace —
// everything its jobs started, including processes that called setsid or were
// re-parented — except the node's slurmd and, unless IncludeStepd is given,
// slurmstepds. Zombies are not reported (they are dead; the sandbox's PID 1
// reaps them lazily). After a job has ended, a non-empty list means orphans.
func (c *Cluster) NodeProcesses(name string, opts ...ProcOption) ([]Proc, error) {
	var f procFilter
	for _, o := range opts {
		o(&f)
	}
	n, ok := c.node(name)
	if !ok {
		return nil, fmt.Errorf("no node %q in this cluster (nodes %s)", name, strings.Join(c.Nodes(), ","))
	}
	if n.netns == "" {
		return nil, fmt.Errorf("node %s has no network namespace", name)
	}
	nsPath := filepath.Join("/run/netns", n.netns)
	st, err := os.Stat(nsPath)
	if err != nil {
		return nil, err
	}
	ns := st.Sys().(*syscall.Stat_t)
	slurmd := c.slurmd[name]

	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var procs []Proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == slurmd {
			continue
		}
		pst, err := os.Stat(filepath.Join("/proc", e.Name(), "ns", "net"))
		if err != nil {
			continue // gone, or a kernel thread
		}
		if s := pst.Sys().(*syscall.Stat_t); s.Ino != ns.Ino || s.Dev != ns.Dev {
			continue
		}
		p, state, err := readProc(pid)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, err
		}
		switch {
		case state == "Z":
		case p.Comm == "slurmd" && p.PPid == slurmd: // slurmd forking a slurmstepd
		case p.Comm == "slurmstepd" && !f.stepd:
		default:
			procs = append(procs, p)
		}
	}
	sort.Slice(procs, func(i, j int) bool { return procs[i].Pid < procs[j].Pid })
	return procs, nil
}

// Leftovers is NodeProcesses of every node, keyed by node, for the nodes that
// have any. Empty after a job has ended means nothing it started survived.
func (c *Cluster) Leftovers(opts ...ProcOption) (map[string][]Proc, error) {
	left := map[string][]Proc{}
	for _, n := range c.nodes {
		procs, err := c.NodeProcesses(n.name, opts...)
		if err != nil {
			return nil, err
		}
		if len(procs) > 0 {
			left[n.name] = procs
		}
	}
	return left, nil
}

// readProc reads pid's comm, parent and state from /proc/<pid>/stat and its
// command line.
func readProc(pid int) (Proc, string, error) {
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return Proc{}, "", err
	}
	p, state, err := parseStat(string(stat))
	if err != nil {
		return Proc{}, "", fmt.Errorf("%s/stat: %w", dir, err)
	}
	cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil {
		return Proc{}, "", err
	}
	p.Cmdline = strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
	return p, state, nil
}

// parseStat parses /proc/<pid>/stat: "pid (comm) state ppid …", where comm may
// itself hold spaces and parentheses, so it ends at the last ')'.
func parseStat(stat string) (Proc, string, error) {
	lp, rp := strings.IndexByte(stat, '('), strings.LastIndexByte(stat, ')')
	if lp < 0 || rp < lp {
		return Proc{}, "", fmt.Errorf("malformed: %q", stat)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(stat[:lp]))
	if err != nil {
		return Proc{}, "", fmt.Errorf("malformed pid: %q", stat)
	}
	rest := strings.Fields(stat[rp+1:])
	if len(rest) < 2 {
		return Proc{}, "", fmt.Errorf("malformed: %q", stat)
	}
	ppid, err := strconv.Atoi(rest[1])
	if err != nil {
		return Proc{}, "", fmt.Errorf("malformed ppid: %q", stat)
	}
	return Proc{Pid: pid, PPid: ppid, Comm: stat[lp+1 : rp]}, rest[0], nil
}

// NodeCommand prepares a command that runs inside node's network namespace:
// with the node's address and port space, as if started on that node outside
// any job (for example to hold a port the node's job will want).
func (c *Cluster) NodeCommand(ctx context.Context, node, name string, args ...string) *exec.Cmd {
	n, ok := c.node(node)
	if !ok {
		c.tb.Fatalf("slurmtest: no node %q in %v", node, c.Nodes())
	}
	argv := append([]string{"--net=/run/netns/" + n.netns, "--", name}, args...)
	return exec.CommandContext(ctx, "nsenter", argv...)
}

// SetLink takes node's network link down (a network cut: its processes
// live on but reach nobody, and nobody reaches them) or up again.
func (c *Cluster) SetLink(name string, up bool) error {
	n, ok := c.node(name)
	if !ok || n.netns == "" {
		return fmt.Errorf("no node %q with its own network namespace in this cluster", name)
	}
	// up.sh pairs netns <net>-n<i> with the bridge port <net>-v<i>.
	i := strings.LastIndex(n.netns, "-n")
	if i < 0 {
		return fmt.Errorf("node %s: unexpected network namespace name %q", name, n.netns)
	}
	veth := n.netns[:i] + "-v" + n.netns[i+2:]
	state := "down"
	if up {
		state = "up"
	}
	if out, err := exec.Command("ip", "link", "set", veth, state).CombinedOutput(); err != nil {
		return fmt.Errorf("ip link set %s %s: %v: %s", veth, state, err, out)
	}
	return nil
}

// RejectPort makes node refuse TCP connections to port (nftables in the
// node's network namespace, as a site firewall would), until undo.
func (c *Cluster) RejectPort(name string, port int) (undo func() error, err error) {
	n, ok := c.node(name)
	if !ok || n.netns == "" {
		return nil, fmt.Errorf("no node %q with its own network namespace in this cluster", name)
	}
	table := fmt.Sprintf("slurmtest_reject_%d", port)
	nft := func(args ...string) error {
		cmd := exec.Command("ip", append([]string{"netns", "exec", n.netns, "nft"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("nft %s on %s: %v: %s", strings.Join(args, " "), name, err, out)
		}
		return nil
	}
	if err := nft("add", "table", "inet", table); err != nil {
		return nil, err
	}
	undo = func() error { return nft("delete", "table", "inet", table) }
	if err := nft("add", "chain", "inet", table, "input", "{ type filter hook input priority 0 ; }"); err != nil {
		_ = undo()
		return nil, err
	}
	if err := nft("add", "rule", "inet", table, "input", "tcp", "dport", strconv.Itoa(port), "reject", "with", "tcp", "reset"); err != nil {
		_ = undo()
		return nil, err
	}
	return undo, nil
}
