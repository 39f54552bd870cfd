package sharedcache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// safety bounds a test that would otherwise hang on a bug; no test asserts
// on how long anything took.
const safety = 30 * time.Second

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	t.Cleanup(cancel)
	return ctx
}

func owner(job string) Owner { return Owner{JobID: job, Host: "node-" + job, PID: os.Getpid()} }

// writeLock puts a lock file of holder at path, untouched since mtime, as a
// process that died while holding it would leave it.
func writeLock(t *testing.T, path string, holder Owner, mtime time.Time) {
	t.Helper()
	b, err := json.Marshal(holder)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, append(b, '\n'), 0o644))
	require.NoError(t, os.Chtimes(path, mtime, mtime))
}

func readOwner(t *testing.T, path string) Owner {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var o Owner
	require.NoError(t, json.Unmarshal(b, &o))
	return o
}

// Two jobs race for one entry: exactly one gets the lock and publishes;
// the other waits, says so, and then reuses the published entry.
func TestAcquireRaceLoserReusesPublishedEntry(t *testing.T) {
	for round := range 20 {
		dir := t.TempDir()
		lockPath, final := filepath.Join(dir, "img.sqsh.lock"), filepath.Join(dir, "img.sqsh")
		published := func() (bool, error) {
			_, err := os.Stat(final)
			if errors.Is(err, os.ErrNotExist) {
				return false, nil
			}
			return err == nil, err
		}
		var (
			wg      sync.WaitGroup
			errs    [2]error
			waits   [2]atomic.Int32
			loserOK = make(chan struct{})
			waiting = make(chan struct{})
			once    sync.Once
			won     atomic.Int32
		)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l, err := Acquire(testContext(t), lockPath, LockOptions{
					// Long enough that a slow machine never makes the
					// winner's lock look stale.
					Owner: owner(strconv.Itoa(100 + i)), Interval: 200 * time.Millisecond,
					PollInterval: time.Millisecond, ProgressEvery: time.Millisecond, Done: published,
					OnWait: func(Owner, time.Duration) {
						waits[i].Add(1)
						once.Do(func() { close(waiting) })
					},
				})
				errs[i] = err
				if err != nil {
					close(loserOK)
					return
				}
				won.Add(1)
				// Publish only once the other one waits, so that it is the
				// waiting path that sees the entry.
				select {
				case <-waiting:
				case <-time.After(safety):
				}
				assert.NoError(t, os.WriteFile(final, []byte("image"), 0o644))
				// Hold the lock until the loser has seen the entry, so it
				// cannot simply take the free lock instead.
				select {
				case <-loserOK:
				case <-time.After(safety):
				}
				assert.NoError(t, l.Release())
			}()
		}
		wg.Wait()
		require.Equal(t, int32(1), won.Load(), "round %d: exactly one winner", round)
		loser := 0
		if errs[0] == nil {
			loser = 1
		}
		assert.ErrorIs(t, errs[loser], ErrPublished, "round %d", round)
		assert.Positive(t, waits[loser].Load(), "round %d: the loser reported waiting", round)
		assert.NoFileExists(t, lockPath, "round %d: released", round)
	}
}

// Two processes find one stale lock at the same moment: exactly one breaks
// it (one OnBreak call), both end up holding the lock in turn, and no lock
// file is left.
func TestStaleLockIsBrokenOnceByTwoBreakers(t *testing.T) {
	for round := range 100 {
		path := filepath.Join(t.TempDir(), "x.lock")
		dead := owner("dead")
		writeLock(t, path, dead, time.Now().Add(-time.Hour))
		var (
			breaks atomic.Int32
			wg     sync.WaitGroup
			start  = make(chan struct{})
		)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				l, err := Acquire(testContext(t), path, LockOptions{
					Owner: owner(fmt.Sprint("breaker", i)), Interval: time.Second, PollInterval: time.Millisecond,
					OnBreak: func(h Owner, age time.Duration) {
						breaks.Add(1)
						assert.Equal(t, dead.JobID, h.JobID)
						assert.Greater(t, age, 3*time.Second)
					},
				})
				if !assert.NoError(t, err) {
					return
				}
				assert.NoError(t, l.Release())
			}()
		}
		close(start)
		wg.Wait()
		require.Equal(t, int32(1), breaks.Load(), "round %d: OnBreak calls", round)
		entries, err := os.ReadDir(filepath.Dir(path))
		require.NoError(t, err)
		assert.Empty(t, entries, "round %d: nothing left behind", round)
	}
}

