package supervise

import (
	"strconv"
	"strings"
	"syscall"
	"time"
)

// handOver returns once nothing of the oneshot p is left (see RunOneshot):
// until deadline it waits for what p left to exit on its own, then it logs
// one line naming what is still there and SIGKILLs it, waiting at most
// killTimeout. Called after p's main process has been reaped, when every
// process p left has been re-parented to us or to another of them.
func (s *Supervisor) handOver(p *proc, deadline time.Time) {
	if s.waitGone(deadline, p.left, nil) {
		return
	}
	left, _ := s.leftovers(p.left)
	var names []string
	for _, st := range left {
		if !st.zombie() {
			names = append(names, strconv.Itoa(st.Pid)+" ("+procCommand(st)+")")
		}
	}
	if len(names) > 0 {
		s.Log.Warn().Str("process", p.name).Dur("grace", s.grace()).Str("left", strings.Join(names, ", ")).
			Msg("processes of " + p.name + " still running after it ended; killing them (SIGKILL)")
	}
	kill := func(tree []procStat) {
		for _, st := range tree {
			s.signal(st.Pid, syscall.SIGKILL)
		}
	}
	if !s.waitGone(time.Now().Add(s.killTimeout()), p.left, kill) {
		left, _ := s.leftovers(p.left)
		var pids []int
		for _, st := range left {
			pids = append(pids, st.Pid)
		}
		s.Log.Error().Str("process", p.name).Ints("pids", pids).
			Msg("processes of " + p.name + " survived SIGKILL (stuck in the kernel?); giving up on them")
	}
}

// left selects the direct children of ours that the oneshot p left: adopted
// orphans (no Supervisor started them, not in the program's own group) that
// started no earlier than p and were not there before it.
func (p *proc) left(st procStat, owner *proc, pgrp int) bool {
	if owner != nil || st.Pgid == pgrp || st.Start < p.start {
		return false
	}
	start, ok := p.before[st.Pid]
	return !ok || start != st.Start
}
