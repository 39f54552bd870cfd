// Command figures is the measuring and summing helper of the benchmark
// scripts (launcher/bench/report.sh, overhead.sh, slurm/hostlistbench/bench.sh).
// It speaks one line format, a sample of one figure:
//
//	FIGURE <name> <value> <unit>
//
// A figure measured several times (runs, rounds) has one line per sample.
//
//	figures pair [-n RUNS] [-warmup N] [-prefix P] NAME=CMD [NAME=CMD ...]
//
// times whole processes: every command once per round, in the order given
// (A B C A B C ...), after WARMUP uncounted rounds, so that drift of the
// machine's speed hits them alike. CMD is split at white space and run without
// a shell, stdin and stdout/stderr on /dev/null (a command that exits non-zero
// stops everything: a failing run is no figure). For each run it prints
// P.NAME.wall_ms (a monotonic clock around start and reap), P.NAME.cpu_ms
// (user+system of the process and its reaped children) and P.NAME.peak_rss_kib
// (the kernel's ru_maxrss, what /usr/bin/time -v calls "Maximum resident set
// size"); for each round and every command after the first, P.NAME/FIRST.ratio
// (wall of NAME over wall of FIRST in that round). A summary goes to stderr.
//
//	figures summarize < samples
//
// reads FIGURE lines (other lines are ignored) and prints, per name in first
// appearance order, "SUMMARY <name> <n> <min> <median> <max> <unit>"; the
// median of an even count is the mean of the middle two.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: figures pair [-n RUNS] [-warmup N] [-prefix P] NAME=CMD ... | figures summarize < samples")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "pair":
		err = pair(os.Args[2:], os.Stdout, os.Stderr)
	case "summarize":
		err = summarize(os.Stdin, os.Stdout)
	default:
		err = fmt.Errorf("unknown command %q (pair, summarize)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "figures:", err)
		os.Exit(1)
	}
}

type command struct {
	name string
	argv []string
}

type run struct {
	wall, cpu time.Duration
	rssKiB    int64
}

func pair(args []string, out, log io.Writer) error {
	fs := flag.NewFlagSet("pair", flag.ContinueOnError)
	runs := fs.Int("n", 5, "counted rounds")
	warmup := fs.Int("warmup", 1, "uncounted rounds first")
	prefix := fs.String("prefix", "time", "figure name prefix")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *runs < 1 || *warmup < 0 || fs.NArg() < 1 {
		return errors.New("pair: need -n >= 1, -warmup >= 0 and at least one NAME=CMD")
	}
	var cmds []command
	for _, a := range fs.Args() {
		name, line, ok := strings.Cut(a, "=")
		argv := strings.Fields(line)
		if !ok || name == "" || strings.ContainsAny(name, " \t") || len(argv) == 0 {
			return fmt.Errorf("pair: %q is not NAME=CMD", a)
		}
		cmds = append(cmds, command{name, argv})
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer null.Close()

	got := make([][]run, len(cmds))
	for r := 0; r < *warmup+*runs; r++ {
		for i, c := range cmds {
			res, err := once(c, null)
			if err != nil {
				return err
			}
			if r >= *warmup {
				got[i] = append(got[i], res)
			}
		}
	}
	for i, c := range cmds {
		for _, g := range got[i] {
			fmt.Fprintf(out, "FIGURE %s.%s.wall_ms %.3f ms\n", *prefix, c.name, ms(g.wall))
			fmt.Fprintf(out, "FIGURE %s.%s.cpu_ms %.3f ms\n", *prefix, c.name, ms(g.cpu))
			fmt.Fprintf(out, "FIGURE %s.%s.peak_rss_kib %d KiB\n", *prefix, c.name, g.rssKiB)
		}
	}
	for i := 1; i < len(cmds); i++ {
		for r := range got[i] {
			fmt.Fprintf(out, "FIGURE %s.%s/%s.ratio %.4f x\n", *prefix, cmds[i].name, cmds[0].name,
				got[i][r].wall.Seconds()/got[0][r].wall.Seconds())
		}
	}

	fmt.Fprintf(log, "%s: %d rounds (+%d warm-up), wall ms min / median / max, peak RSS median\n", *prefix, *runs, *warmup)
	for i, c := range cmds {
		w := make([]float64, len(got[i]))
		rss := make([]float64, len(got[i]))
		for r, g := range got[i] {
			w[r], rss[r] = ms(g.wall), float64(g.rssKiB)
		}
		sort.Float64s(w)
		sort.Float64s(rss)
		fmt.Fprintf(log, "  %-10s %10.2f %10.2f %10.2f   %8.0f KiB", c.name, w[0], median(w), w[len(w)-1], median(rss))
		if i > 0 {
			q := make([]float64, len(w))
			for r := range q {
				q[r] = got[i][r].wall.Seconds() / got[0][r].wall.Seconds()
			}
			sort.Float64s(q)
			fmt.Fprintf(log, "   %s/%s %.2fx", c.name, cmds[0].name, median(q))
		}
		fmt.Fprintln(log)
	}
	return nil
}

// once runs c to its exit and measures it.
func once(c command, null *os.File) (run, error) {
	cmd := exec.Command(c.argv[0], c.argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, null
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return run{}, fmt.Errorf("pair: %s (%s): %w", c.name, strings.Join(c.argv, " "), err)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return run{}, errors.New("pair: no rusage on this system")
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return run{wall: wall, cpu: cpu, rssKiB: ru.Maxrss}, nil
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// median of sorted values.
func median(v []float64) float64 {
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

func summarize(in io.Reader, out io.Writer) error {
	type fig struct {
		unit string
		vals []float64
	}
	figs := map[string]*fig{}
	var order []string
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "FIGURE" {
			continue
		}
		if len(f) != 4 {
			return fmt.Errorf("summarize: line %d: want FIGURE name value unit: %q", line, sc.Text())
		}
		v, err := strconv.ParseFloat(f[2], 64)
		if err != nil {
			return fmt.Errorf("summarize: line %d: %w", line, err)
		}
		g := figs[f[1]]
		if g == nil {
			g = &fig{unit: f[3]}
			figs[f[1]] = g
			order = append(order, f[1])
		} else if g.unit != f[3] {
			return fmt.Errorf("summarize: line %d: %s in %s, before in %s", line, f[1], f[3], g.unit)
		}
		g.vals = append(g.vals, v)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	for _, name := range order {
		g := figs[name]
		sort.Float64s(g.vals)
		fmt.Fprintf(out, "SUMMARY %s %d %s %s %s %s\n", name, len(g.vals),
			num(g.vals[0]), num(median(g.vals)), num(g.vals[len(g.vals)-1]), g.unit)
	}
	return nil
}

// num prints a figure to 4 decimals without trailing zeros.
func num(v float64) string {
	s := strconv.FormatFloat(v, 'f', 4, 64)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}