// A fresh lock is broken when Alive knows its job is gone, and kept when the
// job runs or when Alive cannot tell.
func TestLockOfDeadJobIsBroken(t *testing.T) {
	for name, tc := range map[string]struct {
		alive, known bool
		wantBreak    bool
	}{
		"job gone":       {alive: false, known: true, wantBreak: true},
		"job running":    {alive: true, known: true},
		"squeue failing": {alive: false, known: false},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.lock")
			holder := owner("4242")
			writeLock(t, path, holder, time.Now())
			var asked, broke atomic.Int32
			ctx := testContext(t)
			if !tc.wantBreak {
				// The waiter would wait for the holder forever.
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, 200*time.Millisecond)
				defer cancel()
			}
			l, err := Acquire(ctx, path, LockOptions{
				Owner: owner("7"), Interval: time.Hour, PollInterval: time.Millisecond,
				Alive: func(h Owner) (bool, bool) {
					asked.Add(1)
					assert.Equal(t, holder.JobID, h.JobID)
					return tc.alive, tc.known
				},
				OnBreak: func(Owner, time.Duration) { broke.Add(1) },
			})
			assert.Positive(t, asked.Load())
			if tc.wantBreak {
				require.NoError(t, err)
				assert.Equal(t, int32(1), broke.Load())
				assert.Equal(t, "7", readOwner(t, path).JobID)
				assert.NoError(t, l.Release())
				return
			}
			require.ErrorIs(t, err, context.DeadlineExceeded)
			assert.Contains(t, err.Error(), "job 4242", "the error names the holder")
			assert.Zero(t, broke.Load())
			assert.Equal(t, holder, readOwner(t, path), "the holder's lock is untouched")
		})
	}
}

// A holder whose lock was broken (it looked dead) and taken by another job
// must not remove the new holder's lock on Release, and learns it was lost.
func TestReleaseOfBrokenLockKeepsNewHoldersLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	first, err := Acquire(testContext(t), path, LockOptions{Owner: owner("1"), Interval: 10 * time.Millisecond})
	require.NoError(t, err)
	second, err := Acquire(testContext(t), path, LockOptions{
		Owner: owner("2"), Interval: time.Hour, PollInterval: time.Millisecond,
		Alive: func(h Owner) (bool, bool) { return h.JobID != "1", true },
	})
	require.NoError(t, err)
	select {
	case <-first.Lost():
	case <-time.After(safety):
		t.Fatal("the first holder never noticed that its lock was broken")
	}
	assert.ErrorIs(t, first.Release(), ErrLost)
	assert.Equal(t, "2", readOwner(t, path).JobID, "the new holder's lock is still there")
	assert.NoError(t, second.Release())
	assert.NoFileExists(t, path)
}

// Staleness follows the injected clock: a lock stamped at t0 and never
// touched again is fresh at t0+2 intervals and broken at t0+4 intervals.
func TestStalenessFollowsInjectedClock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	const interval = time.Minute
	t0 := time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC)
	var clock atomic.Int64
	clock.Store(t0.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }

	// The holder's refresher never fires within the test: it behaves like a
	// holder that died right after taking the lock.
	holder, err := Acquire(testContext(t), path, LockOptions{Owner: owner("1"), Interval: interval, Now: now})
	require.NoError(t, err)
	clock.Store(t0.Add(2 * interval).UnixNano())
	waiting := make(chan struct{})
	var once sync.Once
	var breaks []time.Duration
	var mu sync.Mutex
	done := make(chan error)
	go func() {
		l, err := Acquire(testContext(t), path, LockOptions{
			Owner: owner("2"), Interval: interval, PollInterval: time.Millisecond, Now: now,
			OnWait: func(Owner, time.Duration) { once.Do(func() { close(waiting) }) },
			OnBreak: func(_ Owner, age time.Duration) {
				mu.Lock()
				defer mu.Unlock()
				breaks = append(breaks, age)
			},
		})
		if err == nil {
			err = l.Release()
		}
		done <- err
	}()
	<-waiting
	mu.Lock()
	assert.Empty(t, breaks, "a lock two intervals old is fresh")
	mu.Unlock()
	clock.Store(t0.Add(4 * interval).UnixNano())
	require.NoError(t, <-done)
	require.Len(t, breaks, 1)
	assert.Equal(t, 4*interval, breaks[0])
	assert.ErrorIs(t, holder.Release(), ErrLost)
}

