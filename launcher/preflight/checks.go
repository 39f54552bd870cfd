package preflight

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// The named checks: each may be waived with --skip-check NAME, and every
// finding of one starts with its name.
const (
	CheckIBPorts   = "ib-ports"
	CheckGPUDirect = "gpudirect"
	CheckMemlock   = "memlock"
	CheckShm       = "shm"
	CheckGPUModel  = "gpu-model"
	CheckGPUFree   = "gpu-free"
)

// Level is what a named check's finding does to the job.
type Level string

const (
	// Fail is a problem: it goes to node 0, every node exits 2, nothing
	// starts.
	Fail Level = "fail"
	// Warn is logged by the node; the job goes on.
	Warn Level = "warn"
)

// NamedCheck is one check --skip-check can waive.
type NamedCheck struct {
	Name  string
	Level Level
}

// Checks are the named checks and their levels.
var Checks = []NamedCheck{
	{CheckIBPorts, Fail}, {CheckGPUDirect, Fail}, {CheckMemlock, Fail}, {CheckShm, Warn},
	{CheckGPUModel, Fail}, {CheckGPUFree, Fail},
}

// CheckNames are the names --skip-check takes.
func CheckNames() []string {
	names := make([]string, len(Checks))
	for i, c := range Checks {
		names[i] = c.Name
	}
	return names
}

// ValidateSkips refuses names that are not a check's, listing the valid
// ones: a typo must not leave a check running that the user meant to waive.
func ValidateSkips(names []string) error {
	var bad []string
	for _, n := range names {
		if !slices.Contains(CheckNames(), n) && !slices.Contains(bad, n) {
			bad = append(bad, n)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("unknown check %s; valid: %s", quoteAll(bad), strings.Join(CheckNames(), ", "))
}

func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

// RDMAUsers says which parts of a worker's argv need RDMA between nodes:
// "NIXL" for --disaggregation-transfer-backend nixl (the KV cache moves
// from prefill to decode over it), "DeepEP" for --moe-a2a-backend deepep
// (NVSHMEM all-to-all). None means the fabric checks that only RDMA needs
// do not apply.
func RDMAUsers(argv []string) []string {
	var users []string
	for i, a := range argv {
		flag, val, ok := strings.Cut(a, "=")
		if !ok && i+1 < len(argv) {
			val = argv[i+1]
		}
		switch {
		case flag == "--disaggregation-transfer-backend" && val == "nixl":
			users = append(users, "NIXL")
		case flag == "--moe-a2a-backend" && val == "deepep":
			users = append(users, "DeepEP")
		}
	}
	return users
}

// MinMemlock is the RLIMIT_MEMLOCK below which RDMA memory registration
// fails outright (the common default is 64 KiB or 8 MiB); NCCL and DeepEP
// ask for unlimited.
const MinMemlock = 1 << 30

// MinShm is the /dev/shm size below which NCCL's shared-memory transport
// and PyTorch's worker queues run out (Docker's default is 64 MiB).
const MinShm = 1 << 30

// findings collects what the checks found, by level.
type findings struct{ problems, warnings []string }

func (f *findings) add(level Level, check, format string, a ...any) {
	line := check + ": " + fmt.Sprintf(format, a...)
	if level == Fail {
		f.problems = append(f.problems, line)
	} else {
		f.warnings = append(f.warnings, line)
	}
}

// checkFabric runs the host checks the workers' RDMA and shared memory
// depend on, reading under cfg.Sysroot.
func checkFabric(cfg Config, skip map[string]bool, f *findings) {
	root := sysroot(cfg)
	needs := rdmaNeeds(cfg.RDMA)
	if len(cfg.RDMA) > 0 && !skip[CheckIBPorts] {
		fail, down := checkIBPorts(root)
		if fail != "" {
			f.add(Fail, CheckIBPorts, "%s; %s RDMA", fail, needs)
		} else if down != "" {
			f.add(Warn, CheckIBPorts, "%s; %s RDMA, and a GPU whose NIC is down sends over another one or fails", down, needs)
		}
	}
	if len(cfg.RDMA) > 0 && !skip[CheckGPUDirect] {
		checkGPUDirect(root, needs, f)
	}
	if len(cfg.RDMA) > 0 && !skip[CheckMemlock] {
		checkMemlock(cfg.Memlock, f)
	}
	if !skip[CheckShm] {
		checkShm(cfg.StatFS, filepath.Join(root, "dev", "shm"), f)
	}
}

func sysroot(cfg Config) string {
	if cfg.Sysroot == "" {
		return "/"
	}
	return cfg.Sysroot
}

// rdmaNeeds is "NIXL needs" or "NIXL and DeepEP need".
func rdmaNeeds(users []string) string {
	if len(users) == 1 {
		return users[0] + " needs"
	}
	return strings.Join(users, " and ") + " need"
}

// checkIBPorts looks at every InfiniBand/RoCE port: fail says why none is
// usable (no device, no port, none ACTIVE); down, when some are ACTIVE,
// names the others (a node with 1 of its 8 GPU NICs down passes the first
// test and still loses that GPU's bandwidth). We cannot tell a GPU NIC from
// an unused one, so that is a warning. sysfs shows every port as
// <dev>/ports/<n>/{state,link_layer,rate}, state as "4: ACTIVE".
func checkIBPorts(root string) (fail, down string) {
	dir := filepath.Join(root, "sys", "class", "infiniband")
	devs, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Sprintf("no InfiniBand/RoCE device (%s: %s)", dir, reason(err)), ""
	}
	var inactive []string
	ports := 0
	for _, dev := range devs {
		names, _ := os.ReadDir(filepath.Join(dir, dev.Name(), "ports"))
		for _, port := range names {
			ports++
			p := filepath.Join(dir, dev.Name(), "ports", port.Name())
			if state := readAttr(p, "state"); !strings.HasSuffix(state, "ACTIVE") {
				inactive = append(inactive, fmt.Sprintf("%s port %s: %s, %s, %s", dev.Name(), port.Name(),
					state, readAttr(p, "link_layer"), readAttr(p, "rate")))
			}
		}
	}
	n := len(inactive)
	const shown = 8
	if n > shown {
		inactive = append(inactive[:shown], fmt.Sprintf("and %d more", n-shown))
	}
	switch {
	case ports == 0:
		return fmt.Sprintf("no InfiniBand/RoCE port (%s has no device with ports)", dir), ""
	case n == ports:
		return fmt.Sprintf("no ACTIVE InfiniBand/RoCE port (%s)", strings.Join(inactive, "; ")), ""
	case n > 0:
		return "", fmt.Sprintf("%d of %d InfiniBand/RoCE ports are not ACTIVE (%s)", n, ports, strings.Join(inactive, "; "))
	}
	return "", ""
}

// readAttr reads one sysfs attribute, "?" when it cannot.
func readAttr(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// checkGPUDirect looks for what lets the NIC read GPU memory directly:
// the nvidia_peermem module (or the older nv_peer_mem), in /sys/module or
// /proc/modules. Without it, DMA-BUF may do instead, but whether it works
// depends on the kernel, the NIC driver and the libraries, none of which a
// file shows: an NVIDIA open kernel module (/proc/driver/nvidia/version) or
// /sys/kernel/dmabuf only make it possible, so that is a warning.
func checkGPUDirect(root, needs string, f *findings) {
	if _, err := os.Stat(filepath.Join(root, "sys", "module", "nvidia_peermem")); err == nil {
		return
	}
	if b, err := os.ReadFile(filepath.Join(root, "proc", "modules")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if name, _, _ := strings.Cut(line, " "); name == "nvidia_peermem" || name == "nv_peer_mem" {
				return
			}
		}
	}
	version, _ := os.ReadFile(filepath.Join(root, "proc", "driver", "nvidia", "version"))
	_, dmabufErr := os.Stat(filepath.Join(root, "sys", "kernel", "dmabuf"))
	if strings.Contains(string(version), "Open Kernel Module") || dmabufErr == nil {
		f.add(Warn, CheckGPUDirect, "nvidia_peermem is not loaded: GPUDirect RDMA must go through DMA-BUF, "+
			"which needs Linux >= 5.12 and a NIC driver with dma-buf support (or: modprobe nvidia_peermem)")
		return
	}
	f.add(Fail, CheckGPUDirect, "no GPUDirect RDMA: nvidia_peermem (or nv_peer_mem) is not loaded "+
		"(%s, %s) and the kernel shows no DMA-BUF support; %s it (modprobe nvidia_peermem)",
		filepath.Join(root, "sys", "module", "nvidia_peermem"), filepath.Join(root, "proc", "modules"), needs)
}

// hostMemlock is RLIMIT_MEMLOCK's soft and hard limit as this process has
// them: the processes inherit them, in a container too.
func hostMemlock() (cur, max uint64, err error) {
	var l unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &l); err != nil {
		return 0, 0, err
	}
	return l.Cur, l.Max, nil
}

