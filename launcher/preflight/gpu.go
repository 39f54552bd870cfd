package preflight

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Runner runs nvidia-smi with args and returns what it printed on stdout.
// HostNvidiaSMI runs the real one; SimNvidiaSMI is the simulation's
// stand-in.
type Runner func(ctx context.Context, args ...string) ([]byte, error)

// The nvidia-smi queries the GPU checks make.
var (
	gpuQuery  = []string{"--query-gpu=name,memory.total,ecc.errors.uncorrected.volatile.total", "--format=csv,noheader"}
	appsQuery = []string{"--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader"}
)

// HostNvidiaSMI runs nvidia-smi from PATH on this node. A GPU whose driver
// is wedged makes nvidia-smi hang in the kernel: ctx bounds the wait, and
// WaitDelay lets it return even if the process cannot be killed.
func HostNvidiaSMI(ctx context.Context, args ...string) ([]byte, error) {
	bin, err := exec.LookPath("nvidia-smi")
	if err != nil {
		return nil, errors.New("nvidia-smi not found in PATH")
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return nil, fmt.Errorf("%w: %s", err, firstLine(msg))
		}
		if msg := strings.TrimSpace(string(out)); msg != "" {
			return nil, fmt.Errorf("%w: %s", err, firstLine(msg)) // it explains failures on stdout
		}
		return nil, err
	}
	return out, nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// GPU is one GPU as nvidia-smi shows it.
type GPU struct {
	Name   string
	Memory string // "81559 MiB"; "" when nvidia-smi says [N/A]
	ECC    int    // uncorrected ECC errors since the driver loaded; -1 when ECC is off
}

// model is what every GPU of a worker must share: name and memory.
func (g GPU) model() string {
	if g.Memory == "" {
		return g.Name
	}
	return g.Name + ", " + g.Memory
}

func notAvailable(field string) bool {
	return strings.HasPrefix(field, "[") // [N/A], [Not Supported], [Insufficient Permissions]
}

// parseGPUs parses the answer to gpuQuery, one GPU a line:
// "NVIDIA H100 80GB HBM3, 81559 MiB, 0".
func parseGPUs(out []byte) ([]GPU, error) {
	var gpus []GPU
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		f := strings.Split(line, ", ")
		if len(f) < 3 {
			return nil, fmt.Errorf("unexpected line %q (want name, memory, ECC errors)", line)
		}
		// From the right: a name with ", " in it stays whole.
		g := GPU{Name: strings.Join(f[:len(f)-2], ", "), Memory: f[len(f)-2], ECC: -1}
		if notAvailable(g.Memory) {
			g.Memory = ""
		}
		if ecc := f[len(f)-1]; !notAvailable(ecc) {
			n, err := strconv.Atoi(ecc)
			if err != nil {
				return nil, fmt.Errorf("unexpected ECC error count %q in line %q", ecc, line)
			}
			g.ECC = n
		}
		gpus = append(gpus, g)
	}
	return gpus, nil
}

// GPUApp is a process holding GPU memory.
type GPUApp struct {
	PID    int
	Name   string
	Memory string // "70000 MiB"; "" when not shown
}

// parseApps parses the answer to appsQuery: "4242, python3, 70000 MiB".
func parseApps(out []byte) ([]GPUApp, error) {
	var apps []GPUApp
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "No running") {
			continue
		}
		f := strings.Split(line, ", ")
		if len(f) < 3 {
			return nil, fmt.Errorf("unexpected line %q (want pid, process name, used memory)", line)
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil {
			return nil, fmt.Errorf("unexpected pid %q in line %q", f[0], line)
		}
		a := GPUApp{PID: pid, Name: strings.Join(f[1:len(f)-1], ", "), Memory: f[len(f)-1]}
		if notAvailable(a.Memory) {
			a.Memory = ""
		}
		apps = append(apps, a)
	}
	return apps, nil
}

// gpuFacts is what the gpu-model check learnt, for the report.
type gpuFacts struct{ summary, model string }

// checkGPUModel asks nvidia-smi for this node's GPUs: as many as the plan
// needs, all alike, none with uncorrected ECC errors. It returns the
// problems and what it saw.
func checkGPUModel(ctx context.Context, run Runner, need int) ([]string, gpuFacts) {
	out, err := run(ctx, gpuQuery...)
	if err == nil {
		var gpus []GPU
		if gpus, err = parseGPUs(out); err == nil {
			return judgeGPUs(gpus, need)
		}
	}
	return []string{fmt.Sprintf("%s: nvidia-smi --query-gpu: %v", CheckGPUModel, err)}, gpuFacts{}
}

func judgeGPUs(gpus []GPU, need int) ([]string, gpuFacts) {
	var problems []string
	var models []string // distinct, in GPU order
	count := map[string]int{}
	for _, g := range gpus {
		if count[g.model()] == 0 {
			models = append(models, g.model())
		}
		count[g.model()]++
	}
	parts := make([]string, len(models))
	for i, m := range models {
		parts[i] = fmt.Sprintf("%d × %s", count[m], m)
	}
	summary := strings.Join(parts, " + ")
	switch {
	case len(gpus) == 0:
		problems = append(problems, fmt.Sprintf("%s: nvidia-smi shows no GPU; the plan needs %d on this node", CheckGPUModel, need))
	case len(gpus) != need:
		problems = append(problems, fmt.Sprintf("%s: nvidia-smi shows %d GPUs (%s); the plan needs %d on this node", CheckGPUModel, len(gpus), summary, need))
	}
	if len(models) > 1 {
		problems = append(problems, fmt.Sprintf("%s: this node mixes GPU models: %s", CheckGPUModel, summary))
	}
	for i, g := range gpus {
		if g.ECC > 0 {
			problems = append(problems, fmt.Sprintf("%s: GPU %d (%s) has %d uncorrected ECC errors since the driver loaded; "+
				"reset the GPU or drain the node", CheckGPUModel, i, g.Name, g.ECC))
		}
	}
	facts := gpuFacts{summary: summary}
	if len(models) == 1 {
		facts.model = models[0]
	}
	return problems, facts
}

