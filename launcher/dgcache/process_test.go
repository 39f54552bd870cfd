package dgcache

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Two launcher processes of one layout claim the entry at once: exactly one
// publishes, the other waits and reuses it.
func TestConcurrentClaimersInTwoProcesses(t *testing.T) {
	dir, signals := t.TempDir(), t.TempDir()
	local := compiled(t, 3)
	var (
		cmds []*exec.Cmd
		outs []*bytes.Buffer
	)
	for _, job := range []string{"11", "12"} {
		cmd := helpers.Command(t, "claim", dir, testKey, local, job, signals)
		out, errOut := &bytes.Buffer{}, &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = out, errOut
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { t.Logf("job %s stderr: %s", job, errOut) })
		cmds, outs = append(cmds, cmd), append(outs, out)
	}
	for i, cmd := range cmds {
		require.NoError(t, cmd.Wait(), "helper %d", i)
	}
	got := []string{strings.TrimSpace(outs[0].String()), strings.TrimSpace(outs[1].String())}
	slices.Sort(got)
	assert.Equal(t, []string{"hit", "published 3"}, got)

	c := newCache(dir, nil)
	path, hit, err := c.Lookup("prefill", testKey)
	require.NoError(t, err)
	require.True(t, hit)
	comp, err := ReadComplete(path)
	require.NoError(t, err)
	winner := "11"
	if got := strings.TrimSpace(outs[1].String()); got != "hit" {
		winner = "12"
	}
	assert.Equal(t, winner, comp.JobID)
	loser := map[string]string{"11": "12", "12": "11"}[winner]
	assert.FileExists(t, filepath.Join(signals, "waiting-"+loser), "the job that reused the entry had waited")
	assert.NoFileExists(t, filepath.Join(signals, "waiting-"+winner))
}

// A job SIGKILLed in the middle of a publish leaves its lock and its staging
// directory. The next job (here an hour later) breaks the lock with a
// warning, removes the staging directory and publishes.
func TestClaimAfterPublisherWasKilled(t *testing.T) {
	dir := t.TempDir()
	ready := filepath.Join(t.TempDir(), "ready")
	cmd := helpers.Command(t, "hang", dir, testKey, compiled(t, 3), ready)
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	require.NoError(t, cmd.Start())
	awaitFile(t, ready)
	final := filepath.Join(dir, EntryName("prefill", testKey))
	left := stagings(t, final)
	require.Len(t, left, 1, "the killed job was staging")
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	require.Error(t, cmd.Wait())
	require.FileExists(t, filepath.Join(dir, ".prefill-"+testKey+".lock"), "a killed job leaves its lock")
	require.NoDirExists(t, final, "and no entry")

	logs := &logBuf{}
	c := newCache(dir, logs)
	c.Now = func() time.Time { return time.Now().Add(time.Hour) }
	cl, hit, err := c.Claim(testContext(t), "prefill", testKey, owner("next"), nil)
	require.NoError(t, err, "helper stderr: %s", errOut.String())
	require.False(t, hit)
	assert.Contains(t, logs.String(), "broke the stale lock")
	assert.Contains(t, logs.String(), "job killed")
	assert.Contains(t, logs.String(), "removed a DeepGEMM cache staging directory")
	assert.NoDirExists(t, left[0])

	n, err := cl.Publish(compiled(t, 2), Complete{})
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	comp, err := ReadComplete(final)
	require.NoError(t, err)
	assert.Equal(t, "next", comp.JobID)
	assert.Empty(t, stagings(t, final))
}
