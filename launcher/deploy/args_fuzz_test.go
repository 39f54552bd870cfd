package deploy

import (
	"errors"
	"strings"
	"testing"
	"unicode"

	"github.com/stretchr/testify/require"
)

// renderArgEdit writes an edit back as an entry.
func renderArgEdit(e argEdit) string {
	switch {
	case e.remove:
		return "!" + e.flag
	case e.joined:
		return e.flag + "=" + e.vals[0]
	}
	return strings.Join(append([]string{e.flag}, e.vals...), " ")
}

// FuzzParseArgEdit checks what the plan relies on from a parsed
// --prefill-arg/--decode-arg entry: the flag is one real-looking flag with
// no white space, '=' or quote in it (it becomes one argv element), values
// split on white space hold none either, a quote never gets through outside
// the one value of --flag=value, and the edit written back parses the same.
func FuzzParseArgEdit(f *testing.F) {
	for _, s := range []string{
		"--mem-fraction-static 0.8", "--mem-fraction-static=0.8", "--cuda-graph-bs 1 2  4", "--enable-metrics",
		"  !--deepep-config ", `--json-override={"a": 1}`, "--host\t0.0.0.0", "--watchdog-timeout=",
		"--dist-init-addr=a:1 ignore", "", "mem 0.8", "-m 1", "--", "!--x 1", "!", "--=1", "--a\n1",
		"--a\u00a01", "--tool-call-parser 'qwen25", `--tool-call-parser="qwen25"`, `--a'b`, "!--a=", "--a\x00b",
	} {
		f.Add(s)
	}
	quote := func(w string) bool { return strings.ContainsAny(w, `'"`) }
	f.Fuzz(func(t *testing.T, raw string) {
		e, err := parseArgEdit(raw)
		if err != nil {
			require.NotEmpty(t, err.Error())
			if errors.Is(err, errQuote) {
				require.True(t, quote(raw), "quote error for %q", raw)
			}
			return
		}
		require.True(t, strings.HasPrefix(e.flag, "--") && len(e.flag) > 2, "flag %q of %q", e.flag, raw)
		require.False(t, strings.ContainsFunc(e.flag, unicode.IsSpace) || strings.Contains(e.flag, "=") || quote(e.flag),
			"flag %q of %q", e.flag, raw)
		switch {
		case e.remove:
			require.Empty(t, e.vals, "a removal of %q has values", raw)
		case e.joined:
			require.Len(t, e.vals, 1)
			require.False(t, strings.HasPrefix(e.vals[0], `'`) || strings.HasPrefix(e.vals[0], `"`), "quoted value of %q", raw)
		default:
			for _, v := range e.vals {
				require.NotEmpty(t, v)
				require.False(t, strings.ContainsFunc(v, unicode.IsSpace) || quote(v), "value %q of %q", v, raw)
			}
		}
		again, err := parseArgEdit(renderArgEdit(e))
		require.NoError(t, err, "%q written back as %q", raw, renderArgEdit(e))
		require.Equal(t, e, again, "%q written back as %q", raw, renderArgEdit(e))
	})
}
