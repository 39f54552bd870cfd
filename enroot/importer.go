package enroot

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

const defaultProgressEvery = 30 * time.Second

// Importer makes a registry image available as a squashfs file in a cache
// directory shared by jobs and nodes, importing it at most once: node 0 of
// every job calls Ensure; the first to get the lock imports, the others
// wait and reuse the file it publishes.
type Importer struct {
	Bin      string // the enroot executable
	CacheDir string // the shared image cache (--image-cache)
	JobID    string
	Host     string
	PID      int // this process; default os.Getpid()

	// Env is the environment of the enroot processes (ENROOT_MAX_PROCESSORS,
	// ENROOT_CACHE_PATH, credentials' ENROOT_CONFIG_PATH, ...).
	Env []string
	// Run runs a command to completion (enroot import, unsquashfs).
	Run func(ctx context.Context, argv, env []string) error
	// Validate checks a squashfs file before it is published; the default
	// runs `unsquashfs -s PATH` (superblock) and `unsquashfs -l PATH` (the
	// whole directory table) through Run.
	Validate func(ctx context.Context, path string) error
	// Progress is called at least every ProgressEvery while importing, and
	// while waiting for another job's import, with the time spent so far
	// and the size of the file being written.
	Progress      func(elapsed time.Duration, bytesSoFar int64)
	ProgressEvery time.Duration // default 30 s
	// LockInterval is the lock's refresh interval (default 30 s); a lock
	// untouched for three of them is broken.
	LockInterval time.Duration
	// PollInterval is how often a waiter looks at the lock (default: the
	// lock's own default).
	PollInterval time.Duration
	// Alive says whether a lock holder's job still runs (squeue); optional.
	Alive func(sharedcache.Owner) (alive, known bool)
	Now   func() time.Time
	Log   zerolog.Logger
}

// Ensure returns the squashfs file for im. A squashfs path is checked and
// returned as is. A registry image is taken from the cache when it is there
// (imported false); otherwise it is imported under a lock into a staging
// file, validated, and published under its cache name (imported true). A
// job that waited for another job's import reuses its file.
func (m *Importer) Ensure(ctx context.Context, im Image) (path string, imported bool, err error) {
	if im.IsFile() {
		return im.Path, false, checkReadable(im.Path)
	}
	if m.Run == nil {
		return "", false, fmt.Errorf("importing %s: no command runner", im)
	}
	final := filepath.Join(m.CacheDir, im.CacheName())
	if ok, err := published(final); err != nil {
		return "", false, err
	} else if ok {
		return final, false, nil
	}
	if err := os.MkdirAll(m.CacheDir, 0o755); err != nil {
		return "", false, fmt.Errorf("image cache %s: %w", m.CacheDir, err)
	}
	lock, err := sharedcache.Acquire(ctx, final+".lock", m.lockOptions(im, final))
	if errors.Is(err, sharedcache.ErrPublished) {
		m.Log.Info().Str("image", im.Ref).Str("path", final).Msg("image imported by another job; reusing it")
		return final, false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("importing %s into %s: %w", im, m.CacheDir, err)
	}
	defer func() {
		if rerr := lock.Release(); rerr != nil {
			m.Log.Warn().Err(rerr).Str("image", im.Ref).Msg("releasing the image lock")
		}
	}()
	// Someone may have published between our look and the lock.
	if ok, err := published(final); err != nil {
		return "", false, err
	} else if ok {
		return final, false, nil
	}
	if err := m.importLocked(ctx, im, final); err != nil {
		return "", false, err
	}
	return final, true, nil
}

