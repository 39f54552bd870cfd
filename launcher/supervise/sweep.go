package supervise

import (
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Finding what is left of a process tree takes two views of /proc.
//
// The fast view (treeOf) walks the kernel's per-thread children lists from
// this process down. It costs little, but it is not exact: the kernel
// documents that a read may skip children while others exit, and a child
// that is re-parented to us (we are a subreaper) moves from the list of the
// thread it was under to the list of our main thread, which the walk may
// already have passed. A stop that once declared the tree empty this way
// left a setsid grandchild running (see TestSupervisorZeroOrphansStress).
// So the fast view may only ever say "something is left".
//
// "Nothing is left" is decided by leftovers alone, from a full scan of
// /proc made while Reaper.mu is held. Why that is exact: every descendant of
// ours has an ancestor that is our direct child (the top of its chain; we
// are alive). A direct child stays our child, and stays listed in /proc
// (as a zombie at worst), until we reap it, and under Reaper.mu nobody of
// ours reaps. A process listed in /proc for the whole of a directory scan is
// returned by it (the kernel lists processes in pid order and resumes from
// the next pid), and its parent, read from its stat file, is us. So if any
// descendant existed when the scan began, the scan finds a direct child.

// keepFunc selects the direct children of this process that a question is
// about; owner is the process a Supervisor started with that pid (nil if
// none), pgrp the program's own process group.
type keepFunc func(st procStat, owner *proc, pgrp int) bool

// owns selects what this Supervisor answers for: its running processes, and
// adopted orphans (children in another process group that no Supervisor
// started). Orphans cannot be traced to the Supervisor whose process left
// them, so with several Supervisors each Shutdown takes all of them.
func (s *Supervisor) owns(st procStat, owner *proc, pgrp int) bool {
	if owner != nil {
		return owner.sup == s
	}
	return st.Pgid != pgrp // in our group: another part of the program started it
}

// tree lists, by the fast view, the processes this Supervisor answers for
// (see owns) with all their descendants.
func (s *Supervisor) tree() []procStat { return s.treeOf(s.owns) }

// treeOf lists, by the fast view, the direct children keep selects and all
// their descendants. It may miss processes that are being re-parented.
func (s *Supervisor) treeOf(keep keepFunc) []procStat {
	self := os.Getpid()
	children := newChildLister()
	s.Reaper.mu.Lock()
	owner := make(map[int]*proc, len(s.Reaper.procs))
	for pid, p := range s.Reaper.procs {
		owner[pid] = p
	}
	pgrp := s.Reaper.pgrp
	s.Reaper.mu.Unlock()
	var tree []procStat
	for _, pid := range children(self) {
		st, err := readProcStat(pid)
		if err != nil || !keep(st, owner[pid], pgrp) {
			continue
		}
		tree = append(tree, st)
		tree = descendants(tree, pid, children)
	}
	return tree
}

// leftovers lists exactly (see the comment at the top of this file) the
// direct children keep selects, with their descendants, and counts this
// Supervisor's processes not yet reaped. It reaps the zombies among the
// selected orphans itself, because the Reaper finds orphans by the fast
// view and could keep missing one that the answer then waits for.
func (s *Supervisor) leftovers(keep keepFunc) (left []procStat, running int) {
	r := s.Reaper
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.procs {
		if p.sup == s {
			running++
		}
	}
	if running == 0 && !haveChildren() {
		return nil, 0 // no child at all: the cheap exact answer
	}
	self := os.Getpid()
	byParent := map[int][]procStat{}
	for _, st := range scanProcs() {
		byParent[st.PPid] = append(byParent[st.PPid], st)
	}
	for _, st := range byParent[self] {
		owner := r.procs[st.Pid]
		if !keep(st, owner, r.pgrp) {
			continue
		}
		if owner == nil && st.zombie() {
			var ws syscall.WaitStatus
			if wpid, _ := syscall.Wait4(st.Pid, &ws, syscall.WNOHANG, nil); wpid == st.Pid {
				continue
			}
		}
		left = append(left, st)
		for queue := byParent[st.Pid]; len(queue) > 0; queue = queue[1:] {
			left = append(left, queue[0])
			queue = append(queue, byParent[queue[0].Pid]...)
		}
	}
	return left, running
}

// haveChildren reports whether this process has any child, of any kind,
// including zombies; it takes no status (WNOWAIT).
func haveChildren() bool {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT|unix.WALL, nil)
	return err != unix.ECHILD
}

// waitGone waits until nothing keep selects is left, or deadline passes, and
// reports which. visit, if not nil, gets each round's fast view of what is
// left, and what the exact view finds when the fast one found nothing (to
// kill it, say).
func (s *Supervisor) waitGone(deadline time.Time, keep keepFunc, visit func([]procStat)) bool {
	return s.waitTree(deadline, func() bool {
		tree := s.treeOf(keep)
		if visit != nil {
			visit(tree)
		}
		if len(tree) > 0 {
			return false
		}
		left, _ := s.leftovers(keep)
		if visit != nil && len(left) > 0 {
			visit(left)
		}
		return len(left) == 0
	})
}

// waitTree re-checks done until it holds or deadline passes. Reaping wakes
// it at once; treePollInterval catches deaths deeper down, which the kernel
// reports to their parent, not to us.
func (s *Supervisor) waitTree(deadline time.Time, done func() bool) bool {
	tick := time.NewTicker(treePollInterval)
	defer tick.Stop()
	limit := time.NewTimer(time.Until(deadline))
	defer limit.Stop()
	for {
		reaped := s.Reaper.reaped()
		if done() {
			return true
		}
		s.Reaper.poke()
		select {
		case <-reaped:
		case <-tick.C:
		case <-limit.C:
			return done()
		}
	}
}
