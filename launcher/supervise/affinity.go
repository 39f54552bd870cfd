package supervise

import (
	"fmt"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// AllowedCPUs returns the CPUs this thread runs on (own: what Slurm's task
// binding left the launcher) and all those a process may be given here
// (allowed: the cpuset of the job's cgroup on this node). The kernel says
// which those are when asked for every CPU: it intersects the request with
// the cpuset. With one task per node, Slurm may bind the launcher to a few
// cores, and every worker would inherit them.
func AllowedCPUs() (own, allowed unix.CPUSet, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.SchedGetaffinity(0, &own); err != nil {
		return own, allowed, fmt.Errorf("reading this thread's CPU affinity: %w", err)
	}
	var every unix.CPUSet
	for i := range len(every) * 64 {
		every.Set(i)
	}
	if err := unix.SchedSetaffinity(0, &every); err != nil {
		return own, own, fmt.Errorf("asking for every CPU: %w", err)
	}
	err = unix.SchedGetaffinity(0, &allowed)
	// Put the thread back as it was, for whichever goroutine runs on it next.
	if rerr := unix.SchedSetaffinity(0, &own); err == nil && rerr != nil {
		err = fmt.Errorf("restoring this thread's CPU affinity: %w", rerr)
	}
	if err != nil {
		return own, own, err
	}
	return own, allowed, nil
}

// forkExec starts req's process from the starter's thread. A child inherits
// the affinity of the thread that forks it, so for req.cpus the thread
// takes that affinity for the fork and then goes back to its own.
func forkExec(req startRequest) (int, error) {
	if req.cpus == nil {
		return syscall.ForkExec(req.path, req.argv, req.attr)
	}
	var saved unix.CPUSet
	if err := unix.SchedGetaffinity(0, &saved); err != nil {
		return 0, fmt.Errorf("CPU affinity: %w", err)
	}
	if err := unix.SchedSetaffinity(0, req.cpus); err != nil {
		return 0, fmt.Errorf("CPU affinity: %w", err)
	}
	pid, err := syscall.ForkExec(req.path, req.argv, req.attr)
	// Best effort: should it fail, only the starter thread keeps the set.
	_ = unix.SchedSetaffinity(0, &saved)
	return pid, err
}
