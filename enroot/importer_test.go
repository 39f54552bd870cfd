package enroot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/enroot/standin"
)

func init() {
	helpers.Register("enroot", func(args []string) int {
		return standin.Main(args, os.LookupEnv, os.Stdout, os.Stderr)
	})
	// ensure WRAPPER CACHE JOB REF LOCK_INTERVAL: a launcher importing REF.
	helpers.Register("ensure", func(args []string) int {
		interval, err := time.ParseDuration(args[4])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		im, err := ParseImage(args[3])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		m := &Importer{
			Bin: args[0], CacheDir: args[1], JobID: args[2], Host: "killed-node",
			Env: os.Environ(), Run: runCommand, LockInterval: interval, Log: zerolog.Nop(),
		}
		path, imported, err := m.Ensure(context.Background(), im)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(path, imported)
		return 0
	})
}

// runCommand is the Run of the tests: the real command, killed with us (as
// the launcher's children are), its output kept for the error.
func runCommand(ctx context.Context, argv, env []string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, out)
	}
	return nil
}

// syncBuffer is a log sink that goroutines may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type importWorld struct {
	wrapper, cache, record string
	image                  Image
}

func newImportWorld(t *testing.T) *importWorld {
	t.Helper()
	im, err := ParseImage("nvcr.io#nvidia/pytorch:25.01-py3")
	require.NoError(t, err)
	dir := t.TempDir()
	return &importWorld{
		wrapper: enrootWrapper(t), cache: filepath.Join(dir, "cache"),
		record: filepath.Join(dir, "record.jsonl"), image: im,
	}
}

func (w *importWorld) importer(job string, delay time.Duration, log *syncBuffer) *Importer {
	return &Importer{
		Bin: w.wrapper, CacheDir: w.cache, JobID: job, Host: "node-" + job,
		Env: testEnv("WIDEEP_ENROOT_RECORD="+w.record, "WIDEEP_ENROOT_IMPORT_DELAY="+delay.String(),
			"ENROOT_MAX_PROCESSORS=2"),
		// A lock interval long enough that a loaded machine never makes a
		// live import's lock look stale.
		Run: runCommand, LockInterval: 200 * time.Millisecond, PollInterval: 2 * time.Millisecond,
		ProgressEvery: 20 * time.Millisecond, Log: zerolog.New(log),
	}
}

func (w *importWorld) imports(t *testing.T) int {
	t.Helper()
	recs, err := standin.ReadRecords(w.record)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	require.NoError(t, err)
	n := 0
	for _, r := range recs {
		if r.Command == "import" {
			n++
			assert.Equal(t, "2", r.Config["ENROOT_MAX_PROCESSORS"])
		}
	}
	return n
}

// Two jobs ensure one image at once: one import, one file, both get its
// path, and the final name never shows a partial file.
func TestEnsureTwoJobsImportOnce(t *testing.T) {
	w := newImportWorld(t)
	final := filepath.Join(w.cache, w.image.CacheName())
	stopWatch := make(chan struct{})
	var seenWhole, seenBroken atomic.Int32
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stopWatch:
				return
			default:
			}
			if _, err := os.Stat(final); err == nil {
				if out, err := exec.Command("unsquashfs", "-s", final).CombinedOutput(); err != nil {
					seenBroken.Add(1)
					t.Errorf("partial file under the final name: %v: %s", err, out)
				} else {
					seenWhole.Add(1)
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()

	type result struct {
		path     string
		imported bool
		err      error
		progress int32
	}
	var results [2]result
	var log syncBuffer
	var wg sync.WaitGroup
	for i, job := range []string{"101", "102"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := w.importer(job, 300*time.Millisecond, &log)
			var calls atomic.Int32
			m.Progress = func(time.Duration, int64) { calls.Add(1) }
			results[i].path, results[i].imported, results[i].err = m.Ensure(context.Background(), w.image)
			results[i].progress = calls.Load()
		}()
	}
	wg.Wait()
	// Both jobs may return between two of the watcher's looks: let it look
	// at the published file at least once before it stops.
	assert.Eventually(t, func() bool { return seenWhole.Load() > 0 }, 10*time.Second, time.Millisecond,
		"the watcher saw the published file")
	close(stopWatch)
	<-watched

	for i, r := range results {
		require.NoError(t, r.err, "job %d", i)
		assert.Equal(t, final, r.path)
		assert.Positive(t, r.progress, "job %d reported progress while importing or waiting", i)
	}
	assert.True(t, results[0].imported != results[1].imported, "exactly one job imported")
	assert.Equal(t, 1, w.imports(t), "one enroot import in all")
	assert.Zero(t, seenBroken.Load())
	assert.NoError(t, exec.Command("unsquashfs", "-l", final).Run())
	assert.Contains(t, log.String(), "waiting for another job's import")
	leftovers, err := filepath.Glob(filepath.Join(w.cache, ".*"))
	require.NoError(t, err)
	assert.Empty(t, leftovers, "no staging file or lock left")
	assert.NoFileExists(t, final+".lock")
}

