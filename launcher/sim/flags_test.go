package sim

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/launcher/argspec"
	"github.com/wideep/wideep-launch/launcher/deploy"
)

func TestParseArgsAcceptsTheReferenceCommands(t *testing.T) {
	for _, role := range []string{"prefill", "decode"} {
		t.Run(role, func(t *testing.T) {
			argv := workerArgv(role, 4, 3, "gpu01:29500")
			a, err := parseArgs(workerGrammar(), argv[3:])
			require.NoError(t, err)
			assert.Equal(t, 4, a.int("--nnodes", 1))
			assert.Equal(t, 3, a.int("--node-rank", 0))
			assert.Equal(t, "gpu01:29500", a.str("--dist-init-addr", ""))
			assert.Equal(t, role, a.str("--disaggregation-mode", ""))
			assert.True(t, a.bool("--enable-dp-attention"))
			assert.False(t, a.bool("--disable-cuda-graph"))
			assert.InDelta(t, 1000000.0, a.float("--watchdog-timeout", 0), 0)
		})
	}
}

func TestParseArgs(t *testing.T) {
	tests := map[string]struct {
		argv    []string
		grammar *argspec.Table
		check   func(t *testing.T, a *args)
		wantErr string
	}{
		"equals form and last one wins": {
			argv: []string{"--model-path=/m", "--node-rank", "1", "--node-rank=2"},
			check: func(t *testing.T, a *args) {
				assert.Equal(t, "/m", a.str("--model-path", ""))
				assert.Equal(t, 2, a.int("--node-rank", 0))
			},
		},
		"aliases name one flag, the last occurrence wins": {
			argv: []string{"--model", "/m", "--tensor-parallel-size", "16", "--tp-size", "32", "--dp", "4"},
			check: func(t *testing.T, a *args) {
				assert.Equal(t, "/m", a.str("--model-path", ""))
				assert.Equal(t, 32, a.int("--tp-size", 0))
				assert.Equal(t, 32, a.int("--tensor-parallel-size", 0))
				assert.Equal(t, 4, a.int("--data-parallel-size", 0))
			},
		},
		// argparse's allow_abbrev: --tp is --tp-size, unambiguously.
		"abbreviations argparse allows": {
			argv: []string{"--model-path", "/m", "--tp", "8", "--nnod=2", "--disaggregation-mo", "decode"},
			check: func(t *testing.T, a *args) {
				assert.Equal(t, 8, a.int("--tp-size", 0))
				assert.Equal(t, 2, a.int("--nnodes", 0))
				assert.Equal(t, "decode", a.str("--disaggregation-mode", ""))
			},
		},
		"int list": {
			argv: []string{"--model-path", "/m", "--cuda-graph-bs", "1", "2", "128", "--page-size", "1"},
			check: func(t *testing.T, a *args) {
				assert.Equal(t, []int{1, 2, 128}, a.ints("--cuda-graph-bs"))
				assert.Equal(t, "1 2 128", a.text("--cuda-graph-bs"))
				assert.Equal(t, 1, a.int("--page-size", 0))
			},
		},
		"negative number is a value": {
			argv:  []string{"--model-path", "/m", "--random-seed", "-1"},
			check: func(t *testing.T, a *args) { assert.Equal(t, -1, a.int("--random-seed", 0)) },
		},
		"python int spellings": {
			argv:  []string{"--model-path", "/m", "--port", " 30_000 "},
			check: func(t *testing.T, a *args) { assert.Equal(t, 30000, a.int("--port", 0)) },
		},
		"negatable switch": {
			argv: []string{"--model-path", "/m", "--use-sglang-tokenizer", "--no-use-sglang-tokenizer"},
			check: func(t *testing.T, a *args) {
				assert.True(t, a.has("--use-sglang-tokenizer"))
				assert.False(t, a.bool("--use-sglang-tokenizer"))
				assert.Equal(t, "false", a.text("--use-sglang-tokenizer"))
			},
		},
		"absent flags read as their defaults": {
			argv: []string{"--model-path", "/m"},
			check: func(t *testing.T, a *args) {
				assert.False(t, a.has("--nnodes"))
				assert.Equal(t, 1, a.int("--nnodes", 1))
				assert.Equal(t, "null", a.str("--disaggregation-mode", "null"))
				assert.Empty(t, a.text("--enable-dp-attention"))
				assert.Nil(t, a.ints("--cuda-graph-bs"))
			},
		},
		"non-numeric node rank": {
			argv:    []string{"--model-path", "/m", "--node-rank", "two"},
			wantErr: "argument --node-rank: invalid int value: 'two'",
		},
		"float for an int": {
			argv:    []string{"--model-path", "/m", "--nnodes", "4.0"},
			wantErr: "argument --nnodes: invalid int value: '4.0'",
		},
		"bad float": {
			argv:    []string{"--model-path", "/m", "--mem-fraction-static", "85%"},
			wantErr: "argument --mem-fraction-static: invalid float value: '85%'",
		},
		"bad choice": {
			argv:    []string{"--model-path", "/m", "--deepep-mode", "lowlatency"},
			wantErr: "argument --deepep-mode: invalid choice: 'lowlatency' (choose from 'normal', 'low_latency', 'auto')",
		},
		"bad a2a backend": {
			argv:    []string{"--model-path", "/m", "--moe-a2a-backend", "deep_ep"},
			wantErr: "argument --moe-a2a-backend: invalid choice: 'deep_ep' (choose from 'none', 'deepep', 'mooncake', 'mori', 'ascend_fuseep', 'flashinfer')",
		},
		"missing value at the end": {
			argv:    []string{"--model-path", "/m", "--nnodes"},
			wantErr: "argument --nnodes: expected one argument",
		},
		"missing value before a flag": {
			argv:    []string{"--model-path", "--nnodes", "2"},
			wantErr: "argument --model-path/--model: expected one argument",
		},
		"value for a switch": {
			argv:    []string{"--model-path", "/m", "--trust-remote-code=yes"},
			wantErr: "argument --trust-remote-code: ignored explicit argument 'yes'",
		},
		"empty int list": {
			argv:    []string{"--model-path", "/m", "--cuda-graph-bs", "--page-size", "1"},
			wantErr: "argument --cuda-graph-bs: expected at least one argument",
		},
		"ambiguous abbreviation": {
			argv:    []string{"--model-path", "/m", "--disag", "prefill"},
			wantErr: "ambiguous option: --disag could match",
		},
		// Dropped from SGLang before 0.5.6.post2 (--moe-a2a-backend deepep).
		"enable-deepep-moe is gone": {
			argv:    []string{"--model-path", "/m", "--enable-deepep-moe"},
			wantErr: "unrecognized arguments: --enable-deepep-moe",
		},
		"unknown flags and positionals": {
			argv:    []string{"--model-path", "/m", "--enable-magic", "8"},
			wantErr: "unrecognized arguments: --enable-magic 8",
		},
		"single dash": {
			argv:    []string{"--model-path", "/m", "-nnodes", "2"},
			wantErr: "unrecognized arguments: -nnodes 2",
		},
		"required missing": {
			argv:    []string{"--nnodes", "2"},
			wantErr: "the following arguments are required: --model-path/--model",
		},
		"dynamo flag rejected by the precompile": {
			argv:    []string{"--model-path", "/m", "--endpoint", "dyn://dynamo.backend.generate"},
			grammar: precompileGrammar(),
			wantErr: "unrecognized arguments: --endpoint dyn://dynamo.backend.generate",
		},
		"precompile timeout": {
			argv:    []string{"--model-path", "/m", "--timeout", "3600"},
			grammar: precompileGrammar(),
			check:   func(t *testing.T, a *args) { assert.Equal(t, 3600, a.int("--timeout", 0)) },
		},
		"precompile timeout is an int": {
			argv:    []string{"--model-path", "/m", "--timeout", "1.5"},
			grammar: precompileGrammar(),
			wantErr: "argument --timeout: invalid int value: '1.5'",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			g := tc.grammar
			if g == nil {
				g = workerGrammar()
			}
			a, err := parseArgs(g, tc.argv)
			if tc.wantErr != "" {
				var pe *argspec.Error
				require.ErrorAs(t, err, &pe)
				assert.True(t, strings.HasPrefix(pe.Msg, tc.wantErr), "got %q", pe.Msg)
				return
			}
			require.NoError(t, err)
			tc.check(t, a)
		})
	}
}

