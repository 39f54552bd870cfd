package address

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// addrUDPConn stands in for a connected UDP socket: only its local address matters.
type addrUDPConn struct {
	net.Conn
	local string
}

func (c addrUDPConn) LocalAddr() net.Addr {
	return net.UDPAddrFromAddrPort(netip.MustParseAddrPort(c.local))
}
func (c addrUDPConn) Close() error { return nil }

func addrRouteVia(local string) func(context.Context, string, string) (net.Conn, error) {
	return func(_ context.Context, network, address string) (net.Conn, error) {
		if network != "udp4" || address != routeProbe {
			return nil, errors.New("unexpected dial " + network + " " + address)
		}
		return addrUDPConn{local: local}, nil
	}
}

// addrNoRoute is what connect(2) says in a network namespace without a default route.
func addrNoRoute(context.Context, string, string) (net.Conn, error) {
	return nil, &net.OpError{Op: "dial", Net: "udp4", Err: syscall.ENETUNREACH}
}

func addrHosts(m map[string][]string) func(context.Context, string) ([]netip.Addr, error) {
	return func(_ context.Context, host string) ([]netip.Addr, error) {
		s, ok := m[host]
		if !ok {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		var out []netip.Addr
		for _, a := range s {
			out = append(out, netip.MustParseAddr(a))
		}
		return out, nil
	}
}

func addrIfaces(list ...Interface) func() ([]Interface, error) {
	return func() ([]Interface, error) { return list, nil }
}

func addrNIC(name string, flags net.Flags, addrs ...string) Interface {
	it := Interface{Name: name, Flags: flags}
	for _, a := range addrs {
		it.Addrs = append(it.Addrs, netip.MustParseAddr(a))
	}
	return it
}

func TestResolveAddress(t *testing.T) {
	up := net.FlagUp | net.FlagBroadcast
	lo := addrNIC("lo", net.FlagUp|net.FlagLoopback, "127.0.0.1", "::1")
	eth0 := addrNIC("eth0", up, "fe80::1", "169.254.3.3", "10.0.0.7")
	ib0 := addrNIC("ib0", up, "fe80::2", "192.168.50.7")
	v6only := addrNIC("ib1", up, "fd00::7")
	down := addrNIC("eth1", net.FlagBroadcast, "10.9.9.9")

	tests := map[string]struct {
		r       Resolver
		iface   string
		host    string
		want    string
		via     string
		wantErr []string
	}{
		"iface given": {
			r:     Resolver{Interfaces: addrIfaces(lo, eth0, ib0), Dial: addrRouteVia("10.0.0.7:40000")},
			iface: "ib0", want: "192.168.50.7", via: "interface ib0",
		},
		"iface given loopback is trusted": {
			r:     Resolver{Interfaces: addrIfaces(lo, eth0)},
			iface: "lo", want: "127.0.0.1", via: "interface lo",
		},
		"iface missing lists interfaces": {
			r:       Resolver{Interfaces: addrIfaces(lo, eth0, ib0)},
			iface:   "ib9",
			wantErr: []string{"no network interface ib9", "available: lo, eth0, ib0"},
		},
		"iface without IPv4": {
			r:       Resolver{Interfaces: addrIfaces(lo, eth0, v6only)},
			iface:   "ib1",
			wantErr: []string{"interface ib1 has no IPv4 address", "lo 127.0.0.1", "eth0 169.254.3.3"},
		},
		"iface down": {
			r:       Resolver{Interfaces: addrIfaces(lo, down)},
			iface:   "eth1",
			wantErr: []string{"interface eth1 is down"},
		},
		"default route": {
			r: Resolver{
				Interfaces: addrIfaces(lo, eth0, ib0),
				Dial:       addrRouteVia("192.168.50.7:51234"),
				LookupHost: addrHosts(map[string][]string{"node3": {"10.0.0.7"}}),
			},
			host: "node3", want: "192.168.50.7", via: "default route",
		},
		"no default route: host name, skipping loopback and link-local": {
			r: Resolver{
				Interfaces: addrIfaces(lo, ib0),
				Dial:       addrNoRoute,
				LookupHost: addrHosts(map[string][]string{"node3": {"127.0.1.1", "169.254.0.9", "10.213.77.3"}}),
			},
			host: "node3", want: "10.213.77.3", via: "host name node3",
		},
		"default route through loopback is not usable": {
			r: Resolver{
				Dial:       addrRouteVia("127.0.0.1:5000"),
				LookupHost: addrHosts(map[string][]string{"node3": {"10.213.77.3"}}),
			},
			host: "node3", want: "10.213.77.3", via: "host name node3",
		},
		"host name only loopback: first usable interface that is up": {
			r: Resolver{
				Interfaces: addrIfaces(lo, down, v6only, eth0, ib0),
				Dial:       addrNoRoute,
				LookupHost: addrHosts(map[string][]string{"node3": {"127.0.1.1"}}),
			},
			host: "node3", want: "10.0.0.7", via: "interface eth0 (first usable)",
		},
		"host name unknown": {
			r: Resolver{
				Interfaces: addrIfaces(lo, ib0),
				Dial:       addrNoRoute,
				LookupHost: addrHosts(nil),
			},
			host: "node3", want: "192.168.50.7", via: "interface ib0 (first usable)",
		},
		"nothing usable": {
			r: Resolver{
				Interfaces: addrIfaces(lo, down, v6only),
				Dial:       addrNoRoute,
				LookupHost: addrHosts(map[string][]string{"node3": {"127.0.1.1"}}),
			},
			host: "node3",
			wantErr: []string{
				"use --iface",
				"default route: dial udp4: network is unreachable",
				"host name node3: only loopback or link-local addresses (127.0.1.1)",
				"no interface that is up has a usable IPv4 address",
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, via, err := tc.r.Resolve(context.Background(), tc.iface, tc.host)
			if tc.wantErr != nil {
				require.Error(t, err)
				for _, s := range tc.wantErr {
					assert.Contains(t, err.Error(), s)
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got.String())
			assert.Equal(t, tc.via, via)
		})
	}
}

// The real interface list always has a loopback interface named lo on Linux.
func TestResolveAddressRealLoopback(t *testing.T) {
	got, via, err := Resolver{}.Resolve(context.Background(), "lo", "")
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1", got.String())
	assert.Equal(t, "interface lo", via)

	_, _, err = Resolver{}.Resolve(context.Background(), "wideep-no-such-if0", "")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no network interface wideep-no-such-if0")
	assert.Contains(t, err.Error(), "lo")
}
