package preflight

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// The simulation's stand-in for nvidia-smi answers from these variables.
const (
	// SimGPUsEnv is every node's GPUs: "[N ×] NAME[, MEM MiB]", e.g.
	// "8 × NVIDIA H100 80GB HBM3, 81559 MiB"; N defaults to what the plan
	// needs. Unset: SimDefaultGPU.
	SimGPUsEnv = "WIDEEP_SIM_GPUS"
	// SimGPUOverridesEnv changes single nodes, by host name, entries
	// separated by ";": "node4=8 × NVIDIA H200, 143771 MiB" (its GPUs),
	// "node6=apps:4242 python3 70000MiB" (a process holding GPU memory,
	// several separated by ","), "node2=ecc:3" (uncorrected ECC errors on
	// its GPU 0). A host may have several entries.
	SimGPUOverridesEnv = "WIDEEP_SIM_GPU_OVERRIDES"
)

// SimDefaultGPU is a simulated node's GPU model unless SimGPUsEnv says.
const SimDefaultGPU = "NVIDIA H100 80GB HBM3, 81559 MiB"

var (
	simGPUSpec = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^(?:(\d+)\s*[×x]\s*)?(.+?)(?:,\s*(\d+)\s*MiB)?$`) })
	simApp     = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^(\d+)\s+(.+?)\s+(\d+)\s*MiB$`) })
)

// simNode is what the stand-in shows on one node.
type simNode struct {
	count     int
	name, mem string
	ecc       int
	apps      []string // nvidia-smi's lines
}

// SimNvidiaSMI is the stand-in nvidia-smi of host, a node whose plan
// needs gpus GPUs, answered from SimGPUsEnv and SimGPUOverridesEnv as
// lookup sees them. It answers the GPU checks' two queries as the real one
// prints them, so they are parsed as on a GPU node; a malformed variable is
// its error.
func SimNvidiaSMI(host string, gpus int, lookup func(string) (string, bool)) Runner {
	return func(_ context.Context, args ...string) ([]byte, error) {
		n, err := simAnswer(host, gpus, lookup)
		if err != nil {
			return nil, err
		}
		var b strings.Builder
		switch {
		case slices.Equal(args, gpuQuery):
			ecc, mem := strconv.Itoa(n.ecc), cmpNA(n.mem)
			for i := range n.count {
				fmt.Fprintf(&b, "%s, %s, %s\n", n.name, mem, ecc)
				if i == 0 {
					ecc = "0" // the errors are on GPU 0
				}
			}
		case slices.Equal(args, appsQuery):
			for _, a := range n.apps {
				b.WriteString(a + "\n")
			}
		default:
			return nil, fmt.Errorf("the simulation's nvidia-smi does not answer %q", args)
		}
		return []byte(b.String()), nil
	}
}

func cmpNA(mem string) string {
	if mem == "" {
		return "[N/A]"
	}
	return mem
}

func simAnswer(host string, gpus int, lookup func(string) (string, bool)) (simNode, error) {
	n := simNode{count: gpus}
	spec, ok := lookup(SimGPUsEnv)
	if !ok || strings.TrimSpace(spec) == "" {
		spec = SimDefaultGPU
	}
	if err := n.setGPUs(spec); err != nil {
		return n, fmt.Errorf("%s=%q: %v", SimGPUsEnv, spec, err)
	}
	overrides, _ := lookup(SimGPUOverridesEnv)
	for _, e := range strings.FieldsFunc(overrides, func(r rune) bool { return r == ';' || r == '\n' }) {
		e = strings.TrimSpace(e)
		h, v, ok := strings.Cut(e, "=")
		if !ok {
			return n, fmt.Errorf("%s: entry %q: want HOST=GPUS, HOST=apps:PID NAME MEM or HOST=ecc:N", SimGPUOverridesEnv, e)
		}
		if strings.TrimSpace(h) != host {
			continue
		}
		if err := n.override(strings.TrimSpace(v)); err != nil {
			return n, fmt.Errorf("%s: entry %q: %v", SimGPUOverridesEnv, e, err)
		}
	}
	return n, nil
}

func (n *simNode) setGPUs(spec string) error {
	m := simGPUSpec().FindStringSubmatch(strings.TrimSpace(spec))
	if m == nil {
		return fmt.Errorf("want [N ×] NAME[, MEM MiB]")
	}
	if m[1] != "" {
		n.count, _ = strconv.Atoi(m[1])
	}
	n.name, n.mem = m[2], ""
	if m[3] != "" {
		n.mem = m[3] + " MiB"
	}
	return nil
}

func (n *simNode) override(v string) error {
	if apps, ok := strings.CutPrefix(v, "apps:"); ok {
		for _, a := range strings.Split(apps, ",") {
			m := simApp().FindStringSubmatch(strings.TrimSpace(a))
			if m == nil {
				return fmt.Errorf("app %q: want PID NAME MEMMiB", a)
			}
			n.apps = append(n.apps, fmt.Sprintf("%s, %s, %s MiB", m[1], m[2], m[3]))
		}
		return nil
	}
	if ecc, ok := strings.CutPrefix(v, "ecc:"); ok {
		var err error
		if n.ecc, err = strconv.Atoi(ecc); err != nil || n.ecc < 0 {
			return fmt.Errorf("ecc %q: want a count", ecc)
		}
		return nil
	}
	return n.setGPUs(v)
}
