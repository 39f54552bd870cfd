package cli

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/wideep/wideep-launch/enroot"
	"github.com/wideep/wideep-launch/launcher/deploy"
	"github.com/wideep/wideep-launch/launcher/node"
	"github.com/wideep/wideep-launch/launcher/rendezvous"
	"github.com/wideep/wideep-launch/launcher/sharedcache"
)

// runtimeFlags choose where a node's processes run.
type runtimeFlags struct {
	runtime  string // auto, host, pyxis, enroot
	enroot   string // the enroot executable
	dataPath string
}

const runtimeAuto = "auto"

func bindRuntimeFlags(fs *pflag.FlagSet, f *runtimeFlags, spec *deploy.Spec) {
	fs.StringVar(&f.runtime, "runtime", runtimeAuto, withEnv("runtime", "where the processes run: host; pyxis (the launcher is already "+
		"inside the container of srun --container-image); enroot (the launcher imports --image once and starts one container per node); "+
		"auto: pyxis when inside a pyxis container, else host"))
	fs.StringVar(&spec.ImageCache, "image-cache", spec.ImageCache, withEnv("image-cache", "shared directory for images the enroot runtime imports (empty: <cache-dir>/images)"))
	fs.StringArrayVar(&spec.ContainerMounts, "container-mount", spec.ContainerMounts, withEnv("container-mount",
		"bind mount SRC:DST[:ro] into the enroot container, repeatable (the cache dir and, in simulation, this binary are mounted as they are)"))
	fs.StringVar(&f.enroot, "enroot", "enroot", withEnv("enroot", "the enroot executable"))
	fs.StringVar(&f.dataPath, "enroot-data-path", "", withEnv("enroot-data-path",
		"node-local ENROOT_DATA_PATH for the job's container, %j the job id, %h the node (empty: $SLURM_TMPDIR/enroot-data, else /tmp/enroot-data-$USER)"))
}

// resolve turns "auto" into the runtime this task is in, and refuses
// pyxis outside a container: it would run the workers on the bare host.
func (f *runtimeFlags) resolve(sys System) (string, string, error) {
	inside, why := enroot.DetectPyxis(sys.LookupEnv, func(p string) error { _, err := os.Stat(p); return err })
	switch f.runtime {
	case runtimeAuto:
		if inside {
			return deploy.RuntimePyxis, "auto: " + why, nil
		}
		return deploy.RuntimeHost, "auto: " + why, nil
	case deploy.RuntimePyxis:
		if !inside {
			return "", "", usageErrorf("--runtime pyxis (or %s), but this task is not inside a pyxis container (%s): "+
				"start it with srun --container-image=..., or use --runtime enroot or host", EnvName("runtime"), why)
		}
		return f.runtime, why, nil
	case deploy.RuntimeHost, deploy.RuntimeEnroot:
		return f.runtime, "--runtime", nil
	}
	return "", "", usageErrorf("--runtime %q (or %s): want auto, host, pyxis or enroot", f.runtime, EnvName("runtime"))
}

// build makes the node's runtime; self is this binary (the stand-ins).
func (f *runtimeFlags) build(sys System, spec deploy.Spec, jobID string, simulate bool) (node.Runtime, error) {
	var inner node.Runtime = node.Host{Pyxis: spec.Runtime == deploy.RuntimePyxis}
	var self string
	if simulate {
		var err error
		if self, err = sys.Executable(); err != nil {
			return nil, fmt.Errorf("finding this executable: %w", err)
		}
		inner = node.Simulation{Self: self}
	}
	if spec.Runtime != deploy.RuntimeEnroot {
		return inner, nil
	}
	r, err := f.enrootRuntime(sys, spec, jobID)
	if err != nil {
		return nil, err
	}
	r.Inner = inner
	if self != "" {
		r.Mounts = append(r.Mounts, enroot.Mount{Src: self, Dst: self, ReadOnly: true})
	}
	return r, nil
}

