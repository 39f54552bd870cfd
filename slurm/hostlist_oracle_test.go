package slurm

// Differential tests against the real `scontrol show hostnames` and `scontrol
// show hostlist` (Debian slurm-client, Slurm 22.05). scontrol needs only a
// slurm.conf to read, not a running controller. The generated input stays
// inside what both accept and mean the same by:
//   - 22.05 rejects text after the last bracket group, which Expand accepts
//     as Slurm >= 23.02.5 does;
//   - 22.05 takes a newline as part of a name, newer Slurm and Expand as a
//     separator;
//   - 22.05 lets through malformed input (node[1-2, node[ 1], node[1-]) that
//     Expand rejects;
//   - 22.05 loops forever on a prefix group ending at 2^64-1, drops hosts
//     numbered 2^64-1 and clamps longer trailing numbers in show hostlist.

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const oracleSeed = 20250522

type scontrol struct {
	path string
	env  []string
}

// newScontrol finds scontrol and gives it a dummy slurm.conf, or skips.
func newScontrol(t *testing.T) *scontrol {
	t.Helper()
	path, err := exec.LookPath("scontrol")
	if err != nil {
		t.Fatalf("scontrol not installed: %v (Debian package slurm-client; make deps installs it)", err)
	}
	conf := filepath.Join(t.TempDir(), "slurm.conf")
	require.NoError(t, os.WriteFile(conf, []byte("ClusterName=x\nSlurmctldHost=localhost\n"), 0o644))
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SLURM_") {
			env = append(env, kv)
		}
	}
	return &scontrol{path: path, env: append(env, "SLURM_CONF="+conf)}
}

type scontrolResult struct {
	stdout, stderr string
	err            error
}

// show runs `scontrol show <what> <arg>` for every arg, a few at a time:
// scontrol takes one hostlist per invocation.
func (s *scontrol) show(t *testing.T, what string, args []string) []scontrolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	results := make([]scontrolResult, len(args))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(2*runtime.GOMAXPROCS(0), 8) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				var stdout, stderr strings.Builder
				// "--": a hostlist may start with '-'.
				cmd := exec.CommandContext(ctx, s.path, "--", "show", what, args[i])
				cmd.Env = s.env
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				err := cmd.Run()
				results[i] = scontrolResult{stdout: stdout.String(), stderr: stderr.String(), err: err}
			}
		}()
	}
	for i := range args {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, r := range results {
		// scontrol exits 0 even for an invalid hostlist; a failure to run is the test's problem.
		require.NoError(t, r.err, "scontrol show %s %q: %s", what, args[i], r.stderr)
	}
	return results
}

// mismatches reports at most a few differences in detail, then a count, so a
// systematic bug does not drown the log.
type mismatches struct {
	t *testing.T
	n int
}

func (m *mismatches) check(ok bool, format string, a ...any) {
	m.t.Helper()
	if ok {
		return
	}
	m.n++
	if m.n <= 10 {
		m.t.Errorf(format, a...)
	}
}

func (m *mismatches) done(total int) {
	if m.n > 0 {
		m.t.Errorf("%d of %d cases differ from scontrol", m.n, total)
	}
}

// hostlistGen makes random expressions and name lists inside the grammar
// that Slurm 22.05 and Expand share.
type hostlistGen struct{ r *rand.Rand }

func newHostlistGen() *hostlistGen {
	return &hostlistGen{r: rand.New(rand.NewPCG(oracleSeed, oracleSeed))}
}

func (g *hostlistGen) pick(choices ...string) string { return choices[g.r.IntN(len(choices))] }

// text is a piece of a host name: letters, digits and punctuation that mean
// nothing to either parser. It does not end in a digit, so a number that
// follows it stays the name's whole trailing number.
func (g *hostlistGen) text(minLen, maxLen int) string {
	const chars = "abcnodegpurkx-_.0123456789"
	n := minLen + g.r.IntN(maxLen-minLen+1)
	b := make([]byte, n)
	for i := range b {
		b[i] = chars[g.r.IntN(len(chars))]
		if (i == 0 && g.r.IntN(4) > 0) || i == n-1 {
			b[i] = "abcgnrx-"[g.r.IntN(8)] // mostly start with a letter, like real names
		}
	}
	return string(b)
}

