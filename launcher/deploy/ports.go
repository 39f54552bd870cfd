package deploy

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// RendezvousPort derives a port in [base, base+10000) from a job id, so that
// two jobs sharing nodes (one numeric id apart) do not pick the same port.
// Non-numeric ids (offline plans) are hashed.
func RendezvousPort(base int, jobID string) int {
	if n, err := strconv.ParseUint(jobID, 10, 64); err == nil {
		return base + int(n%rendezvousPortRange)
	}
	h := fnv.New32a()
	h.Write([]byte(jobID))
	return base + int(h.Sum32()%rendezvousPortRange)
}

type portFlag struct {
	flag string
	port *int
}

func (s *Spec) portFlags() []portFlag {
	return []portFlag{
		{"http-port", &s.HTTPPort}, {"dist-init-port", &s.DistInitPort}, {"bootstrap-port", &s.BootstrapPort},
		{"sglang-port", &s.SGLangPort}, {"nccl-port", &s.NCCLPort}, {"etcd-client-port", &s.EtcdClientPort},
		{"etcd-peer-port", &s.EtcdPeerPort}, {"nats-port", &s.NATSPort},
	}
}

// derivedRendezvousPort is RendezvousPort for the job, moved past every
// port the plan binds.
func (s Spec) derivedRendezvousPort(jobID string) int {
	used := map[int]bool{}
	for _, k := range s.portKinds() {
		for _, u := range k.ports {
			used[u.port] = true
		}
	}
	port := RendezvousPort(RendezvousPortBase, jobID)
	for range rendezvousPortRange {
		if !used[port] {
			break
		}
		port++
		if port >= RendezvousPortBase+rendezvousPortRange {
			port = RendezvousPortBase
		}
	}
	return port
}

// portUse is a port with the process and flag it comes from, for messages.
type portUse struct {
	port       int
	proc, flag string
	oneshot    bool // the precompile
	worker     bool // the prefill/decode worker, started after the precompile exited
	dp, base   int  // dp > 0: one of SGLang's DP-attention ports above base, the --dist-init-port
}

func (u portUse) what() string {
	if u.dp > 0 {
		return fmt.Sprintf("%s+%d, SGLang DP attention with dp %d", u.flag, u.port-u.base, u.dp)
	}
	return u.flag
}

// nodeKind is a set of nodes that bind the same ports.
type nodeKind struct {
	desc  string
	ports []portUse
}

// portKinds lists the ports of one node of each kind: every node of a kind
// binds the same ports, so checking one of each is enough.
func (s Spec) portKinds() []nodeKind {
	infraPorts := func() []portUse {
		var u []portUse
		if s.runsEtcd() {
			u = append(u, portUse{port: s.EtcdClientPort, proc: ProcEtcd, flag: "--etcd-client-port"},
				portUse{port: s.EtcdPeerPort, proc: ProcEtcd, flag: "--etcd-peer-port"})
		}
		if s.runsNATS() {
			u = append(u, portUse{port: s.NATSPort, proc: ProcNATS, flag: "--nats-port"})
		}
		return append(u, portUse{port: s.HTTPPort, proc: ProcFrontend, flag: "--http-port"})
	}
	workerPorts := func(r roleSpec, head, oneshot bool) []portUse {
		name := string(r.role)
		if oneshot {
			name = ProcPrecompile
		}
		use := func(port int, flag string) portUse {
			return portUse{port: port, proc: name, flag: flag, oneshot: oneshot, worker: !oneshot}
		}
		u := []portUse{use(s.SGLangPort, "--sglang-port"), use(s.NCCLPort, "--nccl-port")}
		if r.role == RolePrefill {
			u = append(u, use(s.BootstrapPort, "--bootstrap-port"))
		}
		if head {
			edits, _ := parseArgEdits(&validator{}, r)
			_, dp, _ := s.sizes(r, edits)
			u = append(u, use(s.DistInitPort, "--dist-init-port"))
			for p := s.DistInitPort + 1; p <= s.DistInitPort+5+dp; p++ {
				// Formatted only if reported: there are hundreds at scale.
				pu := use(p, "--dist-init-port")
				pu.dp, pu.base = dp, s.DistInitPort
				u = append(u, pu)
			}
		}
		return u
	}
	node := func(r roleSpec, head, infra bool) []portUse {
		var u []portUse
		if infra {
			u = infraPorts()
		}
		u = append(u, workerPorts(r, head, false)...)
		if s.Precompile {
			u = append(u, workerPorts(r, head, true)...)
		}
		return u
	}
	var kinds []nodeKind
	for i, r := range s.roles() {
		desc := fmt.Sprintf("%s node rank 0", r.role)
		infra := i == 0 && s.InfraPlacement == InfraFirst
		if infra {
			desc += " (node 0, infra)"
		}
		kinds = append(kinds, nodeKind{desc, node(r, true, infra)})
		if r.nodes > 1 {
			kinds = append(kinds, nodeKind{fmt.Sprintf("%s node ranks 1-%d", r.role, r.nodes-1), node(r, false, false)})
		}
	}
	if s.InfraPlacement == InfraDedicated {
		kinds = append(kinds, nodeKind{"the dedicated infra node", infraPorts()})
	}
	return kinds
}

// checkPorts reports every port bound twice on one node.
func (s Spec) checkPorts(v *validator) {
	kinds := s.portKinds()
	if s.RendezvousPort != 0 {
		// The launchers meet on node 0, which is prefill worker 0's head.
		k := &kinds[0]
		k.ports = append(k.ports, portUse{port: s.RendezvousPort, proc: "the launcher rendezvous", flag: "--rendezvous-port"})
		if !strings.Contains(k.desc, "node 0") {
			k.desc += " (node 0)"
		}
	}
	for _, k := range kinds {
		byPort := map[int][]portUse{}
		reported := map[[2]string]bool{}
		for _, u := range k.ports {
			for _, prev := range byPort[u.port] {
				// The precompile has exited before the worker starts.
				if prev.worker && u.oneshot || prev.oneshot && u.worker {
					continue
				}
				key := [2]string{prev.what(), u.what()}
				if reported[key] {
					continue
				}
				reported[key] = true
				v.addf("port %d is used twice on %s: by %s (%s) and by %s (%s)",
					u.port, k.desc, prev.proc, key[0], u.proc, key[1])
			}
			byPort[u.port] = append(byPort[u.port], u)
		}
	}
}
