package supervise

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unicode/utf8"
)

// procStat is what supervision needs from /proc/<pid>/stat.
type procStat struct {
	Pid, PPid, Pgid, Sid int
	State                byte   // 'R', 'S', 'D', 'Z', ...
	Comm                 string // executable name, truncated by the kernel to 15 bytes
	Start                uint64 // start time in clock ticks after boot: with Pid, names one process across pid reuse
}

func (p procStat) zombie() bool { return p.State == 'Z' || p.State == 'X' }

// readProcStat parses /proc/<pid>/stat. The command name is in parentheses
// and may itself contain spaces and parentheses, so fields are counted from
// the last ')'.
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	open, closing := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || closing < open {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	// After ')': state ppid pgrp session tty_nr tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime priority nice num_threads
	// itrealvalue starttime ... (proc(5)).
	f := bytes.Fields(b[closing+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	st := procStat{Pid: pid, State: f[0][0], Comm: string(b[open+1 : closing])}
	ints := []*int{&st.PPid, &st.Pgid, &st.Sid}
	for i, dst := range ints {
		if *dst, err = strconv.Atoi(string(f[1+i])); err != nil {
			return procStat{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
	}
	if st.Start, err = strconv.ParseUint(string(f[19]), 10, 64); err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return st, nil
}

// childLister returns the children of a pid. Make one per walk of the tree:
// the fallback snapshots the whole process table once.
type childLister func(pid int) []int

var procChildrenFiles = sync.OnceValue(func() bool {
	// /proc/<pid>/task/<tid>/children exists when the kernel has
	// CONFIG_PROC_CHILDREN (Debian, RHEL and Ubuntu kernels do).
	_, err := os.Stat("/proc/self/task/" + strconv.Itoa(os.Getpid()) + "/children")
	return err == nil
})

func newChildLister() childLister {
	if procChildrenFiles() {
		return taskChildren
	}
	return scanChildren()
}

// taskChildren reads the kernel's per-thread children lists: the cost grows
// with the size of the tree, not with the number of processes on the node.
// A child appears under the thread that forked it (or, for an adopted orphan,
// under any thread of the reaper), hence the loop over threads.
func taskChildren(pid int) []int {
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	tids, err := readDirNames(dir)
	if err != nil {
		return nil
	}
	var kids []int
	for _, tid := range tids {
		b, err := os.ReadFile(dir + tid + "/children")
		if err != nil {
			continue // the thread ended
		}
		for _, f := range bytes.Fields(b) {
			if k, err := strconv.Atoi(string(f)); err == nil {
				kids = append(kids, k)
			}
		}
	}
	return kids
}

// scanChildren snapshots the parent of every process on the node.
func scanChildren() childLister {
	byParent := map[int][]int{}
	for _, st := range scanProcs() {
		byParent[st.PPid] = append(byParent[st.PPid], st.Pid)
	}
	return func(pid int) []int { return byParent[pid] }
}

// scanProcs reads the stat of every process on the node. Processes that end
// during the scan may be missing; one that lives through it is not.
func scanProcs() []procStat {
	names, _ := readDirNames("/proc/")
	all := make([]procStat, 0, len(names))
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		if st, err := readProcStat(pid); err == nil {
			all = append(all, st)
		}
	}
	return all
}

// maxCommand bounds a command line in a log line.
const maxCommand = 80

// procCommand is the command line of a process, for people: its argv joined
// with spaces and cut to maxCommand bytes, or its kernel name when the
// command line is empty (kernel threads, zombies) or unreadable.
func procCommand(st procStat) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(st.Pid) + "/cmdline")
	b = bytes.TrimRight(b, "\x00")
	if err != nil || len(b) == 0 {
		return st.Comm
	}
	cmd := strings.ToValidUTF8(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})), "?")
	if len(cmd) <= maxCommand {
		return cmd
	}
	cut := maxCommand - len("...")
	for cut > 0 && !utf8.RuneStart(cmd[cut]) {
		cut--
	}
	return cmd[:cut] + "..."
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// descendants appends to dst the stat of every process below root (not root
// itself), parents before children. Processes that vanish during the walk are
// skipped: the caller walks again until nothing is found.
func descendants(dst []procStat, root int, children childLister) []procStat {
	queue := children(root)
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		st, err := readProcStat(pid)
		if err != nil {
			continue // it ended (or was reaped) while we looked
		}
		dst = append(dst, st)
		queue = append(queue, children(pid)...)
	}
	return dst
}

// KillTree SIGKILLs pid and every process below it, for a helper command
// the launcher runs outside a supervisor (enroot, whose import runs curl and
// mksquashfs) that must end with all it started when the launcher stops.
// The command stays in the launcher's process group, where the Reaper leaves
// its exit status to the exec.Cmd that waits for it; so its tree is found
// through /proc, not by group. The children go first, while their parent
// still holds them; a process that double-forked away is the job's cgroup's.
func KillTree(pid int) {
	for range 3 {
		below := descendants(nil, pid, newChildLister())
		if len(below) == 0 {
			break
		}
		for _, st := range below {
			_ = syscall.Kill(st.Pid, syscall.SIGKILL)
		}
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}
