package slurm

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// seq is name+"%0*d" for lo..hi, the way Slurm prints a range.
func seq(prefix string, lo, hi, width int, suffix string) []string {
	var out []string
	for i := lo; i <= hi; i++ {
		out = append(out, fmt.Sprintf("%s%0*d%s", prefix, width, i, suffix))
	}
	return out
}

func TestExpand(t *testing.T) {
	for name, tc := range map[string]struct {
		expr string
		want []string
	}{
		// Appendix A of the Slurm research notes (scontrol 22.05.8 output).
		"two groups, left one outermost": {
			expr: "rack[1-2]-node[01-04]",
			want: strings.Fields("rack1-node01 rack1-node02 rack1-node03 rack1-node04 rack2-node01 rack2-node02 rack2-node03 rack2-node04"),
		},
		"width of an unpadded low bound": {expr: "node[8-10]", want: []string{"node8", "node9", "node10"}},
		"width of a padded low bound":    {expr: "node[08-10]", want: []string{"node08", "node09", "node10"}},
		"padded high bound is ignored":   {expr: "node[1-010]", want: seq("node", 1, 10, 0, "")},
		"low bound wider than high":      {expr: "n[001-5]", want: seq("n", 1, 5, 3, "")},
		"separators":                     {expr: "a,b c\td", want: []string{"a", "b", "c", "d"}},
		"newline separates":              {expr: "a\nb", want: []string{"a", "b"}},
		"order as written, dups kept":    {expr: "node[1,3,2],node1", want: []string{"node1", "node3", "node2", "node1"}},
		"three groups in Slurm's order": {
			expr: "a[1-2]b[1-2]c[1-2]",
			want: strings.Fields("a1b1c1 a1b1c2 a2b1c1 a2b1c2 a1b2c1 a1b2c2 a2b2c1 a2b2c2"),
		},
		"mixed widths across tokens": {expr: "node[01-2],node003", want: []string{"node01", "node02", "node003"}},
		"duplicate across tokens":    {expr: "n[1-3],n2", want: []string{"n1", "n2", "n3", "n2"}},
		"single-number range":        {expr: "node[0-0]", want: []string{"node0"}},
		// Accepted as Slurm does since 23.02.5 (22.05 rejects it).
		"suffix after the last group": {expr: "gpu[0-1]-ib", want: []string{"gpu0-ib", "gpu1-ib"}},
		"suffix with prefix groups": {
			expr: "x[1-2]y[3-4]z",
			want: []string{"x1y3z", "x1y4z", "x2y3z", "x2y4z"},
		},

		// The rest of the grammar.
		"plain name":                    {expr: "login", want: []string{"login"}},
		"plain name with digits":        {expr: "gpu0-ib", want: []string{"gpu0-ib"}},
		"ranges and singles mixed":      {expr: "n[1-3,5,07-09]", want: []string{"n1", "n2", "n3", "n5", "n07", "n08", "n09"}},
		"leading and trailing seps":     {expr: " ,\ta,,b, \n", want: []string{"a", "b"}},
		"comma inside brackets":         {expr: "n[1,2] m[3]", want: []string{"n1", "n2", "m3"}},
		"empty prefix":                  {expr: "[1-2]", want: []string{"1", "2"}},
		"empty prefix and later groups": {expr: "[1-2]a[3]", want: []string{"1a3", "2a3"}},
		"adjacent groups":               {expr: "a[1-2][3-4]", want: []string{"a13", "a14", "a23", "a24"}},
		"single number group":           {expr: "a[7]", want: []string{"a7"}},
		"zero width kept":               {expr: "n[00-0]", want: []string{"n00"}},
		"wide padding":                  {expr: "n[0000000000000000000000001-2]", want: []string{"n0000000000000000000000001", "n0000000000000000000000002"}},
		"digit count grows":             {expr: "n[98-101]", want: []string{"n98", "n99", "n100", "n101"}},
		"padding grows past width":      {expr: "n[09-100]", want: seq("n", 9, 100, 2, "")},
		"largest numbers": {
			expr: "n[18446744073709551614-18446744073709551615]",
			want: []string{"n18446744073709551614", "n18446744073709551615"},
		},
		"prefix group with several ranges": {
			expr: "r[1,3]n[1-2]",
			want: []string{"r1n1", "r1n2", "r3n1", "r3n2"},
		},
		"four groups": {
			expr: "a[1-2]b[1-2]c[1-2]d[1]",
			// Rightmost prefix group (c) slowest, then b, then a, last group (d) fastest.
			want: strings.Fields("a1b1c1d1 a2b1c1d1 a1b2c1d1 a2b2c1d1 a1b1c2d1 a2b1c2d1 a1b2c2d1 a2b2c2d1"),
		},
		"range limit exactly": {expr: "node[00000-65535]", want: seq("node", 0, 65535, 5, "")},
		"prefix group limit exactly": {
			expr: "a[0-32767,32768-65535]b[0]",
			want: seq("a", 0, 65535, 0, "b0"),
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Expand(tc.expr)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestExpandErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		expr string
		pos  int
		text string
		msg  string
	}{
		"decreasing range":        {expr: "node[3-1]", pos: 5, text: "3-1", msg: "decreasing"},
		"empty brackets":          {expr: "node[]", pos: 4, text: "[]", msg: "empty brackets"},
		"letters in range":        {expr: "node[a-b]", pos: 5, text: "a-b", msg: "not a number"},
		"unterminated":            {expr: "node[1-2", pos: 4, text: "[1-2", msg: "unterminated"},
		"unterminated then more":  {expr: "node[1-2,n3 x", pos: 4, text: "[1-2,n3 x", msg: "unterminated"},
		"extra closing bracket":   {expr: "node[1-2]]", pos: 9, text: "]", msg: "unmatched ']'"},
		"stray closing bracket":   {expr: "a]b", pos: 1, text: "]", msg: "unmatched ']'"},
		"negative number":         {expr: "node[-1]", pos: 5, text: "-1", msg: "negative"},
		"negative high bound":     {expr: "node[1--2]", pos: 5, text: "1--2", msg: "negative"},
		"range over the limit":    {expr: "node[00000-65536]", pos: 5, text: "00000-65536", msg: "too many hosts in range"},
		"huge range":              {expr: "n[0-18446744073709551615]", pos: 2, text: "0-18446744073709551615", msg: "too many hosts in range"},
		"empty string":            {expr: "", msg: "empty hostlist"},
		"only separators":         {expr: " ,\t\n", msg: "empty hostlist"},
		"empty item":              {expr: "n[1,,2]", pos: 1, text: "[1,,2]", msg: "empty item"},
		"leading comma":           {expr: "n[,1]", pos: 1, text: "[,1]", msg: "empty item"},
		"trailing comma":          {expr: "n[1,]", pos: 1, text: "[1,]", msg: "empty item"},
		"missing high bound":      {expr: "n[1-]", pos: 2, text: "1-", msg: "no upper bound"},
		"bare dash":               {expr: "n[-]", pos: 2, text: "-", msg: "not a number"},
		"three bounds":            {expr: "n[1-2-3]", pos: 2, text: "1-2-3", msg: "not a number"},
		"space inside brackets":   {expr: "n[ 1]", pos: 2, text: " 1", msg: "not a number"},
		"plus sign":               {expr: "n[+1]", pos: 2, text: "+1", msg: "not a number"},
		"hex":                     {expr: "n[0x1]", pos: 2, text: "0x1", msg: "not a number"},
		"nested brackets":         {expr: "a[1[2]]", pos: 1, text: "[1[", msg: "inside brackets"},
		"double open":             {expr: "a[[1]]", pos: 1, text: "[[", msg: "inside brackets"},
		"number too large":        {expr: "n[18446744073709551616]", pos: 2, text: "18446744073709551616", msg: "too large"},
		"error in a later token":  {expr: "a[1-2],b[2-1]", pos: 9, text: "2-1", msg: "decreasing"},
		"error in a prefix group": {expr: "a[2-1]b[1]", pos: 2, text: "2-1", msg: "decreasing"},
		"prefix group over the limit": {
			expr: "a[0-32767,0-32768]b[0-1]", pos: 1, text: "[0-32767,0-32768]", msg: "too many hosts in a bracket group",
		},
		"expansion over the limit": {
			expr: "a[0-65535]b[0-65535]", pos: 0, text: "a[0-65535]b[0-65535]", msg: "more than 4194304 hosts",
		},
		"total over the limit": {
			expr: "a[0-65535]b[0-63],c", pos: 18, text: "c", msg: "more than 4194304 hosts",
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Expand(tc.expr)
			assert.Nil(t, got)
			var he *HostlistError
			require.ErrorAs(t, err, &he)
			assert.Equal(t, tc.expr, he.Expr)
			assert.Equal(t, tc.pos, he.Pos)
			assert.Equal(t, tc.text, he.Text)
			assert.Contains(t, he.Msg, tc.msg)
			assert.Contains(t, err.Error(), tc.msg)
			if tc.text != "" {
				assert.Contains(t, err.Error(), fmt.Sprintf("%q at offset %d", tc.text, tc.pos))
			}
		})
	}
}

