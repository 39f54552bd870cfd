package preflight

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeSMI answers the two queries with canned output, as nvidia-smi prints it.
func fakeSMI(gpus, apps string) Runner {
	return func(_ context.Context, args ...string) ([]byte, error) {
		switch {
		case strings.HasPrefix(args[0], "--query-gpu="):
			return []byte(gpus), nil
		case strings.HasPrefix(args[0], "--query-compute-apps="):
			return []byte(apps), nil
		}
		return nil, fmt.Errorf("unexpected query %q", args)
	}
}

// h100s is n GPUs as nvidia-smi lists them; ecc[i] overrides GPU i's count.
func h100s(n int, ecc map[int]string) string {
	var b strings.Builder
	for i := range n {
		e := "0"
		if v, ok := ecc[i]; ok {
			e = v
		}
		fmt.Fprintf(&b, "NVIDIA H100 80GB HBM3, 81559 MiB, %s\n", e)
	}
	return b.String()
}

func TestGPUChecks(t *testing.T) {
	me, err := user.Current()
	require.NoError(t, err)
	tests := map[string]struct {
		smi      Runner
		proc     map[string]string
		skip     []string
		problems []string
		summary  string
		model    string
	}{
		"8 H100s, nothing running": {
			smi:     fakeSMI(h100s(8, nil), ""),
			summary: "8 × NVIDIA H100 80GB HBM3, 81559 MiB", model: "NVIDIA H100 80GB HBM3, 81559 MiB",
		},
		"ECC off and memory not shown": {
			smi:     fakeSMI(strings.Repeat("NVIDIA H100 80GB HBM3, [N/A], [N/A]\n", 8), "No running processes found\n"),
			summary: "8 × NVIDIA H100 80GB HBM3", model: "NVIDIA H100 80GB HBM3",
		},
		"wrong GPU count": {
			smi:      fakeSMI(h100s(4, nil), ""),
			problems: []string{"gpu-model: nvidia-smi shows 4 GPUs (4 × NVIDIA H100 80GB HBM3, 81559 MiB); the plan needs 8 on this node"},
			summary:  "4 × NVIDIA H100 80GB HBM3, 81559 MiB", model: "NVIDIA H100 80GB HBM3, 81559 MiB",
		},
		"no GPU": {
			smi:      fakeSMI("", ""),
			problems: []string{"gpu-model: nvidia-smi shows no GPU; the plan needs 8 on this node"},
		},
		"uncorrected ECC errors": {
			smi: fakeSMI(h100s(8, map[int]string{3: "2"}), ""),
			problems: []string{"gpu-model: GPU 3 (NVIDIA H100 80GB HBM3) has 2 uncorrected ECC errors since the driver loaded; " +
				"reset the GPU or drain the node"},
			summary: "8 × NVIDIA H100 80GB HBM3, 81559 MiB", model: "NVIDIA H100 80GB HBM3, 81559 MiB",
		},
		"one node with two models": {
			smi: fakeSMI(h100s(4, nil)+strings.Repeat("NVIDIA H200, 143771 MiB, 0\n", 4), ""),
			problems: []string{"gpu-model: this node mixes GPU models: " +
				"4 × NVIDIA H100 80GB HBM3, 81559 MiB + 4 × NVIDIA H200, 143771 MiB"},
			summary: "4 × NVIDIA H100 80GB HBM3, 81559 MiB + 4 × NVIDIA H200, 143771 MiB",
		},
		"nvidia-smi fails": {
			smi: func(context.Context, ...string) ([]byte, error) {
				return nil, errors.New("exit status 9: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver")
			},
			problems: []string{
				"gpu-model: nvidia-smi --query-gpu: exit status 9: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver",
				"gpu-free: nvidia-smi --query-compute-apps: exit status 9: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver",
			},
		},
		"unexpected output": {
			smi:      fakeSMI("NVIDIA H100 80GB HBM3\n", "x, y\n"),
			problems: []string{`gpu-model: nvidia-smi --query-gpu: unexpected line "NVIDIA H100 80GB HBM3" (want name, memory, ECC errors)`, `gpu-free: nvidia-smi --query-compute-apps: unexpected line "x, y" (want pid, process name, used memory)`},
		},
		"a foreign process holds GPU memory": {
			smi:  fakeSMI(h100s(8, nil), "4242, python3, 70000 MiB\n"),
			proc: map[string]string{"proc/4242/status": "Name:\tpython3\nUid:\t" + me.Uid + "\t" + me.Uid + "\t" + me.Uid + "\t" + me.Uid + "\n"},
			problems: []string{"gpu-free: GPU memory held by PID 4242 (python3, 70000 MiB, user " + me.Username +
				"); leftovers of an earlier job are the usual cause"},
			summary: "8 × NVIDIA H100 80GB HBM3, 81559 MiB", model: "NVIDIA H100 80GB HBM3, 81559 MiB",
		},
		"holders whose owner is not visible": {
			smi: fakeSMI(h100s(8, nil), "4242, /usr/bin/python3, 70000 MiB\n77, nvidia-cuda-mps-server, [N/A]\n"),
			problems: []string{"gpu-free: GPU memory held by PID 4242 (/usr/bin/python3, 70000 MiB), PID 77 (nvidia-cuda-mps-server); " +
				"leftovers of an earlier job are the usual cause"},
			summary: "8 × NVIDIA H100 80GB HBM3, 81559 MiB", model: "NVIDIA H100 80GB HBM3, 81559 MiB",
		},
		"gpu-free waived": {
			smi: fakeSMI(h100s(8, nil), "4242, python3, 70000 MiB\n"), skip: []string{"gpu-free"},
			summary: "8 × NVIDIA H100 80GB HBM3, 81559 MiB", model: "NVIDIA H100 80GB HBM3, 81559 MiB",
		},
		"gpu-model waived": {
			smi: fakeSMI(h100s(7, map[int]string{0: "1"}), ""), skip: []string{"gpu-model"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, tc.proc)
			rep := Run(Config{GPUs: 8, Simulate: true, Sysroot: root, NvidiaSMI: tc.smi, Skip: tc.skip})
			assert.Equal(t, nilIfEmpty(tc.problems), nilIfEmpty(rep.Problems))
			assert.Empty(t, rep.Warnings)
			assert.Equal(t, tc.summary, rep.GPUs)
			assert.Equal(t, tc.model, rep.GPUModel)
		})
	}
}

