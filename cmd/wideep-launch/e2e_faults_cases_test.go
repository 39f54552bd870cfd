package main

// The cases of TestE2EFaultMatrix (e2e_faults_test.go). Expectations come
// from the README ("A job is a gang: failures, signals and exit codes",
// "DeepGEMM kernels", "Containers") and the other e2e tests' assertions.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/slurm"
	"github.com/wideep/wideep-launch/slurm/slurmtest"
)

// laneCases run in 2-node jobs, several at once; the longest first.
func laneCases() []faultCase {
	return []faultCase{
		{id: "time_limit", rows: []string{"time limit: --time=1 --signal=USR1@30"}, run: (*faultRun).timeLimit},
		{id: "node0_killed_in_precompile", rows: []string{"node 0's launcher SIGKILLed during the precompile",
			"stale lock: the next job on that cache"}, run: (*faultRun).node0KilledInPrecompile},
		{id: "never_rendezvous", rows: []string{"node 1 never reaches the rendezvous"}, run: (*faultRun).neverRendezvous},
		{id: "scancel_import", rows: []string{"scancel during the image import (enroot)"}, run: (*faultRun).scancelImport},
		{id: "scancel_precompile", rows: []string{"scancel during the precompile"}, run: (*faultRun).scancelPrecompile},
		{id: "scancel_health", rows: []string{"scancel during the health wait"}, run: (*faultRun).scancelHealth},
		{id: "scancel_serving", rows: []string{"scancel while serving"}, run: (*faultRun).scancelServing},
		{id: "sigterm_ignored", rows: []string{"workers ignore SIGTERM (60 s), then scancel"}, run: (*faultRun).sigtermIgnored},
		{id: "setsid_daemon", rows: []string{"setsid daemons left by the workers, then scancel"}, run: (*faultRun).setsidDaemon},
		{id: "launcher_sigkill_node1", rows: []string{"launcher SIGKILLed on node 1 after READY"},
			run: func(f *faultRun) { f.killLauncher(1) }},
		{id: "launcher_sigkill_node0", rows: []string{"launcher SIGKILLed on node 0 after READY"},
			run: func(f *faultRun) { f.killLauncher(0) }},
		{id: "etcd_killed", rows: []string{"etcd SIGKILLed after READY"},
			run: func(f *faultRun) { f.killService("etcd", "etcd") }},
		{id: "nats_killed", rows: []string{"NATS SIGKILLed after READY"},
			run: func(f *faultRun) { f.killService("nats-server", "nats") }},
		{id: "unwritable_cache", rows: []string{"unwritable cache dir (immutable)"}, run: (*faultRun).unwritableCache},
	}
}

// wholeLabCases need the 8 nodes (or two 4-node jobs).
func wholeLabCases() []faultCase {
	var cases []faultCase
	for _, serve := range []bool{false, true} {
		for _, idx := range []int{0, 3, 7} {
			when, id := "before READY (startup:3)", "startup"
			if serve {
				when, id = "after READY (serve=3s:3)", "serve"
			}
			cases = append(cases, faultCase{id: fmt.Sprintf("worker_crash_node%d_%s", idx, id),
				rows: []string{fmt.Sprintf("worker crash on node %d %s", idx, when)},
				run:  func(f *faultRun) { f.workerCrash(idx, serve) }})
		}
	}
	return append(cases, faultCase{id: "two_jobs_one_cache", rows: []string{"two 4-node jobs on one cache, then scancel"},
		run: (*faultRun).twoJobsOneCache})
}