func TestHostlistErrorShortensLongText(t *testing.T) {
	expr := "n[" + strings.Repeat("1", 200)
	_, err := Expand(expr)
	var he *HostlistError
	require.ErrorAs(t, err, &he)
	assert.Equal(t, expr, he.Expr)
	assert.Equal(t, 1, he.Pos)
	assert.Equal(t, expr[1:1+maxErrText]+"...", he.Text)
	assert.Less(t, len(err.Error()), 300)
}

func TestExpandAppend(t *testing.T) {
	t.Run("appends", func(t *testing.T) {
		got, err := ExpandAppend([]string{"x"}, "n[1-2],m")
		require.NoError(t, err)
		assert.Equal(t, []string{"x", "n1", "n2", "m"}, got)
	})
	t.Run("uses spare capacity", func(t *testing.T) {
		dst := make([]string, 1, 8)
		got, err := ExpandAppend(dst, "n[1-3]")
		require.NoError(t, err)
		assert.Equal(t, []string{"", "n1", "n2", "n3"}, got)
		assert.Same(t, &dst[0], &got[0])
	})
	t.Run("error leaves dst alone", func(t *testing.T) {
		dst := []string{"x"}
		got, err := ExpandAppend(dst, "n[1-2],m[2-1]")
		require.Error(t, err)
		assert.Equal(t, []string{"x"}, got)
	})
}

