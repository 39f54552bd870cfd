package sim

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// The real programs parse their command lines with Python's argparse. The
// stand-ins reproduce its strictness (unknown flags, malformed numbers,
// invalid choices and missing values are errors, exit code 2) so that a plan
// that would crash the real server also fails in simulation.

type flagKind int

const (
	kindBool    flagKind = iota // store_true: no value
	kindInt                     // type=int
	kindFloat                   // type=float
	kindString                  // type=str
	kindEnum                    // choices=[...]
	kindIntList                 // type=int, nargs="+"
)

type flagDef struct {
	names   []string // option strings without the leading "--", canonical first
	kind    flagKind
	choices []string
	// dynamoOnly flags are added by dynamo.sglang on top of SGLang's
	// ServerArgs; sglang.compile_deep_gemm rejects them.
	dynamoOnly bool
}

func opt(kind flagKind, names ...string) flagDef { return flagDef{names: names, kind: kind} }

func enum(name string, choices ...string) flagDef {
	return flagDef{names: []string{name}, kind: kindEnum, choices: choices}
}

func dyn(d flagDef) flagDef { d.dynamoOnly = true; return d }

// serverFlags are the SGLang ServerArgs flags the stand-ins know: every flag
// of the reference deployment (dynamo-sglang-wideep-h100) plus the ones
// commonly appended as per-role extra arguments, and dynamo.sglang's own.
var serverFlags = []flagDef{
	// model and tokenizer
	opt(kindString, "model-path", "model"),
	opt(kindString, "tokenizer-path"),
	opt(kindString, "served-model-name"),
	opt(kindString, "revision"),
	opt(kindString, "load-format"),
	opt(kindString, "quantization"),
	opt(kindString, "kv-cache-dtype"),
	opt(kindString, "dtype"),
	opt(kindString, "chat-template"),
	opt(kindString, "tool-call-parser"),
	opt(kindString, "reasoning-parser"),
	opt(kindInt, "context-length"),
	opt(kindBool, "skip-tokenizer-init"),
	opt(kindBool, "trust-remote-code"),
	// network and distribution
	opt(kindString, "host"),
	opt(kindInt, "port"),
	opt(kindInt, "nccl-port"),
	opt(kindString, "dist-init-addr"),
	opt(kindInt, "nnodes"),
	opt(kindInt, "node-rank"),
	opt(kindInt, "dist-timeout"),
	opt(kindInt, "tp-size", "tensor-parallel-size"),
	opt(kindInt, "dp-size", "data-parallel-size"),
	opt(kindInt, "ep-size", "expert-parallel-size"),
	opt(kindInt, "pp-size", "pipeline-parallel-size"),
	opt(kindInt, "base-gpu-id"),
	opt(kindInt, "gpu-id-step"),
	opt(kindBool, "enable-dp-attention"),
	opt(kindBool, "enable-dp-lm-head"),
	opt(kindInt, "moe-dense-tp-size"),
	enum("load-balance-method", "round_robin", "shortest_queue", "minimum_tokens", "total_requests", "total_tokens", "follow_bootstrap_room"),
	// disaggregation
	enum("disaggregation-mode", "null", "prefill", "decode"),
	enum("disaggregation-transfer-backend", "mooncake", "nixl", "ascend", "fake", "mori"),
	opt(kindInt, "disaggregation-bootstrap-port"),
	opt(kindInt, "disaggregation-decode-tp"),
	opt(kindInt, "disaggregation-decode-dp"),
	opt(kindString, "disaggregation-ib-device"),
	opt(kindBool, "prefill-round-robin-balance"),
	opt(kindInt, "num-reserved-decode-tokens"),
	// expert parallelism
	enum("moe-a2a-backend", "none", "deepep", "mooncake", "mori", "ascend_fuseep", "flashinfer"),
	enum("deepep-mode", "normal", "low_latency", "auto"),
	opt(kindString, "deepep-config"),
	opt(kindString, "moe-runner-backend"),
	opt(kindInt, "ep-num-redundant-experts"),
	enum("ep-dispatch-algorithm", "static", "dynamic", "fake"),
	opt(kindString, "eplb-algorithm"),
	opt(kindBool, "enable-eplb"),
	opt(kindInt, "eplb-rebalance-num-iterations"),
	opt(kindString, "init-expert-location"),
	opt(kindBool, "enable-deepep-moe"),
	opt(kindBool, "disable-shared-experts-fusion"),
	// memory and scheduling
	opt(kindFloat, "mem-fraction-static"),
	opt(kindInt, "page-size"),
	opt(kindInt, "chunked-prefill-size"),
	opt(kindInt, "max-running-requests"),
	opt(kindInt, "max-prefill-tokens"),
	opt(kindInt, "max-total-tokens"),
	opt(kindFloat, "schedule-conservativeness"),
	opt(kindBool, "disable-radix-cache"),
	opt(kindBool, "enable-two-batch-overlap"),
	opt(kindBool, "enable-single-batch-overlap"),
	opt(kindBool, "disable-overlap-schedule"),
	opt(kindBool, "enable-mixed-chunk"),
	opt(kindString, "attention-backend"),
	opt(kindString, "sampling-backend"),
	opt(kindString, "grammar-backend"),
	// cuda graphs and compilation
	opt(kindIntList, "cuda-graph-bs"),
	opt(kindInt, "cuda-graph-max-bs"),
	opt(kindBool, "disable-cuda-graph"),
	opt(kindBool, "enable-torch-compile"),
	opt(kindBool, "disable-custom-all-reduce"),
	// observability
	opt(kindInt, "decode-log-interval"),
	opt(kindFloat, "watchdog-timeout"),
	opt(kindString, "log-level"),
	opt(kindBool, "log-requests"),
	opt(kindBool, "enable-metrics"),
	opt(kindBool, "enable-cache-report"),
	opt(kindInt, "stream-interval"),
	opt(kindInt, "random-seed"),
	// dynamo.sglang and the Dynamo runtime
	dyn(opt(kindString, "endpoint")),
	dyn(opt(kindInt, "migration-limit")),
	dyn(opt(kindString, "dyn-tool-call-parser")),
	dyn(opt(kindString, "dyn-reasoning-parser")),
	dyn(opt(kindBool, "use-sglang-tokenizer")),
	dyn(opt(kindString, "custom-jinja-template")),
	dyn(opt(kindString, "namespace")),
	dyn(enum("discovery-backend", "kubernetes", "etcd", "file", "mem")),
	dyn(enum("request-plane", "tcp", "nats", "http")),
	dyn(enum("response-plane", "tcp", "quic")),
	dyn(enum("event-plane", "nats", "zmq")),
}