// A worker exits 3 on node idx of the default layout (1P×4 + 1D×4): that
// node exits 3, every other 125, each naming it.
func (f *faultRun) workerCrash(idx int, afterReady bool) {
	r := f.row(0)
	h, role := f.hosts[idx], "prefill"
	if idx >= 4 {
		role = "decode"
	}
	spec := h + ":startup:3"
	if afterReady {
		// serve=3s, not 1s: time for node 0 to see every worker registered
		// first (waitReady below proves it did).
		spec = h + ":serve=3s:3"
	}
	msg := fmt.Sprintf("NODE FAILED: node %d (%s): process %s exited with code 3", idx, h, role)
	g := gangEnd{state: "FAILED", failure: true, own: map[string]nodeEnd{h: {3, msg}}, rest: nodeEnd{125, msg}, slurmMayStop: true}
	r.expected = g.describe(f.kobe)
	j := f.submit(f.env("WIDEEP_SIM_FAIL", spec))
	if afterReady {
		j.waitReady(2 * time.Minute)
	}
	f.finish(r, j, g, time.Time{}, "process exited: stopping this node")
}

// The launcher of node idx dies (SIGKILL) after READY: node 0 declares it
// lost, or every node notices node 0's connection close.
func (f *faultRun) killLauncher(idx int) {
	r := f.row(0)
	victim := f.hosts[idx]
	g := gangEnd{state: "FAILED", failure: true, rest: nodeEnd{125, fmt.Sprintf("NODE FAILED: node %d (%s) lost", idx, victim)},
		silent: victim, slurmMayStop: true}
	r.expected = g.describe(f.kobe)
	j := f.submit(f.env())
	j.waitReady(2 * time.Minute)
	at := time.Now()
	require.NoError(f.t, syscall.Kill(launcherPID(f.t, f.c, victim), syscall.SIGKILL))
	f.finish(r, j, g, at, "")
}

// etcd or NATS (comm) on node 0 is SIGKILLed after READY: the process
// called name in the launcher's log.
func (f *faultRun) killService(comm, name string) {
	r := f.row(0)
	h0 := f.hosts[0]
	msg := fmt.Sprintf("node 0 (%s): process %s killed by SIGKILL (exit code 137)", h0, name)
	g := gangEnd{state: "FAILED", failure: true, own: map[string]nodeEnd{h0: {137, "NODE FAILED: " + msg}},
		rest: nodeEnd{125, msg}, slurmMayStop: true}
	r.expected = g.describe(f.kobe)
	j := f.submit(f.env())
	j.waitReady(2 * time.Minute)
	procs, err := f.c.NodeProcesses(h0)
	require.NoError(f.t, err)
	i := slices.IndexFunc(procs, func(p slurmtest.Proc) bool { return p.Comm == comm })
	require.GreaterOrEqual(f.t, i, 0, "%s runs on %s: %v", comm, h0, procs)
	at := time.Now()
	require.NoError(f.t, syscall.Kill(procs[i].Pid, syscall.SIGKILL))
	f.finish(r, j, g, at, "")
}

// Node 1's launcher runs but looks for the rendezvous on a port nobody
// listens on (as if its route to node 0 were cut): node 0 reports it never
// arrived, node 1 that it could not reach node 0, both after
// --rendezvous-timeout (10 s). fault→end is from the first of those lines.
func (f *faultRun) neverRendezvous() {
	r := f.row(0)
	h0, h1 := f.hosts[0], f.hosts[1]
	wrapper := filepath.Join(f.t.TempDir(), "launcher")
	require.NoError(f.t, os.WriteFile(wrapper, []byte(fmt.Sprintf("#!/bin/sh\n"+
		"if [ \"$SLURMD_NODENAME\" = %s ]; then export WIDEEP_RENDEZVOUS_PORT=9; fi\nexec %s \"$@\"\n", h1, launcherBin)), 0o755))
	g := gangEnd{state: "FAILED", failure: true,
		own:  map[string]nodeEnd{h0: {125, fmt.Sprintf("node 1 (%s) never arrived", h1)}},
		rest: nodeEnd{125, "rendezvous: could not reach the server"}, slurmMayStop: true}
	r.expected = g.describe(f.kobe)
	j := f.submit(f.env("LAUNCHER", wrapper, "WIDEEP_RENDEZVOUS_TIMEOUT", "10s"))
	job, end := f.waitEnd(j)
	at := firstLine(j, f.hosts, "never arrived")
	if t1 := firstLine(j, f.hosts, "could not reach the server"); at.IsZero() || !t1.IsZero() && t1.Before(at) {
		at = t1
	}
	r.measure(at, end)
	r.got = g.check(r, j, job, f.hosts, f.kobe)
	f.settle(r, f.hosts, j.work)
}

