package argspec

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// seedPrefill and seedDecode are the seed deployment's worker flags with
// representative values (launcher/deploy/args.go plus the flags of the seed
// guide that the deploy defaults leave to the user).
var seedPrefill = []string{
	"--model-path", "/models/dsr1", "--served-model-name", "deepseek-ai/DeepSeek-R1", "--skip-tokenizer-init",
	"--disaggregation-mode", "prefill", "--disaggregation-transfer-backend", "nixl",
	"--host", "0.0.0.0", "--disaggregation-bootstrap-port", "30001",
	"--dist-init-addr", "10.0.0.1:29500", "--nnodes", "4", "--node-rank", "0",
	"--tp-size", "32", "--dp-size", "32", "--enable-dp-attention",
	"--decode-log-interval", "1000", "--moe-a2a-backend", "deepep",
	"--load-balance-method", "round_robin", "--page-size", "1", "--trust-remote-code",
	"--moe-dense-tp-size", "1", "--enable-dp-lm-head", "--disable-radix-cache",
	"--watchdog-timeout", "1000000", "--enable-two-batch-overlap",
	"--deepep-mode", "normal", "--mem-fraction-static", "0.85",
	"--deepep-config", "/configs/deepep.json", "--ep-num-redundant-experts", "32",
	"--ep-dispatch-algorithm", "dynamic", "--eplb-algorithm", "deepseek",
	"--port", "30000", "--nccl-port", "29400",
	"--max-running-requests", "8192", "--context-length", "4096", "--chunked-prefill-size", "524288",
	"--max-prefill-tokens", "32768", "--init-expert-location", "/configs/expert.json",
	"--enable-eplb", "--eplb-rebalance-num-iterations", "1000", "--ep-size", "32",
}

var seedDecode = []string{
	"--model-path", "/models/dsr1", "--served-model-name", "deepseek-ai/DeepSeek-R1", "--skip-tokenizer-init",
	"--disaggregation-mode", "decode", "--disaggregation-transfer-backend", "nixl",
	"--disaggregation-bootstrap-port", "30001", "--host", "0.0.0.0",
	"--dist-init-addr", "10.0.0.9:29500", "--nnodes", "9", "--node-rank", "3",
	"--tp-size", "72", "--dp-size", "72", "--enable-dp-attention",
	"--decode-log-interval", "1000", "--moe-a2a-backend", "deepep",
	"--prefill-round-robin-balance", "--page-size", "1", "--trust-remote-code",
	"--moe-dense-tp-size", "1", "--enable-dp-lm-head", "--disable-radix-cache",
	"--watchdog-timeout", "1000000", "--enable-two-batch-overlap",
	"--deepep-mode", "low_latency", "--mem-fraction-static", "0.835",
	"--ep-num-redundant-experts", "32", "--cuda-graph-bs", "1", "2", "4", "8", "128",
	"--port", "30000", "--nccl-port", "29400",
}

// seedFlags is the brief's list of the seed deployment's worker flags, minus
// --enable-deepep-moe, which SGLang 0.5.6.post2 no longer has (tested apart).
var seedFlags = []string{
	"--model-path", "--served-model-name", "--skip-tokenizer-init", "--disaggregation-mode",
	"--disaggregation-transfer-backend", "--host", "--disaggregation-bootstrap-port", "--dist-init-addr",
	"--nnodes", "--node-rank", "--tp-size", "--dp-size", "--enable-dp-attention", "--decode-log-interval",
	"--moe-a2a-backend", "--load-balance-method", "--page-size", "--trust-remote-code", "--moe-dense-tp-size",
	"--enable-dp-lm-head", "--disable-radix-cache", "--watchdog-timeout", "--enable-two-batch-overlap",
	"--deepep-mode", "--mem-fraction-static", "--deepep-config", "--ep-num-redundant-experts",
	"--ep-dispatch-algorithm", "--eplb-algorithm", "--port", "--nccl-port", "--cuda-graph-bs",
	"--max-running-requests", "--context-length", "--chunked-prefill-size", "--max-prefill-tokens",
	"--init-expert-location", "--enable-eplb", "--eplb-rebalance-num-iterations", "--ep-size",
	"--prefill-round-robin-balance",
}

