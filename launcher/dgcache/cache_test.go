package dgcache

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/launcher/sharedcache"
)

// safety bounds a test that would otherwise hang on a bug; no test asserts
// on how long anything took.
const safety = 30 * time.Second

// testInterval is long enough that no lock goes stale by itself during a
// test: staleness is always brought about on purpose (clock, Alive).
const testInterval = 10 * time.Second

const testKey = "0123456789abcdef"

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	t.Cleanup(cancel)
	return ctx
}

// logBuf collects log lines; zerolog may write from a lock's goroutine.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newCache(dir string, log *logBuf) *Cache {
	c := &Cache{Dir: dir, LockInterval: testInterval, PollInterval: time.Millisecond, ProgressEvery: time.Millisecond}
	if log != nil {
		c.Log = zerolog.New(log)
	}
	return c
}

func owner(job string) sharedcache.Owner {
	return sharedcache.Owner{JobID: job, Host: "node-" + job, PID: os.Getpid()}
}

// stagings lists the staging directories of an entry, any job.
func stagings(t *testing.T, final string) []string {
	t.Helper()
	dir, base := filepath.Split(final)
	found, err := filepath.Glob(filepath.Join(dir, "."+base+".tmp-*"))
	require.NoError(t, err)
	return found
}

// compiled is a node-local DeepGEMM cache root after a compile of n
// kernels, with what must not be published: DeepGEMM's tmp/ and a kernel
// directory still without its cubin.
func compiled(t *testing.T, n int) string {
	t.Helper()
	local := t.TempDir()
	writeKernels(t, local, kernelNames(n)...)
	require.NoError(t, os.MkdirAll(filepath.Join(local, "tmp"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(local, "tmp", "0f3a-uuid"), []byte("half a cubin"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(local, cacheSubdir, "kernel.being_written"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(local, cacheSubdir, "kernel.being_written", "kernel.cu"), nil, 0o644))
	return local
}

func TestColdCacheClaimPublishLookup(t *testing.T) {
	dir := filepath.Join(t.TempDir(), Subdir) // created by Claim
	c := newCache(dir, nil)
	final, hit, err := c.Lookup("decode", testKey)
	require.NoError(t, err)
	require.False(t, hit)
	assert.Equal(t, filepath.Join(dir, "decode-"+testKey), final)

	cl, hit, err := c.Claim(testContext(t), "decode", testKey, owner("100"), nil)
	require.NoError(t, err)
	require.False(t, hit)
	assert.Equal(t, final, cl.Path())
	assert.FileExists(t, filepath.Join(dir, ".decode-"+testKey+".lock"))
	assert.NoDirExists(t, final, "nothing under the final name before Publish")

	local := compiled(t, 4)
	n, err := cl.Publish(local, Complete{Image: "img", Inputs: map[string]string{"role": "decode"}, Duration: time.Minute})
	require.NoError(t, err)
	assert.Equal(t, 4, n)

	path, hit, err := c.Lookup("decode", testKey)
	require.NoError(t, err)
	require.True(t, hit)
	comp, err := ReadComplete(path)
	require.NoError(t, err)
	assert.Equal(t, 4, comp.Kernels)
	assert.Equal(t, testKey, comp.Key)
	assert.Equal(t, "decode", comp.Role)
	assert.Equal(t, Format, comp.Format)
	assert.Equal(t, "100", comp.JobID)
	assert.Equal(t, "node-100", comp.Host)
	assert.Equal(t, time.Minute, comp.Duration)
	assert.False(t, comp.Created.IsZero())
	assert.NoDirExists(t, filepath.Join(path, "tmp"), "DeepGEMM's tmp/ is not published")
	assert.NoDirExists(t, filepath.Join(path, cacheSubdir, "kernel.being_written"), "a kernel without its cubin is not published")
	assert.NoFileExists(t, filepath.Join(dir, ".decode-"+testKey+".lock"), "released")
	assert.Empty(t, stagings(t, final))
	assert.NoError(t, cl.Abandon(), "Abandon after Publish does nothing")
	assert.DirExists(t, final)

	again, hit, err := c.Claim(testContext(t), "decode", testKey, owner("101"), nil)
	require.NoError(t, err)
	assert.True(t, hit)
	assert.Nil(t, again)
}

// While the kernels are copied, the final name does not exist; whenever it
// exists, it is the whole entry with its COMPLETE.json.
func TestPublishIsAtomic(t *testing.T) {
	const kernels = 60
	c := newCache(t.TempDir(), nil)
	cl, _, err := c.Claim(testContext(t), "prefill", testKey, owner("1"), nil)
	require.NoError(t, err)
	final := cl.Path()
	var copies int
	c.afterCopy = func(staged string) error {
		copies++
		assert.True(t, strings.HasPrefix(staged, cl.staging+"/"), "copied into the staging directory")
		if _, err := os.Lstat(final); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the entry is visible after %d copied files", copies)
		}
		return nil
	}
	var (
		done       = make(chan struct{})
		wg         sync.WaitGroup
		violations atomic.Int32
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if _, err := os.Lstat(final); err == nil {
				comp, err := ReadComplete(final)
				n, cerr := CountKernels(final)
				if err != nil || cerr != nil || n != kernels || comp.Kernels != kernels {
					violations.Add(1)
				}
			}
			select {
			case <-done:
				return
			default:
			}
		}
	}()
	n, err := cl.Publish(compiled(t, kernels), Complete{})
	close(done)
	wg.Wait()
	require.NoError(t, err)
	assert.Equal(t, kernels, n)
	assert.Equal(t, 2*kernels, copies)
	assert.Zero(t, violations.Load(), "a reader saw an incomplete entry under the final name")
}

// Two jobs of one layout start at once: exactly one compiles and publishes;
// the other waits for it, says so, and reuses its entry.
func TestConcurrentClaimersInOneProcess(t *testing.T) {
	for round := range 10 {
		c := newCache(t.TempDir(), nil)
		local := compiled(t, 3)
		var (
			wg      sync.WaitGroup
			once    sync.Once
			waiting = make(chan struct{})
			hits    [2]bool
			kernels [2]int
			waits   [2]atomic.Int32
			errs    [2]error
		)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cl, hit, err := c.Claim(testContext(t), "prefill", testKey, owner(string(rune('a'+i))),
					func(sharedcache.Owner, time.Duration) {
						waits[i].Add(1)
						once.Do(func() { close(waiting) })
					})
				hits[i], errs[i] = hit, err
				if err != nil || hit {
					return
				}
				// Publish only once the other job waits, so that it is the
				// waiting path that sees the entry.
				select {
				case <-waiting:
				case <-time.After(safety):
				}
				kernels[i], errs[i] = cl.Publish(local, Complete{})
			}()
		}
		wg.Wait()
		require.NoError(t, errs[0], "round %d", round)
		require.NoError(t, errs[1], "round %d", round)
		require.NotEqual(t, hits[0], hits[1], "round %d: exactly one job compiles", round)
		winner, loser := 0, 1
		if hits[0] {
			winner, loser = 1, 0
		}
		assert.Equal(t, 3, kernels[winner], "round %d", round)
		assert.Zero(t, kernels[loser], "round %d: the waiting job never publishes", round)
		assert.Positive(t, waits[loser].Load(), "round %d: the waiting job reported waiting", round)
		_, hit, err := c.Lookup("prefill", testKey)
		require.NoError(t, err)
		assert.True(t, hit, "round %d", round)
	}
}

