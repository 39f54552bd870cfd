package argspec

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseSplitsLikeArgparse(t *testing.T) {
	m := []string{"--model-path", "/m"}
	tests := map[string]struct {
		tb   *Table
		argv []string
		want []Arg
	}{
		"negative number is a value": {SGLangServer(), []string{"--chunked-prefill-size", "-1"},
			[]Arg{{"--chunked-prefill-size", "--chunked-prefill-size", []string{"--chunked-prefill-size", "-1"}}}},
		"negative fraction is a value": {SGLangServer(), []string{"--watchdog-timeout", "-.5"},
			[]Arg{{"--watchdog-timeout", "--watchdog-timeout", []string{"--watchdog-timeout", "-.5"}}}},
		"flag=value is one token": {SGLangServer(), []string{"--tp-size=8"},
			[]Arg{{"--tensor-parallel-size", "--tp-size", []string{"--tp-size=8"}}}},
		"flag=value keeps later '=' in the value": {SGLangServer(), []string{"--json-model-override-args={\"a\":\"b=c\"}"},
			[]Arg{{"--json-model-override-args", "--json-model-override-args", []string{"--json-model-override-args={\"a\":\"b=c\"}"}}}},
		"multi stops at the next flag": {SGLangServer(), []string{"--cuda-graph-bs", "1", "2", "-4", "--page-size", "1"},
			[]Arg{{"--cuda-graph-bs", "--cuda-graph-bs", []string{"--cuda-graph-bs", "1", "2", "-4"}},
				{"--page-size", "--page-size", []string{"--page-size", "1"}}}},
		"star multi may be empty": {DynamoSGLang(), []string{"--connector", "--page-size", "1"},
			[]Arg{{"--connector", "--connector", []string{"--connector"}}, {"--page-size", "--page-size", []string{"--page-size", "1"}}}},
		"optional without value": {DynamoSGLang(), []string{"--dyn-structural-tag", "--page-size", "1"},
			[]Arg{{"--dyn-structural-tag", "--dyn-structural-tag", []string{"--dyn-structural-tag"}},
				{"--page-size", "--page-size", []string{"--page-size", "1"}}}},
		"optional with value": {DynamoSGLang(), []string{"--dyn-structural-tag", "strict"},
			[]Arg{{"--dyn-structural-tag", "--dyn-structural-tag", []string{"--dyn-structural-tag", "strict"}}}},
		"value may look like a dashed word with a space": {SGLangServer(), []string{"--served-model-name", "-a b"},
			[]Arg{{"--served-model-name", "--served-model-name", []string{"--served-model-name", "-a b"}}}},
		"unambiguous prefix": {SGLangServer(), []string{"--tp", "8", "--dp=8"},
			[]Arg{{"--tensor-parallel-size", "--tp-size", []string{"--tp", "8"}},
				{"--data-parallel-size", "--dp-size", []string{"--dp=8"}}}},
		"negation": {DynamoSGLang(), []string{"--no-use-sglang-tokenizer"},
			[]Arg{{"--use-sglang-tokenizer", "--no-use-sglang-tokenizer", []string{"--no-use-sglang-tokenizer"}}}},
		"dynamo claims a prefix before sglang sees it": {DynamoSGLang(), []string{"--enable-multi"},
			[]Arg{{"--enable-multimodal", "--enable-multimodal", []string{"--enable-multi"}}}},
		"int with sign, spaces and underscores": {CompileDeepGEMM(), []string{"--timeout", " +1_800 "},
			[]Arg{{"--timeout", "--timeout", []string{"--timeout", " +1_800 "}}}},
		"int choice compared as int": {SGLangServer(), []string{"--log-requests-level", "01"},
			[]Arg{{"--log-requests-level", "--log-requests-level", []string{"--log-requests-level", "01"}}}},
		"float forms python accepts": {SGLangServer(), []string{"--mem-fraction-static", "1e-1", "--watchdog-timeout", "Infinity"},
			[]Arg{{"--mem-fraction-static", "--mem-fraction-static", []string{"--mem-fraction-static", "1e-1"}},
				{"--watchdog-timeout", "--watchdog-timeout", []string{"--watchdog-timeout", "Infinity"}}}},
		"argv order across dynamo and sglang": {DynamoSGLang(), []string{"--tp", "2", "--namespace", "ns", "--page-size", "1"},
			[]Arg{{"--tensor-parallel-size", "--tp-size", []string{"--tp", "2"}}, {"--namespace", "--namespace", []string{"--namespace", "ns"}},
				{"--page-size", "--page-size", []string{"--page-size", "1"}}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := tc.tb.Parse(append(append([]string{}, m...), tc.argv...))
			require.NoError(t, err)
			require.NotEmpty(t, got)
			assert.Equal(t, Arg{"--model-path", "--model-path", m}, got[0])
			assert.Equal(t, tc.want, got[1:])
		})
	}
}