// Node 0's launcher is SIGKILLed while both nodes compile (60 s): node 1
// ends at once naming node 0; the dead node 0's locks stay. The next job on
// that cache breaks them (its job is gone from squeue), compiles and is READY.
func (f *faultRun) node0KilledInPrecompile() {
	h0, h1 := f.hosts[0], f.hosts[1]
	work := f.t.TempDir()
	r := f.row(0)
	r.locksForNextJob = true
	g := gangEnd{state: "FAILED", failure: true, rest: nodeEnd{125, fmt.Sprintf("NODE FAILED: node 0 (%s) lost", h0)},
		silent: h0, slurmMayStop: true}
	r.expected = g.describe(f.kobe) + "; " + h1 + " ends before the 60 s compile would (bound 40 s)"
	j := f.submit(f.env("WIDEEP_SIM_WORK", work, "WIDEEP_SIM_PRECOMPILE_DELAY", "60s"))
	f.waitCompiling(j)
	at := time.Now()
	require.NoError(f.t, syscall.Kill(launcherPID(f.t, f.c, h0), syscall.SIGKILL))
	f.finish(r, j, g, at, "")
	if end, _, ok := j.lastExit(h1); ok && end.Sub(at) > 40*time.Second {
		r.failf("%s waited for the compile: it ended %s after the kill", h1, end.Sub(at).Round(time.Millisecond))
	}

	r2 := f.row(1)
	g2 := gangEnd{state: "CANCELLED", rest: stopped, never: "NODE FAILED"}
	const broke = "broke the stale lock of a DeepGEMM cache entry"
	r2.expected = "READY; " + h0 + " “" + broke + "”; compiled on " + slurm.Compress(f.hosts) + "; then scancel: " + g2.describe(f.kobe)
	n := f.submit(f.env("WIDEEP_SIM_WORK", work, "WIDEEP_SIM_PRECOMPILE_DELAY", "1s"))
	n.waitReady(2 * time.Minute)
	if !strings.Contains(n.launcherLog(h0), broke) {
		r2.failf("%s's log does not say %q", h0, broke)
	}
	compiled := n.compiledOn()
	if !slices.Equal(compiled, f.hosts) {
		r2.failf("compiled on %v, want %v", compiled, f.hosts)
	}
	f.finish(r2, n, g2, f.cancel(n), "")
	r2.got += "; compiled on " + slurm.Compress(compiled)
}

// The cache dir is immutable (chattr +i): the batch script's mkdir -p
// passes, the preflight's test file cannot be created, even by root. Every
// node reports every node's problem and exits 2; nothing heavy starts.
func (f *faultRun) unwritableCache() {
	r := f.row(0)
	work := f.t.TempDir()
	cache := filepath.Join(work, "cache")
	require.NoError(f.t, os.Mkdir(cache, 0o755))
	undo, err := immutable(cache)
	require.NoError(f.t, err)
	restored := false
	restore := func() {
		if !restored {
			restored = true
			require.NoError(f.t, undo())
		}
	}
	defer restore()
	g := gangEnd{state: "FAILED", failure: true, rest: nodeEnd{2, "cache dir " + cache + ": not writable"}, slurmMayStop: true}
	r.expected = g.describe(f.kobe)
	j := f.submit(f.env("WIDEEP_SIM_WORK", work))
	job, end := f.waitEnd(j)
	restore()
	r.measure(firstLine(j, f.hosts, "preflight failed"), end)
	r.got = g.check(r, j, job, f.hosts, f.kobe)
	if c := j.compiledOn(); len(c) > 0 {
		r.failf("compiled on %v after a failed preflight", c)
	}
	f.settle(r, f.hosts, work)
}