func checkMemlock(read func() (cur, max uint64, err error), f *findings) {
	if read == nil {
		read = hostMemlock
	}
	cur, max, err := read()
	switch {
	case err != nil:
		f.add(Fail, CheckMemlock, "cannot read RLIMIT_MEMLOCK: %v", err)
	case cur != unix.RLIM_INFINITY && cur < MinMemlock:
		hard := ""
		if max > cur {
			// The processes could raise it up to there, but NCCL and NVSHMEM do not.
			hard = fmt.Sprintf(" (hard limit %s)", limit(max))
		}
		f.add(Fail, CheckMemlock, "ulimit -l is %s%s; RDMA needs it unlimited "+
			"(Slurm: PropagateResourceLimits / slurmd LimitMEMLOCK=infinity)", limit(cur), hard)
	}
}

func limit(v uint64) string {
	if v == unix.RLIM_INFINITY {
		return "unlimited"
	}
	return Bytes(v)
}

// hostStatFS is the size of the filesystem at path.
func hostStatFS(path string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, err
	}
	return st.Blocks * uint64(st.Bsize), nil
}

func checkShm(statfs func(string) (uint64, error), path string, f *findings) {
	if statfs == nil {
		statfs = hostStatFS
	}
	size, err := statfs(path)
	switch {
	case err != nil:
		f.add(Warn, CheckShm, "%s: %s; NCCL/PyTorch need a large /dev/shm", path, reason(err))
	case size < MinShm:
		f.add(Warn, CheckShm, "%s is %s; NCCL/PyTorch need a large /dev/shm (at least %s; containers: a bigger tmpfs)",
			path, Bytes(size), Bytes(MinShm))
	}
}

// Bytes is n for people: "64 KiB", "1 GiB", "1.5 GiB".
func Bytes(n uint64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	i, v := 0, float64(n)
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if v == float64(uint64(v)) {
		return fmt.Sprintf("%d %s", uint64(v), units[i])
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

// skipSet is the waived checks, and a problem for each unknown name.
func skipSet(names []string) (map[string]bool, []string) {
	skip := map[string]bool{}
	for _, n := range names {
		skip[n] = true
	}
	if err := ValidateSkips(names); err != nil {
		return skip, []string{"--skip-check: " + err.Error()}
	}
	return skip, nil
}