// number is a low bound around a place where the digit count changes.
func (g *hostlistGen) number() uint64 {
	switch g.r.IntN(10) {
	case 0:
		return 95 + g.r.Uint64N(10)
	case 1:
		return 995 + g.r.Uint64N(10)
	case 2:
		return math.MaxUint64 - 8 + g.r.Uint64N(4)
	default:
		return g.r.Uint64N(20)
	}
}

// padded prints n with 0-2 extra leading zeros now and then.
func (g *hostlistGen) padded(n uint64) string {
	width := numDigits(n)
	if g.r.IntN(3) == 0 {
		width += 1 + g.r.IntN(2)
	}
	return fmt.Sprintf("%0*d", width, n)
}

// group returns a bracket group naming at most budget numbers, and how many
// it names.
func (g *hostlistGen) group(budget uint64) (string, uint64) {
	var items []string
	var count uint64
	for range 1 + g.r.IntN(4) {
		lo := g.number()
		span := g.r.Uint64N(min(budget, 12))
		if g.r.IntN(3) == 0 || count+span+1 > budget || lo >= math.MaxUint64-1-span {
			span = 0
		}
		if count+span+1 > budget && len(items) > 0 {
			break
		}
		if span == 0 && g.r.IntN(2) == 0 {
			items = append(items, g.padded(lo))
		} else {
			items = append(items, g.padded(lo)+"-"+g.padded(lo+span))
		}
		count += span + 1
	}
	return "[" + strings.Join(items, ",") + "]", count
}

// token is a plain name or up to three bracket groups with nothing after the
// last one.
func (g *hostlistGen) token() string {
	if g.r.IntN(5) == 0 {
		return g.text(1, 10)
	}
	var b strings.Builder
	groups := 1 + g.r.IntN(3)/2 + g.r.IntN(4)/3 // mostly one, sometimes two or three
	budget := uint64(400)
	for i := range groups {
		if i == 0 && g.r.IntN(10) == 0 {
			// empty prefix
		} else if i > 0 && g.r.IntN(6) == 0 {
			// groups side by side
		} else {
			b.WriteString(g.text(1, 8))
		}
		grp, n := g.group(max(budget, 1))
		budget /= max(n, 1)
		b.WriteString(grp)
	}
	return b.String()
}

func (g *hostlistGen) sep() string { return g.pick(",", ",", ",", " ", "\t", ", ", ",,", " \t") }

func (g *hostlistGen) expr() string {
	var b strings.Builder
	if g.r.IntN(8) == 0 {
		b.WriteString(g.sep())
	}
	var prev string
	for i := range 1 + g.r.IntN(4) {
		if i > 0 {
			b.WriteString(g.sep())
		}
		tok := g.token()
		if prev != "" && g.r.IntN(6) == 0 {
			tok = prev // a duplicated token
		}
		b.WriteString(tok)
		prev = tok
	}
	if g.r.IntN(8) == 0 {
		b.WriteString(g.sep())
	}
	return b.String()
}

// invalidExpr breaks a valid expression in a way both 22.05 and Expand reject.
func (g *hostlistGen) invalidExpr() string {
	bad := g.pick("node[3-1]", "n[]", "n[a-b]", "n[-1]", "n[1--2]", "n[1-2]]", "n[00000-65536]",
		"n[1,,2]", "n[,1]", "n[1x]", "a[1[2]]", "a[0-32767,0-32768]b[0-1]", "n[2-1]m[1]", "x[1]]y")
	parts := []string{g.expr(), bad}
	if g.r.IntN(2) == 0 {
		parts[0], parts[1] = parts[1], parts[0]
	}
	return strings.Join(parts, ",")
}

// names is a list of host names with runs, gaps, duplicates and mixed
// padding, the cases `scontrol show hostlist` groups differently.
func (g *hostlistGen) names() []string {
	prefixes := []string{"n", "node", "rack1-n", "gpu", "c", "a-ib", "", "x9y"}
	var out []string
	for range 1 + g.r.IntN(8) {
		if g.r.IntN(6) == 0 {
			out = append(out, g.pick("login", "head", "gpu0-ib", "n-", "a.b"))
			continue
		}
		prefix := prefixes[g.r.IntN(len(prefixes))]
		n := g.number()
		for range 1 + g.r.IntN(6) {
			name := prefix + g.padded(n)
			if prefix == "" && name == "" {
				continue
			}
			out = append(out, name)
			if g.r.IntN(8) == 0 {
				out = append(out, name) // duplicate
			}
			if n >= math.MaxUint64-2 {
				break
			}
			n += 1 + uint64(g.r.IntN(4)/3) // mostly consecutive, sometimes a gap
		}
	}
	return out
}

