package node

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/launcher/exitcode"
	"github.com/wideep/wideep-launch/launcher/rendezvous"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func withStall(c *cluster, d time.Duration) {
	for _, n := range c.nodes {
		n.Options.StallTimeout = d
	}
}

// A worker that goes silent during its start-up (a hang in NCCL or DeepEP
// initialisation) ends the job after the stall timeout, not the health
// timeout: every node names node 4, its worker and what it last said.
func TestMultiNodeStalledWorkerEndsTheJob(t *testing.T) {
	c := newCluster(t, "WIDEEP_SIM_FAIL=node5:hang")
	withStall(c, 2*time.Second)
	c.start()
	errs := c.wait(time.Minute)
	const want = "node 4 (node5): decode worker 0 stalled: no output for "
	for i, err := range errs {
		require.Error(t, err, "node %d", i)
		assert.Contains(t, err.Error(), want, "node %d", i)
		assert.Equal(t, 125, exitCode(err), "node %d", i)
	}
	var se *StallError
	require.ErrorAs(t, errs[4], &se)
	assert.Equal(t, "loading weights", se.Last, "the last milestone it reached")
	assert.True(t, hasLine(c.logs[4].String(), "stalled", "Load weight begin"), "node 4 logs the worker's last lines")

	s, err := ReadSummary(filepath.Join(c.work, "logs", c.jobID))
	require.NoError(t, err)
	assert.Equal(t, OutcomeStalled, s.Outcome)
	require.NotNil(t, s.FirstFailure)
	assert.Equal(t, 4, s.FirstFailure.Node)
	assert.True(t, slices.ContainsFunc(s.FirstFailure.LastLines, func(l string) bool { return strings.Contains(l, "Load weight begin") }),
		"the summary has the worker's last lines: %q", s.FirstFailure.LastLines)
	checkSummaryGolden(t, s, "summary-stalled.json")
	assert.Empty(t, ourChildren(t))
}

// A worker that is slow but keeps printing is alive: no stall, READY.
func TestMultiNodeSlowButPrintingIsNotStalled(t *testing.T) {
	c := newCluster(t, "WIDEEP_SIM_STARTUP_DELAY=4s")
	withStall(c, 2*time.Second)
	c.start()
	require.Eventually(t, func() bool { _, err := os.Stat(c.endpointFile()); return err == nil },
		time.Minute, 20*time.Millisecond, "READY despite a start-up twice the stall timeout")
	c.waitLog(10*time.Second, "deployment READY (node 0)")
	for _, s := range c.sigs {
		s <- syscall.SIGTERM
	}
	for i, err := range c.wait(time.Minute) {
		var st *StoppedError
		assert.ErrorAs(t, err, &st, "node %d", i)
	}
	s, err := ReadSummary(filepath.Join(c.work, "logs", c.jobID))
	require.NoError(t, err)
	assert.Equal(t, OutcomeReadyStopped, s.Outcome)
	assert.True(t, s.Ready)
	assert.Nil(t, s.FirstFailure)
	checkSummaryGolden(t, s, "summary-ready-stopped.json")
}

// The first failure of a failed job, with the last lines of the process:
// node 5's decode worker is killed once the deployment is READY.
func TestMultiNodeSummaryOfAFailedJob(t *testing.T) {
	c := newCluster(t)
	c.start()
	require.Eventually(t, func() bool { _, err := os.Stat(c.endpointFile()); return err == nil },
		time.Minute, 20*time.Millisecond)
	c.waitLog(10*time.Second, "deployment READY (node 0)")
	rec := readRecord(t, filepath.Join(c.work, "records"), "node6", "decode")
	require.NoError(t, syscall.Kill(rec.PID, syscall.SIGKILL))
	errs := c.wait(time.Minute)
	var ae *rendezvous.AbortError
	require.ErrorAs(t, errs[0], &ae)
	s, err := ReadSummary(filepath.Join(c.work, "logs", c.jobID))
	require.NoError(t, err)
	assert.Equal(t, OutcomeFailed, s.Outcome)
	require.NotNil(t, s.FirstFailure)
	assert.Equal(t, Failure{Node: 5, Host: "node6", Process: "decode", Code: 137,
		Message: "node 5 (node6): process decode killed by SIGKILL (exit code 137)", LastLines: s.FirstFailure.LastLines}, *s.FirstFailure)
	require.NotEmpty(t, s.FirstFailure.LastLines)
	assert.Contains(t, s.FirstFailure.LastLines[len(s.FirstFailure.LastLines)-1], "serving")
	checkSummaryGolden(t, s, "summary-failed.json")
}

var (
	maskDurations = regexp.MustCompile(`\b\d+(\.\d+)?(ns|µs|ms|s|m)\b`)
	maskKeys      = regexp.MustCompile(`-[0-9a-f]{16}\b`)
	maskPIDs      = regexp.MustCompile(`\b(pid|PID) \d+`)
)

// checkSummaryGolden compares s with testdata/name once what changes from
// run to run is masked: times, durations, paths, ports, pids, cache keys.
func checkSummaryGolden(t *testing.T, s Summary, name string) {
	t.Helper()
	s.Started, s.Ended, s.ReadyAfter, s.LogDir = time.Time{}, time.Time{}, 0, "<log-dir>"
	if s.Endpoint != "" {
		s.Endpoint = "<endpoint>"
	}
	for i := range s.Nodes {
		n := &s.Nodes[i]
		n.Logs = "<log-dir>/" + filepath.Base(n.Logs)
		// How far each node got depends on timing; that it reported its
		// timeline does not.
		assert.NotEmpty(t, n.Timeline, "node %d reported its timeline", n.Index)
		n.Timeline = nil
		for k, p := range n.Procs {
			p.PID, p.Silent, p.Lines, p.LastLines = 0, 0, 0, nil
			n.Procs[k] = p
		}
	}
	if f := s.FirstFailure; f != nil {
		f.LastLines = nil // asserted by the tests themselves; they hold ports and timings
	}
	for i := range s.DeepGEMM {
		s.DeepGEMM[i].Set = maskKeys.ReplaceAllString(s.DeepGEMM[i].Set, "-<key>")
	}
	b, err := json.MarshalIndent(s, "", "  ")
	require.NoError(t, err)
	b = maskDurations.ReplaceAll(b, []byte("<d>"))
	b = maskPIDs.ReplaceAll(b, []byte("$1 <pid>"))
	b = append(b, '\n')
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, b, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run with -update to create %s", path)
	assert.Equal(t, string(want), string(b), "differs from %s (-update rewrites it)", path)
}

// An image holding another SGLang than the plan was made for is refused on
// every node before anything starts, exit 2.
func TestMultiNodeImageWithAnotherSGLang(t *testing.T) {
	c := newCluster(t, "WIDEEP_SIM_SGLANG_VERSION=0.5.9")
	c.start()
	for i, err := range c.wait(time.Minute) {
		require.Error(t, err, "node %d", i)
		assert.Equal(t, exitcode.Input, exitCode(err), "node %d exits 2", i)
		assert.Contains(t, err.Error(), `barrier "versions" failed on`, "node %d", i)
		assert.Contains(t, err.Error(), "the image holds SGLang 0.5.9, but the plan is made for SGLang 0.5.6.post2", "node %d", i)
		assert.Contains(t, err.Error(), "pass --sglang-version 0.5.9", "node %d", i)
	}
	entries, _ := os.ReadDir(filepath.Join(c.work, "records"))
	assert.Empty(t, entries, "nothing was started")
	assert.Empty(t, ourChildren(t))
}
