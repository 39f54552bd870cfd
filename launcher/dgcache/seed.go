package dgcache

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

const (
	kernelPrefix = "kernel."
	cubinName    = "kernel.cubin"
	// seedMark names Seed's temporary files and directories. It starts
	// with "." so that it never matches DeepGEMM's "kernel." names.
	seedMark = ".seed-"
)

// CountKernels counts the compiled kernels in a DeepGEMM cache root: the
// regular files cache/kernel.*/kernel.cubin. A root without cache/ holds
// none (a node that never compiled), which is not an error.
func CountKernels(dir string) (int, error) {
	root := filepath.Join(dir, cacheSubdir)
	entries, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("counting DeepGEMM kernels: %w", err)
	}
	n := 0
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), kernelPrefix) &&
			isRegular(filepath.Join(root, e.Name(), cubinName)) {
			n++
		}
	}
	return n, nil
}

// Seed copies the kernels of the published entry at entryPath into the
// node-local DeepGEMM cache root localDir, where the workers compile what is
// still missing without racing other nodes. Files already there with the
// same content are skipped, others replaced; copied and skipped count files.
//
// Workers may already read localDir, so nothing partial is ever visible: a
// kernel directory that is new to localDir is built under a temporary name
// and renamed into place whole; a file in a directory that exists (a partial
// or older copy) is written to a temporary file and renamed over the old one.
// Seed does not fsync: localDir is node-local, and a node that crashes takes
// its job with it.
func Seed(entryPath, localDir string) (copied, skipped int, err error) {
	src := filepath.Join(entryPath, cacheSubdir)
	if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
		if err == nil {
			err = errors.New("not a directory")
		}
		return 0, 0, fmt.Errorf("seeding %s from DeepGEMM cache entry %s: %w", localDir, entryPath, err)
	}
	dst := filepath.Join(localDir, cacheSubdir)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return 0, 0, fmt.Errorf("seeding %s from DeepGEMM cache entry %s: %w", localDir, entryPath, err)
	}
	removeDeadSeeds(dst)
	var s seeder
	if err := s.merge(src, dst); err != nil {
		return s.copied, s.skipped, fmt.Errorf("seeding %s from DeepGEMM cache entry %s: %w", localDir, entryPath, err)
	}
	return s.copied, s.skipped, nil
}

type seeder struct{ copied, skipped int }

// merge brings the existing directory dst up to date with src.
func (s *seeder) merge(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		sp, dp := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		switch {
		case e.IsDir():
			fi, err := os.Lstat(dp)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				err = s.addDir(sp, dp)
			case err != nil:
			case fi.IsDir():
				err = s.merge(sp, dp)
			default:
				err = fmt.Errorf("%s is in the way of a directory", dp)
			}
			if err != nil {
				return err
			}
		case e.Type().IsRegular():
			same, err := sameContent(sp, dp)
			if err != nil {
				return err
			}
			if same {
				s.skipped++
				continue
			}
			if err := replaceFile(sp, dp); err != nil {
				return err
			}
			s.copied++
		}
		// Anything else is not DeepGEMM's; Publish never copies it.
	}
	return nil
}

// addDir creates dst as a copy of src, made visible by one rename.
func (s *seeder) addDir(src, dst string) error {
	tmp := tempName(dst)
	n, err := copyTreePlain(src, tmp)
	if err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.RemoveAll(tmp)
		var le *os.LinkError
		if errors.As(err, &le) && (errors.Is(le.Err, fs.ErrExist) || errors.Is(le.Err, syscall.ENOTEMPTY)) {
			// Created meanwhile (by DeepGEMM compiling it, say): merge into it.
			return s.merge(src, dst)
		}
		return err
	}
	s.copied += n
	return nil
}

// copyTreePlain copies the directory src to the new directory dst and
// returns how many files it copied.
func copyTreePlain(src, dst string) (int, error) {
	entries, err := os.ReadDir(src)
	if err != nil {
		return 0, err
	}
	if err := os.Mkdir(dst, 0o755); err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		sp, dp := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		switch {
		case e.IsDir():
			m, err := copyTreePlain(sp, dp)
			n += m
			if err != nil {
				return n, err
			}
		case e.Type().IsRegular():
			if err := copyFile(sp, dp); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// replaceFile puts a copy of src at dst with one rename, so a reader of dst
// sees the old file or the new one, never a part.
func replaceFile(src, dst string) error {
	tmp := tempName(dst)
	if err := copyFile(src, tmp); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

func copyFile(src, dst string) error {
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
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copying %s to %s: %w", src, dst, err)
	}
	return nil
}

// sameContent says whether dst is a regular file with src's content:
// sizes first (cheap, and most differences), then SHA-256 of both (kernel
// files are small). A missing dst is not the same.
func sameContent(src, dst string) (bool, error) {
	di, err := os.Lstat(dst)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if di.IsDir() {
		return false, fmt.Errorf("%s is a directory where a file belongs", dst)
	}
	si, err := os.Stat(src)
	if err != nil {
		return false, err
	}
	if !di.Mode().IsRegular() || si.Size() != di.Size() {
		return false, nil
	}
	sh, err := hashFile(src)
	if err != nil {
		return false, err
	}
	dh, err := hashFile(dst)
	if err != nil {
		return false, err
	}
	return bytes.Equal(sh, dh), nil
}

func hashFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return h.Sum(nil), nil
}

// tempName is a hidden sibling of path unique to this process and call.
func tempName(path string) string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand does not fail on Linux
	dir, base := filepath.Split(path)
	return filepath.Join(dir, "."+base+seedMark+strconv.Itoa(os.Getpid())+"-"+hex.EncodeToString(b[:]))
}

// removeDeadSeeds removes what an earlier Seed into dir left when it was
// killed half-way (SIGKILL, a node's OOM killer): temporary kernel
// directories and files whose process is gone. DeepGEMM never reads them
// (the names start with "."), but they are half-written and would stay on
// the node forever. A live process's (another job seeding now) are kept.
func removeDeadSeeds(dir string) {
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		_, after, ok := strings.Cut(d.Name(), seedMark)
		if !ok {
			return nil
		}
		pid, _, _ := strings.Cut(after, "-")
		if n, err := strconv.Atoi(pid); err == nil && !processAlive(n) {
			_ = os.RemoveAll(path)
		}
		if d.IsDir() {
			return fs.SkipDir
		}
		return nil
	})
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// isUnsupportedSync is the error of filesystems that cannot fsync a
// directory (FUSE ones, mostly); their writes are as durable as they get.
func isUnsupportedSync(err error) bool {
	return errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP)
}
