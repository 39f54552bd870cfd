package supervise

import (
	"errors"
	"os"
	"slices"
	"syscall"
	"time"
)

// Shutdown stops everything and releases the Supervisor: SIGTERM to every
// process group, up to Grace for the groups to empty, then SIGKILL to every
// remaining group and to every remaining descendant, including orphans that
// called setsid (found through BecomeSubreaper), until all are reaped and
// all output is copied. It returns the exits not received from Exits (those
// of the processes it stopped, mostly), in order. It is safe to call more
// than once and concurrently: every call waits for the end and returns the
// same exits. Start fails afterwards.
func (s *Supervisor) Shutdown(reason string) []Exit {
	s.init()
	s.shutdownOnce.Do(func() { s.shutdown(reason) })
	return slices.Clone(s.stopped)
}

func (s *Supervisor) shutdown(reason string) {
	began := time.Now()
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.starts.Wait()
	close(s.stopPump)
	<-s.pumpDone

	groups := s.terminate(reason)
	graceful := s.waitTree(time.Now().Add(s.grace()), func(tree []procStat) bool {
		for _, st := range tree {
			if groups[st.Pgid] && !st.zombie() {
				return false
			}
		}
		return true
	})
	if !graceful {
		s.Log.Warn().Dur("grace", s.grace()).Msg("grace period over, sending SIGKILL")
	}
	// Always: this is also what kills daemons that left the process groups.
	if !s.killAll() {
		s.abandon()
	}
	s.drainOutputs()
	s.finishing.Wait()

	close(s.startReq)
	s.Reaper.release(s)
	s.mu.Lock()
	s.stopped = s.pending
	s.pending = nil
	s.mu.Unlock()
	s.Log.Info().Str("reason", reason).Dur("took", time.Since(began)).Msg("all processes stopped")
}

// terminate sends SIGTERM to the group of every process still running and
// returns those groups. A group whose leader is gone is not signalled by id
// (the id could be reused once empty); its members are found as
// descendants by killAll.
func (s *Supervisor) terminate(reason string) map[int]bool {
	groups := map[int]bool{}
	var names []string
	s.Reaper.mu.Lock()
	for pid, p := range s.Reaper.procs {
		if p.sup == s {
			groups[pid] = true
			names = append(names, p.name)
			s.signalGroup(p, syscall.SIGTERM)
		}
	}
	s.Reaper.mu.Unlock()
	slices.Sort(names)
	if len(names) > 0 {
		s.Log.Info().Str("reason", reason).Strs("processes", names).Dur("grace", s.grace()).Msg("stopping processes (SIGTERM)")
	}
	return groups
}

// killAll SIGKILLs every group and every process of the tree until nothing
// is left, not even a zombie, and reports whether that happened within
// killTimeout.
func (s *Supervisor) killAll() bool {
	killed := map[int]bool{}
	return s.waitTree(time.Now().Add(killTimeout), func(tree []procStat) bool {
		liveGroups := map[int]bool{}
		for _, st := range tree {
			if !st.zombie() {
				liveGroups[st.Pgid] = true
			}
		}
		running := 0
		s.Reaper.mu.Lock()
		for pid, p := range s.Reaper.procs {
			if p.sup == s {
				running++
				if liveGroups[pid] {
					// Also reaches members forked since tree was read.
					s.signalGroup(p, syscall.SIGKILL)
				}
			}
		}
		s.Reaper.mu.Unlock()
		for _, st := range tree {
			if !st.zombie() && !killed[st.Pid] {
				killed[st.Pid] = true
				s.Log.Warn().Int("pid", st.Pid).Str("command", st.Comm).Int("pgid", st.Pgid).Int("sid", st.Sid).Msg("killing leftover process")
			}
			// Zombies too: a leader shows Z while its other threads still
			// run (it called pthread_exit, or its exit is under way).
			s.signal(st.Pid, syscall.SIGKILL)
		}
		// Done when nothing is left (zombies are reaped by us or by their
		// dying parent), and every exit of ours is counted in finishing,
		// which running == 0 under s.Reaper.mu guarantees.
		return len(tree) == 0 && running == 0
	})
}

// abandon gives up on processes that survived SIGKILL (stuck in the kernel,
// state D; Slurm drains such nodes) and reports them as ended.
func (s *Supervisor) abandon() {
	var left []int
	for _, st := range s.tree() {
		left = append(left, st.Pid)
	}
	s.Log.Error().Ints("pids", left).Msg("processes survived SIGKILL (stuck in the kernel?); giving up on them")
	var lost []*proc
	s.Reaper.mu.Lock()
	for pid, p := range s.Reaper.procs {
		if p.sup == s {
			delete(s.Reaper.procs, pid)
			s.finishing.Add(1)
			lost = append(lost, p)
		}
	}
	s.Reaper.mu.Unlock()
	for _, p := range lost {
		s.exited(p, 0, errors.New("survived SIGKILL"))
	}
}

// drainOutputs waits until every output copy has ended. Every writer of the
// pipes is gone unless something escaped the tree (no subreaper); those
// pipes are cut after outputDrainTimeout.
func (s *Supervisor) drainOutputs() {
	s.mu.Lock()
	outputs := slices.Clone(s.outputs)
	s.mu.Unlock()
	drain := time.NewTimer(outputDrainTimeout)
	defer drain.Stop()
	for _, p := range outputs {
		select {
		case <-p.outputDone:
			continue
		case <-drain.C:
		}
		for _, q := range outputs {
			q.out.SetReadDeadline(time.Now())
		}
		break
	}
	for _, p := range outputs {
		<-p.outputDone
	}
}

// waitTree re-checks done with the current tree until it holds or deadline
// passes.
func (s *Supervisor) waitTree(deadline time.Time, done func([]procStat) bool) bool {
	tick := time.NewTicker(treePollInterval)
	defer tick.Stop()
	limit := time.NewTimer(time.Until(deadline))
	defer limit.Stop()
	for {
		if done(s.tree()) {
			return true
		}
		s.Reaper.poke()
		select {
		case <-s.wake:
		case <-tick.C:
		case <-limit.C:
			return done(s.tree())
		}
	}
}

// tree lists the processes this Supervisor answers for: its running
// processes with their descendants, and adopted orphans (children of this
// process in another process group that no other Supervisor started) with
// theirs. Orphans cannot be traced to the Supervisor whose process left
// them, so with several Supervisors each Shutdown takes all of them.
func (s *Supervisor) tree() []procStat {
	self := os.Getpid()
	children := newChildLister()
	s.Reaper.mu.Lock()
	owner := make(map[int]*Supervisor, len(s.Reaper.procs))
	for pid, p := range s.Reaper.procs {
		owner[pid] = p.sup
	}
	pgrp := s.Reaper.pgrp
	s.Reaper.mu.Unlock()
	var tree []procStat
	for _, pid := range children(self) {
		if o, ok := owner[pid]; ok && o != s {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil {
			continue
		}
		if _, ok := owner[pid]; !ok && st.Pgid == pgrp {
			continue // another part of the program started it
		}
		tree = append(tree, st)
		tree = descendants(tree, pid, children)
	}
	return tree
}
