package supervise

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func init() {
	helpers.Register("flood", helperFlood)
}

// floodLine is line i of the flood helper: 100 bytes with its number.
func floodLine(i int) string {
	return fmt.Sprintf("line %08d %s\n", i, strings.Repeat("x", 86))
}

// helperFlood writes N numbered lines of 100 bytes to stdout, as fast as
// the pipe takes them.
func helperFlood(args []string) int {
	n, _ := strconv.Atoi(args[0])
	w := bufio.NewWriterSize(os.Stdout, 256<<10)
	for i := range n {
		w.WriteString(floodLine(i))
	}
	if w.Flush() != nil {
		return 1
	}
	return 0
}

// stalledWriter is a job stdout whose reader (srun) stopped reading: every
// Write blocks until release is closed.
type stalledWriter struct {
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (w *stalledWriter) Write(p []byte) (int, error) {
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *stalledWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// A stalled stdout must not block the process: it runs to its end, its log
// file gets every byte, and the output says how many lines it missed.
func TestSupervisorOutputStalled(t *testing.T) {
	const lines = 160_000 // 16 MB, eight times what the queue holds
	logPath := filepath.Join(t.TempDir(), "node1.flood.log")
	out := &stalledWriter{release: make(chan struct{})}
	var logs syncBuffer
	s := &Supervisor{Reaper: testReaper, Log: zerolog.New(&logs), Prefix: "node1", Output: out}
	released := sync.OnceFunc(func() { close(out.release) })
	t.Cleanup(func() {
		released()
		s.Shutdown("test over")
	})
	argv, env := helpers.Exec(t, "flood", strconv.Itoa(lines))
	type result struct {
		e   Exit
		err error
	}
	done := make(chan result, 1)
	go func() {
		e, err := s.RunOneshot(context.Background(), ProcSpec{Name: "flood", Argv: argv, Env: env, LogPath: logPath, Oneshot: true})
		done <- result{e, err}
	}()

	var res result
	select {
	case res = <-done:
	case <-time.After(waitTimeout):
		require.FailNow(t, "the process is blocked by the stalled output")
	}

	require.NoError(t, res.err)
	assert.Equal(t, 0, ExitCodeOf(res.e))
	assert.Positive(t, res.e.OutputDropped, "the exit counts the dropped lines")
	b, err := os.ReadFile(logPath)
	require.NoError(t, err)
	var want strings.Builder
	for i := range lines {
		want.WriteString(floodLine(i))
	}
	assert.True(t, want.String() == string(b), "the log file has every byte: %d bytes, want %d", len(b), want.Len())

	released()
	s.Shutdown("done")

	notice := regexp.MustCompile(`^\[node1 flood\] \.\.\. (\d+) lines dropped from this output \(stdout stalled\); the log file (.+) has them$`)
	data := regexp.MustCompile(`^\[node1 flood\] line (\d{8}) x{86}$`)
	delivered, dropped, last := 0, 0, -1
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		if m := notice.FindStringSubmatch(sc.Text()); m != nil {
			n, _ := strconv.Atoi(m[1])
			dropped += n
			assert.Equal(t, logPath, m[2])
			continue
		}
		m := data.FindStringSubmatch(sc.Text())
		if !assert.NotNil(t, m, "line %q", sc.Text()) {
			continue
		}
		i, _ := strconv.Atoi(m[1])
		assert.Greater(t, i, last, "lines in order")
		last = i
		delivered++
	}
	assert.Positive(t, dropped, "the output says that lines were dropped")
	assert.Equal(t, lines, delivered+dropped, "every line is either in the output or counted as dropped")
	assert.Contains(t, logs.String(), `"lines_dropped":`+strconv.Itoa(dropped), "the launcher log has the count")
}

// Shutdown does not wait forever for a stdout that never drains.
func TestSupervisorShutdownStalledOutput(t *testing.T) {
	out := &stalledWriter{release: make(chan struct{})}
	t.Cleanup(func() { close(out.release) }) // lets the writer goroutine end
	var logs syncBuffer
	s := &Supervisor{Reaper: testReaper, Log: zerolog.New(&logs), Prefix: "node1", Output: out}
	// Little enough for the pipe: the process ends even if the copy blocks.
	argv, env := helpers.Exec(t, "flood", "100")
	e, err := s.RunOneshot(context.Background(), ProcSpec{Name: "flood", Argv: argv, Env: env, Oneshot: true})
	require.NoError(t, err)
	require.Equal(t, 0, ExitCodeOf(e))

	done := make(chan struct{})
	go func() {
		s.Shutdown("done")
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		require.FailNow(t, "Shutdown waits for a stalled output")
	}
	assert.Contains(t, logs.String(), "output not written (stdout stalled)")
}