// precompileFlags are the flags of sglang.compile_deep_gemm: SGLang's
// ServerArgs plus its own --timeout, without dynamo.sglang's additions.
var precompileFlags = func() []flagDef {
	var out []flagDef
	for _, d := range serverFlags {
		if !d.dynamoOnly {
			out = append(out, d)
		}
	}
	// An argparse int in compile_deep_gemm (@06c48ca8): "--timeout 1.5" is
	// an error there.
	return append(out, opt(kindInt, "timeout"))
}()

// frontendFlags are the dynamo.frontend flags the stand-in knows.
var frontendFlags = []flagDef{
	opt(kindString, "http-host"),
	opt(kindInt, "http-port"),
	enum("router-mode", "round-robin", "random", "kv"),
	opt(kindInt, "kv-cache-block-size"),
	opt(kindString, "namespace"),
	opt(kindInt, "migration-limit"),
	opt(kindString, "tls-cert-path"),
	opt(kindString, "tls-key-path"),
	enum("discovery-backend", "kubernetes", "etcd", "file", "mem"),
	enum("request-plane", "tcp", "nats", "http"),
	enum("response-plane", "tcp", "quic"),
	enum("event-plane", "nats", "zmq"),
}

// argError is an argparse error: the program prints usage and the message,
// and exits 2.
type argError struct{ msg string }

func (e *argError) Error() string { return e.msg }

// errHelp is -h/--help: usage on stdout, exit 0.
type errHelp struct{}

func (errHelp) Error() string { return "help requested" }

// args is a parsed command line: the value of every flag given, by canonical
// name (bools as "true", lists space-joined). Repeated flags: last one wins.
type args struct {
	values map[string]string
	lists  map[string][]int
}

func (a *args) has(name string) bool { _, ok := a.values[name]; return ok }

func (a *args) str(name, def string) string {
	if v, ok := a.values[name]; ok {
		return v
	}
	return def
}

func (a *args) bool(name string) bool { return a.values[name] == "true" }

// int and float only see values parseArgs already validated.
func (a *args) int(name string, def int) int {
	if v, ok := a.values[name]; ok {
		n, _ := strconv.Atoi(strings.TrimSpace(v))
		return n
	}
	return def
}

func (a *args) float(name string, def float64) float64 {
	if v, ok := a.values[name]; ok {
		x, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
		return x
	}
	return def
}