// Messages are CPython 3.11 argparse's, checked against it for these argvs.
func TestParseErrorsNameTheToken(t *testing.T) {
	m := []string{"--model-path", "/m"}
	tests := map[string]struct {
		tb    *Table
		argv  []string
		token string
		msg   string
	}{
		"unknown flag and its value": {SGLangServer(), append([]string{"--migration-limit", "3"}, m...), "--migration-limit",
			"unrecognized arguments: --migration-limit 3"},
		"missing value": {SGLangServer(), append(m, "--host", "--port", "1"), "--host",
			"argument --host: expected one argument"},
		"dash word is not a value": {SGLangServer(), append(m, "--served-model-name", "-x"), "--served-model-name",
			"argument --served-model-name: expected one argument"},
		"exponent is not a negative number": {SGLangServer(), append(m, "--watchdog-timeout", "-1e5"), "--watchdog-timeout",
			"argument --watchdog-timeout: expected one argument"},
		"plus multi without values": {SGLangServer(), append(m, "--cuda-graph-bs", "--page-size", "1"), "--cuda-graph-bs",
			"argument --cuda-graph-bs: expected at least one argument"},
		"bad choice": {SGLangServer(), append(m, "--load-balance-method", "follow_bootstrap_room"), "follow_bootstrap_room",
			"argument --load-balance-method: invalid choice: 'follow_bootstrap_room' (choose from 'round_robin', 'shortest_queue', 'minimum_tokens', 'total_requests', 'total_tokens')"},
		"bad int choice": {SGLangServer(), append(m, "--log-requests-level=7"), "--log-requests-level=7",
			"argument --log-requests-level: invalid choice: 7 (choose from 0, 1, 2, 3)"},
		"bad int": {SGLangServer(), append(m, "--tp-size", "4.0"), "4.0",
			"argument --tensor-parallel-size/--tp-size: invalid int value: '4.0'"},
		"compile timeout is an int": {CompileDeepGEMM(), append(m, "--timeout", "1.5"), "1.5",
			"argument --timeout: invalid int value: '1.5'"},
		"bad float": {SGLangServer(), append(m, "--mem-fraction-static", "0x1p-2"), "0x1p-2",
			"argument --mem-fraction-static: invalid float value: '0x1p-2'"},
		"bad json": {SGLangServer(), append(m, "--extra-metric-labels", "{a}"), "{a}",
			"argument --extra-metric-labels: invalid loads value: '{a}'"},
		"value given to a bool": {SGLangServer(), append(m, "--enable-dp-attention=1"), "--enable-dp-attention=1",
			"argument --enable-dp-attention: ignored explicit argument '1'"},
		"value given to a negation": {DynamoSGLang(), append(m, "--no-fpm-trace=false"), "--no-fpm-trace=false",
			"argument --fpm-trace/--no-fpm-trace: ignored explicit argument 'false'"},
		"extra value after a bool": {SGLangServer(), append(m, "--trust-remote-code", "yes"), "yes",
			"unrecognized arguments: yes"},
		"explicit value to a multi takes just it": {SGLangServer(), append(m, "--cuda-graph-bs=1", "2"), "2",
			"unrecognized arguments: 2"},
		"ambiguous prefix": {SGLangServer(), append(m, "--dist", "x"), "--dist",
			"ambiguous option: --dist could match --dist-timeout, --dist-init-addr"},
		"ambiguous inside dynamo's parser": {DynamoSGLang(), append(m, "--endpoint", "e", "--media", "x"), "--media",
			"ambiguous option: --media could match --media-output-fs-url, --media-output-http-url"},
		"missing required": {SGLangServer(), []string{"--tp-size", "8"}, "",
			"the following arguments are required: --model-path/--model"},
		"required before unrecognized": {SGLangServer(), []string{"--bogus"}, "",
			"the following arguments are required: --model-path/--model"},
		"after -- nothing is a flag": {SGLangServer(), append(m, "--", "--port", "1"), "--",
			"unrecognized arguments: -- --port 1"},
		"dynamo flag unknown to sglang": {SGLangServer(), append(m, "--endpoint", "dyn://a.b.c"), "--endpoint",
			"unrecognized arguments: --endpoint dyn://a.b.c"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := tc.tb.Parse(tc.argv)
			var perr *Error
			require.ErrorAs(t, err, &perr)
			assert.Equal(t, tc.token, perr.Token)
			assert.Equal(t, tc.msg, perr.Msg)
			assert.Equal(t, tc.tb.Tool+": error: "+tc.msg, perr.Error())
		})
	}
}