// numbersFit tells whether scontrol keeps every trailing number of names as
// it is: 22.05 clamps those beyond 2^64-1 and drops 2^64-1 itself, where
// Compress keeps such names as plain names. Adjacent bracket groups can make
// such names (a[99][18446744073709551610]).
func numbersFit(names []string) bool {
	for _, n := range names {
		r := splitHostname(n)
		if r.single && r.prefix != "" && isDigit(r.prefix[len(r.prefix)-1]) || !r.single && r.lo == math.MaxUint64 {
			return false
		}
	}
	return true
}

func TestExpandMatchesScontrol(t *testing.T) {
	sc := newScontrol(t)
	gen := newHostlistGen()
	var exprs []string
	for range 300 {
		exprs = append(exprs, gen.expr())
	}
	invalid := len(exprs)
	for range 60 {
		exprs = append(exprs, gen.invalidExpr())
	}
	results := sc.show(t, "hostnames", exprs)
	m := &mismatches{t: t}
	for i, expr := range exprs {
		r := results[i]
		names, err := Expand(expr)
		if i >= invalid {
			m.check(err != nil && r.stdout == "" && r.stderr != "",
				"%q: Expand error %v; scontrol stdout %q stderr %q (both must reject)", expr, err, r.stdout, r.stderr)
			continue
		}
		if !assert.NoError(t, err, "scontrol says %q", r.stdout) {
			continue
		}
		want := strings.Join(names, "\n") + "\n"
		m.check(r.stdout == want && r.stderr == "", "%q:\nscontrol: %q (stderr %q)\nExpand:   %q", expr, r.stdout, r.stderr, want)
	}
	m.done(len(exprs))
}

func TestCompressMatchesScontrol(t *testing.T) {
	sc := newScontrol(t)
	gen := newHostlistGen()
	var lists [][]string
	for range 200 {
		lists = append(lists, gen.names())
	}
	for len(lists) < 300 {
		names, err := Expand(gen.expr())
		require.NoError(t, err)
		if numbersFit(names) {
			lists = append(lists, names)
		}
	}
	args := make([]string, len(lists))
	for i, l := range lists {
		args[i] = strings.Join(l, ",")
	}
	results := sc.show(t, "hostlist", args)
	m := &mismatches{t: t}
	for i, names := range lists {
		got := Compress(names)
		m.check(results[i].stdout == got+"\n" && results[i].stderr == "",
			"%q:\nscontrol: %q (stderr %q)\nCompress: %q", args[i], results[i].stdout, results[i].stderr, got)
	}
	m.done(len(lists))
}

// afterDigit matches a bracket group right after a digit or another group.
var afterDigit = regexp.MustCompile(`[0-9\]]\[`)

// TestCompressExpandMatchesScontrol is `wideep-launch hostlist EXPR`, which
// is Compress(Expand(EXPR)), against `scontrol show hostlist EXPR`. They
// agree except where a bracket group follows a digit: scontrol then keeps
// the group's numbers apart (n1[2-3] stays n1[2-3]), while names only have
// one trailing number (n12,n13 is n[12-13]). Both expand to the same names.
func TestCompressExpandMatchesScontrol(t *testing.T) {
	sc := newScontrol(t)
	gen := newHostlistGen()
	var exprs []string
	for len(exprs) < 200 {
		expr := gen.expr()
		names, err := Expand(expr)
		require.NoError(t, err)
		if numbersFit(names) && !afterDigit.MatchString(expr) {
			exprs = append(exprs, expr)
		}
	}
	results := sc.show(t, "hostlist", exprs)
	m := &mismatches{t: t}
	for i, expr := range exprs {
		names, err := Expand(expr)
		require.NoError(t, err)
		got := Compress(names)
		m.check(results[i].stdout == got+"\n" && results[i].stderr == "",
			"%q:\nscontrol: %q (stderr %q)\nCompress: %q", expr, results[i].stdout, results[i].stderr, got)
	}
	m.done(len(exprs))
}