func TestClaimAfterFailedPublishAndAbandon(t *testing.T) {
	c := newCache(t.TempDir(), nil)
	cl, _, err := c.Claim(testContext(t), "decode", testKey, owner("1"), nil)
	require.NoError(t, err)
	lock := filepath.Join(c.Dir, ".decode-"+testKey+".lock")
	c.afterCopy = func(string) error { return errors.New("disk quota exceeded") }
	_, err = cl.Publish(compiled(t, 2), Complete{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "disk quota exceeded")
	assert.Contains(t, err.Error(), cl.Path())
	assert.Len(t, stagings(t, cl.Path()), 1, "a failed Publish leaves the claim to Abandon")
	assert.FileExists(t, lock)

	require.NoError(t, cl.Abandon())
	assert.Empty(t, stagings(t, cl.Path()))
	assert.NoFileExists(t, lock)
	assert.NoDirExists(t, cl.Path())
	assert.NoError(t, cl.Abandon(), "twice is harmless")
	_, err = cl.Publish(compiled(t, 1), Complete{})
	assert.ErrorContains(t, err, "given up")

	c.afterCopy = nil
	next, hit, err := c.Claim(testContext(t), "decode", testKey, owner("2"),
		func(sharedcache.Owner, time.Duration) { t.Error("waited for an abandoned claim") })
	require.NoError(t, err)
	require.False(t, hit)
	_, err = next.Publish(compiled(t, 1), Complete{})
	assert.NoError(t, err)
}

func TestPublishRefusesNothingCompiled(t *testing.T) {
	for name, setup := range map[string]func(t *testing.T, local string){
		"empty directory": func(*testing.T, string) {},
		"only DeepGEMM's tmp": func(t *testing.T, local string) {
			require.NoError(t, os.MkdirAll(filepath.Join(local, "tmp"), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(local, "tmp", "x"), nil, 0o644))
		},
		"only a kernel without cubin": func(t *testing.T, local string) {
			require.NoError(t, os.MkdirAll(filepath.Join(local, cacheSubdir, "kernel.a"), 0o755))
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := newCache(t.TempDir(), nil)
			cl, _, err := c.Claim(testContext(t), "decode", testKey, owner("1"), nil)
			require.NoError(t, err)
			local := t.TempDir()
			setup(t, local)
			_, err = cl.Publish(local, Complete{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), "nothing was compiled")
			assert.Contains(t, err.Error(), local)
			assert.NoDirExists(t, cl.Path())
			assert.NoError(t, cl.Abandon())
		})
	}
}