func allTables() map[string]*Table {
	return map[string]*Table{
		"sglang.launch_server":     SGLangServer(),
		"sglang.compile_deep_gemm": CompileDeepGEMM(),
		"dynamo.sglang":            DynamoSGLang(),
	}
}

func TestSeedFlagsAccepted(t *testing.T) {
	for name, tb := range allTables() {
		t.Run(name, func(t *testing.T) {
			for _, f := range seedFlags {
				_, ok := tb.Lookup(f)
				assert.True(t, ok, "%s not in %s", f, name)
			}
			for role, argv := range map[string][]string{"prefill": seedPrefill, "decode": seedDecode} {
				args, err := tb.Parse(argv)
				require.NoError(t, err, role)
				assert.Equal(t, argv, flatten(args), role)
			}
		})
	}
}

// SGLang deprecated --enable-deepep-moe for --moe-a2a-backend deepep (PR
// #8658) and dropped it before OLD: 0.5.6.post2 exits 2 on it.
func TestEnableDeepEPMoERejected(t *testing.T) {
	for name, tb := range allTables() {
		t.Run(name, func(t *testing.T) {
			_, ok := tb.Lookup("--enable-deepep-moe")
			assert.False(t, ok)
			_, err := tb.Parse(append(append([]string{}, seedPrefill...), "--enable-deepep-moe"))
			var perr *Error
			require.ErrorAs(t, err, &perr)
			assert.Equal(t, "--enable-deepep-moe", perr.Token)
			assert.Equal(t, "unrecognized arguments: --enable-deepep-moe", perr.Msg)
		})
	}
}

func TestTablesHaveAllRows(t *testing.T) {
	sg, cp, dy := SGLangServer(), CompileDeepGEMM(), DynamoSGLang()
	own := dynamoOwn(t)
	// 330 ServerArgs rows were extracted (270 in both bracketing versions, 57
	// only in the newer, 3 only in the older), plus argparse's -h/--help.
	assert.Equal(t, 331, len(sg.Flags()))
	assert.Equal(t, 332, len(cp.Flags()), "ServerArgs, -h and --timeout")
	// Dynamo: -h, 54 rows of the research table, --enable-multimodal and
	// --dedicated-mm-encoder; --enable-multimodal is also an SGLang flag.
	assert.Equal(t, 330+57, len(dy.Flags()), "ServerArgs plus Dynamo's group")
	assert.Equal(t, 55, len(own), "Dynamo flags SGLang lacks")
	for _, opt := range []string{
		"--model", "--tensor-parallel-size", "--data-parallel-size", "--expert-parallel-size", "--ep",
		"--pipeline-parallel-size", "--nccl-init-addr", "--speculative-draft-model", "--kv-cache-dtype",
		"--quantization", "--lora-paths", "--config", "--forward-hooks", "--dllm-algorithm",
	} {
		_, ok := sg.Lookup(opt)
		assert.True(t, ok, opt)
	}
	_, ok := cp.Lookup("--timeout")
	assert.True(t, ok)
	_, ok = sg.Lookup("--timeout")
	assert.False(t, ok, "--timeout belongs to compile_deep_gemm only")
}

