package dgcache

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/wideep/wideep-launch/launcher/sharedcache"
)

// cacheSubdir is DeepGEMM's kernel tree under its cache root; its sibling
// tmp/ holds DeepGEMM's half-written files and is never copied.
const cacheSubdir = "cache"

// Publish copies the kernels DeepGEMM wrote under localDir (its cache root,
// the node-local SGLANG_DG_CACHE_DIR of the compile) into a staging
// directory of the shared cache, writes COMPLETE.json from c, renames the
// whole directory into place and releases the lock. It returns how many
// kernels the entry holds.
//
// Only localDir's cache/ tree is copied, and of it only kernel directories
// that have their kernel.cubin (an older DeepGEMM writes the files of one
// kernel one by one). Publish fills in c's Format, Role, Key and Kernels,
// and JobID, Host and Created when empty.
//
// After an error the claim is still held: call Abandon. An error matching
// sharedcache.ErrExists means the entry is already there (a job that broke
// our lock published first); its kernels are as good as ours.
func (cl *Claim) Publish(localDir string, c Complete) (kernels int, err error) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.over {
		return 0, fmt.Errorf("publishing DeepGEMM cache entry %s: the claim was already given up", cl.final)
	}
	if kernels, err = cl.publish(localDir, c); err != nil {
		return 0, err
	}
	cl.over = true
	return kernels, cl.cache.release(cl.lock, cl.final)
}

// PublishFor publishes localDir's kernels as the entry of role and key for
// a claim that another launcher of the same job holds: node 0 leads (it
// decides and takes the lock), the first node of the compiling worker
// publishes what it compiled, node 0 releases the claim afterwards. It
// never touches the lock; on error its staging directory is removed.
// replace is the claim's: true for ClaimAlways.
func (c *Cache) PublishFor(role, key, localDir string, comp Complete, owner sharedcache.Owner, replace bool) (int, error) {
	final, err := c.entryPath(role, key)
	if err != nil {
		return 0, err
	}
	pid := owner.PID
	if pid == 0 {
		pid = os.Getpid()
	}
	cl := &Claim{cache: c, role: role, key: key, final: final, owner: owner, replace: replace,
		staging: sharedcache.StagingPath(final, owner.JobID, pid)}
	n, err := cl.publish(localDir, comp)
	if err != nil {
		_ = os.RemoveAll(cl.staging)
	}
	return n, err
}

// publish copies, writes COMPLETE.json and renames the entry into place.
func (cl *Claim) publish(localDir string, c Complete) (kernels int, err error) {
	n, err := CountKernels(localDir)
	if err != nil {
		return 0, fmt.Errorf("publishing DeepGEMM cache entry %s: %w", cl.final, err)
	}
	if n == 0 {
		return 0, fmt.Errorf("publishing DeepGEMM cache entry %s: nothing was compiled: no %s/kernel.*/kernel.cubin under %s",
			cl.final, cacheSubdir, localDir)
	}
	// A staging directory of ours can only be from an earlier failed
	// Publish of this claim; start over.
	if err := os.RemoveAll(cl.staging); err != nil {
		return 0, fmt.Errorf("publishing DeepGEMM cache entry %s: %w", cl.final, err)
	}
	if err := os.Mkdir(cl.staging, 0o755); err != nil {
		return 0, fmt.Errorf("publishing DeepGEMM cache entry %s: %w", cl.final, err)
	}
	cl.staged = true
	cl.touch(true)
	if err := cl.copyTree(filepath.Join(localDir, cacheSubdir), filepath.Join(cl.staging, cacheSubdir), true); err != nil {
		return 0, fmt.Errorf("publishing DeepGEMM cache entry %s from %s: %w", cl.final, localDir, err)
	}
	if kernels, err = CountKernels(cl.staging); err != nil {
		return 0, fmt.Errorf("publishing DeepGEMM cache entry %s: %w", cl.final, err)
	}
	c.Format, c.Role, c.Key, c.Kernels = Format, cl.role, cl.key, kernels
	if c.JobID == "" {
		c.JobID = cl.owner.JobID
	}
	if c.Host == "" {
		c.Host = cl.owner.Host
	}
	if c.Created.IsZero() {
		c.Created = cl.cache.now().UTC()
	}
	if err := writeComplete(cl.staging, c); err != nil {
		return 0, fmt.Errorf("publishing DeepGEMM cache entry %s: %w", cl.final, err)
	}
	if cl.replace {
		pid := cl.owner.PID
		if pid == 0 {
			pid = os.Getpid()
		}
		if err := sharedcache.ReplaceDir(cl.staging, cl.final, cl.owner.JobID, pid); err != nil {
			return 0, err
		}
	} else if err := sharedcache.PublishDir(cl.staging, cl.final); err != nil {
		if errors.Is(err, sharedcache.ErrExists) {
			if _, rerr := ReadComplete(cl.final); rerr != nil {
				return 0, fmt.Errorf("%w; the directory there has no valid %s, so it was not published by a job: remove it",
					err, CompleteFile)
			}
		}
		return 0, err // names the entry
	}
	cl.cache.Log.Info().Str("entry", cl.final).Int("kernels", kernels).Str("warning", c.Warning).
		Msg("published DeepGEMM kernels to the shared cache")
	return kernels, nil
}