// An entry that appeared while we compiled (a job broke our lock and
// published first) is kept; Publish says so, and Abandon cleans up.
func TestPublishNeverReplacesAnEntry(t *testing.T) {
	for name, tc := range map[string]struct {
		complete bool
		msg      string
	}{
		"published by another job": {complete: true},
		"left by hand":             {msg: "remove it"},
	} {
		t.Run(name, func(t *testing.T) {
			c := newCache(t.TempDir(), nil)
			cl, _, err := c.Claim(testContext(t), "decode", testKey, owner("1"), nil)
			require.NoError(t, err)
			writeKernels(t, cl.Path(), "theirs")
			if tc.complete {
				require.NoError(t, writeComplete(cl.Path(), Complete{Key: testKey, JobID: "other"}))
			}
			_, err = cl.Publish(compiled(t, 2), Complete{})
			require.ErrorIs(t, err, sharedcache.ErrExists)
			assert.Contains(t, err.Error(), cl.Path())
			if tc.msg != "" {
				assert.Contains(t, err.Error(), tc.msg)
			}
			require.NoError(t, cl.Abandon())
			assert.Empty(t, stagings(t, cl.Path()))
			n, err := CountKernels(cl.Path())
			require.NoError(t, err)
			assert.Equal(t, 1, n, "their entry is untouched")
		})
	}
}