// TestExpandSizesExactly checks the precount that expansion allocates from:
// every byte of the buffer is used, none is missing.
func TestExpandSizesExactly(t *testing.T) {
	for _, expr := range []string{
		"n[1-010]", "n[98-101]", "n[0000001-3]", "a[1-2]b[08-11]c[9-10]-ib", "plain,x[1]",
		"n[18446744073709551610-18446744073709551615]", "n[9999999999-10000000001]",
	} {
		t.Run(expr, func(t *testing.T) {
			p, err := parseHostlist(expr)
			require.NoError(t, err)
			names := p.appendNames(nil)
			assert.Len(t, names, int(p.hosts))
			total := 0
			for _, n := range names {
				total += len(n)
			}
			plain := 0
			for _, tok := range p.tokens {
				if tok.g0 == tok.g1 {
					plain += tok.end - tok.start
				}
			}
			assert.Equal(t, int(p.bytes), total-plain)
		})
	}
}

func TestCompress(t *testing.T) {
	for name, tc := range map[string]struct {
		hosts []string
		want  string
	}{
		// Appendix A and slurm-lab README §5 (scontrol 22.05.8 output).
		"gap":                       {hosts: []string{"node1", "node2", "node3", "node5"}, want: "node[1-3,5]"},
		"padding kept":              {hosts: []string{"node01", "node02", "node3"}, want: "node[01-02,3]"},
		"same number, other width":  {hosts: []string{"node01", "node1"}, want: "node[01,1]"},
		"incompatible widths":       {hosts: []string{"c09", "c010"}, want: "c[09,010]"},
		"duplicate kept in order":   {hosts: []string{"n1", "n2", "n3", "n2"}, want: "n[1-3,2]"},
		"descending":                {hosts: []string{"node10", "node9", "node08"}, want: "node[10,9,08]"},
		"only the trailing number":  {hosts: []string{"rack1-node01", "rack1-node02", "rack2-node01"}, want: "rack1-node[01-02],rack2-node01"},
		"no suffix compression":     {hosts: []string{"gpu0-ib", "gpu1-ib"}, want: "gpu0-ib,gpu1-ib"},
		"ascending":                 {hosts: []string{"a1", "a2", "a3"}, want: "a[1-3]"},
		"width grows":               {hosts: []string{"node9", "node10", "node11"}, want: "node[9-11]"},
		"padded after unpadded":     {hosts: []string{"a9", "a10", "a11", "a08"}, want: "a[9-11,08]"},
		"order across prefixes":     {hosts: []string{"b2", "a1", "a3", "a2"}, want: "b2,a[1,3,2]"},
		"interleaved prefixes":      {hosts: []string{"a1", "b1", "a2"}, want: "a1,b1,a2"},
		"repeated name":             {hosts: []string{"x1", "x1", "x2"}, want: "x[1,1-2]"},
		"two-level names":           {hosts: []string{"n1-r3", "n1-r4", "n2-r3", "n2-r4"}, want: "n1-r[3-4],n2-r[3-4]"},
		"single numbered name":      {hosts: []string{"gpu7"}, want: "gpu7"},
		"names without numbers":     {hosts: []string{"login", "login", "head"}, want: "login,login,head"},
		"numbered then plain":       {hosts: []string{"n1", "n2", "n"}, want: "n[1-2],n"},
		"all digits":                {hosts: []string{"1", "2", "3"}, want: "[1-3]"},
		"no names":                  {hosts: nil, want: ""},
		"empty names skipped":       {hosts: []string{"", "n1", "", "n2"}, want: "n[1-2]"},
		"zero does not join max":    {hosts: []string{"n18446744073709551615", "n0"}, want: "n[18446744073709551615,0]"},
		"number beyond 64 bits":     {hosts: []string{"n18446744073709551616", "n18446744073709551617"}, want: "n18446744073709551616,n18446744073709551617"},
		"width kept across the run": {hosts: []string{"n099", "n100", "n101"}, want: "n[099-101]"},
		"wider width breaks run":    {hosts: []string{"n9", "n010"}, want: "n[9,010]"},
	} {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, Compress(tc.hosts))
		})
	}
}

