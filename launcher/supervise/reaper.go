package supervise

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// BecomeSubreaper makes this process the reaper of orphaned descendants
// (prctl PR_SET_CHILD_SUBREAPER): a process whose parent dies is re-parented
// to us instead of to init, even after setsid or a double fork, so Shutdown
// can find and kill it. Call it once at start-up, before starting processes.
func BecomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", err)
	}
	return nil
}

// Reaper owns every wait4 of supervised processes and adopted orphans, for
// all the Supervisors that share it. A program has exactly one (create it in
// main, or in the runtime that owns the processes, and hand it to every
// Supervisor): two reapers in one process would take each other's processes
// for orphans. Its reaping goroutine runs while at least one Supervisor is
// open; the zero value is not usable, call NewReaper.
type Reaper struct {
	mu    sync.Mutex
	procs map[int]*proc // started and not yet reaped
	pgrp  int           // the program's own process group

	wakeMu sync.Mutex
	wake   chan struct{} // closed (and replaced) when a round reaped something

	lifeMu sync.Mutex // guards the fields below
	users  map[*Supervisor]bool
	sigs   chan os.Signal
	kick   chan struct{}
	stop   chan struct{}
	done   chan struct{}
}

// NewReaper returns the program's reaper.
func NewReaper() *Reaper {
	return &Reaper{procs: map[int]*proc{}, users: map[*Supervisor]bool{}, wake: make(chan struct{})}
}

// reaped returns a channel that is closed once a round has reaped
// something: every waiter of every Supervisor wakes. Take it before looking
// at the state it announces changes of, so that no round is missed.
func (r *Reaper) reaped() <-chan struct{} {
	r.wakeMu.Lock()
	defer r.wakeMu.Unlock()
	return r.wake
}

func (r *Reaper) acquire(s *Supervisor) {
	r.lifeMu.Lock()
	defer r.lifeMu.Unlock()
	r.users[s] = true
	if len(r.users) > 1 {
		return
	}
	r.mu.Lock()
	r.pgrp = syscall.Getpgrp()
	r.mu.Unlock()
	// Before the first fork, so that no SIGCHLD is missed.
	r.sigs = make(chan os.Signal, 1)
	signal.Notify(r.sigs, syscall.SIGCHLD)
	r.kick = make(chan struct{}, 1)
	r.stop = make(chan struct{})
	r.done = make(chan struct{})
	go r.loop(r.sigs, r.kick, r.stop, r.done)
}

func (r *Reaper) release(s *Supervisor) {
	r.lifeMu.Lock()
	defer r.lifeMu.Unlock()
	delete(r.users, s)
	if len(r.users) > 0 {
		return
	}
	signal.Stop(r.sigs)
	close(r.stop)
	done := r.done
	// Not under lifeMu: a last round may still be waking Supervisors.
	r.lifeMu.Unlock()
	<-done
	r.lifeMu.Lock()
}

// poke asks for a reaping round now; Shutdown uses it because SIGCHLDs may
// coalesce.
func (r *Reaper) poke() {
	r.lifeMu.Lock()
	defer r.lifeMu.Unlock()
	if len(r.users) == 0 {
		return
	}
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *Reaper) loop(sigs <-chan os.Signal, kick, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case <-sigs:
		case <-kick:
		case <-stop:
			return
		}
		r.round()
	}
}

// orphansLocked returns the adopted orphans (pid → start time) the fast
// view sees now. Call it with r.mu held.
func (r *Reaper) orphansLocked() map[int]uint64 {
	orphans := map[int]uint64{}
	for _, pid := range newChildLister()(os.Getpid()) {
		if _, ok := r.procs[pid]; ok {
			continue
		}
		if st, err := readProcStat(pid); err == nil && st.Pgid != r.pgrp {
			orphans[pid] = st.Start
		}
	}
	return orphans
}

type reaped struct {
	p   *proc
	ws  syscall.WaitStatus
	err error
}

// round reaps whatever has ended: supervised processes by pid, adopted
// orphans that are zombies. It never waits for -1, which would also take the
// children other code is waiting for.
func (r *Reaper) round() {
	var ended []reaped
	orphans := 0
	r.mu.Lock()
	for pid, p := range r.procs {
		var ws syscall.WaitStatus
		wpid, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		for err == syscall.EINTR {
			wpid, err = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		}
		switch {
		case wpid == pid:
			ended = append(ended, reaped{p: p, ws: ws})
		case err == syscall.ECHILD:
			// Someone else (a stray wait for -1) took the status.
			ended = append(ended, reaped{p: p, err: errors.New("exit status lost: reaped outside the supervisor")})
		default:
			continue
		}
		delete(r.procs, pid)
		// Counted under r.mu: once Shutdown sees no running process, every
		// exit is accounted for in finishing.
		p.sup.finishing.Add(1)
	}
	pgrp := r.pgrp
	for _, pid := range newChildLister()(os.Getpid()) {
		if _, ok := r.procs[pid]; ok {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil || !st.zombie() || st.Pgid == pgrp {
			continue
		}
		var ws syscall.WaitStatus
		if wpid, _ := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); wpid == pid {
			orphans++
		}
	}
	r.mu.Unlock()
	if len(ended) == 0 && orphans == 0 {
		return // nothing changed for Shutdown to look at
	}

	for _, e := range ended {
		e.p.sup.exited(e.p, e.ws, e.err)
	}
	r.wakeMu.Lock()
	close(r.wake)
	r.wake = make(chan struct{})
	r.wakeMu.Unlock()
}