func TestLookup(t *testing.T) {
	for name, tc := range map[string]struct {
		complete string // "" for no entry
		hit      bool
		errMsg   string
	}{
		"no entry":           {},
		"published":          {complete: `{"format":1,"key":"` + testKey + `","role":"decode"}`, hit: true},
		"another key":        {complete: `{"key":"fedcba9876543210"}`, errMsg: `holds key "fedcba9876543210"`},
		"corrupt marker":     {complete: `{"key":`, errMsg: "remove it to recompile"},
		"marker with no key": {complete: `{"role":"decode"}`, errMsg: "no key"},
		// Workers of --dg-cache-mode shared wrote kernels into an entry that
		// was never published.
		"no marker": {complete: "-", errMsg: "it has no COMPLETE.json"},
	} {
		t.Run(name, func(t *testing.T) {
			c := newCache(t.TempDir(), nil)
			entry := filepath.Join(c.Dir, EntryName("decode", testKey))
			if tc.complete == "-" {
				require.NoError(t, os.MkdirAll(filepath.Join(entry, "cache"), 0o755))
			} else if tc.complete != "" {
				require.NoError(t, os.MkdirAll(entry, 0o755))
				require.NoError(t, os.WriteFile(filepath.Join(entry, CompleteFile), []byte(tc.complete), 0o644))
			}
			path, hit, err := c.Lookup("decode", testKey)
			assert.Equal(t, entry, path)
			assert.Equal(t, tc.hit, hit)
			if tc.errMsg == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.errMsg)
			assert.Contains(t, err.Error(), entry)
		})
	}
}

func TestEntryNamesAreChecked(t *testing.T) {
	for name, tc := range map[string]struct{ role, key, dir, want string }{
		"empty role":       {role: "", key: testKey, dir: "/c", want: `role ""`},
		"path in key":      {role: "decode", key: "../x", dir: "/c", want: `key "../x"`},
		"hidden role":      {role: ".decode", key: testKey, dir: "/c", want: `role ".decode"`},
		"slash in role":    {role: "a/b", key: testKey, dir: "/c", want: `'/'`},
		"no cache dir set": {role: "decode", key: testKey, want: "no directory"},
	} {
		t.Run(name, func(t *testing.T) {
			c := &Cache{Dir: tc.dir}
			_, _, err := c.Lookup(tc.role, tc.key)
			assert.ErrorContains(t, err, tc.want)
			_, _, err = c.Claim(testContext(t), tc.role, tc.key, owner("1"), nil)
			assert.ErrorContains(t, err, tc.want)
		})
	}
}

// A job cancelled while waiting says for which lock and whom it waited.
func TestClaimCancelledWhileWaiting(t *testing.T) {
	c := newCache(t.TempDir(), nil)
	holder, _, err := c.Claim(testContext(t), "decode", testKey, owner("7"), nil)
	require.NoError(t, err)
	defer func() { assert.NoError(t, holder.Abandon()) }()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, hit, err := c.Claim(ctx, "decode", testKey, owner("8"), nil)
	assert.False(t, hit)
	require.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), filepath.Join(c.Dir, ".decode-"+testKey+".lock"))
	assert.Contains(t, err.Error(), "job 7")
}

// A fresh lock whose job Slurm reports gone is broken at once, with a
// warning; the old holder's late Abandon leaves the new holder's lock.
func TestClaimBreaksLockOfDeadJob(t *testing.T) {
	logs := &logBuf{}
	c := newCache(t.TempDir(), logs)
	c.Alive = func(h sharedcache.Owner) (bool, bool) { return h.JobID != "dead", true }
	old, _, err := c.Claim(testContext(t), "decode", testKey, owner("dead"), nil)
	require.NoError(t, err)

	cl, hit, err := c.Claim(testContext(t), "decode", testKey, owner("alive"), nil)
	require.NoError(t, err)
	require.False(t, hit)
	assert.Contains(t, logs.String(), `"level":"warn"`)
	assert.Contains(t, logs.String(), "broke the stale lock")
	assert.Contains(t, logs.String(), "job dead")

	assert.NoError(t, old.Abandon(), "a lost lock is only logged")
	assert.Contains(t, logs.String(), "broke this job's DeepGEMM cache lock")
	assert.FileExists(t, filepath.Join(c.Dir, ".decode-"+testKey+".lock"), "the new holder's lock stays")
	_, err = cl.Publish(compiled(t, 1), Complete{})
	assert.NoError(t, err)
}

