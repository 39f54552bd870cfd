package supervise

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// cpusOf runs a shell that reports its own Cpus_allowed_list, started with
// cpus (nil: inherited).
func cpusOf(t *testing.T, cpus *unix.CPUSet) string {
	t.Helper()
	s := &Supervisor{Reaper: testReaper, Log: zerolog.Nop(), Output: io.Discard, Prefix: "t"}
	log := filepath.Join(t.TempDir(), "cpus.log")
	e, err := s.RunOneshot(context.Background(), ProcSpec{Name: "cpus", Argv: []string{"sh", "-c", "grep Cpus_allowed_list /proc/self/status"},
		LogPath: log, Oneshot: true, CPUs: cpus})
	require.NoError(t, err)
	require.Equal(t, 0, ExitCodeOf(e))
	b, err := os.ReadFile(log)
	require.NoError(t, err)
	_, list, _ := strings.Cut(strings.TrimSpace(string(b)), ":")
	return strings.TrimSpace(list)
}

func TestProcessesStartWithTheGivenCPUs(t *testing.T) {
	own, allowed, err := AllowedCPUs()
	require.NoError(t, err)
	require.GreaterOrEqual(t, allowed.Count(), own.Count())
	require.GreaterOrEqual(t, allowed.Count(), 2, "this test needs 2 CPUs (the CI machine has 2)")
	first := -1
	for i := 0; i < 1024 && first < 0; i++ {
		if allowed.IsSet(i) {
			first = i
		}
	}
	var one unix.CPUSet
	one.Set(first)
	assert.Equal(t, strconv.Itoa(first), cpusOf(t, &one), "pinned to one CPU")
	// The starter thread went back to its own set after that start.
	assert.Equal(t, fmtCPUs(own), cpusOf(t, nil), "inherited: the launcher's own set, not the last process's")
	assert.Equal(t, fmtCPUs(allowed), cpusOf(t, &allowed), "given every allowed CPU")
}

// fmtCPUs writes a set as the kernel's list format, e.g. "0-3,6".
func fmtCPUs(set unix.CPUSet) string {
	var parts []string
	for i := 0; i < 1024; i++ {
		if !set.IsSet(i) {
			continue
		}
		j := i
		for j+1 < 1024 && set.IsSet(j+1) {
			j++
		}
		if j == i {
			parts = append(parts, strconv.Itoa(i))
		} else {
			parts = append(parts, strconv.Itoa(i)+"-"+strconv.Itoa(j))
		}
		i = j
	}
	return strings.Join(parts, ",")
}
