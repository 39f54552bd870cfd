package infra

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/launcher/sim/simtest"
)

// infraCtx bounds a wait. A wait that must fail gets infraFailWait: long
// enough for a probe to finish on a loaded machine, so the error carries a
// real last attempt.
func infraCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

const infraFailWait = time.Second

// infraClosedAddr is an address nobody listens on.
func infraClosedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestWaitEtcdRealServer(t *testing.T) {
	t.Parallel() // waits for a deadline on purpose
	etcd := simtest.StartEtcd(t)
	require.NoError(t, WaitEtcd(infraCtx(t, longWait), etcd.URL))
	// An ETCD_ENDPOINTS list is ready when one member is.
	require.NoError(t, WaitEtcd(infraCtx(t, longWait), "http://"+infraClosedAddr(t)+","+etcd.Addr))

	etcd.Stop()
	err := WaitEtcd(infraCtx(t, infraFailWait), etcd.URL)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "etcd at "+etcd.URL+": context deadline exceeded (last: ")
	assert.Contains(t, err.Error(), "connection refused")
}

func TestWaitEtcdRetriesUntilHealthy(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"health":"false","reason":"RAFT NO LEADER"}`)
			return
		}
		fmt.Fprint(w, `{"health":"true","reason":""}`)
	}))
	defer srv.Close()
	require.NoError(t, WaitEtcd(infraCtx(t, longWait), srv.URL))
	assert.Equal(t, int64(3), calls.Load())
}

func TestEtcdHealthErrors(t *testing.T) {
	tests := map[string]struct {
		handler http.HandlerFunc
		want    string
	}{
		"unhealthy": {
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprint(w, `{"health":"false","reason":"RAFT NO LEADER"}`)
			},
			want: `/health: HTTP 503, health "false" (RAFT NO LEADER)`,
		},
		"not etcd": {
			handler: func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) },
			want:    `/health: HTTP 404, not an etcd answer: "404 page not found\n"`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			err := etcdHealth(context.Background(), srv.Client(), srv.URL)
			require.Error(t, err)
			assert.Equal(t, srv.URL+tc.want, err.Error())
		})
	}
}

func TestWaitNATSRealServer(t *testing.T) {
	js := simtest.StartNATS(t, simtest.NATSJetStreamArgs(t.TempDir())...)
	require.NoError(t, WaitNATS(infraCtx(t, longWait), js.Addr))
	require.NoError(t, WaitNATS(infraCtx(t, longWait), js.URL), "NATS_SERVER form")
	info, err := ProbeNATS(infraCtx(t, longWait), js.Addr)
	require.NoError(t, err)
	assert.True(t, info.JetStream)
	assert.Equal(t, int64(1<<20), info.MaxPayload, "nats-server's default max_payload")
	assert.NotEmpty(t, info.Version)

	plain := simtest.StartNATS(t)
	err = WaitNATS(infraCtx(t, longWait), plain.URL)
	require.ErrorIs(t, err, ErrNoJetStream, "fails at once, not after the deadline")
	assert.Contains(t, err.Error(), "NATS at "+plain.Addr)
}

// infraFakeServer answers every connection with greeting.
func infraFakeServer(t *testing.T, greeting string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(greeting))
			c.Close()
		}
	}()
	return ln.Addr().String()
}

func TestProbeNATSErrors(t *testing.T) {
	tests := map[string]struct {
		addr func(t *testing.T) string
		want string
	}{
		"nothing listening": {addr: infraClosedAddr, want: "connection refused"},
		"not NATS": {
			addr: func(t *testing.T) string { return infraFakeServer(t, "SSH-2.0-OpenSSH_9.2\r\n") },
			want: `not a NATS server: first line "SSH-2.0-OpenSSH_9.2"`,
		},
		"bad INFO": {
			addr: func(t *testing.T) string { return infraFakeServer(t, "INFO {\"server_id\":\r\n") },
			want: "bad INFO",
		},
		"closes at once": {
			addr: func(t *testing.T) string { return infraFakeServer(t, "") },
			want: "reading INFO: EOF",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := ProbeNATS(context.Background(), tc.addr(t))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestWaitNATSKeepsTheLastError(t *testing.T) {
	t.Parallel() // waits for a deadline on purpose
	addr := infraFakeServer(t, "SSH-2.0-OpenSSH_9.2\r\n")
	err := WaitNATS(infraCtx(t, infraFailWait), "nats://"+addr)
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), "NATS at nats://"+addr+": context deadline exceeded (last: "), err.Error())
	assert.Contains(t, err.Error(), "not a NATS server")
}

func TestSplitEndpoints(t *testing.T) {
	assert.Equal(t, []string{"http://a:2379", "http://b:2379"}, splitEndpoints(" a:2379, http://b:2379/ ,", "http"))
	assert.Equal(t, []string{"a:4222", "b:4222"}, splitEndpoints("nats://user:pw@a:4222,b:4222", "nats"))
	assert.Empty(t, splitEndpoints("", "nats"))
}

// longWait bounds waits that must end for another reason; it is never what
// a passing test waits for.
const longWait = 30 * time.Second
