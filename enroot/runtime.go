package enroot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/wideep/wideep-launch/launcher/deploy"
	"github.com/wideep/wideep-launch/launcher/node"
	"github.com/wideep/wideep-launch/launcher/supervise"
)

// Runtime runs a node's processes in one enroot container per node and
// job (--runtime enroot): node 0 imports the image once into the shared
// image cache (or takes the squashfs file as is), every node unpacks it
// into a node-local container named for the job, every planned process
// starts inside it with `enroot start`, and the teardown removes it.
//
// It wraps Inner (the host programs, or the simulation stand-ins), whose
// command lines it runs inside the container. enroot exec's into the
// command, so the process the supervisor sees is the program itself:
// signals, exit codes and the no-orphan guarantee are as on the host.
type Runtime struct {
	Inner node.Runtime
	Image Image
	// Container is the job's container on every node (ContainerName).
	Container string
	// Bin is the enroot executable ("enroot").
	Bin string
	// ImageCache is the shared directory imported images go to.
	ImageCache string
	// DataPath is the node-local ENROOT_DATA_PATH (see DataPath).
	DataPath string
	// Mounts are bind mounts into the container (--container-mounts).
	Mounts []Mount
	// Env is the environment of enroot's own commands (import, create,
	// remove): the launcher's, with ENROOT_MAX_PROCESSORS; the launcher adds
	// ENROOT_DATA_PATH. An `enroot start` gets the process's environment
	// and only the ENROOT_* settings of this one.
	Env []string
	// Run runs an enroot command to completion, with its output in the
	// launcher's log; nil runs it directly.
	Run func(ctx context.Context, argv, env []string) error
	// Importer imports registry images (node 0 only); Bin, CacheDir,
	// JobID, Host, Env and Run are filled in when unset.
	Importer *Importer

	prepared bool // the container may exist: Cleanup removes it
}

