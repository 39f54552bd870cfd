package enroot

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DataPath is where the launcher has enroot unpack the job's container
// (ENROOT_DATA_PATH). It is node-local on purpose: `enroot create` checks
// for the name and then unsquashfs'es into it without a lock, and
// `enroot start` takes a 30 s flock on the rootfs, so a data path shared by
// many nodes races and times out (NVIDIA/enroot#154; the maintainers advise
// against storing unpacked root filesystems on a shared filesystem). It is
// $SLURM_TMPDIR/enroot-data when the site gives jobs a local scratch
// directory, else /tmp/enroot-data-$USER (per user, so two users' launchers
// never share it).
func DataPath(lookup func(string) (string, bool)) string {
	if dir, ok := lookup("SLURM_TMPDIR"); ok && dir != "" {
		return filepath.Join(dir, "enroot-data")
	}
	user, ok := lookup("USER")
	if !ok || user == "" {
		user, ok = lookup("LOGNAME")
	}
	if !ok || user == "" || strings.Contains(user, "/") {
		user = strconv.Itoa(os.Getuid())
	}
	return "/tmp/enroot-data-" + user
}

// MaxProcessors is the ENROOT_MAX_PROCESSORS to give enroot: the user's
// value when set, else the CPUs of the task (from sched_getaffinity or
// SLURM_CPUS_PER_TASK, found by the caller). Never the node's: enroot's
// default is $(nproc), and on a node shared with other jobs an import that
// runs mksquashfs and zstd on every core starves them. An unknown count (0)
// counts as one CPU.
func MaxProcessors(lookup func(string) (string, bool), taskCPUs int) string {
	if v, ok := lookup("ENROOT_MAX_PROCESSORS"); ok && v != "" {
		return v
	}
	return strconv.Itoa(max(taskCPUs, 1))
}

// pyxisMarker is one sign that the task runs inside a container that pyxis
// (or enroot) started.
type pyxisMarker struct {
	env  string // an environment variable that is set
	file string // or a file that exists
	why  string
}

// pyxisMarkers are checked in order; the first found says why.
var pyxisMarkers = []pyxisMarker{
	{
		env: "SLURM_SPANK__SLURM_SPANK_OPTION_pyxis_container_image",
		why: "SLURM_SPANK__SLURM_SPANK_OPTION_pyxis_container_image is set: Slurm passes the srun options of a SPANK plugin to the task with this prefix, so this step was started with pyxis' --container-image",
	},
	{
		env: "SLURM_SPANK__SLURM_SPANK_OPTION_pyxis_container_name",
		why: "SLURM_SPANK__SLURM_SPANK_OPTION_pyxis_container_name is set: this step was started with pyxis' --container-name",
	},
	{
		file: "/.lock",
		why:  "/.lock exists: enroot's runtime::_start creates this rootfs lock and bind-mounts it read-only into every container (enroot list --fancy finds container processes by it)",
	},
	{
		file: "/.enroot.lock",
		why:  "/.enroot.lock exists: the rootfs lock of enroot 3.x",
	},
}

// DetectPyxis says whether the task already runs inside a pyxis/enroot
// container, and which marker said so. pyxis leaves no marker of its own
// in the container's environment (it copies the container's environment
// into the task's), so the markers are the SPANK option variables Slurm
// sets for the step and the rootfs lock enroot puts at the container's root.
func DetectPyxis(lookup func(string) (string, bool), stat func(string) error) (inside bool, why string) {
	for _, m := range pyxisMarkers {
		if m.env != "" {
			if v, ok := lookup(m.env); ok && v != "" {
				return true, m.why
			}
			continue
		}
		if stat(m.file) == nil {
			return true, m.why
		}
	}
	// Images that enroot imported carry /etc/rc (the entrypoint script
	// docker::configure writes) next to /etc/rc.local, which no Linux host
	// has as a pair; weaker than the lock, since a bare squashfs need not.
	if stat("/etc/rc") == nil && stat("/etc/rc.local") == nil {
		return true, "/etc/rc and /etc/rc.local exist: the entrypoint scripts enroot writes into every image it imports (docker::configure)"
	}
	return false, "no pyxis or enroot marker (SPANK pyxis options, /.lock, /.enroot.lock, /etc/rc with /etc/rc.local)"
}
