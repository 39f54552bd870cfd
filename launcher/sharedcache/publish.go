package sharedcache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrExists is what the publish functions return when the final name is
// already taken: the entry was published by someone else, and it is theirs.
var ErrExists = errors.New("already exists")

const stagingMark = ".tmp-"

// StagingPath is where one process of one job prepares the entry that will
// be published as final: a hidden name in the same directory (so publishing
// is a link or rename within one filesystem), unique to the job and the
// process (so two writers never share a file, and a leftover says whose it
// was), e.g. /cache/.img.sqsh.tmp-1234-5678 for /cache/img.sqsh.
func StagingPath(final, jobID string, pid int) string {
	dir, base := filepath.Split(final)
	return filepath.Join(dir, "."+base+stagingMark+safeName(jobID)+"-"+strconv.Itoa(pid))
}

// safeName keeps a job id usable in a file name: Slurm ids are digits, or
// "1234_7" for array tasks, but the value comes from the environment.
func safeName(s string) string {
	if s == "" {
		return "nojob"
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '.':
			return r
		}
		return '_'
	}, s)
}

// PublishFile makes the staged file visible as final, never replacing a
// final file that exists: link(2) fails with EEXIST where rename(2) would
// silently replace a file that other nodes may be reading. The staged
// name is removed on success and left to the caller on failure.
func PublishFile(staged, final string) error {
	if err := syncPath(staged); err != nil {
		return fmt.Errorf("publishing %s: syncing %s: %w", final, staged, err)
	}
	if err := os.Link(staged, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("publishing %s: %w", final, ErrExists)
		}
		return fmt.Errorf("publishing %s from %s: %w", final, staged, err)
	}
	if err := os.Remove(staged); err != nil {
		return fmt.Errorf("published %s, but removing %s: %w", final, staged, err)
	}
	return syncPath(filepath.Dir(final))
}

// PublishDir makes the staged directory visible as final. rename(2) refuses
// to replace a non-empty directory (ENOTEMPTY) but would replace an empty
// one, so an existing final name of any kind is checked first and refused.
// Between that check and the rename another publisher could still create an
// empty directory and lose it; callers publish under a Lock, which makes
// that a broken-lock corner case, and a non-empty entry is never replaced.
func PublishDir(staged, final string) error {
	if err := syncPath(staged); err != nil {
		return fmt.Errorf("publishing %s: syncing %s: %w", final, staged, err)
	}
	if _, err := os.Lstat(final); err == nil {
		return fmt.Errorf("publishing %s: %w", final, ErrExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("publishing %s: %w", final, err)
	}
	if err := os.Rename(staged, final); err != nil {
		var le *os.LinkError
		if errors.As(err, &le) && (errors.Is(le.Err, fs.ErrExist) || errors.Is(le.Err, syscall.ENOTEMPTY)) {
			return fmt.Errorf("publishing %s: %w", final, ErrExists)
		}
		return fmt.Errorf("publishing %s from %s: %w", final, staged, err)
	}
	return syncPath(filepath.Dir(final))
}

// ReplaceDir makes the staged directory visible as final, replacing
// whatever final holds. There is no atomic exchange of two directories on
// NFS, so the old entry is first renamed away (to a staging name of jobID
// and pid, which RemoveStaging sweeps if we die in between), then the new
// one renamed in: for that moment final is missing, which a reader takes
// for a miss and, under the entry's lock, waits out. Callers hold the lock.
func ReplaceDir(staged, final, jobID string, pid int) error {
	if err := syncPath(staged); err != nil {
		return fmt.Errorf("replacing %s: syncing %s: %w", final, staged, err)
	}
	old := StagingPath(final, jobID+"-old", pid)
	moved := true
	if err := os.Rename(final, old); errors.Is(err, fs.ErrNotExist) {
		moved = false
	} else if err != nil {
		return fmt.Errorf("replacing %s: moving it aside: %w", final, err)
	}
	if err := os.Rename(staged, final); err != nil {
		if moved {
			_ = os.Rename(old, final) // put the old entry back; it is still whole
		}
		return fmt.Errorf("replacing %s from %s: %w", final, staged, err)
	}
	if moved {
		// Readers that were copying the old entry may fail and retry; the
		// new entry holds at least what the old one did.
		_ = os.RemoveAll(old)
	}
	return syncPath(filepath.Dir(final))
}

// RemoveStaging removes what killed jobs left while preparing final: the
// staging files and directories of final (any job, any process) untouched
// for longer than olderThan at now. Recent ones may belong to a live writer
// and are kept. It returns what it removed.
func RemoveStaging(final string, olderThan time.Duration, now time.Time) ([]string, error) {
	return removeStaging(final, func(path, _ string) bool {
		fi, err := os.Lstat(path)
		// A file gone meanwhile was removed by someone else.
		return err == nil && now.Sub(fi.ModTime()) > olderThan
	})
}

// RemoveDeadStaging removes the staging files and directories of final
// whose job is gone (dead says so, for a job id), however recent: a job
// that was killed cannot be writing them, and the lock it held has been
// broken. It returns what it removed.
func RemoveDeadStaging(final string, dead func(jobID string) bool) ([]string, error) {
	return removeStaging(final, func(_, rest string) bool {
		// rest is "<job>-<pid>" (StagingPath).
		i := strings.LastIndexByte(rest, '-')
		return i > 0 && dead(rest[:i])
	})
}

// removeStaging removes the staging files and directories of final that
// remove accepts, given their path and what follows the staging mark.
func removeStaging(final string, remove func(path, rest string) bool) ([]string, error) {
	dir, base := filepath.Split(final)
	if dir == "" {
		dir = "."
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("cleaning staging files of %s: %w", final, err)
	}
	prefix := "." + base + stagingMark
	var removed []string
	var errs []error
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		path := filepath.Join(dir, e.Name())
		if !ok || !remove(path, rest) {
			continue
		}
		if err := os.RemoveAll(path); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", path, err))
			continue
		}
		removed = append(removed, path)
	}
	return removed, errors.Join(errs...)
}

// syncPath flushes a file or directory to stable storage, so that what
// other nodes see after the publish is the whole entry, even after a crash
// of this node right after the rename.
func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		// Some filesystems (FUSE ones, mostly) cannot fsync a directory;
		// their writes are as durable as they get.
		err = nil
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
