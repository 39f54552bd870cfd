package dgcache

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/wideep/wideep-launch/launcher/sharedcache"
)

// Subdir is the cache's directory under --cache-dir: Cache.Dir is
// filepath.Join(cacheDir, Subdir).
const Subdir = "deepgemm"

const (
	// defaultLockInterval matches sharedcache's default; every job must use
	// the same interval for one lock, so the default is spelled out here
	// where the staging thresholds need it too.
	defaultLockInterval = 30 * time.Second
	// staleIntervals is sharedcache's staleness rule (three missed
	// refreshes), reused for leftovers seen without holding the lock.
	staleIntervals = 3
)

// Cache is the shared DeepGEMM kernel cache of one cluster. Every field but
// Dir is optional; its methods may be called from many goroutines.
type Cache struct {
	// Dir is <cache-dir>/deepgemm, on the shared filesystem.
	Dir string
	// Now is the clock (default time.Now); locks and staging ages use it.
	Now func() time.Time
	// Log gets the warnings: stale locks broken, leftovers removed.
	Log zerolog.Logger
	// LockInterval is how often a holder touches its lock (default 30 s);
	// untouched for three intervals, a lock is stale. Every job sharing the
	// cache must use the same value.
	LockInterval time.Duration
	// PollInterval and ProgressEvery are sharedcache.LockOptions'.
	PollInterval, ProgressEvery time.Duration
	// Alive, when set, says whether a lock holder's job still runs
	// (squeue); a holder known to be gone loses its lock at once.
	Alive func(holder sharedcache.Owner) (alive, known bool)

	// afterCopy, when set (tests), runs after each file copied into a
	// staging directory; an error aborts the copy.
	afterCopy func(staged string) error
}

func (c *Cache) now() time.Time {
	if c.Now == nil {
		return time.Now()
	}
	return c.Now()
}

func (c *Cache) interval() time.Duration {
	if c.LockInterval <= 0 {
		return defaultLockInterval
	}
	return c.LockInterval
}

// entryPath is where the entry of role and key is published. Role and key
// become a file name, so they are checked: a "/" or ".." would put the
// entry elsewhere, a leading "." would hide it among staging names.
func (c *Cache) entryPath(role, key string) (string, error) {
	if c.Dir == "" {
		return "", errors.New("DeepGEMM cache: no directory configured")
	}
	for _, f := range [][2]string{{"role", role}, {"key", key}} {
		if err := checkName(f[1]); err != nil {
			return "", fmt.Errorf("DeepGEMM cache %s: %s %q: %w", c.Dir, f[0], f[1], err)
		}
	}
	return filepath.Join(c.Dir, EntryName(role, key)), nil
}

func checkName(v string) error {
	if v == "" {
		return errors.New("empty")
	}
	if v[0] == '.' || v[0] == '-' {
		return errors.New("must not start with '.' or '-'")
	}
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("character %q not allowed (letters, digits, '-', '_', '.')", r)
		}
	}
	return nil
}

func (c *Cache) lockPath(final string) string {
	dir, base := filepath.Split(final)
	return filepath.Join(dir, "."+base+".lock")
}

// Lookup says whether the entry of role and key is published: hit when its
// COMPLETE.json parses and holds key. path is the entry's directory either
// way. An entry that exists but cannot be used (an unreadable or corrupt
// COMPLETE.json, another key) is an error naming it, because only an
// operator can fix it: a recompile could not publish over it.
func (c *Cache) Lookup(role, key string) (path string, hit bool, err error) {
	path, err = c.entryPath(role, key)
	if err != nil {
		return "", false, err
	}
	comp, err := ReadComplete(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, serr := os.Lstat(path); serr == nil {
			// Never a published entry (those have COMPLETE.json from their
			// first moment): workers of --dg-cache-mode shared write here
			// when nothing was published. A compile could not publish over it.
			return path, false, fmt.Errorf("DeepGEMM cache entry %s is unusable (remove it to recompile): it has no %s; "+
				"workers with --dg-cache-mode shared wrote into it before anything was published", path, CompleteFile)
		}
		return path, false, nil
	case err != nil:
		return path, false, fmt.Errorf("DeepGEMM cache entry %s is unusable (remove it to recompile): %w", path, err)
	case comp.Key != key:
		return path, false, fmt.Errorf("DeepGEMM cache entry %s is unusable (remove it to recompile): its %s holds key %q, not %q",
			path, CompleteFile, comp.Key, key)
	}
	return path, true, nil
}

// Claim is the right to compile and publish one entry, held through a lock
// on the shared cache. End it with Publish, or with Abandon on any failure;
// Abandon after a successful Publish does nothing, so it can be deferred.
type Claim struct {
	cache   *Cache
	role    string
	key     string
	final   string
	staging string
	owner   sharedcache.Owner
	lock    *sharedcache.Lock

	// replace publishes over an existing entry (ClaimAlways).
	replace bool

	mu        sync.Mutex // serializes Publish and Abandon
	over      bool
	lastTouch time.Time
	// staged: this claim made its staging directory. Only then does
	// Abandon remove it: the name is the job's and the process's, and
	// another launcher of the job with the same pid (on another host: pids
	// are per host; in the in-process tests: one process) may be publishing
	// there, through PublishFor, right now.
	staged bool
}