func TestPyRepr(t *testing.T) {
	for in, want := range map[string]string{"a": "'a'", "it's": `"it's"`, `a'"b`: `'a\'"b'`, "t\tn\n": `'t\tn\n'`, "\x01": `'\x01'`} {
		assert.Equal(t, want, pyRepr(in), in)
	}
}

func TestCheckTypeMatchesPython(t *testing.T) {
	ok := map[string][]string{
		"int":   {"0", "-3", "+3", " 7 ", "1_000", "007", "123456789012345678901234567890"},
		"float": {"1", "-1.5", ".5", "5.", "1e3", "1E-3", "inf", "-Infinity", "NaN", "1_0.5", " 2 "},
		"json":  {"{}", "[1,2]", `"s"`, "3", "null"},
		"str":   {"", "anything"},
	}
	bad := map[string][]string{
		"int":   {"", "1.0", "1e3", "0x10", "1__0", "_1", "1_", "--1", "٣"},
		"float": {"", "abc", "0x1p-2", "1__0", "_1", "1_", "--1", "1e"},
		"json":  {"{a}", "x", ""},
	}
	for typ, vals := range ok {
		for _, v := range vals {
			assert.NoError(t, checkType(typ, v), "%s %q", typ, v)
		}
	}
	for typ, vals := range bad {
		for _, v := range vals {
			assert.Error(t, checkType(typ, v), "%s %q", typ, v)
		}
	}
}

func TestLookup(t *testing.T) {
	dy := DynamoSGLang()
	for opt, name := range map[string]string{
		"--model": "--model-path", "--tp-size": "--tensor-parallel-size", "--ep": "--expert-parallel-size",
		"--no-connector": "", "--no-tcp-tls-insecure": "--tcp-tls-insecure", "--help": "-h", "--tp": "", "--port=1": "",
	} {
		f, ok := dy.Lookup(opt)
		assert.Equal(t, name != "", ok, opt)
		assert.Equal(t, name, f.Name, opt)
	}
}

func TestParseTSVRejectsBadRows(t *testing.T) {
	row := func(cols string) []byte { return []byte("# c\n" + tsvHeader + "\n" + cols + "\n") }
	for name, raw := range map[string][]byte{
		"no header":          []byte("--x\t\tbool\t\t\t\t\tboth\t\n"),
		"short row":          row("--x\t\tbool"),
		"unknown kind":       row("--x\t\tswitch\t\t\t\t\tboth\t"),
		"multi without *":    row("--x\t\tmulti\t\tint\t\t\tboth\t"),
		"value with nargs":   row("--x\t\tvalue\t+\tint\t\t\tboth\t"),
		"value without type": row("--x\t\tvalue\t\t\t\t\tboth\t"),
		"bool with choices":  row("--x\t\tbool\t\t\ta,b\t\tboth\t"),
		"choice of bad type": row("--x\t\tvalue\t\tint\t1,two\t\tboth\t"),
		"short option":       row("-x\t\tbool\t\t\t\t\tboth\t"),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := parseTSV(raw)
			assert.Error(t, err)
		})
	}
	flags, err := parseTSV(row("--x\t--y,--z\tnegatable-bool\t\t\t\tyes\tboth\tn"))
	require.NoError(t, err)
	assert.Equal(t, []Flag{{Name: "--x", Aliases: []string{"--y", "--z"}, Kind: NegatableBool, Negation: "--no-x", Required: true, Source: "both", Note: "n"}}, flags)
}

func TestDuplicateOptionPanics(t *testing.T) {
	f := Flag{Name: "--a", Kind: Bool}
	assert.Panics(t, func() { mustTable(&Table{Tool: "t"}, []Flag{f, f}) })
	assert.NotPanics(t, func() { mustTable(&Table{Tool: "t"}, []Flag{f}, []Flag{f}) }, "separate parsers may share a flag")
}
