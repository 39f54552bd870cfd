package deploy

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/wideep/wideep-launch/launcher/argspec"
)

// argEdit is one parsed --prefill-arg/--decode-arg entry.
type argEdit struct {
	flag   string   // "--mem-fraction-static"
	vals   []string // values as separate arguments
	joined bool     // given as --flag=value: kept as one argument
	remove bool     // "!--flag"
}

// managedFlags are set by the plan; a user edit of them would break the
// layout, so it is an error that names what to use instead.
var managedFlags = map[string]string{
	"--node-rank":                     "the plan sets it per node",
	"--nnodes":                        "use --prefill-nodes-per-worker/--decode-nodes-per-worker",
	"--dist-init-addr":                "the plan sets it to the worker's head (port: --dist-init-port)",
	"--disaggregation-mode":           "the plan sets it from the role",
	"--tp-size":                       "use --prefill-tp-size/--decode-tp-size",
	"--tp":                            "use --prefill-tp-size/--decode-tp-size",
	"--tensor-parallel-size":          "use --prefill-tp-size/--decode-tp-size",
	"--dp-size":                       "use --prefill-dp-size/--decode-dp-size",
	"--dp":                            "use --prefill-dp-size/--decode-dp-size",
	"--data-parallel-size":            "use --prefill-dp-size/--decode-dp-size",
	"--port":                          "use --sglang-port",
	"--nccl-port":                     "use --nccl-port",
	"--disaggregation-bootstrap-port": "use --bootstrap-port",
	"--model-path":                    "use --model-path",
	"--served-model-name":             "use --served-model-name",
}

// parseArgEdits parses a role's extra arguments, reporting bad entries.
func parseArgEdits(v *validator, r roleSpec) ([]argEdit, bool) {
	ok := true
	edits := make([]argEdit, 0, len(r.args))
	defaults := map[string]bool{}
	for _, a := range defaultArgs(r.role) {
		defaults[a.flag] = true
	}
	for _, raw := range r.args {
		e, err := parseArgEdit(raw)
		if err == nil {
			if why, managed := managedFlags[e.flag]; managed {
				err = fmt.Errorf("%s is managed by the plan (%s)", e.flag, why)
			} else if e.remove && !defaults[e.flag] {
				err = fmt.Errorf("%s is not a default %s flag, nothing to remove", e.flag, r.role)
			}
		}
		if errors.Is(err, errQuote) {
			err = fmt.Errorf("%w; use one %s per flag (\"--flag value\"), and --flag=value for a value with spaces or quotes "+
				"(kept as one argument)", err, r.flag("arg"))
		}
		if err != nil {
			v.addf("%s %q: %v", r.flag("arg"), raw, err)
			ok = false
			continue
		}
		edits = append(edits, e)
	}
	return edits, ok
}

// errQuote is an entry with a quote outside the value of --flag=value.
var errQuote = errors.New("quotes are not removed: an entry is split on white space and a quote would reach SGLang as it is")

// parseArgEdit parses one --prefill-arg/--decode-arg entry. An entry is
// split on white space and gets no quote processing: a quote would reach
// SGLang as it is, so it is refused (errQuote), except inside the one value
// of --flag=value, which is kept whole (JSON, say).
func parseArgEdit(raw string) (argEdit, error) {
	var e argEdit
	s := strings.TrimSpace(raw)
	if strings.HasPrefix(s, "!") {
		e.remove = true
		s = strings.TrimSpace(s[1:])
	}
	// The flag ends at '=' or at any white space the values are split on (a
	// newline kept in the flag would reach SGLang inside one argument).
	e.flag = s
	i := strings.IndexFunc(s, func(c rune) bool { return c == '=' || unicode.IsSpace(c) })
	if i >= 0 {
		e.flag = s[:i]
	}
	if !strings.HasPrefix(e.flag, "--") || len(e.flag) == 2 {
		return e, fmt.Errorf("want --flag [value], --flag=value or !--flag")
	}
	if i >= 0 {
		if s[i] == '=' {
			e.vals, e.joined = []string{s[i+1:]}, true
		} else {
			_, size := utf8.DecodeRuneInString(s[i:])
			e.vals = strings.Fields(s[i+size:])
		}
	}
	if e.remove && len(e.vals) > 0 {
		return e, fmt.Errorf("!%s removes a flag and takes no value", e.flag)
	}
	const quotes = `'"`
	split := []string{e.flag}
	if !e.joined {
		split = append(split, e.vals...)
	}
	if slices.ContainsFunc(split, func(w string) bool { return strings.ContainsAny(w, quotes) }) {
		return e, errQuote
	}
	if e.joined && strings.IndexAny(e.vals[0], quotes) == 0 {
		return e, fmt.Errorf("quotes are not removed: they would reach SGLang as part of the value; write %s=%s",
			e.flag, strings.Trim(e.vals[0], quotes))
	}
	return e, nil
}

// arg is one SGLang flag with its values.
type arg struct {
	flag   string
	vals   []string
	joined bool // one argument "--flag=value"
}