// Under the lock, staging directories untouched for a lock interval are
// leftovers of killed jobs and go; a recently touched one may be a live
// (if lockless) writer's and stays.
func TestClaimRemovesOnlyStaleStaging(t *testing.T) {
	logs := &logBuf{}
	c := newCache(t.TempDir(), logs)
	t0 := time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC)
	c.Now = func() time.Time { return t0 }
	final := filepath.Join(c.Dir, EntryName("decode", testKey))
	old, fresh := sharedcache.StagingPath(final, "7", 70), sharedcache.StagingPath(final, "8", 80)
	for path, mtime := range map[string]time.Time{old: t0.Add(-2 * testInterval), fresh: t0.Add(-testInterval / 4)} {
		writeKernels(t, path, "k")
		require.NoError(t, os.Chtimes(path, mtime, mtime))
	}
	cl, hit, err := c.Claim(testContext(t), "decode", testKey, owner("9"), nil)
	require.NoError(t, err)
	require.False(t, hit)
	assert.NoDirExists(t, old)
	assert.DirExists(t, fresh)
	assert.Contains(t, logs.String(), old)
	require.NoError(t, cl.Abandon())
}

func init() {
	// claim DIR KEY LOCAL JOB SIGNALS: claim the prefill entry as job JOB;
	// the winner waits until the other job reports waiting (a file
	// SIGNALS/waiting-<job>) and publishes LOCAL. It prints "hit" or
	// "published <n>".
	helpers.Register("claim", func(args []string) int {
		dir, key, local, job, signals := args[0], args[1], args[2], args[3], args[4]
		ctx, cancel := context.WithTimeout(context.Background(), safety)
		defer cancel()
		c := newCache(dir, nil)
		cl, hit, err := c.Claim(ctx, "prefill", key, owner(job), func(sharedcache.Owner, time.Duration) {
			_ = os.WriteFile(filepath.Join(signals, "waiting-"+job), nil, 0o644)
		})
		if err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			return 1
		}
		if hit {
			os.Stdout.WriteString("hit\n")
			return 0
		}
		if err := awaitOtherWaiter(ctx, signals, job); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			return 1
		}
		n, err := cl.Publish(local, Complete{})
		if err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			return 1
		}
		os.Stdout.WriteString("published " + strconv.Itoa(n) + "\n")
		return 0
	})
	// hang DIR KEY LOCAL READY: claim the prefill entry and start
	// publishing LOCAL; after the first file is staged, say so in READY and
	// hang until killed.
	helpers.Register("hang", func(args []string) int {
		dir, key, local, ready := args[0], args[1], args[2], args[3]
		c := newCache(dir, nil)
		c.afterCopy = func(string) error {
			_ = os.WriteFile(ready, nil, 0o644)
			select {}
		}
		cl, hit, err := c.Claim(context.Background(), "prefill", key, owner("killed"), nil)
		if err != nil || hit {
			os.Stderr.WriteString("no claim\n")
			return 1
		}
		_, _ = cl.Publish(local, Complete{})
		return 1
	})
}

func awaitOtherWaiter(ctx context.Context, signals, self string) error {
	for {
		entries, err := os.ReadDir(signals)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "waiting-") && e.Name() != "waiting-"+self {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(time.Millisecond):
		}
	}
}

