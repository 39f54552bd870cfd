package dgcache

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writeKernels puts kernels in DeepGEMM's layout under the cache root dir,
// as a compile would leave them.
func writeKernels(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		k := filepath.Join(dir, cacheSubdir, kernelPrefix+n)
		require.NoError(t, os.MkdirAll(k, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(k, "kernel.cu"), []byte("// source of "+n+"\n"), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(k, cubinName), []byte("CUBIN "+n+strings.Repeat(".", 200)), 0o644))
	}
}

func kernelNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = "fp8_gemm." + strings.Repeat("0", 4) + string(rune('a'+i%26)) + string(rune('a'+i/26))
	}
	return names
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

// seedLeftovers lists Seed's temporary names under dir.
func seedLeftovers(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	require.NoError(t, filepath.WalkDir(dir, func(path string, _ os.DirEntry, err error) error {
		if strings.Contains(filepath.Base(path), seedMark) {
			found = append(found, path)
		}
		return err
	}))
	return found
}

func TestCountKernels(t *testing.T) {
	dir := t.TempDir()
	n, err := CountKernels(filepath.Join(dir, "never-compiled"))
	require.NoError(t, err)
	assert.Zero(t, n, "a node that never compiled has no kernels")

	writeKernels(t, dir, "a", "b", "c")
	// Not kernels: a kernel directory without its cubin (being written by
	// an older DeepGEMM), DeepGEMM's tmp/, a stray file, a cubin that is a
	// directory.
	require.NoError(t, os.MkdirAll(filepath.Join(dir, cacheSubdir, "kernel.partial"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "tmp", "kernel.x"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tmp", "kernel.x", cubinName), nil, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, cacheSubdir, "kernel.file"), nil, 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, cacheSubdir, "kernel.odd", cubinName), 0o755))
	n, err = CountKernels(dir)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
}

func TestSeed(t *testing.T) {
	entry, local := t.TempDir(), filepath.Join(t.TempDir(), "dg")
	names := kernelNames(5)
	writeKernels(t, entry, names...)
	require.NoError(t, os.WriteFile(filepath.Join(entry, CompleteFile), []byte(`{"key":"k"}`), 0o644))

	copied, skipped, err := Seed(entry, local)
	require.NoError(t, err)
	assert.Equal(t, 10, copied, "two files per kernel")
	assert.Zero(t, skipped)
	n, err := CountKernels(local)
	require.NoError(t, err)
	assert.Equal(t, 5, n)
	assert.NoFileExists(t, filepath.Join(local, CompleteFile), "only DeepGEMM's tree is seeded")
	for _, name := range names {
		for _, f := range []string{"kernel.cu", cubinName} {
			rel := filepath.Join(cacheSubdir, kernelPrefix+name, f)
			assert.Equal(t, readFile(t, filepath.Join(entry, rel)), readFile(t, filepath.Join(local, rel)))
		}
	}

	t.Run("again", func(t *testing.T) {
		copied, skipped, err := Seed(entry, local)
		require.NoError(t, err)
		assert.Zero(t, copied)
		assert.Equal(t, 10, skipped)
	})

	t.Run("damaged local files are replaced", func(t *testing.T) {
		k0 := filepath.Join(local, cacheSubdir, kernelPrefix+names[0], cubinName)
		want0 := readFile(t, k0)
		// Same size, other content: only the hash tells.
		require.NoError(t, os.WriteFile(k0, []byte(strings.Repeat("X", len(want0))), 0o644))
		k1 := filepath.Join(local, cacheSubdir, kernelPrefix+names[1], "kernel.cu")
		want1 := readFile(t, k1)
		require.NoError(t, os.WriteFile(k1, []byte("trunc"), 0o644))

		copied, skipped, err := Seed(entry, local)
		require.NoError(t, err)
		assert.Equal(t, 2, copied)
		assert.Equal(t, 8, skipped)
		assert.Equal(t, want0, readFile(t, k0))
		assert.Equal(t, want1, readFile(t, k1))
	})
	assert.Empty(t, seedLeftovers(t, local))
}

// A node-local directory with an older, partial copy and kernels of its
// own (compiled at runtime) is completed, and keeps its own kernels.
func TestSeedCompletesPartialCopy(t *testing.T) {
	entry, local := t.TempDir(), t.TempDir()
	writeKernels(t, entry, "a", "b")
	require.NoError(t, os.MkdirAll(filepath.Join(local, cacheSubdir, "kernel.a"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(local, cacheSubdir, "kernel.a", "kernel.cu"), []byte("// source of a\n"), 0o644))
	writeKernels(t, local, "own")

	copied, skipped, err := Seed(entry, local)
	require.NoError(t, err)
	assert.Equal(t, 3, copied, "a's cubin and b's two files")
	assert.Equal(t, 1, skipped, "a's source was already there")
	n, err := CountKernels(local)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	assert.FileExists(t, filepath.Join(local, cacheSubdir, "kernel.own", cubinName))
	assert.Empty(t, seedLeftovers(t, local))
}

// A worker reading the node-local directory while Seed fills it never finds
// a kernel directory without its cubin, nor a cubin with part of its
// content.
func TestSeedNeverShowsPartialKernels(t *testing.T) {
	entry, local := t.TempDir(), t.TempDir()
	names := kernelNames(300)
	writeKernels(t, entry, names...)
	want := readFile(t, filepath.Join(entry, cacheSubdir, kernelPrefix+names[0], cubinName))
	var (
		done    = make(chan struct{})
		wg      sync.WaitGroup
		partial atomic.Value
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			entries, _ := os.ReadDir(filepath.Join(local, cacheSubdir))
			for _, e := range entries {
				if !strings.HasPrefix(e.Name(), kernelPrefix) {
					continue
				}
				b, err := os.ReadFile(filepath.Join(local, cacheSubdir, e.Name(), cubinName))
				if err != nil || len(b) != len(want) {
					partial.Store(e.Name())
				}
			}
		}
	}()
	_, _, err := Seed(entry, local)
	close(done)
	wg.Wait()
	require.NoError(t, err)
	assert.Nil(t, partial.Load(), "a reader saw a partial kernel")
}

func TestSeedErrorsNameThePaths(t *testing.T) {
	t.Run("entry without kernels", func(t *testing.T) {
		entry, local := t.TempDir(), t.TempDir()
		_, _, err := Seed(entry, local)
		require.Error(t, err)
		assert.Contains(t, err.Error(), entry)
		assert.Contains(t, err.Error(), local)
	})
	t.Run("a file in the way of a kernel directory", func(t *testing.T) {
		entry, local := t.TempDir(), t.TempDir()
		writeKernels(t, entry, "a")
		require.NoError(t, os.MkdirAll(filepath.Join(local, cacheSubdir), 0o755))
		inTheWay := filepath.Join(local, cacheSubdir, "kernel.a")
		require.NoError(t, os.WriteFile(inTheWay, nil, 0o644))
		_, _, err := Seed(entry, local)
		require.Error(t, err)
		assert.Contains(t, err.Error(), inTheWay)
	})
}

func TestCompleteRoundTrip(t *testing.T) {
	dir := t.TempDir()
	c := Complete{
		Format: Format, Key: "0123456789abcdef", Role: "decode", Inputs: baseInputs().Describe(),
		JobID: "4242", Host: "gpu05", Image: "img", Duration: 12*time.Minute + 3500*time.Millisecond,
		Kernels: 40, SGLangVersion: "0.5.6.post2", Warning: "published anyway",
		Created: time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC),
	}
	require.NoError(t, writeComplete(dir, c))
	var raw map[string]any
	require.NoError(t, json.Unmarshal([]byte(readFile(t, filepath.Join(dir, CompleteFile))), &raw))
	assert.Equal(t, "12m3.5s", raw["duration"], "people read the file")
	assert.Equal(t, "", raw["deepgemm_version"], "unknown versions are written empty")
	got, err := ReadComplete(dir)
	require.NoError(t, err)
	assert.Equal(t, c, got)

	assert.Error(t, writeComplete(dir, c), "never overwritten")
}

func TestReadCompleteErrors(t *testing.T) {
	for name, content := range map[string]string{
		"not JSON":     "{",
		"no key":       `{"role":"decode"}`,
		"bad duration": `{"key":"k","duration":"soon"}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(dir, CompleteFile), []byte(content), 0o644))
			_, err := ReadComplete(dir)
			require.Error(t, err)
			assert.Contains(t, err.Error(), filepath.Join(dir, CompleteFile))
		})
	}
}

// A Seed killed half-way leaves temporary names behind; the next Seed into
// the same node-local cache removes those of dead processes and keeps a
// live one's (another job seeding at this moment).
func TestSeedRemovesWhatAKilledSeedLeft(t *testing.T) {
	entry, local := t.TempDir(), t.TempDir()
	writeKernels(t, entry, "a", "b")
	cache := filepath.Join(local, cacheSubdir)
	// A process id no process has: past the kernel's pid_max.
	dead := filepath.Join(cache, ".kernel.a"+seedMark+"4194999-0badc0de")
	require.NoError(t, os.MkdirAll(filepath.Join(dead, "sub"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dead, cubinName), []byte("half"), 0o644))
	deadFile := filepath.Join(cache, "kernel.b", "."+cubinName+seedMark+"4194999-12345678")
	require.NoError(t, os.MkdirAll(filepath.Dir(deadFile), 0o755))
	require.NoError(t, os.WriteFile(deadFile, []byte("half"), 0o644))
	live := filepath.Join(cache, ".kernel.c"+seedMark+strconv.Itoa(os.Getpid())+"-feedbeef")
	require.NoError(t, os.MkdirAll(live, 0o755))

	_, _, err := Seed(entry, local)
	require.NoError(t, err)
	assert.Equal(t, []string{live}, seedLeftovers(t, local), "only the live seed's")
	n, err := CountKernels(local)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
}
