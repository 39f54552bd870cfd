// Package preflight checks, on each node and in its first seconds,
// everything cheap that would otherwise fail late, after other nodes have
// started heavy work: model path, shared and log directories, the ports the
// node will bind, GPUs, executables; and the named checks (Checks) of the
// fabric and the GPUs, each of which --skip-check can waive. Every problem
// names the thing and why; the rendezvous then reports all nodes' problems
// to every node at once.
package preflight

import (
	"cmp"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"sync"
	"time"
)

// Config says what this node is about to use. Empty fields are not
// checked.
type Config struct {
	// ModelPath is a local model directory or file. Leave it empty when the
	// model is a hub id that the engine downloads itself.
	ModelPath string
	// CacheDir and LogDir are created if missing and must be writable.
	CacheDir string
	LogDir   string
	// Ports are the TCP ports this node's processes will bind (not the
	// rendezvous port, which rank 0 has bound already), at BindHost ("":
	// every address, as the processes' --host 0.0.0.0 does).
	Ports    []int
	BindHost string
	// PortUse says what needs a port, for the problem line: "SGLang
	// tokenizer, from --dist-init-addr gpu05:29500".
	PortUse map[int]string
	// GPUs is how many GPUs this node's processes need.
	GPUs int
	// GPUsOnNode is SLURM_GPUS_ON_NODE (0 when unset: then only the device
	// files are counted).
	GPUsOnNode int
	// Simulate skips the /dev/nvidia* check: stand-ins need no GPU (the
	// named GPU checks ask NvidiaSMI, a stand-in too then).
	Simulate bool
	// Executables must be found in PATH (or exist, when given as paths), as
	// LookPath sees them.
	Executables []string
	// LookPath finds an executable where the processes will run (the host,
	// a container); nil is exec.LookPath on the host.
	LookPath func(name string) (string, error)
	// DevDir is where the NVIDIA device files are; "" means /dev.
	DevDir string

	// FSTimeout bounds each filesystem check (model path, cache and log
	// dirs, device dir, executables): a dead NFS mount hangs them forever.
	// They run at once, so Check returns within about FSTimeout however
	// many paths hang. 0 means DefaultFSTimeout.
	FSTimeout time.Duration
	// FS is the filesystem of the model path, dirs and devices; nil means
	// HostFS.
	FS FS
	// ProcDir is where /proc is, to name the process holding a port in use;
	// "" means /proc.
	ProcDir string

	// The named checks below apply to a node that runs a worker (GPUs > 0).
	// Skip waives checks by name (--skip-check); see Checks.
	Skip []string
	// Fabric runs the host checks (shm; with RDMA also ib-ports, gpudirect,
	// memlock). A simulated node has no fabric to check unless given a fake
	// Sysroot.
	Fabric bool
	// Sysroot is where the fabric and gpu-free checks read sys/, proc/ and
	// dev/shm; "" means "/".
	Sysroot string
	// RDMA names what in the worker's argv needs RDMA (RDMAUsers): none,
	// and ib-ports, gpudirect and memlock do not apply.
	RDMA []string
	// Memlock reads RLIMIT_MEMLOCK (soft, hard) as the processes will get
	// it; nil is this process's own, which they inherit.
	Memlock func() (cur, max uint64, err error)
	// StatFS is the size in bytes of the filesystem at a path; nil is
	// statfs(2).
	StatFS func(path string) (uint64, error)
	// NvidiaSMI answers gpu-model and gpu-free (HostNvidiaSMI, or the
	// simulation's SimNvidiaSMI); nil skips both.
	NvidiaSMI Runner
	// MadeUpPIDs says NvidiaSMI's PIDs are not this node's (a stand-in's
	// without a fake Sysroot): gpu-free then names no owner, rather than
	// whoever has that PID here.
	MadeUpPIDs bool
}

// Report is everything Run found on this node.
type Report struct {
	// Problems fail the job: every node exits 2 and nothing starts.
	// Warnings are only logged by the node.
	Problems, Warnings []string
	// GPUs is this node's GPUs for the log ("8 × NVIDIA H100 80GB HBM3,
	// 81559 MiB"); GPUModel what every node of a worker must share
	// ("NVIDIA H100 80GB HBM3, 81559 MiB", "" when mixed). Both "" when
	// gpu-model did not run.
	GPUs, GPUModel string
}

