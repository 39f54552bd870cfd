// Package simtest starts the real infrastructure binaries (etcd,
// nats-server) for tests, on 127.0.0.1 and free ports, and stops them when
// the test ends. A test that calls it is skipped when the binary is not
// installed locally; CI installs Debian's etcd-server and nats-server.
package simtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("simtest: finding a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Server is a started infrastructure process.
type Server struct {
	// URL is what clients are given: http://127.0.0.1:<port> for etcd,
	// nats://127.0.0.1:<port> for NATS.
	URL  string
	Addr string // 127.0.0.1:<client port>
	Cmd  *exec.Cmd

	out    *SyncBuffer
	exited chan struct{}
}

// Stop kills the server and waits for it; it is safe to call more than once
// (the test cleanup calls it too).
func (s *Server) Stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	s.Cmd.Process.Kill()
	<-s.exited
}

// Output is what the server printed so far.
func (s *Server) Output() string { return s.out.String() }

// StartEtcd starts a single-member etcd with a data dir in t.TempDir() and
// waits until /health answers {"health":"true"}.
func StartEtcd(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatal("etcd not installed (Debian package etcd-server; make deps installs it)")
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a free port can be taken before etcd binds it
		client, peer := FreePort(t), FreePort(t)
		clientURL := fmt.Sprintf("http://127.0.0.1:%d", client)
		peerURL := fmt.Sprintf("http://127.0.0.1:%d", peer)
		argv := []string{bin,
			"--name", "simtest",
			"--data-dir", filepath.Join(t.TempDir(), "etcd"),
			"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
			"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
			"--initial-cluster", "simtest=" + peerURL,
			"--log-level", "warn",
		}
		s, err := start(t, argv, clientURL, fmt.Sprintf("127.0.0.1:%d", client), etcdHealthy)
		if err == nil {
			return s
		}
		lastErr = err
	}
	t.Fatalf("simtest: %v", lastErr)
	return nil
}

// StartNATS starts nats-server with JetStream (store in t.TempDir()) plus
// extra arguments, and waits until it accepts connections.
func StartNATS(t testing.TB, extra ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		t.Fatal("nats-server not installed (Debian package nats-server; make deps installs it)")
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port := FreePort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		argv := append([]string{bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port)}, extra...)
		s, err := start(t, argv, "nats://"+addr, addr, tcpOpen)
		if err == nil {
			return s
		}
		lastErr = err
	}
	t.Fatalf("simtest: %v", lastErr)
	return nil
}

// NATSJetStreamArgs are the arguments of a JetStream server storing in dir.
func NATSJetStreamArgs(dir string) []string { return []string{"-js", "-sd", dir} }

func start(t testing.TB, argv []string, url, addr string, ready func(context.Context, string, string) error) (*Server, error) {
	out := &SyncBuffer{}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	// If the test binary dies, the server must not outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %v: %w", argv, err)
	}
	s := &Server{URL: url, Addr: addr, Cmd: cmd, out: out, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(s.exited) }()
	t.Cleanup(s.Stop)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var lastErr error
	for {
		if lastErr = ready(ctx, url, addr); lastErr == nil {
			return s, nil
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("%s exited before it was ready (%v):\n%s", filepath.Base(argv[0]), cmd.ProcessState, out)
		case <-ctx.Done():
			s.Stop()
			return nil, fmt.Errorf("%s not ready after 30s: %v\n%s", filepath.Base(argv[0]), lastErr, out)
		case <-time.After(50 * time.Millisecond): // poll interval of the readiness check
		}
	}
}

func etcdHealthy(ctx context.Context, url, _ string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var h struct {
		Health string `json:"health"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || h.Health != "true" {
		return fmt.Errorf("etcd /health: HTTP %d health=%q", resp.StatusCode, h.Health)
	}
	return nil
}

func tcpOpen(ctx context.Context, _, addr string) error {
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// SyncBuffer is a bytes.Buffer that several goroutines may write to (a
// server's output, a log) while the test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
