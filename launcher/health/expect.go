package health

import (
	"fmt"
	"slices"

	"github.com/wideep/wideep-launch/launcher/deploy"
)

// Expect is what the deployment must show before it is READY.
type Expect struct {
	Model   string // served model name; "" accepts any listed model
	Prefill int    // prefill instances (component "prefill")
	Decode  int    // decode instances (component "decode", or "backend" on older Dynamo)
	// Workers optionally names the expected workers so that a timeout can
	// say which never registered.
	Workers []Worker
}

// Worker is one worker the health gate waits for.
type Worker struct {
	Role deploy.Role // deploy.RolePrefill or deploy.RoleDecode
	Name string      // how to name it in messages, e.g. "decode worker 1 (head node 6, gpu07)"
	// Hosts are the names and addresses its instance may advertise (the
	// head node's host name and address): an instance whose host is one of
	// them is this worker's.
	Hosts []string
}

// ExpectFor is the expectation for a plan: its served model, one
// instance per worker (Dynamo SGLang workers register from node rank 0
// only), each worker named by its head node.
func ExpectFor(p *deploy.Plan) Expect {
	exp := Expect{Model: p.Model}
	for _, w := range p.Workers {
		ew := Worker{Role: w.Role, Name: fmt.Sprintf("%s worker %d", w.Role, w.Index)}
		if len(w.Nodes) > 0 && w.Nodes[0] >= 0 && w.Nodes[0] < len(p.Nodes) {
			head := p.Nodes[w.Nodes[0]]
			ew.Name += fmt.Sprintf(" (head node %d, %s)", head.Index, head.Host)
			ew.Hosts = appendUnique(ew.Hosts, head.Host, head.Addr)
		}
		ew.Hosts = appendUnique(ew.Hosts, w.Head)
		switch w.Role {
		case deploy.RolePrefill:
			exp.Prefill++
		case deploy.RoleDecode:
			exp.Decode++
		default:
			continue
		}
		exp.Workers = append(exp.Workers, ew)
	}
	return exp
}

func appendUnique(list []string, vals ...string) []string {
	for _, v := range vals {
		if v != "" && !slices.Contains(list, v) {
			list = append(list, v)
		}
	}
	return list
}