// checkGPUFree names the processes holding GPU memory before anything of
// this job started; procDir is where their /proc/<pid>/status is ("":
// nowhere).
func checkGPUFree(ctx context.Context, run Runner, procDir string) []string {
	out, err := run(ctx, appsQuery...)
	var apps []GPUApp
	if err == nil {
		apps, err = parseApps(out)
	}
	if err != nil {
		return []string{fmt.Sprintf("%s: nvidia-smi --query-compute-apps: %v", CheckGPUFree, err)}
	}
	if len(apps) == 0 {
		return nil
	}
	const shown = 5
	var held []string
	for _, a := range apps[:min(len(apps), shown)] {
		what := []string{a.Name}
		if a.Memory != "" {
			what = append(what, a.Memory)
		}
		if u := procUser(procDir, a.PID); u != "" {
			what = append(what, "user "+u)
		}
		held = append(held, fmt.Sprintf("PID %d (%s)", a.PID, strings.Join(what, ", ")))
	}
	if len(apps) > shown {
		held = append(held, fmt.Sprintf("and %d more", len(apps)-shown))
	}
	return []string{fmt.Sprintf("%s: GPU memory held by %s; leftovers of an earlier job are the usual cause",
		CheckGPUFree, strings.Join(held, ", "))}
}

// procUser names the owner of pid from its /proc status (the real uid),
// "" when that is not visible (another PID namespace, hidepid).
func procUser(procDir string, pid int) string {
	if procDir == "" {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(procDir, strconv.Itoa(pid), "status"))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "Uid:")
		if f := strings.Fields(rest); ok && len(f) > 0 {
			if u, err := user.LookupId(f[0]); err == nil {
				return u.Username
			}
			return "uid " + f[0]
		}
	}
	return ""
}

// NodeGPU is one node's GPU model as its preflight reported it.
type NodeGPU struct {
	Index int
	Name  string // "node 3 (gpu04)"
	Model string // "NVIDIA H100 80GB HBM3, 81559 MiB"
}

// MixedGPUs judges the nodes of one worker (named by worker, "prefill
// worker 0"), which must all have the same GPU model and memory: it returns
// a gpu-model problem for each node whose GPUs differ from the most common
// model (on a tie, from the first node's), by node index.
func MixedGPUs(worker string, nodes []NodeGPU) map[int]string {
	count := map[string]int{}
	var models []string
	for _, n := range nodes {
		if count[n.Model] == 0 {
			models = append(models, n.Model)
		}
		count[n.Model]++
	}
	if len(models) < 2 {
		return nil
	}
	// MaxFunc returns the first of equals: the first node's model wins ties.
	common := slices.MaxFunc(models, func(a, b string) int { return count[a] - count[b] })
	var alike []string
	for _, n := range nodes {
		if n.Model == common {
			alike = append(alike, n.Name)
		}
	}
	out := map[int]string{}
	for _, n := range nodes {
		if n.Model != common {
			out[n.Index] = fmt.Sprintf("%s: %s mixes GPU models: %s here; %s on %s",
				CheckGPUModel, worker, n.Model, common, strings.Join(alike, ", "))
		}
	}
	return out
}

// gpuProbe runs gpu-model and gpu-free as probes: nvidia-smi hangs when a
// GPU's driver does, and a probe that does not answer is left behind, so
// what gpu-model learnt is kept under a lock.
type gpuProbe struct {
	mu    sync.Mutex
	found gpuFacts
}

func (g *gpuProbe) probes(cfg Config, skip map[string]bool, timeout time.Duration) []probe {
	const hang = "hung GPU driver?"
	// A little past the probe's own timeout: its "no answer" says more than
	// "killed", and nvidia-smi is still killed right after.
	timeout += time.Second
	var ps []probe
	if !skip[CheckGPUModel] {
		ps = append(ps, probe{what: CheckGPUModel + ": nvidia-smi --query-gpu", hang: hang, run: func() []string {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			problems, facts := checkGPUModel(ctx, cfg.NvidiaSMI, cfg.GPUs)
			g.mu.Lock()
			g.found = facts
			g.mu.Unlock()
			return problems
		}})
	}
	if !skip[CheckGPUFree] {
		ps = append(ps, probe{what: CheckGPUFree + ": nvidia-smi --query-compute-apps", hang: hang, run: func() []string {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			procDir := filepath.Join(sysroot(cfg), "proc")
			if cfg.MadeUpPIDs {
				procDir = ""
			}
			return checkGPUFree(ctx, cfg.NvidiaSMI, procDir)
		}})
	}
	return ps
}

func (g *gpuProbe) facts() (summary, model string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.found.summary, g.found.model
}