// A node without a worker needs no GPU; without a runner nothing is asked.
func TestGPUChecksOnlyOnWorkerNodes(t *testing.T) {
	asked := false
	smi := func(context.Context, ...string) ([]byte, error) { asked = true; return nil, errors.New("no") }
	rep := Run(Config{GPUs: 0, NvidiaSMI: smi})
	assert.False(t, asked)
	assert.Empty(t, rep.Problems)
	rep = Run(Config{GPUs: 8, Simulate: true})
	assert.Empty(t, rep.Problems)
}

func TestGPUCheckHungDriver(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	hung := func(ctx context.Context, args ...string) ([]byte, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, errors.New("killed")
	}
	done := make(chan Report, 1)
	go func() {
		done <- Run(Config{GPUs: 8, Simulate: true, NvidiaSMI: hung, FSTimeout: 200 * time.Millisecond})
	}()
	select {
	case rep := <-done:
		assert.Equal(t, []string{
			"gpu-model: nvidia-smi --query-gpu: no answer within 200ms (hung GPU driver?)",
			"gpu-free: nvidia-smi --query-compute-apps: no answer within 200ms (hung GPU driver?)",
		}, rep.Problems)
	case <-time.After(waitTimeout):
		require.FailNow(t, "Run hangs on a hung nvidia-smi")
	}
}

func TestMixedGPUs(t *testing.T) {
	const h100, h200 = "NVIDIA H100 80GB HBM3, 81559 MiB", "NVIDIA H200, 143771 MiB"
	nodes := func(models ...string) []NodeGPU {
		out := make([]NodeGPU, len(models))
		for i, m := range models {
			out[i] = NodeGPU{Index: i + 4, Name: fmt.Sprintf("node %d (gpu%02d)", i+4, i+5), Model: m}
		}
		return out
	}
	for name, tc := range map[string]struct {
		nodes []NodeGPU
		want  map[int]string
	}{
		"alike":         {nodes: nodes(h100, h100, h100, h100)},
		"a single node": {nodes: nodes(h200)},
		"one odd node": {nodes: nodes(h100, h100, h100, h200), want: map[int]string{
			7: "gpu-model: decode worker 1 mixes GPU models: NVIDIA H200, 143771 MiB here; " +
				"NVIDIA H100 80GB HBM3, 81559 MiB on node 4 (gpu05), node 5 (gpu06), node 6 (gpu07)",
		}},
		"the head is the odd one": {nodes: nodes(h200, h100, h100), want: map[int]string{
			4: "gpu-model: decode worker 1 mixes GPU models: NVIDIA H200, 143771 MiB here; " +
				"NVIDIA H100 80GB HBM3, 81559 MiB on node 5 (gpu06), node 6 (gpu07)",
		}},
		"a tie goes to the head's model": {nodes: nodes(h100, h200, h200, h100), want: map[int]string{
			5: "gpu-model: decode worker 1 mixes GPU models: NVIDIA H200, 143771 MiB here; NVIDIA H100 80GB HBM3, 81559 MiB on node 4 (gpu05), node 7 (gpu08)",
			6: "gpu-model: decode worker 1 mixes GPU models: NVIDIA H200, 143771 MiB here; NVIDIA H100 80GB HBM3, 81559 MiB on node 4 (gpu05), node 7 (gpu08)",
		}},
	} {
		t.Run(name, func(t *testing.T) { assert.Equal(t, tc.want, MixedGPUs("decode worker 1", tc.nodes)) })
	}
}