func awaitFile(t *testing.T, path string) {
	t.Helper()
	ctx := testContext(t)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never appeared", path)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// Node 0 leads: it holds the claim, the compiling worker's first node
// publishes for it, node 0 releases.
func TestPublishForAClaimHeldByNodeZero(t *testing.T) {
	dir := filepath.Join(t.TempDir(), Subdir)
	c := newCache(dir, nil)
	cl, hit, err := c.Claim(testContext(t), "prefill", testKey, owner("300"), nil)
	require.NoError(t, err)
	require.False(t, hit)

	head := sharedcache.Owner{JobID: "300", Host: "node-5", PID: os.Getpid() + 1}
	n, err := c.PublishFor("prefill", testKey, compiled(t, 3), Complete{Image: "img"}, head, false)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	comp, err := ReadComplete(cl.Path())
	require.NoError(t, err)
	assert.Equal(t, "node-5", comp.Host, "the publisher says who compiled")
	assert.FileExists(t, filepath.Join(dir, ".prefill-"+testKey+".lock"), "the lock is node 0's to release")
	require.NoError(t, cl.Abandon())
	assert.NoFileExists(t, filepath.Join(dir, ".prefill-"+testKey+".lock"))
	assert.DirExists(t, cl.Path(), "releasing keeps the published entry")
	assert.Empty(t, stagings(t, cl.Path()))

	_, err = c.PublishFor("prefill", testKey, compiled(t, 3), Complete{}, head, false)
	assert.ErrorIs(t, err, sharedcache.ErrExists, "never over an entry")
	assert.Empty(t, stagings(t, cl.Path()), "the failed publish left no staging")
}

// --precompile always: node 0 claims a published entry, and the compile's
// kernels replace it.
func TestClaimAlwaysReplacesAPublishedEntry(t *testing.T) {
	dir := filepath.Join(t.TempDir(), Subdir)
	c := newCache(dir, nil)
	first, hit, err := c.Claim(testContext(t), "prefill", testKey, owner("300"), nil)
	require.NoError(t, err)
	require.False(t, hit)
	_, err = first.Publish(compiled(t, 2), Complete{})
	require.NoError(t, err)

	cl, err := c.ClaimAlways(testContext(t), "prefill", testKey, owner("301"), nil)
	require.NoError(t, err, "a hit is claimed all the same")
	head := sharedcache.Owner{JobID: "301", Host: "node-5", PID: os.Getpid() + 1}
	n, err := c.PublishFor("prefill", testKey, compiled(t, 3), Complete{}, head, true)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	require.NoError(t, cl.Abandon())
	comp, err := ReadComplete(cl.Path())
	require.NoError(t, err)
	assert.Equal(t, "301", comp.JobID, "the new compile's entry")
	assert.Equal(t, 3, comp.Kernels)
	k, err := CountKernels(cl.Path())
	require.NoError(t, err)
	assert.Equal(t, 3, k)
	assert.Empty(t, stagings(t, cl.Path()), "neither the staging nor the old entry is left")
}

// Node 0 gives its claim up (the job ended) while the compiling worker's
// rank 0 publishes through PublishFor, under the same job and — another
// host, or the in-process tests' one process — the same pid, so the same
// staging name: node 0 must not remove what it never made. (Seen in a CI
// run: the entry was published with COMPLETE.json and without cache/.)
func TestAbandonLeavesAPublisherStagingAlone(t *testing.T) {
	dir := filepath.Join(t.TempDir(), Subdir)
	c := newCache(dir, nil)
	node0 := owner("301")
	cl, hit, err := c.Claim(testContext(t), "decode", testKey, node0, nil)
	require.NoError(t, err)
	require.False(t, hit)
	staging := sharedcache.StagingPath(cl.Path(), node0.JobID, node0.PID)
	half := filepath.Join(staging, cacheSubdir, kernelPrefix+"a")
	require.NoError(t, os.MkdirAll(half, 0o755), "the publisher is copying")

	require.NoError(t, cl.Abandon())
	assert.DirExists(t, half, "another launcher's staging is left to it")
	assert.NoFileExists(t, filepath.Join(dir, ".decode-"+testKey+".lock"), "the lock is released")
}
