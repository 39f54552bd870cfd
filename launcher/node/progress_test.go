package node

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/wideep/wideep-launch/launcher/deploy"
)

// The milestones as SGLang prints them (model_runner.py, the safetensors
// loader's tqdm bar, deep_gemm_wrapper/compile_utils.py, the HTTP server).
func TestProgressMilestones(t *testing.T) {
	for _, tc := range []struct {
		lines     []string
		milestone string
		startedUp bool
	}{
		{[]string{"[2026-11-30 10:00:01 TP0] Load weight begin. avail mem=79.10 GB"}, "loading weights", false},
		{[]string{"Load weight begin.", "Loading safetensors checkpoint shards:  45% Completed | 73/163 [01:02<01:15,  1.2it/s]"},
			"loading weights 45%", false},
		// tqdm redraws with carriage returns: the last state counts.
		{[]string{"Loading safetensors checkpoint shards:   0% Completed | 0/163\rLoading safetensors checkpoint shards:  12% Completed | 20/163\r"},
			"loading weights 12%", false},
		{[]string{"Load weight end. type=DeepseekV3ForCausalLM, dtype=torch.bfloat16, avail mem=21.30 GB"}, "weights loaded", false},
		{[]string{"Entering DeepGEMM JIT Pre-Compile session. It may take a long time (typically 10-20 mins) if you have not run `sglang.compile_deep_gemm`."},
			"compiling DeepGEMM kernels", false},
		{[]string{"Try DeepGEMM JIT Compiling for <GEMM_NT_F8F8BF16> N=24576, K=1536, num_groups=1 with all Ms."}, "compiling DeepGEMM kernels", false},
		{[]string{"Capture cuda graph begin. This can take up to several minutes. avail mem=20.10 GB"}, "capturing CUDA graphs", false},
		{[]string{"Capture cuda graph begin.", "Capture cuda graph end. Time elapsed: 35.21 s. mem usage=1.20 GB."}, "CUDA graphs captured", true},
		{[]string{"The server is fired up and ready to roll!"}, "serving", true},
		// A line that is no milestone keeps the last one.
		{[]string{"Load weight end.", "[TP3] some other line"}, "weights loaded", false},
		{[]string{"nothing to see"}, "", false},
	} {
		t.Run(tc.milestone+"/"+tc.lines[len(tc.lines)-1], func(t *testing.T) {
			pt := newProgressTracker(time.Now)
			for _, l := range tc.lines {
				pt.line(7, "decode", []byte(l+"\n"))
			}
			st, ok := pt.status("decode", false)
			require.True(t, ok)
			assert.Equal(t, tc.milestone, st.Milestone)
			assert.Equal(t, tc.startedUp, st.StartedUp)
			assert.Equal(t, len(tc.lines), st.Lines)
		})
	}
}

// Silence counts from the last output, or from the start before any; the
// last lines are kept in order, long ones cut; a new process under the
// same name (a new PID) starts afresh.
func TestProgressSilenceLinesAndRestart(t *testing.T) {
	now := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	pt := newProgressTracker(func() time.Time { return now })
	pt.started(7, "decode")
	now = now.Add(4 * time.Second)
	st, ok := pt.status("decode", false)
	require.True(t, ok)
	assert.Equal(t, 4*time.Second, st.Silent, "silent since its start")

	for i := range lastLinesKept + 5 {
		pt.line(7, "decode", []byte(fmt.Sprintf("line %d\n", i)))
	}
	pt.line(7, "decode", []byte("Load weight begin. "+strings.Repeat("x", 400)+"\n"))
	now = now.Add(7 * time.Second)
	st, _ = pt.status("decode", true)
	assert.Equal(t, 7*time.Second, st.Silent, "silent since its last line")
	assert.Equal(t, lastLinesKept+6, st.Lines)
	require.Len(t, st.LastLines, lastLinesKept)
	assert.Equal(t, fmt.Sprintf("line %d", 6), st.LastLines[0], "the oldest kept")
	last := st.LastLines[lastLinesKept-1]
	assert.True(t, strings.HasSuffix(last, "…"), "a long line is cut")
	assert.Len(t, []rune(last), 301)
	assert.Equal(t, "loading weights", st.Milestone)

	pt.line(9, "decode", []byte("restarted\n"))
	st, _ = pt.status("decode", true)
	assert.Equal(t, 9, st.PID)
	assert.Equal(t, 1, st.Lines, "a new process starts afresh")
	assert.Empty(t, st.Milestone)
	assert.Equal(t, []string{"restarted"}, st.LastLines)

	_, ok = pt.status("prefill", false)
	assert.False(t, ok, "a process never seen")
}

// Node 0's one line for the whole job while it waits for READY: per role,
// how many nodes report which phase, and the quietest worker with its last
// milestone; a node that sent nothing yet counts as not started.
func TestProgressLine(t *testing.T) {
	spec := deploy.DefaultSpec()
	spec.ResolveGPUs(0)
	spec.PrefillWorkers, spec.PrefillNodesPerWorker = 1, 2
	spec.DecodeWorkers, spec.DecodeNodesPerWorker = 1, 2
	hosts := []string{"gpu01", "gpu02", "gpu03", "gpu04"}
	plan, err := deploy.NewPlan(spec, "7", hosts, nil)
	require.NoError(t, err)
	reports := map[int]nodeReport{
		0: {Phase: "starting", Procs: map[string]ProcStatus{"prefill": {Silent: 3 * time.Second, Milestone: "loading weights 40%"}}},
		1: {Phase: "starting", Procs: map[string]ProcStatus{"prefill": {Silent: 95 * time.Second, Milestone: "capturing CUDA graphs"}}},
		2: {Phase: "ready", Procs: map[string]ProcStatus{"decode": {Silent: time.Second, Milestone: "serving"}}},
	}
	assert.Equal(t, `prefill 2 nodes: 2 starting (quietest: node 1 (gpu02), silent 1m35s, last milestone "capturing CUDA graphs"); `+
		`decode 2 nodes: 1 not started, 1 ready (quietest: node 2 (gpu03), silent 1s, last milestone "serving")`,
		progressLine(plan, reports))
	assert.Equal(t, "prefill 2 nodes: 2 not started; decode 2 nodes: 2 not started", progressLine(plan, nil))
}