// importLocked imports im into final; the caller holds final's lock.
func (m *Importer) importLocked(ctx context.Context, im Image, final string) error {
	now := m.now()
	staging := sharedcache.StagingPath(final, m.JobID, m.pid())
	// Leftovers of killed imports: ours from an earlier attempt, and other
	// jobs' that nobody has written to for a lock interval (a live import
	// writes its file continuously, and cannot be running while we hold
	// the lock unless its lock was broken).
	if err := os.Remove(staging); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("importing %s: removing %s: %w", im, staging, err)
	}
	removed, err := sharedcache.RemoveStaging(final, m.lockInterval(), now)
	if m.Alive != nil {
		dead, derr := sharedcache.RemoveDeadStaging(final, func(job string) bool {
			alive, known := m.Alive(sharedcache.Owner{JobID: job})
			return known && !alive && job != m.JobID
		})
		removed, err = append(removed, dead...), errors.Join(err, derr)
	}
	for _, p := range removed {
		m.Log.Warn().Str("image", im.Ref).Str("path", p).Msg("removed the staging file of an interrupted import")
	}
	if err != nil {
		m.Log.Warn().Err(err).Str("image", im.Ref).Msg("cleaning staging files")
	}
	argv, err := ImportArgv(m.Bin, im, staging)
	if err != nil {
		return err
	}
	m.Log.Info().Str("image", im.Ref).Str("path", final).Msg("importing image")
	stop := m.watch(staging, now)
	err = m.Run(ctx, argv, m.Env)
	stop()
	if err == nil {
		err = m.validate(ctx, staging)
	}
	if err == nil {
		err = sharedcache.PublishFile(staging, final)
		if errors.Is(err, sharedcache.ErrExists) {
			// Our lock was broken and the other import finished first:
			// theirs is as good as ours.
			err = nil
		}
	}
	if rerr := os.Remove(staging); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		m.Log.Warn().Err(rerr).Str("path", staging).Msg("removing the staging file")
	}
	if err != nil {
		return fmt.Errorf("importing %s into %s: %w", im, final, err)
	}
	m.Log.Info().Str("image", im.Ref).Str("path", final).Dur("took", m.now().Sub(now)).Msg("image imported")
	return nil
}

func (m *Importer) lockOptions(im Image, final string) sharedcache.LockOptions {
	start := m.now()
	return sharedcache.LockOptions{
		Owner:         sharedcache.Owner{JobID: m.JobID, Host: m.Host, PID: m.pid()},
		Interval:      m.lockInterval(),
		PollInterval:  m.PollInterval,
		ProgressEvery: m.progressEvery(),
		Now:           m.now,
		Alive:         m.Alive,
		Done:          func() (bool, error) { return published(final) },
		OnWait: func(holder sharedcache.Owner, waited time.Duration) {
			// The holder's staging name is known from its job and pid.
			size := fileSize(sharedcache.StagingPath(final, holder.JobID, holder.PID))
			m.Log.Info().Str("image", im.Ref).Stringer("holder", holder).Dur("waited", waited).
				Int64("bytes", size).Msg("waiting for another job's import of the image")
			if m.Progress != nil {
				m.Progress(m.now().Sub(start), size)
			}
		},
		OnBreak: func(holder sharedcache.Owner, age time.Duration) {
			m.Log.Warn().Str("image", im.Ref).Stringer("holder", holder).Dur("untouched", age).
				Msg("broke the stale image lock of an import that died")
		},
	}
}

// watch reports progress every ProgressEvery until stop is called, with the
// size of the staging file enroot is writing.
func (m *Importer) watch(staging string, start time.Time) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(m.progressEvery())
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			size := fileSize(staging)
			m.Log.Info().Str("path", staging).Int64("bytes", size).Dur("elapsed", m.now().Sub(start)).Msg("still importing")
			if m.Progress != nil {
				m.Progress(m.now().Sub(start), size)
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func (m *Importer) validate(ctx context.Context, path string) error {
	if m.Validate != nil {
		return m.Validate(ctx, path)
	}
	for _, argv := range [][]string{{"unsquashfs", "-s", path}, {"unsquashfs", "-l", path}} {
		if err := m.Run(ctx, argv, m.Env); err != nil {
			return fmt.Errorf("%s is not a valid squashfs file: %w", path, err)
		}
	}
	return nil
}

func (m *Importer) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *Importer) pid() int {
	if m.PID != 0 {
		return m.PID
	}
	return os.Getpid()
}

func (m *Importer) lockInterval() time.Duration {
	if m.LockInterval > 0 {
		return m.LockInterval
	}
	return 30 * time.Second
}

func (m *Importer) progressEvery() time.Duration {
	if m.ProgressEvery > 0 {
		return m.ProgressEvery
	}
	return defaultProgressEvery
}

// published says whether the cache entry is there. Only a regular file
// counts; publishing is atomic, so one that is there is whole.
func published(final string) (bool, error) {
	fi, err := os.Stat(final)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("image cache entry %s: %w", final, err)
	case !fi.Mode().IsRegular():
		return false, fmt.Errorf("image cache entry %s is not a regular file", final)
	}
	return true, nil
}

func checkReadable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("squashfs image %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("squashfs image %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("squashfs image %s is not a regular file", path)
	}
	return nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
