package slurm

import (
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// fuzzMaxHosts keeps each fuzz input cheap. Large expansions take the same
// code path and are covered by the unit tests and benchmarks.
const fuzzMaxHosts = 20000

func FuzzExpand(f *testing.F) {
	for _, s := range []string{
		"rack[1-2]-node[01-04]", "node[8-10]", "node[1-010]", "n[001-5]", "a,b c\td\ne",
		"node[1,3,2],node1", "gpu[0-1]-ib", "x[1-2]y[3-4]z", "a[1-2]b[1-2]c[1-2]",
		"node[01-2],node003", "n[1-3],n2", "node[0-0]", "c09,c010", "a9,a10,a11,a08",
		"node[3-1]", "node[]", "node[a-b]", "node[1-2", "node[1-2]]", "node[-1]", "node[1--2]",
		"node[00000-65536]", "", " ", "n[1,,2]", "a[1[2]]", "n[18446744073709551614-18446744073709551615]",
		"n[98-101]", "[1-2]a[3]", "a[0-32767,0-32768]b[0-1]", "n[0-65535]m[0-63]",
		"gpu\x0001", "n1\r,n2", "a[1-2]\x1bb", "n\x7f",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		p, err := parseHostlist(expr)
		if err != nil {
			var he *HostlistError
			require.ErrorAs(t, err, &he)
			require.Equal(t, expr, he.Expr)
			require.True(t, 0 <= he.Pos && he.Pos <= len(expr), "position %d outside %q", he.Pos, expr)
			require.True(t, strings.HasPrefix(expr[he.Pos:], strings.TrimSuffix(he.Text, "...")),
				"text %q is not at position %d of %q", he.Text, he.Pos, expr)
			require.NotEmpty(t, he.Msg)
			return
		}
		if p.hosts > fuzzMaxHosts {
			return
		}
		names, err := Expand(expr)
		require.NoError(t, err)
		require.Len(t, names, int(p.hosts))
		built := 0
		for _, n := range names {
			require.NotEmpty(t, n)
			require.False(t, strings.ContainsAny(n, ", \t\n[]"), "name %q of %q", n, expr)
			require.False(t, strings.ContainsFunc(n, func(c rune) bool { return c < ' ' || c == 0x7f }),
				"control character in name %q of %q", n, expr)
			built += len(n)
		}
		for _, tok := range p.tokens {
			if tok.g0 == tok.g1 {
				built -= tok.end - tok.start
			}
		}
		require.Equal(t, int(p.bytes), built, "precounted size of %q", expr)

		var lines strings.Builder
		require.NoError(t, WriteHostnames(&lines, expr))
		require.Equal(t, strings.Join(names, "\n")+"\n", lines.String())

		compressed := Compress(names)
		again, err := Expand(compressed)
		require.NoError(t, err, "Compress gave %q", compressed)
		// slices.Equal, not require.Equal: its diff of large slices is slow.
		require.True(t, slices.Equal(names, again), "%q compressed to %q expands differently", expr, compressed)
	})
}
