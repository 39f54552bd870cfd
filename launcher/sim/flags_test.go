package sim

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseArgsAcceptsTheReferenceCommands(t *testing.T) {
	for _, role := range []string{"prefill", "decode"} {
		t.Run(role, func(t *testing.T) {
			argv := workerArgv(role, 4, 3, "gpu01:29500")
			a, err := parseArgs(argv[3:], serverFlags, "model-path")
			require.NoError(t, err)
			assert.Equal(t, 4, a.int("nnodes", 1))
			assert.Equal(t, 3, a.int("node-rank", 0))
			assert.Equal(t, "gpu01:29500", a.str("dist-init-addr", ""))
			assert.Equal(t, role, a.str("disaggregation-mode", ""))
			assert.True(t, a.bool("enable-dp-attention"))
			assert.False(t, a.bool("disable-cuda-graph"))
			assert.InDelta(t, 1000000.0, a.float("watchdog-timeout", 0), 0)
		})
	}
}

func TestParseArgs(t *testing.T) {
	tests := map[string]struct {
		argv    []string
		defs    []flagDef
		check   func(t *testing.T, a *args)
		wantErr string
	}{
		"equals form and last one wins": {
			argv: []string{"--model-path=/m", "--node-rank", "1", "--node-rank=2"},
			check: func(t *testing.T, a *args) {
				assert.Equal(t, "/m", a.str("model-path", ""))
				assert.Equal(t, 2, a.int("node-rank", 0))
			},
		},
		"alias": {
			argv:  []string{"--model-path", "/m", "--tensor-parallel-size", "16"},
			check: func(t *testing.T, a *args) { assert.Equal(t, 16, a.int("tp-size", 0)) },
		},
		"int list": {
			argv: []string{"--model-path", "/m", "--cuda-graph-bs", "1", "2", "128", "--page-size", "1"},
			check: func(t *testing.T, a *args) {
				assert.Equal(t, []int{1, 2, 128}, a.lists["cuda-graph-bs"])
				assert.Equal(t, 1, a.int("page-size", 0))
			},
		},
		"negative number is a value": {
			argv:  []string{"--model-path", "/m", "--random-seed", "-1"},
			check: func(t *testing.T, a *args) { assert.Equal(t, -1, a.int("random-seed", 0)) },
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
		"unknown flags and positionals": {
			argv:    []string{"--model-path", "/m", "--tp", "8", "--enable-magic"},
			wantErr: "unrecognized arguments: --tp 8 --enable-magic",
		},
		"single dash": {
			argv:    []string{"--model-path", "/m", "-nnodes", "2"},
			wantErr: "unrecognized arguments: -nnodes 2",
		},
		"required missing": {
			argv:    []string{"--nnodes", "2"},
			wantErr: "the following arguments are required: --model-path",
		},
		"dynamo flag rejected by the precompile": {
			argv:    []string{"--model-path", "/m", "--migration-limit", "3"},
			defs:    precompileFlags,
			wantErr: "unrecognized arguments: --migration-limit 3",
		},
		"precompile timeout": {
			argv:  []string{"--model-path", "/m", "--timeout", "3600"},
			defs:  precompileFlags,
			check: func(t *testing.T, a *args) { assert.InDelta(t, 3600.0, a.float("timeout", 0), 0) },
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			defs := tc.defs
			if defs == nil {
				defs = serverFlags
			}
			a, err := parseArgs(tc.argv, defs, "model-path")
			if tc.wantErr != "" {
				var ae *argError
				require.ErrorAs(t, err, &ae)
				assert.Equal(t, tc.wantErr, ae.Error())
				return
			}
			require.NoError(t, err)
			tc.check(t, a)
		})
	}
}

func TestParseArgsHelp(t *testing.T) {
	_, err := parseArgs([]string{"--nnodes", "2", "--help"}, serverFlags, "model-path")
	assert.ErrorIs(t, err, errHelp{})

	var stdout bytes.Buffer
	s := &standIn{stdout: &stdout, stderr: &bytes.Buffer{}}
	code := s.main([]string{"python3", "-m", "dynamo.frontend", "-h"})
	assert.Equal(t, 0, code)
	assert.Contains(t, stdout.String(), "--http-port INT")
}

func TestServerFlagTableHasNoDuplicates(t *testing.T) {
	for _, table := range [][]flagDef{serverFlags, precompileFlags, frontendFlags} {
		seen := map[string]bool{}
		for _, d := range table {
			for _, n := range d.names {
				assert.False(t, seen[n], "duplicate flag --%s", n)
				seen[n] = true
			}
		}
	}
}
