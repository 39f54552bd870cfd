// Package testport hands tests windows of consecutive TCP ports for the
// in-process multi-node tests, where node i binds 127.0.0.(i+1) and the
// stand-ins test-bind SGLang's derived ports as SGLang does: a port taken
// by anyone between the choice and the bind fails a worker at start.
//
// Picking a random window that is free now is not enough: `go test ./...`
// runs several test binaries at once, and two of them may pick overlapping
// windows a second apart (a wildcard listener of one conflicts with
// 127.0.0.8:P of the other). So windows are aligned blocks, and a test
// holds its block's lock file (flock, released when the test ends or its
// process dies) for as long as it runs; every process that asks here skips
// held blocks. The blocks lie below the kernel's ephemeral range, where
// outgoing connections of unrelated tests take their ports.
package testport

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

const (
	// BlockSize is the largest window a test can ask for.
	BlockSize = 32
	low       = 20000
	high      = 40000
)

// Window returns the first of n consecutive ports (n <= BlockSize) that
// are free on every address now and handed to no other test of any process
// on this machine until t ends. It fails t when none is left.
func Window(t testing.TB, n int) int {
	t.Helper()
	if n < 1 || n > BlockSize {
		t.Fatalf("testport.Window(%d): want 1..%d ports", n, BlockSize)
	}
	dir, err := lockDir()
	if err != nil {
		t.Fatalf("testport: %v", err)
	}
	blocks := candidates(ephemeralRange())
	if len(blocks) == 0 {
		// The kernel may hand any port to an outgoing connection: no block
		// is safe from that, the locks still keep the tests apart.
		blocks = candidates(0, 0)
	}
	start := rand.IntN(len(blocks))
	for i := range blocks {
		base := blocks[(start+i)%len(blocks)]
		f, err := lock(dir, base)
		if err != nil {
			t.Fatalf("testport: %v", err)
		}
		if f == nil {
			continue
		}
		if free(base, n) {
			t.Cleanup(func() { f.Close() })
			return base
		}
		f.Close()
	}
	t.Fatalf("testport: no window of %d free ports in %d..%d", n, low, high)
	return 0
}

// lockDir is the directory of the lock files, made if need be. Not under
// TMPDIR: test processes with different TMPDIRs must see each other's
// locks. Every user's tests share it (the in-process cluster runs as
// non-root too), so it is world-writable and sticky, as /tmp is; it is made
// under a private name and renamed into place, so nobody ever sees it
// with the creator's umask.
func lockDir() (string, error) {
	parent := "/tmp"
	if st, err := os.Stat("/run/lock"); err == nil && st.Mode()&(os.ModeSticky|0o002) == os.ModeSticky|0o002 {
		parent = "/run/lock"
	}
	dir := filepath.Join(parent, "wideep-testport")
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		return dir, nil
	}
	tmp, err := os.MkdirTemp(parent, ".wideep-testport-")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(tmp, 0o777|os.ModeSticky); err != nil {
		os.Remove(tmp)
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.Remove(tmp)
		// Another process made it first: use theirs.
		if st, serr := os.Stat(dir); serr == nil && st.IsDir() {
			return dir, nil
		}
		return "", err
	}
	return dir, nil
}

// candidates are the block bases in [low, high) that stay clear of the
// ephemeral range [eLow, eHigh].
func candidates(eLow, eHigh int) []int {
	var out []int
	for b := low; b+BlockSize <= high; b += BlockSize {
		if b+BlockSize-1 < eLow || b > eHigh {
			out = append(out, b)
		}
	}
	return out
}

// ephemeralRange is the kernel's range for outgoing connections; Linux's
// default when it cannot be read.
func ephemeralRange() (int, int) {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		f := strings.Fields(string(data))
		if len(f) == 2 {
			lo, err1 := strconv.Atoi(f[0])
			hi, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil {
				return lo, hi
			}
		}
	}
	return 32768, 60999
}

// lock takes block base's lock without waiting: the open lock file, or nil
// when another holds it. flock belongs to the open file, so a second Window
// in this process is refused the block too. Read only, and no O_CREAT on a
// file that exists: flock needs no more, and with fs.protected_regular the
// kernel refuses O_CREAT on another user's file in a sticky directory.
func lock(dir string, base int) (*os.File, error) {
	name := filepath.Join(dir, fmt.Sprintf("%d.lock", base))
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		f, err = os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
		if errors.Is(err, fs.ErrExist) {
			f, err = os.Open(name)
		}
	}
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, nil
		}
		return nil, fmt.Errorf("locking %s: %w", name, err)
	}
	return f, nil
}

// free reports whether base..base+n-1 can be bound on every address now.
func free(base, n int) bool {
	for p := base; p < base+n; p++ {
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(p))
		if err != nil {
			return false
		}
		ln.Close()
	}
	return true
}
