package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wideep/wideep-launch/launcher/deploy"
)

// routeDialTimeout bounds one connection attempt of the route check: on a
// working fabric it takes a millisecond; a firewall that drops SYNs would
// otherwise hold the check for the kernel's minutes.
const routeDialTimeout = 3 * time.Second

// route is a connection a worker will need: from this node to a head's
// port.
type route struct {
	node int    // the head that listens
	addr string // its address and port
	what string // "SGLang torch store of decode worker 0"
}

// checkRoutes tests, before anything starts, the connections the workers
// will make between nodes, on the planned ports: each head listens for a
// moment on its torch-store port (and a prefill head on its bootstrap
// port) and every node that will connect there does so once. A blocked
// route is then reported as "node 6 cannot reach node 4 (10.0.0.5:29500)"
// in seconds, not as an NCCL timeout half an hour into the start, and no
// real server is disturbed: none runs yet.
func (r *run) checkRoutes(ctx context.Context, limit time.Duration) error {
	if r.n.Options.SkipRoutes {
		return nil
	}
	listens, routes := r.plannedRoutes()
	problem := ""
	var lns []net.Listener
	for _, l := range listens {
		ln, err := net.Listen("tcp", net.JoinHostPort(r.n.Runtime.BindHost(), strconv.Itoa(l.Port)))
		if err != nil {
			problem = fmt.Sprintf("cannot listen on port %d for the route check (%s): %v", l.Port, l.Describe(), err)
			break
		}
		lns = append(lns, ln)
		go acceptAndClose(ln)
	}
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	bctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	if err := r.client.Barrier(bctx, "routes-listening", problem); err != nil {
		return err
	}
	var failed []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, rt := range routes {
		wg.Go(func() {
			d := net.Dialer{Timeout: routeDialTimeout}
			c, err := d.DialContext(ctx, "tcp", rt.addr)
			if err == nil {
				c.Close()
				return
			}
			mu.Lock()
			defer mu.Unlock()
			failed = append(failed, fmt.Sprintf("cannot reach node %d (%s) at %s (%s): %v",
				rt.node, r.env.Nodes[rt.node], rt.addr, rt.what, dialReason(err)))
		})
	}
	wg.Wait()
	if len(failed) > 0 {
		r.log.Error().Strs("routes", failed).Msg("route check failed")
	} else if len(routes) > 0 {
		r.log.Info().Int("routes", len(routes)).Msg("every route to the heads works")
	}
	// The listeners stay until every node has dialed.
	return r.client.Barrier(bctx, "routes", strings.Join(failed, "; "))
}

// plannedRoutes are the ports this node listens on for the check, and the
// connections it must be able to make.
func (r *run) plannedRoutes() (listens []deploy.Port, routes []route) {
	p, me := r.plan, r.me
	for _, w := range p.Workers {
		head := p.Nodes[w.Nodes[0]]
		name := fmt.Sprintf("%s worker %d", w.Role, w.Index)
		mine := me.Role == w.Role && me.Worker == w.Index
		if mine && me.NodeRank == 0 {
			listens = append(listens, deploy.Port{Port: r.n.Spec.DistInitPort, What: "SGLang torch store", Flag: "--dist-init-port"})
			if w.Role == deploy.RolePrefill {
				listens = append(listens, deploy.Port{Port: r.n.Spec.BootstrapPort, What: "PD bootstrap server", Flag: "--bootstrap-port"})
			}
		}
		if mine && me.NodeRank > 0 {
			routes = append(routes, route{node: head.Index, what: "SGLang torch store of " + name,
				addr: net.JoinHostPort(head.Addr, strconv.Itoa(r.n.Spec.DistInitPort))})
		}
		// Decode workers fetch from every prefill worker's bootstrap
		// server; a prefill worker's other nodes register with their own.
		if w.Role == deploy.RolePrefill && (me.Role == deploy.RoleDecode || mine && me.NodeRank > 0) {
			routes = append(routes, route{node: head.Index, what: "PD bootstrap server of " + name,
				addr: net.JoinHostPort(head.Addr, strconv.Itoa(r.n.Spec.BootstrapPort))})
		}
	}
	return listens, routes
}

func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// dialReason is the useful part of a dial error.
func dialReason(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "no answer within " + routeDialTimeout.String() + " (a firewall dropping the port?)"
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}