// A stand-in asking about a flag its program does not have is a bug.
func TestArgsUnknownFlagPanics(t *testing.T) {
	a, err := parseArgs(precompileGrammar(), []string{"--model-path", "/m"})
	require.NoError(t, err)
	assert.Panics(t, func() { a.str("--endpoint", "") })
}

// The usage error the stand-ins print is argspec's, in argparse's shape.
func TestUsageErrorsAsArgparsePrintsThem(t *testing.T) {
	tests := map[string]struct {
		argv []string
		want string
	}{
		"worker, gone flag": {
			append(workerArgv("prefill", 1, 0, "127.0.0.1:1"), "--enable-deepep-moe"),
			"python3 -m dynamo.sglang: error: unrecognized arguments: --enable-deepep-moe\n",
		},
		"worker, bad choice": {
			append(workerArgv("prefill", 1, 0, "127.0.0.1:1"), "--moe-a2a-backend", "nvshmem"),
			"python3 -m dynamo.sglang: error: argument --moe-a2a-backend: invalid choice: 'nvshmem' (choose from 'none', 'deepep', 'mooncake', 'mori', 'ascend_fuseep', 'flashinfer')\n",
		},
		"precompile, float timeout": {
			[]string{"python3", "-m", "sglang.compile_deep_gemm", "--model-path", "/m", "--timeout", "1.5"},
			"python3 -m sglang.compile_deep_gemm: error: argument --timeout: invalid int value: '1.5'\n",
		},
		"precompile, missing value": {
			[]string{"python3", "-m", "sglang.compile_deep_gemm", "--model-path", "/m", "--tp-size"},
			"python3 -m sglang.compile_deep_gemm: error: argument --tensor-parallel-size/--tp-size: expected one argument\n",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			s := &standIn{stdout: &stdout, stderr: &stderr}
			assert.Equal(t, exitUsage, s.main(tc.argv))
			prog := strings.Join(tc.argv[:3], " ")
			assert.Equal(t, "usage: "+prog+" [-h] [options]\n"+tc.want, stderr.String())
			assert.Empty(t, stdout.String())
		})
	}
}