// Abandon gives the claim up: it removes this job's staging directory and
// releases the lock, so that a waiting job takes over. Use it when the
// compile failed, timed out or was cancelled, and after a failed Publish; it
// does nothing once the claim is over. Called from another goroutine while
// Publish runs, it waits for Publish to end.
func (cl *Claim) Abandon() error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.over {
		return nil
	}
	cl.over = true
	var errs []error
	if cl.staged {
		if err := os.RemoveAll(cl.staging); err != nil {
			errs = append(errs, fmt.Errorf("abandoning DeepGEMM cache entry %s: %w", cl.final, err))
		}
	}
	if err := cl.cache.release(cl.lock, cl.final); err != nil {
		errs = append(errs, fmt.Errorf("abandoning DeepGEMM cache entry %s: %w", cl.final, err))
	}
	return errors.Join(errs...)
}

// touch stamps the staging directory's mtime, at most every half lock
// interval unless forced. Copying deep files does not change the top
// directory's mtime, and a job that takes the lock over removes staging
// directories untouched for a whole interval as a killed job's leftovers.
func (cl *Claim) touch(force bool) {
	now := cl.cache.now()
	if !force && now.Sub(cl.lastTouch) < cl.cache.interval()/2 {
		return
	}
	cl.lastTouch = now
	_ = os.Chtimes(cl.staging, now, now) // a failed touch is retried on the next file
}

// copyTree copies the directory src to dst (which must not exist), file by
// file with fsync, and flushes each directory after its entries, so that the
// entry is on stable storage before the rename makes it visible. top marks
// DeepGEMM's cache/ directory, whose kernel directories are copied only when
// complete.
func (cl *Claim) copyTree(src, dst string, top bool) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		s, d := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		switch {
		case e.IsDir():
			if top && strings.HasPrefix(e.Name(), kernelPrefix) && !isRegular(filepath.Join(s, cubinName)) {
				cl.cache.Log.Warn().Str("path", s).Msg("not publishing a DeepGEMM kernel directory without its " + cubinName)
				continue
			}
			if err := cl.copyTree(s, d, false); err != nil {
				return err
			}
		case e.Type().IsRegular():
			if err := copyFileSync(s, d); err != nil {
				return err
			}
			cl.touch(false)
			if cl.cache.afterCopy != nil {
				if err := cl.cache.afterCopy(d); err != nil {
					return err
				}
			}
		default:
			// DeepGEMM writes only directories and regular files; anything
			// else is not a kernel.
			cl.cache.Log.Warn().Str("path", s).Msg("not publishing a DeepGEMM cache entry that is neither a file nor a directory")
		}
	}
	return syncDir(dst)
}

func copyFileSync(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copying %s to %s: %w", src, dst, err)
	}
	return nil
}

func syncDir(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil && !isUnsupportedSync(err) {
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	return nil
}

func isRegular(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.Mode().IsRegular()
}
