package deploy

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Unpinnable lists the ports nobody can check before a job starts: their
// owners pick them at random when they start.
const Unpinnable = "per-DP-rank scheduler sockets (SGLang, picked on each worker's head), NIXL/UCX " +
	"listeners and side channels, the NVSHMEM bootstrap (DeepEP), NCCL bootstrap and proxy sockets, " +
	"Dynamo's TCP request plane (unless DYN_TCP_RPC_PORT is set)"

// WritePorts writes the plan's port model: for each kind of node, every
// port its processes listen on ("bind") or need free because they check it
// at start ("free"), what for and which flag moves it — exactly what the
// preflight checks on each node.
func WritePorts(w io.Writer, p *Plan) error {
	var b strings.Builder
	fmt.Fprintf(&b, "ports (SGLang %s port model): bind = the process listens; free = it must be free on the node\n",
		p.SGLangVersion)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODES\tROLE\tPROCESS\tPORT\tUSE\tWHAT")
	for _, g := range portGroups(p) {
		n := p.Nodes[g[0]]
		for _, pr := range n.Processes {
			for _, port := range pr.Ports {
				use := "free"
				if port.Bind {
					use = "bind"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", indexRanges(g), n.Role, pr.Name, port.Port, use, port.Describe())
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(&b, "not checkable in advance (picked at random when they start): %s\n", Unpinnable)
	_, err := io.WriteString(w, b.String())
	return err
}

// portGroups are the node indexes that use the same ports, in node order.
func portGroups(p *Plan) [][]int {
	var groups [][]int
	byKey := map[string]int{}
	for _, n := range p.Nodes {
		var key strings.Builder
		key.WriteString(string(n.Role))
		for _, pr := range n.Processes {
			fmt.Fprintf(&key, "|%s", pr.Name)
			for _, port := range pr.Ports {
				fmt.Fprintf(&key, ",%d/%t/%s", port.Port, port.Bind, port.What)
			}
		}
		if i, ok := byKey[key.String()]; ok {
			groups[i] = append(groups[i], n.Index)
			continue
		}
		byKey[key.String()] = len(groups)
		groups = append(groups, []int{n.Index})
	}
	return groups
}

// indexRanges writes sorted indexes as "0", "1-3" or "1-3,5".
func indexRanges(idx []int) string {
	var parts []string
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && idx[j+1] == idx[j]+1 {
			j++
		}
		if i == j {
			parts = append(parts, strconv.Itoa(idx[i]))
		} else {
			parts = append(parts, strconv.Itoa(idx[i])+"-"+strconv.Itoa(idx[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}
