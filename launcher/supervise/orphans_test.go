package supervise

import (
	"bytes"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func init() {
	helpers.Register("orphans", helperOrphans)
}

// helperOrphans is a worker that leaves orphans the ways real servers do:
// -grandchild starts a grandchild that calls setsid; -daemon starts a daemon
// by a classic double fork (its parent, in a new session, exits at once, so
// the subreaper adopts the daemon while the worker still runs); -daemon-on-term
// does that double fork on SIGTERM, just before exiting. It writes the
// orphans' pids to -ready (and -term-ready, for the latter) once they run.
// The orphans are sleep(1), not re-executed test binaries, so that a round
// costs one Go start-up and a few hundred rounds fit in a test run.
func helperOrphans(args []string) int {
	fl := flag.NewFlagSet("orphans", flag.ContinueOnError)
	ready := fl.String("ready", "", "file that gets the orphans' pids")
	grandchild := fl.Bool("grandchild", false, "start a setsid grandchild")
	daemon := fl.Bool("daemon", false, "start a double-forked daemon")
	termDaemon := fl.String("daemon-on-term", "", "on SIGTERM, start a double-forked daemon, write its pid here, and exit")
	ignoreTerm := fl.Bool("ignore-term", false, "ignore SIGTERM (the orphans inherit it)")
	threads := fl.Int("threads", 0, "extra OS threads: a process with many takes longer to exit, which widens the window in which its children are re-parented")
	sh := fl.String("sh", "/bin/sh", "the shell of the double fork")
	sleep := fl.String("sleep", "/bin/sleep", "the orphans' program")
	if fl.Parse(args) != nil {
		return 2
	}
	sigs := make(chan os.Signal, 1)
	switch {
	case *ignoreTerm:
		signal.Ignore(syscall.SIGTERM)
	case *termDaemon != "":
		signal.Notify(sigs, syscall.SIGTERM)
	}
	for range *threads {
		go func() {
			runtime.LockOSThread()
			select {}
		}()
	}
	var pids []string
	if *grandchild {
		cmd := exec.Command(*sleep, "600")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil { // never waited for: it is meant to outlive us
			fmt.Fprintln(os.Stderr, "orphans:", err)
			return 99
		}
		pids = append(pids, strconv.Itoa(cmd.Process.Pid))
	}
	doubleFork := func() (string, error) {
		cmd := exec.Command(*sh, "-c", `"$0" 600 >/dev/null 2>&1 </dev/null & echo $!`, *sleep)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		out, err := cmd.Output()
		return string(bytes.TrimSpace(out)), err
	}
	if *daemon {
		pid, err := doubleFork()
		if err != nil {
			fmt.Fprintln(os.Stderr, "orphans: double fork:", err)
			return 99
		}
		pids = append(pids, pid)
	}
	writeFileAtomic(*ready, strings.Join(pids, " "))
	if *termDaemon == "" {
		for {
			time.Sleep(time.Hour)
		}
	}
	<-sigs
	pid, err := doubleFork()
	if err != nil {
		fmt.Fprintln(os.Stderr, "orphans: double fork on SIGTERM:", err)
		return 99
	}
	writeFileAtomic(*termDaemon, pid)
	return 0
}

// TestSupervisorZeroOrphansStress repeats, in every form, the stop that once
// left a setsid grandchild behind (3 times in 150 runs under load): the sweep
// took the per-thread children lists, which can miss a process while it is
// being re-parented to us, for the truth, and declared the tree empty while
// the worker's last thread exited. Every orphan must be gone when Shutdown
// returns.
func TestSupervisorZeroOrphansStress(t *testing.T) {
	require.NoError(t, BecomeSubreaper())
	sh, err := exec.LookPath("sh")
	require.NoError(t, err, "the double fork needs sh")
	sleep, err := exec.LookPath("sleep")
	require.NoError(t, err, "the orphans are sleep(1)")
	kinds := []struct {
		name  string
		args  []string
		grace time.Duration
	}{
		// The original failure: the grandchild is re-parented to us just as
		// the sweep begins, when the worker's last thread exits.
		{"worker exits on SIGTERM, setsid grandchild", []string{"-grandchild"}, 20 * time.Millisecond},
		// The grace period is long enough for the double fork: the
		// worker exits right after it.
		{"worker double-forks a daemon on SIGTERM", []string{"-daemon-on-term", "TERM"}, waitTimeout},
		// SIGKILL lands while the sweep walks the tree.
		{"worker ignores SIGTERM, setsid grandchild and double-forked daemon", []string{"-ignore-term", "-grandchild", "-daemon"}, 20 * time.Millisecond},
	}
	// A launcher with more threads takes longer to read its children lists,
	// one per thread, which widened the window the old sweep fell into.
	idle := make(chan struct{})
	defer close(idle)
	for range 64 {
		go func() {
			runtime.LockOSThread()
			<-idle
		}()
	}
	rounds := 200
	if testing.Short() {
		rounds = 30
	}
	dir := t.TempDir()
	began := time.Now()
	for round := range rounds {
		kind := kinds[round%len(kinds)]
		var logs syncBuffer
		s := &Supervisor{Reaper: testReaper, Log: zerolog.New(&logs), Prefix: "stress", Grace: kind.grace}
		ready := filepath.Join(dir, strconv.Itoa(round))
		// How long a worker takes to exit varies with its threads; so does
		// when its children are re-parented. Vary it to meet the sweep.
		threads := strconv.Itoa(round / len(kinds) % 48)
		args := append([]string{"-ready", ready, "-sh", sh, "-sleep", sleep, "-threads", threads}, kind.args...)
		termReady := ""
		if i := slices.Index(args, "TERM"); i >= 0 {
			termReady = ready + "-term"
			args[i] = termReady
		}
		argv, env := helpers.Exec(t, "orphans", args...)
		require.NoError(t, s.Start(ProcSpec{Name: "worker", Argv: argv, Env: env}))
		orphans := strings.Fields(waitFile(t, ready))
		starts := map[string]uint64{}
		for _, pid := range orphans {
			starts[pid] = procStart(t, pid)
		}

		s.Shutdown("stress round")

		if termReady != "" {
			pid := waitFile(t, termReady)
			orphans = append(orphans, pid)
		}
		for _, f := range orphans {
			pid, err := strconv.Atoi(f)
			require.NoError(t, err)
			st, err := readProcStat(pid)
			if err == nil && (starts[f] == 0 || st.Start == starts[f]) {
				t.Fatalf("round %d (%s): orphan %d is still there (state %c, parent %d, session %d)\n%s",
					round, kind.name, pid, st.State, st.PPid, st.Sid, logs.String())
			}
			if err != nil {
				require.ErrorIs(t, err, fs.ErrNotExist, "round %d: orphan %d", round, pid)
			}
		}
	}
	t.Logf("%d rounds in %s", rounds, time.Since(began).Round(time.Millisecond))
	assert.Empty(t, scanChildrenOf(os.Getpid(), syscall.Getpgrp()), "no child left outside the test's own process group")
}

func procStart(t *testing.T, pid string) uint64 {
	t.Helper()
	n, err := strconv.Atoi(pid)
	require.NoError(t, err)
	st, err := readProcStat(n)
	require.NoError(t, err, "orphan %d runs", n)
	return st.Start
}

// syncBuffer is a bytes.Buffer safe for the Supervisor's concurrent logging.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// scanChildrenOf lists, from a full /proc scan, the children of pid that are
// not in process group pgrp.
func scanChildrenOf(pid, pgrp int) []procStat {
	var kids []procStat
	names, _ := readDirNames("/proc/")
	for _, name := range names {
		n, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		if st, err := readProcStat(n); err == nil && st.PPid == pid && st.Pgid != pgrp {
			kids = append(kids, st)
		}
	}
	return kids
}