// defaultArgs are the reference deployment's flags, in its order
// (dynamo-sglang-wideep-h100.md). Values the plan computes are "".
func defaultArgs(role Role) []arg {
	a := func(flag string, vals ...string) arg { return arg{flag: flag, vals: vals} }
	if role == RoleDecode {
		return []arg{
			a("--model-path", ""), a("--served-model-name", ""), a("--skip-tokenizer-init"),
			a("--disaggregation-mode", ""), a("--disaggregation-transfer-backend", "nixl"),
			a("--disaggregation-bootstrap-port", ""), a("--host", "0.0.0.0"),
			a("--dist-init-addr", ""), a("--nnodes", ""), a("--node-rank", ""),
			a("--tp-size", ""), a("--dp-size", ""), a("--enable-dp-attention"),
			a("--decode-log-interval", "1000"), a("--moe-a2a-backend", "deepep"),
			a("--prefill-round-robin-balance"), a("--page-size", "1"), a("--trust-remote-code"),
			a("--moe-dense-tp-size", "1"), a("--enable-dp-lm-head"), a("--disable-radix-cache"),
			a("--watchdog-timeout", "1000000"), a("--enable-two-batch-overlap"),
			a("--deepep-mode", "low_latency"), a("--mem-fraction-static", "0.835"),
			a("--ep-num-redundant-experts", "32"), a("--cuda-graph-bs", "128"),
			a("--port", ""), a("--nccl-port", ""),
		}
	}
	return []arg{
		a("--model-path", ""), a("--served-model-name", ""), a("--skip-tokenizer-init"),
		a("--disaggregation-mode", ""), a("--disaggregation-transfer-backend", "nixl"),
		a("--host", "0.0.0.0"), a("--disaggregation-bootstrap-port", ""),
		a("--dist-init-addr", ""), a("--nnodes", ""), a("--node-rank", ""),
		a("--tp-size", ""), a("--dp-size", ""), a("--enable-dp-attention"),
		a("--decode-log-interval", "1000"), a("--moe-a2a-backend", "deepep"),
		a("--load-balance-method", "round_robin"), a("--page-size", "1"), a("--trust-remote-code"),
		a("--moe-dense-tp-size", "1"), a("--enable-dp-lm-head"), a("--disable-radix-cache"),
		a("--watchdog-timeout", "1000000"), a("--enable-two-batch-overlap"),
		a("--deepep-mode", "normal"), a("--mem-fraction-static", "0.85"),
		a("--deepep-config", "/configs/deepep.json"), a("--ep-num-redundant-experts", "32"),
		a("--ep-dispatch-algorithm", "dynamic"), a("--eplb-algorithm", "deepseek"),
		a("--port", ""), a("--nccl-port", ""),
	}
}

// The real grammars of dynamo.sglang and compile_deep_gemm at the SGLang
// release argspec was read from (see launcher/argspec).
var (
	dynamoGrammar  = sync.OnceValue(argspec.DynamoSGLang)
	compileGrammar = sync.OnceValue(argspec.CompileDeepGEMM)
)

// forPrecompile says whether a worker flag goes to compile_deep_gemm too,
// which takes SGLang's server flags only. What compile_deep_gemm accepts is
// kept; with an SGLang release other than argspec's, a flag neither grammar
// knows is kept too (a newer SGLang flag), and only what Dynamo takes for
// itself (with its --no- negations) is left out.
func (s Spec) forPrecompile(flag string) bool {
	if _, ok := compileGrammar().Lookup(flag); ok {
		return true
	}
	if s.SGLangVersion == argspec.SGLangVersion {
		return false
	}
	_, dynamo := dynamoGrammar().Lookup(flag)
	return !dynamo
}

// checkWorkerArgs parses a role's whole worker argument list as
// dynamo.sglang would, when the image's SGLang is argspec's release: an
// unknown flag, a missing value or a bad choice fails here, before any
// node starts, instead of on every node. Abbreviations, which argparse
// accepts, are refused: in another release one can mean another flag.
func (s Spec) checkWorkerArgs(v *validator, r roleSpec) {
	if s.SGLangVersion != argspec.SGLangVersion {
		return
	}
	tokens, rank, addr := flatten(nil, s.roleArgs(r))
	// The per-node values, as node rank 0 has them.
	if rank >= 0 && rank < len(tokens) {
		tokens[rank] = "0"
	}
	if addr >= 0 && addr < len(tokens) {
		tokens[addr] = "head:" + strconv.Itoa(s.DistInitPort)
	}
	args, err := dynamoGrammar().Parse(tokens)
	if err != nil {
		var pe *argspec.Error
		msg := err.Error()
		if errors.As(err, &pe) {
			msg = pe.Msg
		}
		v.addf("%s: python3 -m dynamo.sglang (SGLang %s) would refuse the worker's arguments: %s "+
			"(if the image has another SGLang, say which with --sglang-version)", r.flag("arg"), s.SGLangVersion, msg)
		return
	}
	for _, a := range args {
		written, _, _ := strings.Cut(a.Tokens[0], "=")
		if written != a.Option {
			v.addf("%s: %s abbreviates %s: write it in full (an abbreviation can mean another flag in another release)",
				r.flag("arg"), written, a.Option)
		}
	}
}

// flatten turns args into an argv after prefix, and returns the indexes of
// the --node-rank and --dist-init-addr values (the only per-node ones).
func flatten(prefix []string, args []arg) (argv []string, rank, addr int) {
	argv = slices.Clone(prefix)
	rank, addr = -1, -1
	for _, a := range args {
		if a.joined {
			argv = append(argv, a.flag+"="+a.vals[0])
			continue
		}
		argv = append(argv, a.flag)
		switch a.flag {
		case "--node-rank":
			rank = len(argv)
		case "--dist-init-addr":
			addr = len(argv)
		}
		argv = append(argv, a.vals...)
	}
	return argv, rank, addr
}
