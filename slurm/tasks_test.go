package slurm

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseTasksPerNode(t *testing.T) {
	for name, tc := range map[string]struct {
		in   string
		want []int
	}{
		"one node":                {in: "1", want: []int{1}},
		"repeat then single":      {in: "2(x3),1", want: []int{2, 2, 2, 1}},
		"one per node on 8 nodes": {in: "1(x8)", want: []int{1, 1, 1, 1, 1, 1, 1, 1}},
		"several runs":            {in: "4(x2),8,2(x1)", want: []int{4, 4, 8, 2}},
		"zero tasks":              {in: "0", want: []int{0}},
		"leading zeros":           {in: "02(x02)", want: []int{2, 2}},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ParseTasksPerNode(tc.in)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestParseTasksPerNodeErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		in   string
		want string // a part of the message besides the input itself
	}{
		"empty":               {in: "", want: "empty"},
		"empty item":          {in: "1,,2", want: `item "" at offset 2: empty item`},
		"trailing comma":      {in: "1,", want: `item "" at offset 2`},
		"letters":             {in: "a", want: `"a" is not a number`},
		"negative":            {in: "-1", want: `"-1" is not a number`},
		"plus sign":           {in: "+1", want: `"+1" is not a number`},
		"space":               {in: "1, 2", want: `" 2" is not a number`},
		"missing x":           {in: "2(3)", want: "missing 'x'"},
		"missing paren":       {in: "2(x3", want: "missing ')'"},
		"nothing before (":    {in: "(x3)", want: "task count: missing number"},
		"empty repeat":        {in: "2(x)", want: "repeat count: missing number"},
		"zero repeat":         {in: "2(x0)", want: "repeat count is 0"},
		"text after )":        {in: "2(x3)4", want: "missing ')'"},
		"nested":              {in: "2(x(x3))", want: "repeat count"},
		"overflow":            {in: "99999999999", want: "too large"},
		"too many nodes":      {in: "1(x4194304),1", want: "more than 4194304 nodes"},
		"uppercase X":         {in: "2(X3)", want: "missing 'x'"},
		"space inside parens": {in: "2(x 3)", want: "repeat count"},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ParseTasksPerNode(tc.in)
			assert.Nil(t, got)
			require.Error(t, err)
			assert.Contains(t, err.Error(), fmt.Sprintf("%q", tc.in))
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// formatTasksPerNode writes counts the way Slurm does, for the fuzz check.
func formatTasksPerNode(counts []int) string {
	var b strings.Builder
	for i := 0; i < len(counts); {
		j := i
		for j < len(counts) && counts[j] == counts[i] {
			j++
		}
		if i > 0 {
			b.WriteByte(',')
		}
		if j-i > 1 {
			fmt.Fprintf(&b, "%d(x%d)", counts[i], j-i)
		} else {
			fmt.Fprintf(&b, "%d", counts[i])
		}
		i = j
	}
	return b.String()
}

func FuzzParseTasksPerNode(f *testing.F) {
	for _, s := range []string{
		"1", "2(x3),1", "1(x8)", "4(x2),8,2(x1)", "0", "", "1,,2", "2(x3", "(x3)", "2(x0)",
		"99999999999", "1(x4194304)", "2(x(x3))", "-1", "2(X3)",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseTasksPerNode(s)
		if err != nil {
			require.Nil(t, got)
			require.Contains(t, err.Error(), fmt.Sprintf("%q", s))
			return
		}
		require.NotEmpty(t, got)
		require.Empty(t, strings.Trim(s, "0123456789(x),"), "accepted characters outside the format")
		require.Equal(t, -1, slices.IndexFunc(got, func(n int) bool { return n < 0 }), "negative count")
		again, err := ParseTasksPerNode(formatTasksPerNode(got))
		require.NoError(t, err)
		// slices.Equal, not require.Equal: inputs may expand to millions of counts.
		require.True(t, slices.Equal(got, again), "re-encoded %q parses differently", s)
	})
}
