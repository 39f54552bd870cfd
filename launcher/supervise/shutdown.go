package supervise

import (
	"errors"
	"slices"
	"syscall"
	"time"
)

// Shutdown stops everything and releases the Supervisor: SIGTERM to every
// process group, up to Grace for the groups to empty, then SIGKILL to every
// remaining group and to every remaining descendant, including orphans that
// called setsid (found through BecomeSubreaper), until all are reaped (as a
// full scan of /proc confirms: see sweep.go) and all output is copied (and
// written to Output, for at most outputFlushTimeout). It returns the exits not received from Exits (those
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
	graceful := s.waitTree(time.Now().Add(s.grace()), func() bool {
		for _, st := range s.tree() {
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
	if s.outQ != nil {
		if n := s.outQ.close(outputFlushTimeout); n > 0 {
			s.Log.Warn().Int("bytes", n).Dur("waited", outputFlushTimeout).
				Msg("output not written (stdout stalled); the log files have every line")
		}
	}
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
// killTimeout. Only the exact view (leftovers) may end it.
func (s *Supervisor) killAll() bool {
	logged := map[int]bool{}
	kill := func(tree []procStat) {
		for _, st := range tree {
			if !st.zombie() && !logged[st.Pid] {
				logged[st.Pid] = true
				s.Log.Warn().Int("pid", st.Pid).Str("command", st.Comm).Int("pgid", st.Pgid).Int("sid", st.Sid).Msg("killing leftover process")
			}
			// Zombies too: a leader shows Z while its other threads still
			// run (it called pthread_exit, or its exit is under way).
			s.signal(st.Pid, syscall.SIGKILL)
		}
	}
	return s.waitTree(time.Now().Add(s.killTimeout()), func() bool {
		tree := s.tree()
		running := s.killGroups(tree)
		kill(tree)
		if len(tree) > 0 || running > 0 {
			return false
		}
		// The fast view found nothing; it may have missed a process being
		// re-parented to us. Done when the exact view finds nothing either
		// and every exit of ours is counted in finishing, which running == 0
		// under s.Reaper.mu guarantees.
		left, running := s.leftovers(s.owns)
		kill(left)
		return len(left) == 0 && running == 0
	})
}

// killGroups SIGKILLs the group of every running process of s that still
// has a live member in tree (which also reaches members forked since tree
// was read), and returns how many of its processes are not yet reaped.
func (s *Supervisor) killGroups(tree []procStat) (running int) {
	liveGroups := map[int]bool{}
	for _, st := range tree {
		if !st.zombie() {
			liveGroups[st.Pgid] = true
		}
	}
	s.Reaper.mu.Lock()
	defer s.Reaper.mu.Unlock()
	for pid, p := range s.Reaper.procs {
		if p.sup == s {
			running++
			if liveGroups[pid] {
				s.signalGroup(p, syscall.SIGKILL)
			}
		}
	}
	return running
}

// errSurvivedKill is the Exit.Err of a process given up on after SIGKILL.
var errSurvivedKill = errors.New("survived SIGKILL")

// abandon gives up on processes that survived SIGKILL (stuck in the kernel,
// state D; Slurm drains such nodes) and reports them as ended.
func (s *Supervisor) abandon() {
	var left []int
	tree, _ := s.leftovers(s.owns)
	for _, st := range tree {
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
		s.exited(p, 0, errSurvivedKill)
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