// A live holder keeps its lock fresh: a waiter watching for many stale
// windows never breaks it, and gets it once it is released.
func TestRefreshedLockIsNotBroken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	const interval = 50 * time.Millisecond
	holder, err := Acquire(testContext(t), path, LockOptions{Owner: owner("1"), Interval: interval})
	require.NoError(t, err)
	var breaks atomic.Int32
	done := make(chan error)
	go func() {
		l, err := Acquire(testContext(t), path, LockOptions{
			Owner: owner("2"), Interval: interval, PollInterval: 5 * time.Millisecond,
			OnBreak: func(Owner, time.Duration) { breaks.Add(1) },
		})
		if err == nil {
			err = l.Release()
		}
		done <- err
	}()
	time.Sleep(8 * staleIntervals * interval) // many stale windows, not an assertion on time
	require.NoError(t, holder.Release())
	require.NoError(t, <-done)
	assert.Zero(t, breaks.Load())
}

func TestAcquireNamesThePathOnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing-dir", "x.lock")
	_, err := Acquire(testContext(t), path, LockOptions{Owner: owner("1")})
	require.Error(t, err)
	assert.Contains(t, err.Error(), path)
}

func init() {
	// hold PATH READY: take the lock at PATH, say so in READY, and hold it
	// until killed.
	helpers.Register("hold", func(args []string) int {
		l, err := Acquire(context.Background(), args[0], LockOptions{
			Owner: Owner{JobID: "killed", Host: "h", PID: os.Getpid()}, Interval: 20 * time.Millisecond,
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := os.WriteFile(args[1], []byte(l.Owner().Token), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		select {}
	})
}

// A process SIGKILLed while holding the lock leaves it behind; the next
// acquirer breaks it once it has gone untouched for three intervals.
func TestLockOfKilledProcessIsBroken(t *testing.T) {
	dir := t.TempDir()
	path, ready := filepath.Join(dir, "x.lock"), filepath.Join(dir, "ready")
	cmd := helpers.Command(t, "hold", path, ready)
	require.NoError(t, cmd.Start())
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case <-testContext(t).Done():
			t.Fatal("the helper never took the lock")
		case <-time.After(2 * time.Millisecond):
		}
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	require.Error(t, cmd.Wait())
	require.FileExists(t, path, "a killed holder leaves its lock")

	var broken []Owner
	l, err := Acquire(testContext(t), path, LockOptions{
		Owner: owner("next"), Interval: 20 * time.Millisecond, PollInterval: time.Millisecond,
		OnBreak: func(h Owner, _ time.Duration) { broken = append(broken, h) },
	})
	require.NoError(t, err)
	require.Len(t, broken, 1)
	assert.Equal(t, "killed", broken[0].JobID)
	assert.Equal(t, cmd.Process.Pid, broken[0].PID)
	assert.NoError(t, l.Release())
}

// A lock taken after a long wait is stamped when it is taken, not when the
// wait began: the next waiter must not find it stale at once.
func TestLockTakenAfterLongWaitIsFresh(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	const interval = time.Minute
	t0 := time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC)
	var clock atomic.Int64
	clock.Store(t0.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	holder, err := Acquire(testContext(t), path, LockOptions{Owner: owner("1"), Interval: interval, Now: now})
	require.NoError(t, err)

	waiting := make(chan struct{})
	var once sync.Once
	got := make(chan *Lock)
	go func() {
		l, err := Acquire(testContext(t), path, LockOptions{
			Owner: owner("2"), Interval: interval, PollInterval: time.Millisecond, Now: now,
			OnWait:  func(Owner, time.Duration) { once.Do(func() { close(waiting) }) },
			OnBreak: func(Owner, time.Duration) { t.Error("a refreshed lock was broken") },
		})
		assert.NoError(t, err)
		got <- l
	}()
	<-waiting
	// The holder stays alive for six intervals, touching its lock as its
	// refresher would (the real one ticks every minute, after the test).
	for i := 2; i <= 6; i += 2 {
		at := t0.Add(time.Duration(i) * interval)
		clock.Store(at.UnixNano())
		require.NoError(t, os.Chtimes(path, at, at))
	}
	require.NoError(t, holder.Release())
	waiter := <-got
	require.NotNil(t, waiter)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, t0.Add(6*interval), fi.ModTime().UTC(), "stamped when taken")
	assert.True(t, t0.Add(6*interval).Equal(readOwner(t, path).Time))
	assert.NoError(t, waiter.Release())
}