func TestEnsureReusesWhatIsThere(t *testing.T) {
	w := newImportWorld(t)
	var log syncBuffer
	m := w.importer("1", 0, &log)
	path, imported, err := m.Ensure(context.Background(), w.image)
	require.NoError(t, err)
	require.True(t, imported)
	again, imported, err := w.importer("2", 0, &log).Ensure(context.Background(), w.image)
	require.NoError(t, err)
	assert.False(t, imported)
	assert.Equal(t, path, again)
	assert.Equal(t, 1, w.imports(t))

	file := Image{Ref: path, Path: path}
	got, imported, err := m.Ensure(context.Background(), file)
	require.NoError(t, err)
	assert.Equal(t, path, got, "a squashfs path is used as is")
	assert.False(t, imported)
	missing := filepath.Join(w.cache, "none.sqsh")
	_, _, err = m.Ensure(context.Background(), Image{Ref: missing, Path: missing})
	assert.ErrorContains(t, err, missing)
	assert.Equal(t, 1, w.imports(t), "no import for squashfs paths")
}

// A failed import or a file that does not validate publishes nothing and
// leaves nothing behind.
func TestEnsureFailuresPublishNothing(t *testing.T) {
	for name, tc := range map[string]struct {
		run      func(ctx context.Context, argv, env []string) error
		validate func(ctx context.Context, path string) error
		want     string
	}{
		"import fails": {
			run:  func(context.Context, []string, []string) error { return errors.New("registry said 401") },
			want: "registry said 401",
		},
		"invalid squashfs": {
			run: func(_ context.Context, argv, _ []string) error {
				return os.WriteFile(argv[3], []byte("not squashfs"), 0o644)
			},
			want: "not a valid squashfs",
		},
		"validator refuses": {
			run:      runCommand,
			validate: func(context.Context, string) error { return errors.New("truncated") },
			want:     "truncated",
		},
	} {
		t.Run(name, func(t *testing.T) {
			w := newImportWorld(t)
			var log syncBuffer
			m := w.importer("1", 0, &log)
			if tc.run != nil {
				run := tc.run
				m.Run = func(ctx context.Context, argv, env []string) error {
					if argv[0] == "unsquashfs" {
						return runCommand(ctx, argv, env)
					}
					return run(ctx, argv, env)
				}
			}
			m.Validate = tc.validate
			_, _, err := m.Ensure(context.Background(), w.image)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), w.image.Ref, "the error names the image")
			entries, rerr := os.ReadDir(w.cache)
			require.NoError(t, rerr)
			assert.Empty(t, entries, "nothing published, no staging file, no lock")
		})
	}
}

// A launcher SIGKILLed in the middle of an import leaves a partial staging
// file and a stale lock; the next Ensure breaks the lock with a warning,
// removes the leftover, and imports cleanly.
func TestEnsureAfterKilledImport(t *testing.T) {
	w := newImportWorld(t)
	final := filepath.Join(w.cache, w.image.CacheName())
	env := testEnv("WIDEEP_ENROOT_RECORD="+w.record, "WIDEEP_ENROOT_IMPORT_DELAY=1h", "ENROOT_MAX_PROCESSORS=2")
	child := helperCmd(t, "ensure", env, w.wrapper, w.cache, "dead", w.image.Ref, "30ms")
	var childErr bytes.Buffer
	child.Stderr = &childErr
	require.NoError(t, child.Start())
	staging := filepath.Join(w.cache, "."+w.image.CacheName()+".tmp-dead-"+strconv.Itoa(child.Process.Pid))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if fi, err := os.Stat(staging); err == nil && fi.Size() > 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the import never started writing %s: %s", staging, childErr.String())
		case <-time.After(2 * time.Millisecond):
		}
	}
	require.NoError(t, child.Process.Signal(syscall.SIGKILL))
	require.Error(t, child.Wait())
	assert.NoFileExists(t, final, "nothing published")
	require.FileExists(t, final+".lock", "the killed launcher's lock is left")
	require.FileExists(t, staging, "and its partial file")

	var log syncBuffer
	path, imported, err := w.importer("next", 0, &log).Ensure(ctx, w.image)
	require.NoError(t, err)
	assert.True(t, imported)
	assert.Equal(t, final, path)
	assert.NoError(t, exec.Command("unsquashfs", "-s", final).Run())
	assert.Equal(t, 2, w.imports(t))
	logged := log.String()
	assert.Contains(t, logged, `"level":"warn"`)
	assert.Contains(t, logged, "broke the stale image lock")
	assert.Contains(t, logged, "job dead (pid "+strconv.Itoa(child.Process.Pid))
	assert.Contains(t, logged, "removed the staging file of an interrupted import")
	assert.NoFileExists(t, staging)
	assert.NoFileExists(t, final+".lock")
}