func TestKnownRows(t *testing.T) {
	sg, dy := SGLangServer(), DynamoSGLang()
	mp, _ := sg.Lookup("--model")
	assert.Equal(t, Flag{Name: "--model-path", Aliases: []string{"--model"}, Kind: Value, Type: "str", Required: true, Source: "both"}, mp)
	bs, _ := sg.Lookup("--cuda-graph-bs")
	assert.Equal(t, Multi, bs.Kind)
	assert.Equal(t, "+", bs.Nargs)
	assert.Equal(t, "int", bs.Type)
	tp, _ := sg.Lookup("--tp-size")
	assert.Equal(t, "--tensor-parallel-size", tp.Name)
	ep, _ := sg.Lookup("--ep")
	assert.Equal(t, []string{"--ep-size", "--ep"}, ep.Aliases)
	dtb, _ := sg.Lookup("--disaggregation-transfer-backend")
	assert.Subset(t, dtb.Choices, []string{"mooncake", "nixl"})
	lb, _ := sg.Lookup("--load-balance-method")
	assert.Contains(t, lb.Choices, "round_robin")
	assert.NotContains(t, lb.Choices, "follow_bootstrap_room", "added after 0.5.6.post2")
	for _, gone := range []string{"--admin-api-key", "--model-checksum"} {
		_, ok := sg.Lookup(gone)
		assert.False(t, ok, gone)
	}
	fpm, ok := dy.Lookup("--no-fpm-trace")
	require.True(t, ok)
	assert.Equal(t, Flag{Name: "--fpm-trace", Kind: NegatableBool, Negation: "--no-fpm-trace", Source: "main-2026", Note: "env DYN_FPM_TRACE"}, fpm)
	lf, _ := dy.Lookup("--load-format")
	assert.Contains(t, lf.Choices, "gms")
	lf, _ = sg.Lookup("--load-format")
	assert.NotContains(t, lf.Choices, "gms", "gms is Dynamo's addition only")
}

// Every row that is not certain must say why it is in the table.
func TestUncertainRowsCarryTheirDecision(t *testing.T) {
	for _, f := range SGLangServer().Flags() {
		if f.Source == "old" || f.Source == "mid" {
			assert.Contains(t, f.Note, "kept", f.Name)
		}
	}
}

// dynamoOwn is every flag of dynamo.sglang that SGLang's ServerArgs lacks.
func dynamoOwn(t *testing.T) []Flag {
	t.Helper()
	var own []Flag
	sg := SGLangServer()
	for _, f := range DynamoSGLang().Flags() {
		if _, ok := sg.Lookup(f.Name); !ok {
			own = append(own, f)
		}
	}
	return own
}

// dynamoOnlyArgv writes every Dynamo-only flag with a valid value.
func dynamoOnlyArgv(t *testing.T) [][]string {
	t.Helper()
	var out [][]string
	for _, f := range dynamoOwn(t) {
		switch {
		case f.Name == "-h" || f.Name == "--version":
			continue // print and exit; not part of a worker argv
		case f.Kind == NegatableBool:
			out = append(out, []string{f.Name}, []string{f.Negation})
		case f.Kind == Bool:
			out = append(out, []string{f.Name})
		default:
			out = append(out, []string{f.Name, sampleValue(f)})
		}
	}
	return out
}

func sampleValue(f Flag) string {
	switch {
	case len(f.Choices) > 0:
		return f.Choices[len(f.Choices)-1]
	case f.Type == "int":
		return "7"
	case f.Type == "float":
		return "1.5"
	case f.Type == "json":
		return `{"a":1}`
	}
	return "value-of-" + strings.TrimPrefix(f.Name, "--")
}

func TestDynamoOnlyFlags(t *testing.T) {
	groups := dynamoOnlyArgv(t)
	var names []string
	for _, g := range groups {
		names = append(names, g[0])
	}
	assert.Subset(t, names, []string{"--dump-config-to", "--connector", "--endpoint-types", "--no-fpm-trace",
		"--no-use-sglang-tokenizer", "--endpoint", "--namespace", "--dyn-tool-call-parser", "--disagg-config"})
	cp, dy := CompileDeepGEMM(), DynamoSGLang()
	for _, g := range groups {
		t.Run(g[0], func(t *testing.T) {
			argv := append([]string{"--model-path", "/m"}, g...)
			_, err := dy.Parse(argv)
			require.NoError(t, err)
			_, err = cp.Parse(argv)
			var perr *Error
			require.ErrorAs(t, err, &perr)
			assert.Equal(t, g[0], perr.Token)
			assert.True(t, strings.HasPrefix(perr.Msg, "unrecognized arguments: "+g[0]), perr.Msg)
		})
	}
}

func flatten(args []Arg) []string {
	var out []string
	for _, a := range args {
		out = append(out, a.Tokens...)
	}
	return out
}