// scancelled is what every scancel case expects.
func (f *faultRun) scancelled(r *faultRow, extra string) gangEnd {
	g := gangEnd{state: "CANCELLED", rest: stopped, never: "NODE FAILED"}
	r.expected = g.describe(f.kobe) + extra
	return g
}

func (f *faultRun) scancelPrecompile() {
	r := f.row(0)
	g := f.scancelled(r, "; nothing published, no lock left")
	j := f.submit(f.env("WIDEEP_SIM_PRECOMPILE_DELAY", "60s"))
	f.waitCompiling(j)
	f.finish(r, j, g, f.cancel(j), "")
	if len(j.kernels()) > 0 {
		r.failf("kernels in the shared cache after a compile was stopped: %v", j.kernels())
	}
}

// The decode worker never registers: node 0 waits in the health gate
// (and says so every second) when the job is cancelled.
func (f *faultRun) scancelHealth() {
	r := f.row(0)
	g := f.scancelled(r, "")
	j := f.submit(f.env("WIDEEP_SIM_FAIL", f.hosts[1]+":noregister", "WIDEEP_PROGRESS_INTERVAL", "1s"))
	require.Eventually(f.t, func() bool {
		return strings.Contains(j.launcherLog(f.hosts[0]), "deployment not ready yet")
	}, 2*time.Minute, 50*time.Millisecond, "node 0 waits in the health gate")
	f.finish(r, j, g, f.cancel(j), "")
}

func (f *faultRun) scancelServing() {
	r := f.row(0)
	g := f.scancelled(r, "; endpoint file removed")
	j := f.submit(f.env())
	j.waitReady(2 * time.Minute)
	f.finish(r, j, g, f.cancel(j), "")
	if _, err := os.Stat(filepath.Join(j.logDir(), "endpoint")); !os.IsNotExist(err) {
		r.failf("the endpoint file is still there (%v)", err)
	}
}

// Node 0 imports the image (the enroot stand-in, 30 s) when the job is
// cancelled: no image under its final name, no staging file or lock, no
// container left.
func (f *faultRun) scancelImport() {
	r := f.row(0)
	g := f.scancelled(r, "; no image, staging file, lock or container left")
	l := newEnrootLab(f.t)
	j := f.submit(l.env(faultsImage, f.env("WIDEEP_ENROOT_IMPORT_DELAY", "30s")))
	require.Eventually(f.t, func() bool { return len(l.calls(f.t, "import")) == 1 }, 2*time.Minute, 50*time.Millisecond,
		"node 0 started the import")
	f.finish(r, j, g, f.cancel(j), "", l.images)
	if final := filepath.Join(l.images, mustImage(f.t, faultsImage).CacheName()); fileExists(final) {
		r.failf("an image under its final name after a cancelled import: %s", final)
	}
	if left := l.containers(f.t); len(left) > 0 {
		r.failf("containers left: %v", left)
	}
}

const faultsImage = "docker://registry.lab#wideep/faults:1"

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// The workers (and the frontend) take 60 s to exit after SIGTERM: the
// launchers SIGKILL them after the grace (3 s), well before the 60 s.
func (f *faultRun) sigtermIgnored() {
	r := f.row(0)
	const kill = "grace period over, sending SIGKILL"
	g := f.scancelled(r, "; every node “"+kill+"”, ending well before the 60 s (bound 30 s)")
	j := f.submit(f.env("WIDEEP_SIM_TERM_DELAY", "60s"))
	j.waitReady(2 * time.Minute)
	at := f.cancel(j)
	f.finish(r, j, g, at, "")
	for _, h := range f.hosts {
		if !strings.Contains(j.launcherLog(h), kill) {
			r.failf("%s's log does not say %q", h, kill)
		}
		if end, _, ok := j.lastExit(h); ok && end.Sub(at) > 30*time.Second {
			r.failf("%s waited for its workers: it ended %s after scancel", h, end.Sub(at).Round(time.Millisecond))
		}
	}
}