// parseArgs parses argv (after the module name) against defs like argparse
// would: errors come back as *argError, -h/--help as errHelp.
func parseArgs(argv []string, defs []flagDef, required ...string) (*args, error) {
	byName := make(map[string]*flagDef, len(defs))
	for i := range defs {
		for _, n := range defs[i].names {
			byName[n] = &defs[i]
		}
	}
	a := &args{values: map[string]string{}, lists: map[string][]int{}}
	var unrecognized []string
	for i := 0; i < len(argv); i++ {
		arg := argv[i]
		if arg == "--" {
			unrecognized = append(unrecognized, argv[i+1:]...)
			break
		}
		if !looksLikeFlag(arg) {
			unrecognized = append(unrecognized, arg)
			continue
		}
		if arg == "-h" || arg == "--help" {
			return nil, errHelp{}
		}
		name, val, hasVal := strings.Cut(arg, "=")
		def, ok := byName[strings.TrimPrefix(name, "--")]
		if !ok || !strings.HasPrefix(name, "--") {
			unrecognized = append(unrecognized, arg)
			continue
		}
		canon := def.names[0]
		switch def.kind {
		case kindBool:
			if hasVal {
				return nil, argErrorf(def, "ignored explicit argument %s", pyRepr(val))
			}
			a.values[canon] = "true"
			continue
		case kindIntList:
			var vals []string
			if hasVal {
				vals = []string{val}
			} else {
				for i+1 < len(argv) && !looksLikeFlag(argv[i+1]) {
					vals = append(vals, argv[i+1])
					i++
				}
			}
			if len(vals) == 0 {
				return nil, argErrorf(def, "expected at least one argument")
			}
			ns := make([]int, 0, len(vals))
			for _, v := range vals {
				n, err := pyInt(v)
				if err != nil {
					return nil, argErrorf(def, "invalid int value: %s", pyRepr(v))
				}
				ns = append(ns, n)
			}
			a.lists[canon] = ns
			a.values[canon] = strings.Join(vals, " ")
			continue
		}
		if !hasVal {
			if i+1 >= len(argv) || looksLikeFlag(argv[i+1]) {
				return nil, argErrorf(def, "expected one argument")
			}
			i++
			val = argv[i]
		}
		if err := checkValue(def, val); err != nil {
			return nil, err
		}
		a.values[canon] = val
	}
	var missing []string
	for _, r := range required {
		if !a.has(r) {
			missing = append(missing, "--"+r)
		}
	}
	if len(missing) > 0 {
		return nil, &argError{"the following arguments are required: " + strings.Join(missing, ", ")}
	}
	if len(unrecognized) > 0 {
		return nil, &argError{"unrecognized arguments: " + strings.Join(unrecognized, " ")}
	}
	return a, nil
}

// checkValue checks one flag's value as argparse's type and choices would.
func checkValue(def *flagDef, val string) error {
	switch def.kind {
	case kindInt:
		if _, err := pyInt(val); err != nil {
			return argErrorf(def, "invalid int value: %s", pyRepr(val))
		}
	case kindFloat:
		if _, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err != nil {
			return argErrorf(def, "invalid float value: %s", pyRepr(val))
		}
	case kindEnum:
		if !slices.Contains(def.choices, val) {
			quoted := make([]string, len(def.choices))
			for j, c := range def.choices {
				quoted[j] = pyRepr(c)
			}
			return argErrorf(def, "invalid choice: %s (choose from %s)", pyRepr(val), strings.Join(quoted, ", "))
		}
	}
	return nil
}

func argErrorf(def *flagDef, format string, v ...any) error {
	opts := make([]string, len(def.names))
	for i, n := range def.names {
		opts[i] = "--" + n
	}
	return &argError{fmt.Sprintf("argument %s: %s", strings.Join(opts, "/"), fmt.Sprintf(format, v...))}
}

// looksLikeFlag is argparse's test for an option string: a leading dash,
// except for negative numbers (none of these parsers has numeric options).
func looksLikeFlag(s string) bool {
	if len(s) < 2 || s[0] != '-' {
		return false
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return false
	}
	return true
}

// pyInt accepts what Python's int() accepts for the values seen in practice:
// surrounding spaces, a sign, underscores between digits.
func pyInt(s string) (int, error) {
	t := strings.TrimSpace(s)
	if strings.HasPrefix(t, "_") || strings.HasSuffix(t, "_") || strings.Contains(t, "__") {
		return 0, fmt.Errorf("invalid int %q", s)
	}
	return strconv.Atoi(strings.ReplaceAll(t, "_", ""))
}

// pyRepr quotes like Python's repr of a str, which argparse uses in messages.
func pyRepr(s string) string {
	if strings.Contains(s, "'") && !strings.Contains(s, `"`) {
		return `"` + s + `"`
	}
	return "'" + strings.ReplaceAll(s, "'", `\'`) + "'"
}

// printArgError prints an argparse-style failure: a usage line, then
// "<prog>: error: <msg>".
func printArgError(w io.Writer, prog string, err error) {
	fmt.Fprintf(w, "usage: %s [-h] [options]\n%s: error: %s\n", prog, prog, err)
}

func printUsage(w io.Writer, prog string, defs []flagDef) {
	fmt.Fprintf(w, "usage: %s [-h] [options]\n\n(wideep-launch simulation stand-in)\n\noptions:\n  -h, --help\n", prog)
	for _, d := range defs {
		opts := make([]string, len(d.names))
		for i, n := range d.names {
			opts[i] = "--" + n
		}
		meta := ""
		switch d.kind {
		case kindInt:
			meta = " INT"
		case kindFloat:
			meta = " FLOAT"
		case kindString:
			meta = " " + strings.ToUpper(strings.ReplaceAll(d.names[0], "-", "_"))
		case kindEnum:
			meta = " {" + strings.Join(d.choices, ",") + "}"
		case kindIntList:
			meta = " INT [INT ...]"
		}
		fmt.Fprintf(w, "  %s%s\n", strings.Join(opts, ", "), meta)
	}
}
