package main

import (
	"bytes"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSummarize(t *testing.T) {
	in := "noise\nFIGURE a.wall_ms 3 ms\nFIGURE b 10 x\nFIGURE a.wall_ms 1 ms\nFIGURE a.wall_ms 2.5 ms\nFIGURE a.wall_ms 100 ms\n"
	var out bytes.Buffer
	require.NoError(t, summarize(strings.NewReader(in), &out))
	assert.Equal(t, "SUMMARY a.wall_ms 4 1 2.75 100 ms\nSUMMARY b 1 10 10 10 x\n", out.String())

	assert.ErrorContains(t, summarize(strings.NewReader("FIGURE a 1 ms\nFIGURE a 2 s\n"), io.Discard), "before in ms")
	assert.ErrorContains(t, summarize(strings.NewReader("FIGURE a x ms\n"), io.Discard), "line 1")
}

func TestPair(t *testing.T) {
	tr, err := exec.LookPath("true")
	if err != nil {
		t.Fatal("needs true (coreutils)")
	}
	var out, log bytes.Buffer
	require.NoError(t, pair([]string{"-n", "3", "-prefix", "p", "a=" + tr, "b=" + tr + " x"}, &out, &log))
	var sum bytes.Buffer
	require.NoError(t, summarize(&out, &sum))
	lines := strings.Split(strings.TrimSpace(sum.String()), "\n")
	require.Len(t, lines, 7, sum.String())
	for i, prefix := range []string{"p.a.wall_ms 3 ", "p.a.cpu_ms 3 ", "p.a.peak_rss_kib 3 ", "p.b.wall_ms 3 ", "p.b.cpu_ms 3 ", "p.b.peak_rss_kib 3 ", "p.b/a.ratio 3 "} {
		assert.True(t, strings.HasPrefix(lines[i], "SUMMARY "+prefix), lines[i])
	}
	assert.Contains(t, log.String(), "b/a")

	false_, err := exec.LookPath("false")
	require.NoError(t, err)
	assert.ErrorContains(t, pair([]string{"-n", "1", "f=" + false_}, io.Discard, io.Discard), "exit status 1")
	assert.Error(t, pair([]string{"nocommand"}, io.Discard, io.Discard))
}
