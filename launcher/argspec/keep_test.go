package argspec

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The precompile argv is the dynamo.sglang argv minus Dynamo's own flags.
func TestKeepDropsEveryDynamoFlag(t *testing.T) {
	dy, cp := DynamoSGLang(), CompileDeepGEMM()
	for role, seed := range map[string][]string{"prefill": seedPrefill, "decode": seedDecode} {
		t.Run(role, func(t *testing.T) {
			// Interleave: a Dynamo flag group after every seed flag group.
			seedArgs, err := dy.Parse(seed)
			require.NoError(t, err)
			var argv []string
			dyn := dynamoOnlyArgv(t)
			for i, a := range seedArgs {
				argv = append(argv, a.Tokens...)
				if i < len(dyn) {
					argv = append(argv, dyn[i]...)
				}
			}
			for _, g := range dyn[min(len(dyn), len(seedArgs)):] {
				argv = append(argv, g...)
			}
			args, err := dy.Parse(argv)
			require.NoError(t, err)
			require.Greater(t, len(args), len(seedArgs), "the Dynamo flags are in the argv")
			kept := Keep(args, cp)
			assert.Equal(t, seed, kept)
			_, err = cp.Parse(kept)
			assert.NoError(t, err)
		})
	}
}

func TestKeep(t *testing.T) {
	dy, cp := DynamoSGLang(), CompileDeepGEMM()
	tests := map[string]struct {
		argv, want []string
	}{
		"tokens kept verbatim": {
			[]string{"--model-path=/m", "--tp", "4", "--cuda-graph-bs", "1", "2", "--watchdog-timeout", "-1", "--nccl-port=5"},
			[]string{"--model-path=/m", "--tp", "4", "--cuda-graph-bs", "1", "2", "--watchdog-timeout", "-1", "--nccl-port=5"}},
		"negations and help-less dynamo flags dropped": {
			[]string{"--model-path", "/m", "--no-fpm-trace", "--connector", "nixl", "kvbm", "--endpoint-types=chat", "--page-size", "1"},
			[]string{"--model-path", "/m", "--page-size", "1"}},
		// dynamo.sglang consumes --enable-multimodal and forwards it to
		// SGLang, so the precompile must see it too; its negation is Dynamo's.
		"forwarded flag kept, negation dropped": {
			[]string{"--model-path", "/m", "--enable-multimodal", "--no-enable-multimodal"},
			[]string{"--model-path", "/m", "--enable-multimodal"}},
		// "--enable-multi" is unambiguous among Dynamo's flags but ambiguous
		// among SGLang's (--enable-multi-layer-eagle): write it out.
		"abbreviation rewritten when keep would read it differently": {
			[]string{"--model-path", "/m", "--enable-multi"},
			[]string{"--model-path", "/m", "--enable-multimodal"}},
		"abbreviation kept verbatim when keep reads it the same": {
			[]string{"--model-path", "/m", "--disaggregation-trans=nixl"},
			[]string{"--model-path", "/m", "--disaggregation-trans=nixl"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			args, err := dy.Parse(tc.argv)
			require.NoError(t, err)
			got := Keep(args, cp)
			assert.Equal(t, tc.want, got)
			_, err = cp.Parse(got)
			assert.NoError(t, err)
		})
	}
}

func TestKeepRewritesAmbiguousExplicit(t *testing.T) {
	// A --timeout abbreviation is compile_deep_gemm's own: not a server flag.
	args, err := CompileDeepGEMM().Parse([]string{"--model-path", "/m", "--tim=60"})
	require.NoError(t, err)
	assert.Equal(t, []string{"--model-path", "/m"}, Keep(args, SGLangServer()))

	// No real table pair abbreviates a value flag differently, so the
	// occurrence is built by hand: "--disag" is ambiguous for the server.
	args = []Arg{{Flag: "--disaggregation-mode", Option: "--disaggregation-mode", Tokens: []string{"--disag=prefill"}}}
	kept := Keep(args, SGLangServer())
	assert.Equal(t, []string{"--disaggregation-mode=prefill"}, kept)
	_, err = SGLangServer().Parse(append([]string{"--model-path", "/m"}, kept...))
	assert.NoError(t, err)
}
