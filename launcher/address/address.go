// Package address finds the IPv4 address the other nodes reach this node at:
// an explicit interface, else the default route's source address, else the
// host name, else any usable interface; never by parsing other programs'
// output.
package address

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Interface is what address resolution needs to know about a network
// interface; a plain struct so tests can describe hosts without a kernel.
type Interface struct {
	Name  string
	Flags net.Flags
	Addrs []netip.Addr
}

// Resolver finds the address other nodes reach this node at. Nil fields
// use the operating system; tests replace them.
type Resolver struct {
	// Interfaces lists the host's interfaces with their addresses.
	Interfaces func() ([]Interface, error)
	// Dial is used with "udp4" only: connecting a UDP socket sends nothing but
	// makes the kernel pick the source address of the route it would use.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// LookupHost resolves a host name to IPv4 addresses.
	LookupHost func(ctx context.Context, host string) ([]netip.Addr, error)
}

// routeProbe is any address outside the cluster (TEST-NET-1, never routed on
// the internet): connecting to it reveals the default route's source address.
const routeProbe = "192.0.2.1:9"

// Resolve returns this node's IPv4 address and how it was found (for the log):
//   - iface given: that interface's first IPv4 address, or an error naming it
//     and listing the interfaces that exist;
//   - else the source address of the default route;
//   - else the first usable address the host name resolves to;
//   - else the first usable address of any interface that is up.
//
// Usable means not loopback, not link-local and not unspecified: other nodes
// could not reach those. An explicit iface is trusted as given, loopback
// included, for single-host setups.
func (r Resolver) Resolve(ctx context.Context, iface, host string) (netip.Addr, string, error) {
	if iface != "" {
		ifs, err := r.interfaces()
		if err != nil {
			return netip.Addr{}, "", fmt.Errorf("listing network interfaces: %w", err)
		}
		a, err := interfaceAddr(ifs, iface)
		if err != nil {
			return netip.Addr{}, "", err
		}
		return a, "interface " + iface, nil
	}

	var why []string
	a, err := r.routeSource(ctx)
	if err == nil {
		return a, "default route", nil
	}
	why = append(why, "default route: "+err.Error())

	if host != "" {
		a, err := r.hostAddr(ctx, host)
		if err == nil {
			return a, "host name " + host, nil
		}
		why = append(why, fmt.Sprintf("host name %s: %v", host, err))
	}

	ifs, err := r.interfaces()
	if err != nil {
		why = append(why, "interfaces: "+err.Error())
	} else {
		for _, it := range ifs {
			if it.Flags&net.FlagUp == 0 || it.Flags&net.FlagLoopback != 0 {
				continue
			}
			for _, a := range it.Addrs {
				if usableIPv4(a) {
					return a, "interface " + it.Name + " (first usable)", nil
				}
			}
		}
		why = append(why, "interfaces: no interface that is up has a usable IPv4 address")
	}
	return netip.Addr{}, "", fmt.Errorf("cannot determine this node's IPv4 address (use --iface): %s", strings.Join(why, "; "))
}

func interfaceAddr(ifs []Interface, name string) (netip.Addr, error) {
	var names, withIPv4 []string
	for _, it := range ifs {
		names = append(names, it.Name)
		if v4 := firstIPv4(it.Addrs); v4.IsValid() {
			withIPv4 = append(withIPv4, it.Name+" "+v4.String())
		}
	}
	for _, it := range ifs {
		if it.Name != name {
			continue
		}
		if it.Flags&net.FlagUp == 0 {
			return netip.Addr{}, fmt.Errorf("interface %s is down", name)
		}
		if v4 := firstIPv4(it.Addrs); v4.IsValid() {
			return v4, nil
		}
		return netip.Addr{}, fmt.Errorf("interface %s has no IPv4 address (interfaces with one: %s)", name, listOrNone(withIPv4))
	}
	return netip.Addr{}, fmt.Errorf("no network interface %s on this host (available: %s)", name, listOrNone(names))
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func firstIPv4(addrs []netip.Addr) netip.Addr {
	for _, a := range addrs {
		if a = a.Unmap(); a.Is4() {
			return a
		}
	}
	return netip.Addr{}
}

func usableIPv4(a netip.Addr) bool {
	a = a.Unmap()
	return a.Is4() && !a.IsLoopback() && !a.IsLinkLocalUnicast() && !a.IsUnspecified()
}

func (r Resolver) routeSource(ctx context.Context) (netip.Addr, error) {
	dial := r.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	c, err := dial(ctx, "udp4", routeProbe)
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	local := c.LocalAddr()
	ap, err := netip.ParseAddrPort(local.String())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("unexpected local address %q: %w", local, err)
	}
	if !usableIPv4(ap.Addr()) {
		return netip.Addr{}, fmt.Errorf("source address %s is not usable by other nodes", ap.Addr())
	}
	return ap.Addr().Unmap(), nil
}

func (r Resolver) hostAddr(ctx context.Context, host string) (netip.Addr, error) {
	lookup := r.LookupHost
	if lookup == nil {
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
		}
	}
	addrs, err := lookup(ctx, host)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs {
		if usableIPv4(a) {
			return a.Unmap(), nil
		}
	}
	if len(addrs) == 0 {
		return netip.Addr{}, errors.New("no addresses")
	}
	// /etc/hosts on Debian maps the host name to 127.0.1.1: say so.
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return netip.Addr{}, fmt.Errorf("only loopback or link-local addresses (%s)", strings.Join(s, ", "))
}

func (r Resolver) interfaces() ([]Interface, error) {
	if r.Interfaces != nil {
		return r.Interfaces()
	}
	sys, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make([]Interface, 0, len(sys))
	for _, it := range sys {
		ni := Interface{Name: it.Name, Flags: it.Flags}
		addrs, err := it.Addrs()
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", it.Name, err)
		}
		for _, a := range addrs {
			var ip net.IP
			switch a := a.(type) {
			case *net.IPNet:
				ip = a.IP
			case *net.IPAddr:
				ip = a.IP
			}
			if na, ok := netip.AddrFromSlice(ip); ok {
				ni.Addrs = append(ni.Addrs, na.Unmap())
			}
		}
		out = append(out, ni)
	}
	return out, nil
}
