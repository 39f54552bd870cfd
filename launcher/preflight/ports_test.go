package preflight

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// procSocket is one line of a fake /proc/net/tcp{,6}.
type procSocket struct {
	file  string // "tcp" or "tcp6"
	addr  string // the local address, as net.ParseIP takes it
	port  int
	state int // 0x0A LISTEN, 0x01 ESTABLISHED, 0x06 TIME_WAIT
	inode uint64
}

// procAddr encodes ip as the kernel prints it: hex of 32-bit words in host
// byte order.
func procAddr(ip net.IP) string {
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	var b strings.Builder
	for i := 0; i < len(ip); i += 4 {
		fmt.Fprintf(&b, "%08X", binary.NativeEndian.Uint32(ip[i:]))
	}
	return b.String()
}

// fakeProc writes a /proc with net/tcp, net/tcp6, and processes given as
// pid → cmdline (NUL-separated) and the socket inodes they have open.
func fakeProc(t *testing.T, sockets []procSocket, procs map[int]fakeProcess) string {
	t.Helper()
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "net"), 0o755))
	lines := map[string][]string{"tcp": {"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"}, "tcp6": {"header"}}
	for i, s := range sockets {
		local := procAddr(net.ParseIP(s.addr))
		remote := strings.Repeat("0", len(local))
		lines[s.file] = append(lines[s.file], fmt.Sprintf("%4d: %s:%04X %s:0000 %02X 00000000:00000000 00:00000000 00000000  1000        0 %d 1 0000000000000000 100 0 0 10 0",
			i, local, s.port, remote, s.state, s.inode))
	}
	for file, l := range lines {
		require.NoError(t, os.WriteFile(filepath.Join(root, "net", file), []byte(strings.Join(l, "\n")+"\n"), 0o644))
	}
	for pid, p := range procs {
		dir := filepath.Join(root, strconv.Itoa(pid))
		require.NoError(t, os.MkdirAll(filepath.Join(dir, "fd"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "cmdline"), []byte(p.cmdline), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "comm"), []byte(p.comm+"\n"), 0o644))
		require.NoError(t, os.Symlink("/dev/null", filepath.Join(dir, "fd", "0")))
		for i, ino := range p.sockets {
			require.NoError(t, os.Symlink(fmt.Sprintf("socket:[%d]", ino), filepath.Join(dir, "fd", strconv.Itoa(i+3))))
		}
	}
	return root
}

type fakeProcess struct {
	cmdline, comm string
	sockets       []uint64
}