// denyEnv are variables never passed into the container: enroot's own
// settings, and what the image must decide (as pyxis' deny list does).
var denyEnv = []string{"PATH", "LD_LIBRARY_PATH", "LD_PRELOAD", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_TASK_PID", "PMIX_RANK", "PMI_FD"}

func (r *Runtime) Name() string     { return "enroot" }
func (r *Runtime) UsesGPUs() bool   { return r.Inner.UsesGPUs() }
func (r *Runtime) BindHost() string { return r.Inner.BindHost() }

// HostPath maps p through the container's bind mounts (the deepest mount
// holding it wins, as in the container); a path under no mount is in the
// image, which the launcher cannot look into before the container exists.
func (r *Runtime) HostPath(p string) (string, bool) {
	p = path.Clean(p)
	best := -1
	for i, m := range r.Mounts {
		dst := path.Clean(m.Dst)
		if (p == dst || strings.HasPrefix(p, strings.TrimSuffix(dst, "/")+"/")) && (best < 0 || len(dst) > len(path.Clean(r.Mounts[best].Dst))) {
			best = i
		}
	}
	if best < 0 {
		return "", false
	}
	m := r.Mounts[best]
	rel := strings.TrimPrefix(strings.TrimPrefix(p, path.Clean(m.Dst)), "/")
	return path.Join(m.Src, rel), true
}
func (r *Runtime) bin() string { return cmpOr(r.Bin, "enroot") }

// enrootEnv is the environment of the enroot commands. No login shell
// unless the admin asked for one: a login shell sources the image's
// /etc/profile, which may rewrite PATH (enroot#248) so that python3 is
// another one than the image's ENV says.
func (r *Runtime) enrootEnv() []string {
	env := append(slices.Clone(r.Env), "ENROOT_DATA_PATH="+r.DataPath)
	if !slices.ContainsFunc(r.Env, func(kv string) bool { return strings.HasPrefix(kv, "ENROOT_LOGIN_SHELL=") }) {
		env = append(env, "ENROOT_LOGIN_SHELL=n")
	}
	return env
}

// Executable is what must exist on the host: enroot itself. What runs
// inside is checked in the container, by Prepare.
func (r *Runtime) Executable(deploy.Process) string { return r.bin() }

func (r *Runtime) LookPath(name string) (string, error) { return exec.LookPath(name) }

// imageDecision is node 0's word on where the squashfs file is.
type imageDecision struct {
	Path     string `json:"path"`
	Imported bool   `json:"imported"`
}

// Prepare makes the image available (node 0 imports, the others wait at a
// barrier), unpacks it into this node's container and checks, inside it,
// the programs the node will run; every node's problems reach every node.
func (r *Runtime) Prepare(ctx context.Context, n node.Node) error {
	r.prepared = true
	var payload json.RawMessage
	problem := ""
	if n.Index == 0 {
		d, err := r.ensureImage(ctx, n)
		if stopped(ctx) {
			// The node is being stopped: the import's error is a consequence,
			// not news for the other nodes (they are being stopped too).
			return context.Cause(ctx)
		}
		if err != nil {
			problem = err.Error()
		} else {
			payload, _ = json.Marshal(d)
		}
	} else {
		n.Log.Info().Str("image", r.Image.Ref).Msg("waiting for node 0 to make the image available")
	}
	got, err := n.Barrier(ctx, "image", problem, payload)
	if err != nil {
		return err
	}
	var d imageDecision
	if err := json.Unmarshal(got, &d); err != nil || d.Path == "" {
		return fmt.Errorf("node 0 sent no image path (%s)", got)
	}
	problem = ""
	if err := r.create(ctx, d.Path); err != nil {
		problem = err.Error()
	} else if missing := r.missing(ctx, n.Processes); len(missing) > 0 {
		problem = strings.Join(missing, "; ")
	}
	if stopped(ctx) {
		return context.Cause(ctx)
	}
	if problem == "" {
		n.Log.Info().Str("container", r.Container).Str("image", d.Path).Msg("container ready")
	}
	_, err = n.Barrier(ctx, "container", problem, nil)
	return err
}

// stopped says whether ctx ended because the node is stopping (not because
// the image timeout ran out, which is a failure to report).
func stopped(ctx context.Context) bool {
	return errors.Is(ctx.Err(), context.Canceled)
}

func (r *Runtime) ensureImage(ctx context.Context, n node.Node) (imageDecision, error) {
	if r.Image.IsFile() {
		return imageDecision{Path: r.Image.Path}, checkReadable(r.Image.Path)
	}
	m := r.Importer
	if m == nil {
		m = &Importer{}
	}
	m.Bin, m.CacheDir = cmpOr(m.Bin, r.bin()), cmpOr(m.CacheDir, r.ImageCache)
	m.JobID, m.Host = cmpOr(m.JobID, n.JobID), cmpOr(m.Host, n.Host)
	if m.Env == nil {
		m.Env = r.enrootEnv()
	}
	if m.Run == nil {
		m.Run = r.run
	}
	if m.Progress == nil {
		m.Progress = func(elapsed time.Duration, bytes int64) {
			n.Log.Info().Str("image", r.Image.Ref).Dur("elapsed", elapsed).Int64("bytes", bytes).Msg("importing the image")
		}
	}
	m.Log = n.Log
	began := time.Now()
	path, imported, err := m.Ensure(ctx, r.Image)
	if err != nil {
		return imageDecision{}, fmt.Errorf("image %s: %w", r.Image.Ref, err)
	}
	n.Log.Info().Str("image", r.Image.Ref).Str("path", path).Bool("imported", imported).
		Dur("took", time.Since(began)).Msg("image available")
	return imageDecision{Path: path, Imported: imported}, nil
}

// create unpacks the image into this node's container for the job; a
// container of the same name left by an earlier run of the job (a requeue)
// goes first.
func (r *Runtime) create(ctx context.Context, sqsh string) error {
	if err := os.MkdirAll(r.DataPath, 0o700); err != nil {
		return fmt.Errorf("ENROOT_DATA_PATH %s: %w", r.DataPath, err)
	}
	for _, m := range r.Mounts {
		if m.Create {
			if err := os.MkdirAll(m.Src, 0o755); err != nil {
				return fmt.Errorf("mount source %s: %w", m.Src, err)
			}
		}
	}
	if _, err := os.Stat(r.DataPath + "/" + r.Container); err == nil {
		if err := r.run(ctx, RemoveArgv(r.bin(), r.Container), r.enrootEnv()); err != nil {
			return fmt.Errorf("removing the leftover container %s: %w", r.Container, err)
		}
	}
	if err := r.run(ctx, CreateArgv(r.bin(), r.Container, sqsh), r.enrootEnv()); err != nil {
		return fmt.Errorf("creating container %s from %s: %w", r.Container, sqsh, err)
	}
	return r.skipEntrypoint()
}

// skipEntrypoint keeps the image's ENTRYPOINT from wrapping the processes,
// as pyxis does by default: the /etc/rc enroot generates at import sources
// /etc/rc.local, then runs `exec ENTRYPOINT "$@"` (enroot src/docker.sh);
// an rc.local that execs "$@" runs the process itself first. NGC images'
// entrypoints print banners, check drivers, or do more.
//
// The image's own rc.local may be a symlink, absolute ones pointing out of
// the rootfs as seen from the host: it is replaced, never written through.
func (r *Runtime) skipEntrypoint() error {
	etc := filepath.Join(r.DataPath, r.Container, "etc")
	fail := func(err error) error {
		return fmt.Errorf("container %s: writing /etc/rc.local to skip the image's entrypoint: %w", r.Container, err)
	}
	if fi, err := os.Lstat(etc); err != nil || !fi.IsDir() {
		if err == nil {
			err = fmt.Errorf("%s is not a directory", etc)
		}
		return fail(err)
	}
	rc := filepath.Join(etc, "rc.local")
	if err := os.Remove(rc); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fail(err)
	}
	f, err := os.OpenFile(rc, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fail(err)
	}
	_, err = f.WriteString("exec \"$@\"\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fail(err)
	}
	return nil
}

