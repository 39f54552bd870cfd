package preflight

import (
	"errors"
	"io/fs"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// waitTimeout bounds every wait, so a bug fails instead of hanging; it is
// never what makes a test pass.
const waitTimeout = 20 * time.Second

// hungFS is HostFS with some paths on a dead mount: every call on them
// blocks in enter until release.
type hungFS struct {
	FS
	hung  map[string]bool
	enter func(path string) error
}

func (h hungFS) Open(name string) (File, error) {
	if h.hung[name] {
		if err := h.enter(name); err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
	}
	return h.FS.Open(name)
}

func (h hungFS) MkdirAll(path string, perm fs.FileMode) error {
	if h.hung[path] {
		if err := h.enter(path); err != nil {
			return &fs.PathError{Op: "mkdir", Path: path, Err: err}
		}
	}
	return h.FS.MkdirAll(path, perm)
}

// checkWithin runs Check and fails the test if it does not return.
func checkWithin(t *testing.T, cfg Config) []string {
	t.Helper()
	done := make(chan []string, 1)
	go func() { done <- Check(cfg) }()
	select {
	case problems := <-done:
		return problems
	case <-time.After(waitTimeout):
		require.FailNow(t, "Check hangs on a hung filesystem")
		return nil
	}
}

func TestPreflightHungFilesystem(t *testing.T) {
	f := newPreflightFixture(t, 8)
	root := filepath.Dir(f.model)
	// The probes left behind end when the test does, without touching the
	// filesystem any more (the temp dir is being removed).
	release := make(chan struct{})
	var blocked sync.WaitGroup
	blocked.Add(3) // the model path, the cache dir and python3 hang
	t.Cleanup(func() {
		close(release)
		blocked.Wait()
	})
	block := func(string) error {
		defer blocked.Done()
		<-release
		return errors.New("test over")
	}
	cache, logs := filepath.Join(root, "nfs", "cache"), filepath.Join(root, "logs")
	cfg := Config{
		ModelPath: f.model, CacheDir: cache, LogDir: logs,
		GPUs: 8, DevDir: f.devDir, Executables: []string{"python3", "etcd"},
		FSTimeout: time.Second, // the healthy checks take milliseconds, even under load
		FS:        hungFS{FS: HostFS, hung: map[string]bool{f.model: true, cache: true}, enter: block},
		LookPath: func(name string) (string, error) {
			if name == "python3" { // PATH has a directory on the dead mount
				return "", block(name)
			}
			return filepath.Join(f.binDir, name), nil
		},
	}

	problems := checkWithin(t, cfg)

	assert.Equal(t, []string{
		"model path " + f.model + ": no answer within 1s (hung filesystem?)",
		"cache dir " + cache + ": no answer within 1s (hung filesystem?)",
		"executable python3: no answer within 1s (hung filesystem?)",
	}, problems, "the healthy log dir, GPUs and etcd pass")
}

// The filesystem checks run at once: each hung call here returns only once
// all of them have been entered, so checks made one after the other would
// wait for the timeout and report "no answer" instead of the errors.
func TestPreflightFilesystemChecksConcurrent(t *testing.T) {
	f := newPreflightFixture(t, 8)
	root := filepath.Dir(f.model)
	cache, logs := filepath.Join(root, "cache"), filepath.Join(root, "logs")
	var entered sync.WaitGroup
	entered.Add(3)
	barrier := func(string) error {
		entered.Done()
		entered.Wait()
		return errors.New("stale file handle")
	}
	cfg := Config{
		ModelPath: f.model, CacheDir: cache, LogDir: logs,
		FSTimeout: waitTimeout,
		FS:        hungFS{FS: HostFS, hung: map[string]bool{f.model: true, cache: true, logs: true}, enter: barrier},
	}

	problems := checkWithin(t, cfg)

	assert.Equal(t, []string{
		"model path " + f.model + ": stale file handle",
		"cache dir " + cache + ": cannot create: stale file handle",
		"log dir " + logs + ": cannot create: stale file handle",
	}, problems)
}
