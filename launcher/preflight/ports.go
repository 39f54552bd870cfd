package preflight

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"
)

// maxCommand bounds the holder's command line in a problem line.
const maxCommand = 80

// inUse starts every "port in use" reason: scripts and tests grep for it.
const inUse = "already in use on this node"

func checkPortFree(host string, port int, procDir string) error {
	// The processes bind the wildcard address, which conflicts with a listener
	// on any address.
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return errors.New(inUse + portHolder(procDir, host, port))
		}
		return err
	}
	return ln.Close()
}

// portHolder names who holds port (as bound at host) where procDir (a
// /proc) shows it, as the rest of the reason after inUse:
// " by PID 1234 (python3 -m ...)", " ... and 2 more processes" when several
// share the socket (forked servers do), " (holder not visible to this
// user)" when the socket is there but its process is another user's, and ""
// when /proc shows no socket on the port.
func portHolder(procDir, host string, port int) string {
	inodes := portInodes(procDir, host, port)
	if len(inodes) == 0 {
		return ""
	}
	pids := socketOwners(procDir, inodes)
	if len(pids) == 0 {
		return " (holder not visible to this user)"
	}
	s := fmt.Sprintf(" by PID %d (%s)", pids[0], procCommand(procDir, pids[0]))
	switch n := len(pids) - 1; n {
	case 0:
	case 1:
		s += " and 1 more process"
	default:
		s += fmt.Sprintf(" and %d more processes", n)
	}
	return s
}

// portInodes returns the inodes of the sockets on port, from procDir's
// net/tcp and net/tcp6 (this network namespace's): the listeners whose
// address conflicts with host ("" or a name: any address does), else any
// other socket bound to the port (an outgoing connection's, say).
func portInodes(procDir, host string, port int) []uint64 {
	bind := net.ParseIP(host)
	var listening, other []uint64
	for _, file := range []string{"tcp", "tcp6"} {
		f, err := os.Open(filepath.Join(procDir, "net", file))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // the header
		for sc.Scan() {
			e, ok := parseTCPLine(sc.Text())
			if !ok || e.port != port || e.inode == 0 {
				continue // inode 0: TIME_WAIT, owned by nobody
			}
			if e.state != tcpListen {
				other = append(other, e.inode)
			} else if bind == nil || e.addr.IsUnspecified() || bind.IsUnspecified() || e.addr.Equal(bind) {
				listening = append(listening, e.inode)
			}
		}
		f.Close()
	}
	if len(listening) > 0 {
		return listening
	}
	return other
}

const tcpListen = 0x0A // TCP_LISTEN in include/net/tcp_states.h

type tcpEntry struct {
	addr  net.IP
	port  int
	state int
	inode uint64
}

// parseTCPLine parses one socket of /proc/net/tcp{,6}:
//
//	sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
//	0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 1000 0 31337 ...
//
// Addresses are hex of the kernel's 32-bit words in host byte order.
func parseTCPLine(line string) (tcpEntry, bool) {
	f := strings.Fields(line)
	if len(f) < 10 {
		return tcpEntry{}, false
	}
	hexAddr, hexPort, ok := strings.Cut(f[1], ":")
	if !ok {
		return tcpEntry{}, false
	}
	raw, err := hex.DecodeString(hexAddr)
	if err != nil || (len(raw) != net.IPv4len && len(raw) != net.IPv6len) {
		return tcpEntry{}, false
	}
	addr := make(net.IP, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(addr[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	port, err1 := strconv.ParseUint(hexPort, 16, 16)
	state, err2 := strconv.ParseUint(f[3], 16, 8)
	inode, err3 := strconv.ParseUint(f[9], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return tcpEntry{}, false
	}
	return tcpEntry{addr: addr, port: int(port), state: int(state), inode: inode}, true
}

// socketOwners returns, in increasing order, the pids under procDir with
// an open file descriptor on one of the sockets. Processes whose fd
// directory this user may not read are skipped.
func socketOwners(procDir string, inodes []uint64) []int {
	want := map[string]bool{}
	for _, ino := range inodes {
		want["socket:["+strconv.FormatUint(ino, 10)+"]"] = true
	}
	entries, _ := os.ReadDir(procDir)
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fdDir := filepath.Join(procDir, e.Name(), "fd")
		fds, _ := os.ReadDir(fdDir)
		for _, fd := range fds {
			if target, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && want[target] {
				pids = append(pids, pid)
				break
			}
		}
	}
	slices.Sort(pids)
	return pids
}

// procCommand is the command line of pid for people: its argv joined with
// spaces and cut to about maxCommand bytes, else its kernel name.
func procCommand(procDir string, pid int) string {
	dir := filepath.Join(procDir, strconv.Itoa(pid))
	b, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		b, _ = os.ReadFile(filepath.Join(dir, "comm"))
		b = bytes.TrimSpace(b)
	}
	cmd := strings.ToValidUTF8(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})), "?")
	if len(cmd) <= maxCommand {
		return cmd
	}
	cut := maxCommand - len("...")
	for cut > 0 && !utf8.RuneStart(cmd[cut]) {
		cut--
	}
	return cmd[:cut] + "..."
}
