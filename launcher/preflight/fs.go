package preflight

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"
)

// DefaultFSTimeout is how long a filesystem check may take when
// Config.FSTimeout is 0. A healthy shared filesystem answers in
// milliseconds; one that has not answered in 30 s is hung, and the job is
// better off failing now, with that reason, than hanging in a worker later.
const DefaultFSTimeout = 30 * time.Second

// FS is the filesystem as the checks use it. HostFS is the real one; tests
// put in a fake that hangs, as a dead NFS mount does.
type FS interface {
	Open(name string) (File, error)
	MkdirAll(path string, perm fs.FileMode) error
	CreateTemp(dir, pattern string) (File, error)
	Remove(name string) error
	ReadDir(name string) ([]fs.DirEntry, error)
}

// File is what the checks do with an open file; *os.File has it.
type File interface {
	io.ReadWriteCloser
	Stat() (fs.FileInfo, error)
	Readdirnames(n int) ([]string, error)
	Name() string
}

// HostFS is the host's filesystem, through package os.
var HostFS FS = hostFS{}

type hostFS struct{}

func (hostFS) Open(name string) (File, error)               { return os.Open(name) }
func (hostFS) MkdirAll(path string, perm fs.FileMode) error { return os.MkdirAll(path, perm) }
func (hostFS) Remove(name string) error                     { return os.Remove(name) }
func (hostFS) ReadDir(name string) ([]fs.DirEntry, error)   { return os.ReadDir(name) }
func (hostFS) CreateTemp(dir, pattern string) (File, error) { return os.CreateTemp(dir, pattern) }

// probe is one check that may hang: what names the thing it checks (the
// start of its problem lines), run returns the problems it found, hang
// guesses why it would not answer ("" is a hung filesystem).
type probe struct {
	what string
	run  func() []string
	hang string
}

// runProbes runs every probe at once and returns each one's problems, in
// order, within timeout: a probe that has not answered by then gets one
// problem saying so.
//
// A probe that does not answer is left behind, still blocked in its system
// call: nothing can interrupt an operation on a hung mount from user space,
// and Go cannot stop a goroutine. That is acceptable here: it holds one
// thread and a few KB, preflight runs once, and the problem it reports
// stops the launcher (exit 2) soon after, which ends it (NFS waits are
// killable).
func runProbes(probes []probe, timeout time.Duration) [][]string {
	type answer struct {
		i        int
		problems []string
	}
	answers := make(chan answer, len(probes)) // room for late answers: the prober never blocks
	for i, p := range probes {
		go func() { answers <- answer{i, p.run()} }()
	}
	results := make([][]string, len(probes))
	answered := make([]bool, len(probes))
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for range probes {
		select {
		case a := <-answers:
			results[a.i], answered[a.i] = a.problems, true
		case <-deadline.C:
			for i, p := range probes {
				if !answered[i] {
					results[i] = []string{fmt.Sprintf("%s: no answer within %s (%s)", p.what, timeout, cmp.Or(p.hang, "hung filesystem?"))}
				}
			}
			return results
		}
	}
	return results
}

// checkReadable opens the path as the engine will: a directory must be
// listable, a file readable.
func checkReadable(fsys FS, path string) error {
	f, err := fsys.Open(path)
	if err != nil {
		return errors.New(reason(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return errors.New(reason(err))
	}
	if st.IsDir() {
		if _, err := f.Readdirnames(1); err != nil && err != io.EOF {
			return fmt.Errorf("cannot list: %s", reason(err))
		}
		return nil
	}
	if _, err := f.Read(make([]byte, 1)); err != nil && err != io.EOF {
		return fmt.Errorf("cannot read: %s", reason(err))
	}
	return nil
}

// checkWritableDir writes and removes a file: permission bits alone do not
// tell about read-only mounts, quotas or root squash on shared filesystems.
func checkWritableDir(fsys FS, dir string) error {
	if err := fsys.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cannot create: %s", reason(err))
	}
	f, err := fsys.CreateTemp(dir, ".wideep-preflight-*")
	if err != nil {
		return fmt.Errorf("not writable: %s", reason(err))
	}
	_, werr := f.Write([]byte("ok\n"))
	cerr := f.Close()
	rerr := fsys.Remove(f.Name())
	if err := cmp.Or(werr, cerr, rerr); err != nil {
		return fmt.Errorf("not writable: %s", reason(err))
	}
	return nil
}

func reason(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		// The path is already in the message; keep the cause.
		err = pe.Err
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "does not exist"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	}
	return err.Error()
}
