package slurmtest

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// A slot is one set of machine-wide names a lab needs to itself: network name
// prefix, /24 subnet and slurmctld port. (Its cgroup subtree is named after
// its directory, which is unique anyway.)
// Slot i is slt<i>, 10.213.<i>.0/24 and port 17000+2i. Slot 77 is left to
// `make cluster-up` (slab, 10.213.77, 16817 are up.sh's defaults).
//
// A slot is held through an exclusive flock on a per-slot file for the life of
// the cluster, so concurrent Starts in different test processes never pick the
// same one. The file also names the lab's directory, so a lab whose test
// process died (its lock freed with it) can be found and stopped.
type slot struct {
	index  int
	net    string
	subnet string
	port   int
	lock   *os.File
}

const (
	firstSlot   = 1
	lastSlot    = 250
	makeLabSlot = 77
	portBase    = 17000
)

func newSlot(i int) slot {
	return slot{
		index:  i,
		net:    fmt.Sprintf("slt%d", i),
		subnet: fmt.Sprintf("10.213.%d", i),
		port:   portBase + 2*i,
	}
}

// lockDir matches up.sh's choice; it must not depend on TMPDIR, or two test
// processes with different TMPDIRs would not see each other's locks.
func lockDir() string {
	if st, err := os.Stat("/run/lock"); err == nil && st.IsDir() {
		return "/run/lock"
	}
	return "/tmp"
}

// claimSlot takes the first free slot for the lab in dir. reclaim is called
// to stop the lab of a dead owner that still occupies a slot.
func claimSlot(dir string, reclaim func(labDir string) error) (slot, error) {
	var reasons []string
	for i := firstSlot; i <= lastSlot; i++ {
		if i == makeLabSlot {
			continue
		}
		s := newSlot(i)
		f, err := os.OpenFile(filepath.Join(lockDir(), fmt.Sprintf("slurmtest-slot-%d.lock", i)),
			os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return slot{}, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				continue // another live cluster has it
			}
			return slot{}, fmt.Errorf("locking %s: %w", f.Name(), err)
		}
		busy := s.busy()
		if busy != "" {
			// nobody holds the lock, yet the slot is in use: either by a lab
			// whose test process died, or by something that isn't ours
			if prev := readOwner(f); prev != "" && labUsesNet(prev, s.net) {
				if err := reclaim(prev); err != nil {
					reasons = append(reasons, fmt.Sprintf("slot %d: %v", i, err))
				}
				busy = s.busy()
			}
		}
		if busy != "" {
			reasons = append(reasons, fmt.Sprintf("slot %d: %s", i, busy))
			f.Close()
			continue
		}
		if err := writeOwner(f, dir); err != nil {
			f.Close()
			return slot{}, err
		}
		s.lock = f
		return s, nil
	}
	return slot{}, fmt.Errorf("no free lab slot among %d..%d: %s", firstSlot, lastSlot,
		strings.Join(reasons, "; "))
}

func (s *slot) release() {
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
}

// busy says why the slot's names are taken on this machine, or "".
func (s slot) busy() string {
	if _, err := net.InterfaceByName(s.net + "-br"); err == nil {
		return "interface " + s.net + "-br exists"
	}
	if matches, _ := filepath.Glob("/run/netns/" + s.net + "-n*"); len(matches) > 0 {
		return "netns " + filepath.Base(matches[0]) + " exists"
	}
	if used, err := subnetInUse(s.subnet); err != nil || used {
		return "subnet " + s.subnet + ".0/24 in use"
	}
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(s.port))
	if err != nil {
		return "port " + strconv.Itoa(s.port) + " in use"
	}
	ln.Close()
	return ""
}

// subnetInUse reports whether any local address or IPv4 route falls in
// <subnet>.0/24.
func subnetInUse(subnet string) (bool, error) {
	_, cidr, err := net.ParseCIDR(subnet + ".0/24")
	if err != nil {
		return false, err
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && cidr.Contains(ipn.IP) {
			return true, nil
		}
	}
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		// Destination is 4 bytes of hex in host (little-endian) order
		b, err := hex.DecodeString(fields[1])
		if err != nil || len(b) != 4 {
			continue
		}
		dst := net.IPv4(b[3], b[2], b[1], b[0])
		if cidr.Contains(dst) {
			return true, nil
		}
	}
	return false, sc.Err()
}

func readOwner(f *os.File) string {
	buf := make([]byte, 4096)
	n, _ := f.ReadAt(buf, 0)
	return strings.TrimSpace(string(buf[:n]))
}

func writeOwner(f *os.File, dir string) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(dir+"\n"), 0)
	return err
}

// labUsesNet reports whether the lab in dir is up with network name net,
// according to the info file up.sh writes once the lab is up.
func labUsesNet(dir, net string) bool {
	data, err := os.ReadFile(filepath.Join(dir, "info"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if line == "net="+net {
			return true
		}
	}
	return false
}