// The stand-in nvidia-smi prints what the real one does, so its answers go
// through the same parsing and checks.
func TestSimNvidiaSMI(t *testing.T) {
	env := func(kv ...string) func(string) (string, bool) {
		return func(k string) (string, bool) {
			for i := 0; i < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1], true
				}
			}
			return "", false
		}
	}
	tests := map[string]struct {
		host     string
		lookup   func(string) (string, bool)
		problems []string
		summary  string
	}{
		"default: what the plan needs": {host: "node1", lookup: env(),
			summary: "8 × NVIDIA H100 80GB HBM3, 81559 MiB"},
		"every node's GPUs": {host: "node1", lookup: env(SimGPUsEnv, "8 x NVIDIA A100-SXM4-80GB, 81920 MiB"),
			summary: "8 × NVIDIA A100-SXM4-80GB, 81920 MiB"},
		"a model without memory": {host: "node1", lookup: env(SimGPUsEnv, "NVIDIA H200"),
			summary: "8 × NVIDIA H200"},
		"an override for this node": {host: "node4",
			lookup:  env(SimGPUOverridesEnv, "node3=4 × NVIDIA H100 80GB HBM3; node4=8 × NVIDIA H200, 143771 MiB"),
			summary: "8 × NVIDIA H200, 143771 MiB"},
		"an override for another node": {host: "node2",
			lookup:  env(SimGPUOverridesEnv, "node4=8 × NVIDIA H200, 143771 MiB"),
			summary: "8 × NVIDIA H100 80GB HBM3, 81559 MiB"},
		"a leftover process and ECC errors": {host: "node6",
			lookup: env(SimGPUOverridesEnv, "node6=apps:4242 python3 70000MiB, 4243 python3 1000 MiB;node6=ecc:3"),
			problems: []string{
				"gpu-model: GPU 0 (NVIDIA H100 80GB HBM3) has 3 uncorrected ECC errors since the driver loaded; reset the GPU or drain the node",
				"gpu-free: GPU memory held by PID 4242 (python3, 70000 MiB), PID 4243 (python3, 1000 MiB); leftovers of an earlier job are the usual cause",
			},
			summary: "8 × NVIDIA H100 80GB HBM3, 81559 MiB"},
		"a malformed override": {host: "node6", lookup: env(SimGPUOverridesEnv, "node6=apps:python3"),
			problems: []string{
				`gpu-model: nvidia-smi --query-gpu: WIDEEP_SIM_GPU_OVERRIDES: entry "node6=apps:python3": app "python3": want PID NAME MEMMiB`,
				`gpu-free: nvidia-smi --query-compute-apps: WIDEEP_SIM_GPU_OVERRIDES: entry "node6=apps:python3": app "python3": want PID NAME MEMMiB`,
			}},
		"an entry without a host": {host: "node6", lookup: env(SimGPUOverridesEnv, "8 × NVIDIA H200"),
			problems: []string{
				`gpu-model: nvidia-smi --query-gpu: WIDEEP_SIM_GPU_OVERRIDES: entry "8 × NVIDIA H200": want HOST=GPUS, HOST=apps:PID NAME MEM or HOST=ecc:N`,
				`gpu-free: nvidia-smi --query-compute-apps: WIDEEP_SIM_GPU_OVERRIDES: entry "8 × NVIDIA H200": want HOST=GPUS, HOST=apps:PID NAME MEM or HOST=ecc:N`,
			}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			// Made-up PIDs: no owner is looked up, even where PID 4242 exists.
			root := t.TempDir()
			writeTree(t, root, map[string]string{"proc/4242/status": "Uid:\t0\t0\t0\t0\n"})
			rep := Run(Config{GPUs: 8, Simulate: true, Sysroot: root, MadeUpPIDs: true, NvidiaSMI: SimNvidiaSMI(tc.host, 8, tc.lookup)})
			assert.Equal(t, nilIfEmpty(tc.problems), nilIfEmpty(rep.Problems))
			assert.Equal(t, tc.summary, rep.GPUs)
		})
	}
	_, err := SimNvidiaSMI("node1", 8, env())(context.Background(), "--query-gpu=name")
	assert.ErrorContains(t, err, "does not answer")
}

// The host runner says when there is no nvidia-smi at all, and passes on
// what a failing one printed.
func TestHostNvidiaSMI(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PATH", dir)
	_, err := HostNvidiaSMI(context.Background(), gpuQuery...)
	require.EqualError(t, err, "nvidia-smi not found in PATH")

	script := "#!/bin/sh\necho \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"\nexit 9\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "nvidia-smi"), []byte(script), 0o755))
	_, err = HostNvidiaSMI(context.Background(), gpuQuery...)
	require.EqualError(t, err, "exit status 9: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")

	script = "#!/bin/sh\n[ \"$1\" = --query-gpu=name,memory.total,ecc.errors.uncorrected.volatile.total ] && [ \"$2\" = --format=csv,noheader ] || exit 3\n" +
		"echo 'NVIDIA H100 80GB HBM3, 81559 MiB, 0'\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "nvidia-smi"), []byte(script), 0o755))
	out, err := HostNvidiaSMI(context.Background(), gpuQuery...)
	require.NoError(t, err)
	assert.Equal(t, "NVIDIA H100 80GB HBM3, 81559 MiB, 0\n", string(out))
}
