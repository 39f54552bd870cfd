package deploy

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Redacted replaces secret values in everything the plan renders.
const Redacted = "<redacted>"

// IsSecretEnv says whether an environment variable holds a secret: its name
// contains TOKEN, KEY, SECRET or PASSWORD, in any case.
func IsSecretEnv(name string) bool {
	n := strings.ToUpper(name)
	for _, w := range []string{"TOKEN", "KEY", "SECRET", "PASSWORD"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// isSecretFlag says whether an argv flag carries a secret (--api-key,
// --hf-token). Only the last word counts, so --skip-tokenizer-init is not one.
func isSecretFlag(flag string) bool {
	f := strings.ToLower(strings.TrimLeft(flag, "-"))
	if i := strings.LastIndexByte(f, '-'); i >= 0 {
		f = f[i+1:]
	}
	switch f {
	case "key", "token", "secret", "password", "passwd":
		return true
	}
	return false
}

// redactProcess is p with secrets replaced, sharing nothing that it changes.
func redactProcess(p Process) Process {
	for k := range p.Env {
		if IsSecretEnv(k) {
			env := maps.Clone(p.Env)
			for k := range env {
				if IsSecretEnv(k) {
					env[k] = Redacted
				}
			}
			p.Env = env
			break
		}
	}
	var argv []string
	for i, a := range p.Argv {
		if !strings.HasPrefix(a, "--") {
			continue
		}
		flag, _, joined := strings.Cut(a, "=")
		if !isSecretFlag(flag) {
			continue
		}
		if argv == nil {
			argv = slices.Clone(p.Argv)
		}
		if joined {
			argv[i] = flag + "=" + Redacted
		} else if i+1 < len(argv) && !strings.HasPrefix(argv[i+1], "--") {
			argv[i+1] = Redacted
		}
	}
	if argv != nil {
		p.Argv = argv
	}
	return p
}

// WriteJSON writes the plan as indented JSON with secrets redacted.
func WriteJSON(w io.Writer, p *Plan) error {
	q := *p
	q.Nodes = slices.Clone(p.Nodes)
	for i := range q.Nodes {
		procs := make([]Process, len(q.Nodes[i].Processes))
		for j, pr := range q.Nodes[i].Processes {
			procs[j] = redactProcess(pr)
		}
		q.Nodes[i].Processes = procs
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(&q)
}

// WriteTable writes a summary and one row per node, readable in 100 columns.
func WriteTable(w io.Writer, p *Plan) error {
	var b strings.Builder
	fmt.Fprintf(&b, "job %s: %d nodes, %s, %d GPUs per node, model %s\n",
		p.JobID, len(p.Nodes), p.Layout, p.GPUsPerNode, p.Model)
	for _, wk := range p.Workers {
		if wk.Index == 0 {
			fmt.Fprintf(&b, "%s workers: tp %d, dp %d\n", wk.Role, wk.TPSize, wk.DPSize)
		}
	}
	if p.Runtime != "" || p.Image != "" {
		fmt.Fprintf(&b, "runtime %s", cmpOr(p.Runtime, RuntimeHost))
		if p.Image != "" {
			fmt.Fprintf(&b, "  image %s", p.Image)
		}
		if len(p.Mounts) > 0 {
			fmt.Fprintf(&b, "  mounts %s", strings.Join(p.Mounts, ","))
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "frontend %s  etcd %s", p.Frontend, p.EtcdEndpoints)
	if p.NATSServer != "" {
		fmt.Fprintf(&b, "  nats %s", p.NATSServer)
	} else {
		b.WriteString("  no nats")
	}
	b.WriteString("\n")
	writeKernelSets(&b, p)
	b.WriteByte('\n')

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tHOST\tROLE\tWORKER\tRANK\tHEAD\tPROCESSES")
	for _, n := range p.Nodes {
		worker, rank, head := strconv.Itoa(n.Worker), strconv.Itoa(n.NodeRank), n.Head
		if n.Worker < 0 {
			worker, rank, head = "-", "-", "-"
		}
		host := n.Host
		if n.Addr != "" {
			host += " (" + n.Addr + ")"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Index, host, n.Role, worker, rank, head, n.ProcessNames())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeKernelSets says which DeepGEMM kernels the plan needs, under which
// key, and who compiles them when the cache misses them.
func writeKernelSets(b *strings.Builder, p *Plan) {
	where := "node-local copies"
	if p.DGCacheMode == DGCacheShared {
		where = "the shared entries"
	}
	root := ""
	if len(p.DeepGEMM) > 0 {
		root = path.Dir(p.DeepGEMM[0].Entry)
	}
	fmt.Fprintf(b, "deepgemm kernels in %s (--precompile %s; workers read %s):\n", root, p.Precompile, where)
	gpuKnown := true
	for _, k := range p.DeepGEMM {
		fmt.Fprintf(b, "  %s  ", k.Name())
		switch p.Precompile {
		case PrecompileNever:
			b.WriteString("never compiled by this job")
		case PrecompileAlways:
			fmt.Fprintf(b, "%s compiles it every time", k.describeCompiler())
		default:
			fmt.Fprintf(b, "on a miss %s compiles it", k.describeCompiler())
		}
		fmt.Fprintf(b, "; %d worker(s) use it\n", k.Workers)
		gpuKnown = gpuKnown && k.Inputs["gpu_model"] != ""
	}
	if !gpuKnown {
		b.WriteString("  (no --gpu-model: the nodes detect the GPU with nvidia-smi at run time, and it is part\n" +
			"   of the keys; pass --gpu-model to see the run's keys)\n")
	}
}

// Wrapper is how a container runtime shows its part of the commands: the
// lines before a node's processes (import, create), each process's command
// line inside the container, and the lines after (remove).
type Wrapper interface {
	Before(n NodePlan) [][]string
	Wrap(n NodePlan, p Process) []string
	After(n NodePlan) [][]string
}

// WriteCommands writes each node's processes as shell lines a person can
// paste on that node, in start order. They are for reading and debugging:
// the launcher itself never runs a shell. wrap (nil: none) shows them as a
// container runtime runs them.
func WriteCommands(w io.Writer, p *Plan, wrap Wrapper) error {
	var b strings.Builder
	line := func(argv []string) {
		for k, a := range argv {
			if k > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(ShellQuote(a))
		}
	}
	for i, n := range p.Nodes {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "# node %d %s (%s", n.Index, n.Host, n.Role)
		if n.Worker >= 0 {
			fmt.Fprintf(&b, " worker %d rank %d", n.Worker, n.NodeRank)
			if n.Infra {
				b.WriteString(", infra")
			}
		}
		b.WriteString(")\n")
		if wrap != nil {
			for _, argv := range wrap.Before(n) {
				line(argv)
				b.WriteByte('\n')
			}
		}
		for j, pr := range n.Processes {
			pr = redactProcess(pr)
			for _, f := range slices.Sorted(maps.Keys(pr.Files)) {
				writeFileCommand(&b, f, pr.Files[f])
			}
			if len(pr.Env) > 0 {
				b.WriteString("env")
				for _, k := range slices.Sorted(maps.Keys(pr.Env)) {
					b.WriteString(" " + ShellQuote(k+"="+pr.Env[k]))
				}
				b.WriteByte(' ')
			}
			argv := pr.Argv
			if wrap != nil {
				argv = wrap.Wrap(n, pr)
			}
			line(argv)
			// Services keep running while the next ones start, as in the
			// reference's "python3 -m dynamo.frontend ... &".
			if !pr.Oneshot && j < len(n.Processes)-1 {
				b.WriteString(" &")
			}
			b.WriteByte('\n')
		}
		if wrap != nil {
			for _, argv := range wrap.After(n) {
				line(argv)
				b.WriteByte('\n')
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeFileCommand writes a shell line that creates file with content. For
// text ending in a newline it stays one line: printf repeats '%s\n' for each
// line given as an argument.
func writeFileCommand(b *strings.Builder, file, content string) {
	fmt.Fprintf(b, "mkdir -p %s && printf ", ShellQuote(path.Dir(file)))
	if text, ok := strings.CutSuffix(content, "\n"); ok {
		b.WriteString(`'%s\n'`)
		for _, line := range strings.Split(text, "\n") {
			b.WriteString(" " + ShellQuote(line))
		}
	} else {
		b.WriteString("'%s' " + ShellQuote(content))
	}
	fmt.Fprintf(b, " > %s\n", ShellQuote(file))
}

// ShellQuote quotes s for a POSIX shell: unchanged when it has only safe
// characters, else in single quotes with each ' written as '\”.
func ShellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("@%+=:,./_-", c)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