func TestParseArgsHelpAndVersion(t *testing.T) {
	tests := map[string]struct {
		argv    []string
		grammar *argspec.Table
		want    error
	}{
		"help":                       {argv: []string{"--nnodes", "2", "--help"}, want: errHelp{}},
		"-h before a bad value":      {argv: []string{"-h", "--nnodes", "two"}, want: errHelp{}},
		"help before unknown":        {argv: []string{"--hel", "--enable-magic"}, want: errHelp{}},
		"bad value before help":      {argv: []string{"--nnodes", "two", "--help"}, want: &argspec.Error{}},
		"ambiguous anywhere":         {argv: []string{"--help", "--disag", "x"}, want: &argspec.Error{}},
		"--h is ambiguous (--host)":  {argv: []string{"--h"}, want: &argspec.Error{}},
		"version of dynamo.sglang":   {argv: []string{"--vers"}, want: errVersion{}},
		"no --version in SGLang's":   {argv: []string{"--model-path", "/m", "--version"}, grammar: precompileGrammar(), want: &argspec.Error{}},
		"help after the -- sentinel": {argv: []string{"--model-path", "/m", "--", "--help"}, want: &argspec.Error{}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			g := tc.grammar
			if g == nil {
				g = workerGrammar()
			}
			_, err := parseArgs(g, tc.argv)
			require.Error(t, err)
			assert.IsType(t, tc.want, err, "%v", err)
		})
	}

	var stdout bytes.Buffer
	s := &standIn{stdout: &stdout, stderr: &bytes.Buffer{}}
	assert.Equal(t, 0, s.main([]string{"python3", "-m", "dynamo.frontend", "-h"}))
	assert.Contains(t, stdout.String(), "--http-port INT")
	assert.Contains(t, stdout.String(), "--router-mode {round-robin,random,kv,direct}")
	stdout.Reset()
	assert.Equal(t, 0, s.main([]string{"python3", "-m", "dynamo.sglang", "--help"}))
	assert.Contains(t, stdout.String(), "--cuda-graph-bs INT [INT ...]")
	assert.Contains(t, stdout.String(), "--tensor-parallel-size, --tp-size INT")
}

// The plan's worker and precompile command lines must be ones the real
// programs accept: every flag the plan emits is in argspec's grammar of
// SGLang 0.5.6.post2 / dynamo.sglang, and every stand-in reads its values out
// of them without an unknown-flag panic.
func TestPlanArgvAcceptedByTheRealGrammars(t *testing.T) {
	spec := deploy.DefaultSpec()
	spec.ResolveGPUs(0) // deploy.DefaultGPUsPerNode
	n := spec.NodesNeeded()
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("gpu%02d", i+1)
	}
	plan, err := deploy.NewPlan(spec, "4242", hosts, nil)
	require.NoError(t, err)
	seen := map[string]int{}
	for _, node := range plan.Nodes {
		for _, p := range node.Processes {
			if len(p.Argv) < 3 || p.Argv[0] != "python3" || p.Argv[1] != "-m" {
				continue
			}
			var g *argspec.Table
			switch p.Argv[2] {
			case ModuleWorker:
				g = workerGrammar()
			case ModulePrecompile:
				g = precompileGrammar()
			case ModuleFrontend:
				g = frontendGrammar()
			default:
				continue
			}
			seen[p.Argv[2]]++
			parsed, err := g.Parse(p.Argv[3:])
			require.NoError(t, err, "%s on node %d: %q", p.Argv[2], node.Index, p.Argv)
			for _, a := range parsed {
				written, _, _ := strings.Cut(a.Tokens[0], "=")
				assert.Equal(t, a.Option, written, "%s: the plan abbreviates %s", p.Argv[2], a.Option)
			}
			a := newArgs(g, parsed)
			switch p.Argv[2] {
			case ModuleWorker:
				_, err := newWorkerConfig(a, func(string) string { return "" })
				assert.NoError(t, err, "%q", p.Argv)
			case ModulePrecompile:
				assert.NotPanics(t, func() { kernelHash(a, 0) })
			}
		}
	}
	assert.Equal(t, spec.PrefillWorkers*spec.PrefillNodesPerWorker+spec.DecodeWorkers*spec.DecodeNodesPerWorker,
		seen[ModuleWorker], "one worker process a worker node")
	assert.Positive(t, seen[ModulePrecompile])
	assert.Equal(t, 1, seen[ModuleFrontend])
}