// missing lists the programs the node's processes need that the image
// lacks, looked up inside the container as they will run.
func (r *Runtime) missing(ctx context.Context, procs []deploy.Process) []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range procs {
		argv, _ := r.Inner.Command(p, nil)
		exe := argv[0]
		if seen[exe] {
			continue
		}
		seen[exe] = true
		// A fixed script: the name is its argument, never part of it.
		look, err := StartArgv(r.bin(), r.Container, StartOptions{Mounts: r.Mounts},
			[]string{"/bin/sh", "-c", `command -v -- "$1"`, "wideep-lookpath", exe})
		if err == nil {
			err = r.run(ctx, look, r.enrootEnv())
		}
		if err != nil {
			out = append(out, fmt.Sprintf("executable %s (for %s): not found in image %s (%v)", exe, p.Name, r.Image.Ref, err))
		}
	}
	return out
}

// Command runs the inner runtime's command line inside the container,
// with the environment passed by name.
func (r *Runtime) Command(p deploy.Process, env []string) ([]string, []string) {
	inner, env := r.Inner.Command(p, env)
	var names []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if slices.Contains(denyEnv, k) || strings.HasPrefix(k, "ENROOT_") {
			continue
		}
		names = append(names, k)
	}
	argv, err := StartArgv(r.bin(), r.Container, StartOptions{RW: true, Mounts: r.Mounts, EnvNames: names}, inner)
	if err != nil {
		// The names come from an environment and the mounts were checked
		// when parsed: this is a bug, and starting the bare command would
		// leave the container.
		panic(fmt.Sprintf("enroot start for %s: %v", p.Name, err))
	}
	for _, kv := range r.enrootEnv() {
		if strings.HasPrefix(kv, "ENROOT_") {
			env = append(env, kv)
		}
	}
	return argv, env
}

// Cleanup removes the job's container, whatever ended the job.
func (r *Runtime) Cleanup(ctx context.Context) error {
	if !r.prepared {
		return nil
	}
	if _, err := os.Stat(r.DataPath + "/" + r.Container); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return r.run(ctx, RemoveArgv(r.bin(), r.Container), r.enrootEnv())
}

func (r *Runtime) run(ctx context.Context, argv, env []string) error {
	if r.Run != nil {
		return r.Run(ctx, argv, env)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	// enroot is a bash script whose import runs curl, mksquashfs and more:
	// a stop must end them all, not only the script (the launcher's sweep
	// leaves its own process group alone). Not a group of their own: the
	// launcher's Reaper would take the script's exit status from cmd.Wait.
	cmd.Cancel = func() error { supervise.KillTree(cmd.Process.Pid); return nil }
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(argv[:2], " "), err, strings.TrimSpace(lastLines(out.String(), 5)))
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