func (f *runtimeFlags) enrootRuntime(sys System, spec deploy.Spec, jobID string) (*enroot.Runtime, error) {
	im, err := enroot.ParseImage(spec.Image)
	if err != nil {
		return nil, usageErrorf("--image %q: %v", spec.Image, err)
	}
	host, _ := sys.LookupEnv("SLURMD_NODENAME")
	c, err := f.commands(spec, jobID, host)
	if err != nil {
		return nil, err
	}
	data := f.dataPath
	if data == "" {
		data = enroot.DataPath(sys.LookupEnv)
	}
	data = deploy.ExpandJobHost(data, jobID, host)
	// enroot itself needs the launcher's environment (HOME, XDG_*,
	// ENROOT_CONFIG_PATH for credentials), never the job's secret.
	var env []string
	for _, kv := range sys.Environ() {
		if !strings.HasPrefix(kv, rendezvous.SecretEnv+"=") {
			env = append(env, kv)
		}
	}
	env = append(env, "ENROOT_MAX_PROCESSORS="+enroot.MaxProcessors(sys.LookupEnv, taskCPUs()))
	return &enroot.Runtime{
		Image: im, Container: c.Container, Bin: f.enroot, ImageCache: spec.JobImageCache(), DataPath: data,
		Mounts: c.Mounts, Env: env, Importer: &enroot.Importer{Alive: squeueAlive},
	}, nil
}

// squeueAlive asks Slurm whether the job holding a shared-cache lock still
// runs, so that the lock of a killed job is broken at once instead of after
// three missed refreshes. Unknown when squeue is not there (inside a
// container) or does not answer.
func squeueAlive(o sharedcache.Owner) (alive, known bool) {
	if o.JobID == "" {
		return false, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "squeue", "-h", "-o", "%T", "-j", o.JobID).CombinedOutput()
	state := strings.TrimSpace(string(out))
	switch {
	case err == nil && state == "":
		return false, true // gone from the queue
	case err == nil:
		return state == "RUNNING" || state == "PENDING" || state == "CONFIGURING" || state == "SUSPENDED", true
	case strings.Contains(state, "Invalid job id"):
		return false, true
	}
	return false, false
}

// commands is the enroot runtime's part of the commands on host ("": any
// node, as `plan --show-commands` shows them).
func (f *runtimeFlags) commands(spec deploy.Spec, jobID, host string) (enroot.Commands, error) {
	im, err := enroot.ParseImage(spec.Image)
	if err != nil {
		return enroot.Commands{}, usageErrorf("--image %q: %v", spec.Image, err)
	}
	// The shared cache holds the DeepGEMM kernels; the node-local copies the
	// workers read are seeded by the launcher, outside the container, at
	// the same path.
	mounts := []enroot.Mount{{Src: spec.CacheDir, Dst: spec.CacheDir}}
	if spec.DGCacheMode == deploy.DGCacheLocal {
		if host == "" {
			host = "%h"
		}
		dg := spec.JobDGLocalDir(jobID, host)
		mounts = append(mounts, enroot.Mount{Src: dg, Dst: dg, Create: true})
	}
	for _, s := range spec.ContainerMounts {
		m, err := enroot.ParseMount(s)
		if err != nil {
			return enroot.Commands{}, usageErrorf("--container-mount: %v", err)
		}
		mounts = append(mounts, m)
	}
	// The infra node's etcd data and NATS files live in the job's local
	// directory, written by the launcher and read in the container.
	local := spec.JobLocalDir(jobID)
	mounts = append(mounts, enroot.Mount{Src: local, Dst: local, Create: true})
	return enroot.Commands{Bin: f.enroot, Image: im, ImageCache: spec.JobImageCache(),
		Container: enroot.ContainerName(jobID), Mounts: mounts}, nil
}

// taskCPUs are the CPUs this task may run on; 0 if unknown.
func taskCPUs() int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return runtime.NumCPU()
	}
	return set.Count()
}