func TestPortHolder(t *testing.T) {
	const port = 29501
	torchrun := fakeProcess{cmdline: "python3\x00-m\x00torch.distributed.run\x00--nproc-per-node=8\x00", comm: "python3", sockets: []uint64{100}}
	long := "python3\x00-m\x00sglang.launch_server\x00--model-path\x00/models/deepseek-ai/DeepSeek-R1\x00--tp\x0032\x00--dist-init-addr\x0010.0.0.1:29500\x00"
	for name, tc := range map[string]struct {
		bindHost string
		sockets  []procSocket
		procs    map[int]fakeProcess
		want     string
	}{
		"listener on every address": {
			sockets: []procSocket{{"tcp", "0.0.0.0", port, 0x0A, 100}},
			procs:   map[int]fakeProcess{1234: torchrun},
			want:    " by PID 1234 (python3 -m torch.distributed.run --nproc-per-node=8)",
		},
		"IPv6 listener": {
			bindHost: "10.0.0.1",
			sockets:  []procSocket{{"tcp6", "::", port, 0x0A, 100}},
			procs:    map[int]fakeProcess{1234: torchrun},
			want:     " by PID 1234 (python3 -m torch.distributed.run --nproc-per-node=8)",
		},
		"the bind address picks the listener": {
			bindHost: "10.0.0.1",
			sockets:  []procSocket{{"tcp", "10.0.0.2", port, 0x0A, 200}, {"tcp", "10.0.0.1", port, 0x0A, 201}},
			procs:    map[int]fakeProcess{50: {cmdline: "other\x00", sockets: []uint64{200}}, 51: {cmdline: "etcd\x00--listen-peer-urls\x00", sockets: []uint64{201}}},
			want:     " by PID 51 (etcd --listen-peer-urls)",
		},
		"other ports and TIME_WAIT do not count": {
			sockets: []procSocket{{"tcp", "0.0.0.0", port + 1, 0x0A, 300}, {"tcp", "10.0.0.1", port, 0x06, 0}},
			procs:   map[int]fakeProcess{60: {cmdline: "x\x00", sockets: []uint64{300}}},
			want:    "",
		},
		"a connection bound to the port, when nothing listens": {
			sockets: []procSocket{{"tcp", "10.0.0.1", port, 0x01, 400}},
			procs:   map[int]fakeProcess{70: {cmdline: "nats-server\x00", sockets: []uint64{400}}},
			want:    " by PID 70 (nats-server)",
		},
		"a socket shared by forked workers": {
			sockets: []procSocket{{"tcp", "0.0.0.0", port, 0x0A, 100}},
			procs:   map[int]fakeProcess{1234: torchrun, 7: torchrun, 99: torchrun},
			want:    " by PID 7 (python3 -m torch.distributed.run --nproc-per-node=8) and 2 more processes",
		},
		"another user's process": {
			sockets: []procSocket{{"tcp", "0.0.0.0", port, 0x0A, 100}},
			procs:   map[int]fakeProcess{1: {cmdline: "init\x00"}},
			want:    " (holder not visible to this user)",
		},
		"a long command line is cut": {
			sockets: []procSocket{{"tcp", "0.0.0.0", port, 0x0A, 100}},
			procs:   map[int]fakeProcess{8: {cmdline: long, sockets: []uint64{100}}},
			want:    " by PID 8 (python3 -m sglang.launch_server --model-path /models/deepseek-ai/DeepSeek-R1 ...)", // 80 bytes
		},
		"no command line: the kernel's name": {
			sockets: []procSocket{{"tcp", "0.0.0.0", port, 0x0A, 100}},
			procs:   map[int]fakeProcess{9: {comm: "etcd", sockets: []uint64{100}}},
			want:    " by PID 9 (etcd)",
		},
	} {
		t.Run(name, func(t *testing.T) {
			root := fakeProc(t, tc.sockets, tc.procs)
			assert.Equal(t, tc.want, portHolder(root, tc.bindHost, port))
		})
	}
}

// The holder as the real /proc shows it: a listener of this test process.
func TestPreflightPortHolderReal(t *testing.T) {
	for name, tc := range map[string]struct{ listen, bindHost string }{
		"wildcard listener":       {":0", ""},
		"loopback, bound there":   {"127.0.0.1:0", "127.0.0.1"},
		"loopback, wildcard bind": {"127.0.0.1:0", ""},
	} {
		t.Run(name, func(t *testing.T) {
			ln, err := net.Listen("tcp", tc.listen)
			require.NoError(t, err)
			defer ln.Close()
			port := ln.Addr().(*net.TCPAddr).Port

			problems := Check(Config{Ports: []int{port}, BindHost: tc.bindHost})

			require.Len(t, problems, 1)
			assert.True(t, strings.HasPrefix(problems[0], fmt.Sprintf("port %d: already in use on this node by PID %d (", port, os.Getpid())), "%q", problems[0])
			exe, err := os.Executable()
			require.NoError(t, err)
			assert.Contains(t, problems[0], filepath.Base(exe), "the command line names the test binary")
		})
	}
}

// Check reads /proc where ProcDir says.
func TestPreflightPortHolderProcDir(t *testing.T) {
	f := newPreflightFixture(t, 0)
	root := fakeProc(t, []procSocket{{"tcp6", "::", f.busyPort, 0x0A, 77}}, map[int]fakeProcess{4321: {cmdline: "python3\x00-m\x00dynamo.frontend\x00", sockets: []uint64{77}}})

	problems := Check(Config{Ports: []int{f.busyPort}, ProcDir: root})

	assert.Equal(t, []string{fmt.Sprintf("port %d: already in use on this node by PID 4321 (python3 -m dynamo.frontend)", f.busyPort)}, problems)
}