var nvidiaDevice = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^nvidia[0-9]+$`) })

// Check returns every problem found on this node, each naming the thing
// and why; none means ready.
func Check(cfg Config) []string { return Run(cfg).Problems }

// Run checks this node: problems, warnings and what it learnt of its GPUs.
func Run(cfg Config) Report {
	fsys := cfg.FS
	if fsys == nil {
		fsys = HostFS
	}
	lookPath := cfg.LookPath
	if lookPath == nil {
		lookPath = exec.LookPath
	}
	// Every check that touches a filesystem may hang: they all run at once,
	// under one timeout, then the ports are checked. The problems keep the
	// order of the checks (the ports come between the dirs and the GPUs).
	var before, after []probe
	if cfg.ModelPath != "" {
		before = append(before, errProbe("model path "+cfg.ModelPath, func() error { return checkReadable(fsys, cfg.ModelPath) }))
	}
	for _, d := range []struct{ what, path string }{{"cache dir", cfg.CacheDir}, {"log dir", cfg.LogDir}} {
		if d.path != "" {
			before = append(before, errProbe(d.what+" "+d.path, func() error { return checkWritableDir(fsys, d.path) }))
		}
	}
	if cfg.GPUs > 0 && !cfg.Simulate {
		dev := cmp.Or(cfg.DevDir, "/dev")
		after = append(after, probe{what: "GPUs: listing " + dev, run: func() []string { return checkGPUs(fsys, dev, cfg) }})
	}
	for _, name := range cfg.Executables {
		after = append(after, probe{what: "executable " + name, run: func() []string { return checkExecutable(lookPath, name) }})
	}
	skip, badSkips := skipSet(cfg.Skip)
	timeout := cmp.Or(cfg.FSTimeout, DefaultFSTimeout)
	gpus := &gpuProbe{}
	if cfg.GPUs > 0 && cfg.NvidiaSMI != nil {
		after = append(after, gpus.probes(cfg, skip, timeout)...)
	}
	results := runProbes(append(before, after...), timeout)

	var f findings
	f.problems = badSkips
	for _, r := range results[:len(before)] {
		f.problems = append(f.problems, r...)
	}
	f.problems = append(f.problems, checkPorts(cfg)...)
	for _, r := range results[len(before):] {
		f.problems = append(f.problems, r...)
	}
	if cfg.GPUs > 0 && cfg.Fabric {
		checkFabric(cfg, skip, &f)
	}
	rep := Report{Problems: f.problems, Warnings: f.warnings}
	rep.GPUs, rep.GPUModel = gpus.facts()
	return rep
}

// errProbe is a probe whose check returns at most one problem, as an error.
func errProbe(what string, check func() error) probe {
	return probe{what: what, run: func() []string {
		if err := check(); err != nil {
			return []string{fmt.Sprintf("%s: %v", what, err)}
		}
		return nil
	}}
}

func checkPorts(cfg Config) []string {
	return CheckPorts(cfg.BindHost, cfg.Ports, cfg.PortUse, cfg.ProcDir)
}

// CheckPorts says which of ports cannot be bound at bindHost now, one
// line each: "port 29501 (SGLang tokenizer, from ...): already in use on
// this node by PID 1234 (python3 ...)". use (may be nil) says what needs
// each port; procDir is where /proc is ("": /proc), to name the holder.
func CheckPorts(bindHost string, ports []int, use map[int]string, procDir string) []string {
	procDir = cmp.Or(procDir, "/proc")
	var problems []string
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] {
			continue
		}
		seen[p] = true
		name := fmt.Sprintf("port %d", p)
		if u := use[p]; u != "" {
			name += " (" + u + ")"
		}
		if p < 1 || p > 65535 {
			problems = append(problems, name+": out of range 1-65535")
			continue
		}
		if err := checkPortFree(bindHost, p, procDir); err != nil {
			problems = append(problems, name+": "+err.Error())
		}
	}
	return problems
}

func checkExecutable(lookPath func(string) (string, error), name string) []string {
	_, err := lookPath(name)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, exec.ErrNotFound):
		return []string{fmt.Sprintf("executable %s: not found in PATH", name)}
	default:
		return []string{fmt.Sprintf("executable %s: %s", name, reason(err))}
	}
}

func checkGPUs(fsys FS, dev string, cfg Config) []string {
	var problems []string
	entries, err := fsys.ReadDir(dev)
	if err != nil {
		return []string{fmt.Sprintf("GPUs: listing %s: %s", dev, reason(err))}
	}
	n := 0
	for _, e := range entries {
		if nvidiaDevice().MatchString(e.Name()) {
			n++
		}
	}
	if n < cfg.GPUs {
		problems = append(problems, fmt.Sprintf("GPUs: need %d, found %d %s/nvidia* devices", cfg.GPUs, n, dev))
	}
	if cfg.GPUsOnNode > 0 && cfg.GPUsOnNode < cfg.GPUs {
		problems = append(problems, fmt.Sprintf("GPUs: need %d, Slurm allocated %d on this node (SLURM_GPUS_ON_NODE); request --gpus-per-node=%d", cfg.GPUs, cfg.GPUsOnNode, cfg.GPUs))
	}
	return problems
}