// Every worker leaves a setsid'd daemon that ignores SIGTERM
// (WIDEEP_SIM_ORPHAN): none may survive the job.
func (f *faultRun) setsidDaemon() {
	r := f.row(0)
	g := f.scancelled(r, "; daemons seen before scancel")
	j := f.submit(f.env("WIDEEP_SIM_ORPHAN", "1"))
	j.waitReady(2 * time.Minute)
	daemons := 0
	for _, h := range f.hosts {
		procs, err := f.c.NodeProcesses(h)
		require.NoError(f.t, err)
		for _, p := range procs {
			if strings.Contains(p.Cmdline, "sim orphan") {
				daemons++
			}
		}
	}
	if daemons == 0 {
		r.failf("no setsid daemon before scancel: the case shows nothing")
	}
	f.finish(r, j, g, f.cancel(j), "")
	r.got += fmt.Sprintf("; %d daemons before scancel", daemons)
}

// --time=1 with --signal=USR1@30: the launchers stop on SIGUSR1 before the
// limit, gracefully, and exit 0 (README: "a planned stop before the time
// limit: ... exit 0"), so the batch script ends 0 and the job COMPLETED —
// not TIMEOUT, which would mean the launchers ignored the warning.
func (f *faultRun) timeLimit() {
	r := f.row(0)
	g := gangEnd{state: "COMPLETED", rest: nodeEnd{0, "stopped gracefully on SIGUSR1"}, never: "NODE FAILED"}
	r.expected = g.describe(f.kobe) + "; fault = the USR1's log line"
	j := f.submit(f.env("SBATCH_TIMELIMIT", "1", "SBATCH_SIGNAL", "USR1@30"))
	j.waitReady(2 * time.Minute)
	f.finish(r, j, g, time.Time{}, "stopped gracefully on SIGUSR1")
}

// Two 4-node jobs (1P×2 + 1D×2) on one cache at once: one compiles, the
// other waits and reuses its kernels; both READY, both CANCELLED by scancel.
func (f *faultRun) twoJobsOneCache() {
	r := f.row(0)
	g := gangEnd{state: "CANCELLED", rest: stopped, never: "NODE FAILED"}
	const reused = "another job compiled these kernels while we waited"
	r.expected = "both READY, one compiles on its 4 nodes, the other none and says “" + reused + "”; after scancel each: " +
		g.describe(f.kobe)
	work := f.t.TempDir()
	env := f.env("WIDEEP_SIM_WORK", work, "WIDEEP_PREFILL_NODES_PER_WORKER", "2", "WIDEEP_DECODE_NODES_PER_WORKER", "2",
		"WIDEEP_SIM_PRECOMPILE_DELAY", "5s", "WIDEEP_PROGRESS_INTERVAL", "1s")
	jobs := []*e2eJob{submitN(f.t, f.c, 4, env), submitN(f.t, f.c, 4, env)}
	compiles := map[int]int{}
	for _, j := range jobs {
		j.waitReady(2 * time.Minute)
		compiles[len(j.compiledOn())]++
	}
	if compiles[4] != 1 || compiles[0] != 1 {
		r.failf("compile processes per job: %v, want one job with 4 and one with 0", compiles)
	}
	for _, j := range jobs {
		if len(j.compiledOn()) == 0 && !strings.Contains(j.launcherLog(j.nodeZero()), reused) {
			r.failf("job %s compiled nothing but its node 0 does not say %q", j.id, reused)
		}
	}
	at := time.Now()
	for _, j := range jobs {
		require.NoError(f.t, f.c.Cancel(j.id))
	}
	var gots []string
	var end time.Time
	for _, j := range jobs {
		job, e := f.waitEnd(j)
		end = e
		hosts, err := slurm.Expand(job.NodeList)
		require.NoError(f.t, err)
		gots = append(gots, "job "+j.id+": "+g.check(r, j, job, hosts, f.kobe))
	}
	r.measure(at, end)
	r.got = strings.Join(gots, " / ")
	f.settle(r, f.hosts, work)
}