func TestCompressSplitsLongRuns(t *testing.T) {
	hosts, err := Expand("n[0-65535],n[65536-70000]")
	require.NoError(t, err)
	got := Compress(hosts)
	assert.Equal(t, "n[0-65535,65536-70000]", got)
	again, err := Expand(got)
	require.NoError(t, err)
	assert.Equal(t, hosts, again)
}

func TestCompressRoundTrip(t *testing.T) {
	for _, expr := range []string{
		"rack[1-2]-node[01-04]", "node[1-010]", "n[001-5],n[1-3],n2", "a[1-2]b[1-2]c[1-2]",
		"gpu[0-1]-ib,login,n[9-11,08]", "c09,c010,c[9-10]", "x[3,1,2,2],y[00-01]",
	} {
		t.Run(expr, func(t *testing.T) {
			hosts, err := Expand(expr)
			require.NoError(t, err)
			again, err := Expand(Compress(hosts))
			require.NoError(t, err)
			assert.Equal(t, hosts, again)
		})
	}
}

func TestExpandWriteHostnames(t *testing.T) {
	for name, exprs := range map[string][]string{
		"one expression":   {"rack[1-2]-node[01-04]"},
		"several in order": {"n[3,1]", "login", "a[1-2]b[1-2]c[1-2],gpu[0-1]-ib"},
		"plain names":      {"a,b c\td"},
		// More than the 256 KiB write buffer, so lines cross flushes.
		"large": {"node[00000-65535],x[1-3]y[00-99]", "z"},
	} {
		t.Run(name, func(t *testing.T) {
			var want []string
			for _, expr := range exprs {
				names, err := Expand(expr)
				require.NoError(t, err)
				want = append(want, names...)
			}
			var out strings.Builder
			require.NoError(t, WriteHostnames(&out, exprs...))
			assert.Equal(t, strings.Join(want, "\n")+"\n", out.String())
		})
	}
}

func TestExpandWriteHostnamesRejectsBeforeWriting(t *testing.T) {
	var out strings.Builder
	err := WriteHostnames(&out, "node[00000-65535]", "n[2-1]")
	var he *HostlistError
	require.ErrorAs(t, err, &he)
	assert.Equal(t, "n[2-1]", he.Expr)
	assert.Empty(t, out.String())
}

type failingWriter struct{ writes int }

func (w *failingWriter) Write(p []byte) (int, error) {
	w.writes++
	return 0, fmt.Errorf("disk full")
}

func TestExpandWriteHostnamesStopsOnWriteError(t *testing.T) {
	w := &failingWriter{}
	err := WriteHostnames(w, "node[00000-65535]", "node[00000-65535]")
	require.EqualError(t, err, "disk full")
	assert.Equal(t, 1, w.writes)
}

// TestExpandAllocatesOnce holds Expand to its memory budget: a million names
// cost their string headers and bytes, allocated once, and little else.
func TestExpandAllocatesOnce(t *testing.T) {
	var names []string
	allocs := testing.AllocsPerRun(1, func() {
		var err error
		names, err = Expand(bench1M)
		require.NoError(t, err)
	})
	require.Len(t, names, bench1MHosts)
	assert.LessOrEqual(t, allocs, 30.0, "allocations")

	output := 0
	for _, n := range names {
		output += int(unsafe.Sizeof(n)) + len(n)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	names, err := Expand(bench1M)
	runtime.ReadMemStats(&after)
	require.NoError(t, err)
	allocated := after.TotalAlloc - before.TotalAlloc
	assert.LessOrEqual(t, float64(allocated), 1.1*float64(output),
		"allocated %d bytes for %d bytes of output", allocated, output)
	runtime.KeepAlive(names)
}