// Path is where the entry will be published.
func (cl *Claim) Path() string { return cl.final }

// Claim takes the entry of role and key for owner, or reports it published
// (hit). While another job holds a fresh lock on it, Claim waits, calling
// onWait when it starts waiting and at least every ProgressEvery; it
// returns hit as soon as that job publishes. A stale lock (a killed job) is
// broken with a warning. Once the lock is held, the entry is looked up again,
// since another job may have published it between the first lookup and the
// lock, and staging directories that killed jobs left for this entry are
// removed.
func (c *Cache) Claim(ctx context.Context, role, key string, owner sharedcache.Owner,
	onWait func(holder sharedcache.Owner, waited time.Duration),
) (*Claim, bool, error) {
	final, hit, err := c.Lookup(role, key)
	if err != nil || hit {
		if hit {
			c.sweepStaging(final, staleIntervals*c.interval())
		}
		return nil, hit, err
	}
	return c.claim(ctx, role, key, final, owner, onWait, false)
}

// ClaimAlways takes the entry of role and key for owner whether or not it
// is published (--precompile always): the claim's Publish replaces the
// entry. It waits while another job holds the lock, then takes it.
func (c *Cache) ClaimAlways(ctx context.Context, role, key string, owner sharedcache.Owner,
	onWait func(holder sharedcache.Owner, waited time.Duration),
) (*Claim, error) {
	final, err := c.entryPath(role, key)
	if err != nil {
		return nil, err
	}
	cl, _, err := c.claim(ctx, role, key, final, owner, onWait, true)
	return cl, err
}

func (c *Cache) claim(ctx context.Context, role, key, final string, owner sharedcache.Owner,
	onWait func(holder sharedcache.Owner, waited time.Duration), replace bool,
) (*Claim, bool, error) {
	done := func() (bool, error) {
		_, hit, err := c.Lookup(role, key)
		return hit && err == nil, nil
	}
	if replace {
		done = nil
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, false, fmt.Errorf("DeepGEMM cache: %w", err)
	}
	lock, err := sharedcache.Acquire(ctx, c.lockPath(final), sharedcache.LockOptions{
		Owner:         owner,
		Interval:      c.interval(),
		PollInterval:  c.PollInterval,
		ProgressEvery: c.ProgressEvery,
		Now:           c.now,
		Alive:         c.Alive,
		// A lookup error is not the end of the wait: the holder may still
		// publish, and the lookup after the lock reports a lasting error.
		Done:   done,
		OnWait: onWait,
		OnBreak: func(holder sharedcache.Owner, age time.Duration) {
			c.Log.Warn().Str("entry", final).Str("holder", holder.String()).Dur("untouched", age).
				Msg("broke the stale lock of a DeepGEMM cache entry: its job is gone, this job compiles instead")
		},
	})
	if errors.Is(err, sharedcache.ErrPublished) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("claiming DeepGEMM cache entry %s: %w", final, err)
	}
	if _, hit, err := c.Lookup(role, key); !replace && (err != nil || hit) {
		return nil, hit, errors.Join(err, c.release(lock, final))
	}
	// Under the lock, a staging directory is a leftover of a job whose lock
	// was broken; one interval without a touch (a live publisher touches
	// its own every half interval) tells a dead one from a slow one.
	c.sweepStaging(final, c.interval())
	if c.Alive != nil {
		removed, err := sharedcache.RemoveDeadStaging(final, func(job string) bool {
			alive, known := c.Alive(sharedcache.Owner{JobID: job})
			return known && !alive && job != owner.JobID
		})
		for _, p := range removed {
			c.Log.Warn().Str("path", p).Msg("removed a DeepGEMM cache staging directory of a job that is gone")
		}
		if err != nil {
			c.Log.Warn().Err(err).Str("entry", final).Msg("could not remove a gone job's staging directory")
		}
	}
	pid := owner.PID
	if pid == 0 {
		pid = os.Getpid()
	}
	return &Claim{
		cache: c, role: role, key: key, final: final, owner: lock.Owner(), lock: lock, replace: replace,
		staging: sharedcache.StagingPath(final, owner.JobID, pid),
	}, false, nil
}

// sweepStaging removes final's staging directories untouched for longer
// than olderThan. It is housekeeping: a failure is logged, not returned.
func (c *Cache) sweepStaging(final string, olderThan time.Duration) {
	removed, err := sharedcache.RemoveStaging(final, olderThan, c.now())
	for _, p := range removed {
		c.Log.Warn().Str("path", p).Msg("removed a DeepGEMM cache staging directory left by a killed job")
	}
	if err != nil {
		c.Log.Warn().Err(err).Str("entry", final).Msg("could not remove old DeepGEMM cache staging directories")
	}
}

// release gives up lock. A lock broken by another job while we held it is
// theirs now: nothing of ours is left to clean, so that is only logged.
func (c *Cache) release(lock *sharedcache.Lock, final string) error {
	err := lock.Release()
	if errors.Is(err, sharedcache.ErrLost) {
		c.Log.Warn().Err(err).Str("entry", final).
			Msg("another job broke this job's DeepGEMM cache lock (it looked dead); at worst both compiled")
		return nil
	}
	return err
}
