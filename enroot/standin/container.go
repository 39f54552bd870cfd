package standin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// The checks enroot's runtime::start applies to --mount and --env entries.
// Every regexp of the package is compiled on first use: the stand-in lives in
// the launcher's binary, and compiling them at init cost every start of it
// (hostnames, plan, exec) a tenth of a millisecond.
var (
	mountRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[^[:space:]]+:[^[:space:]]+$`) })
	envRe   = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[[:alpha:]_][[:alnum:]_]*(=|$)`) })
)

// imageRef is a docker:// reference as enroot's docker::_parse_uri reads it.
type imageRef struct {
	registry, image, tag string
}

var (
	uriImageRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9/._-]+$`) })
	uriTagRe   = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9._:-]+$`) })
	uriDigest  = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`@(sha256:[A-Za-z0-9]+)$`) })
)

// parseURI follows enroot 4.x: [USER@][REGISTRY#]IMAGE[:TAG][@DIGEST] or
// the Docker form [USER@][REGISTRY/]IMAGE..., where the first component is
// a registry only if it holds a '.' or a ':'. With a digest the tag is
// ignored and the digest takes its place.
func parseURI(uri string) (imageRef, bool) {
	rest, ok := strings.CutPrefix(uri, "docker://")
	if !ok {
		return imageRef{}, false
	}
	var r imageRef
	digest := ""
	if m := uriDigest().FindStringSubmatchIndex(rest); m != nil {
		digest, rest = rest[m[2]:m[3]], rest[:m[0]]
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		if i == 0 {
			return imageRef{}, false
		}
		rest = rest[i+1:]
	}
	if reg, img, hash := strings.Cut(rest, "#"); hash {
		if reg == "" || strings.ContainsAny(reg, "/@") {
			return imageRef{}, false
		}
		r.registry, rest = reg, img
	} else if first, after, slash := strings.Cut(rest, "/"); slash && strings.ContainsAny(first, ".:") {
		r.registry, rest = first, after
	} else {
		r.registry = "registry-1.docker.io"
		if !slash {
			rest = "library/" + rest
		}
	}
	img, tag, hasTag := strings.Cut(rest, ":")
	if !uriImageRe().MatchString(img) || hasTag && !uriTagRe().MatchString(tag) {
		return imageRef{}, false
	}
	r.image, r.tag = img, tag
	if digest != "" {
		r.tag = digest
	}
	if r.tag == "" {
		r.tag = "latest"
	}
	return r, true
}

// fileName is import's default output: IMAGE+TAG.sqsh with '/' as '+', and
// without Docker Hub's "library/".
func (r imageRef) fileName() string {
	img := r.image
	if r.registry == "registry-1.docker.io" {
		img = strings.TrimPrefix(img, "library/")
	}
	return strings.ReplaceAll(img, "/", "+") + "+" + r.tag + ".sqsh"
}

// importImage writes a small real squashfs for the URI. Like enroot, it
// refuses an existing output and writes the output in place: for the whole
// $WIDEEP_ENROOT_IMPORT_DELAY a partial, invalid file sits under the output
// name, as it does while the real tool downloads and runs mksquashfs.
func (t *tool) importImage(p parsed) int {
	uri := p.operands[0]
	switch {
	case strings.HasPrefix(uri, "docker://"):
	case strings.HasPrefix(uri, "dockerd://"):
		return t.errorf("Command not found: docker")
	case strings.HasPrefix(uri, "podman://"):
		return t.errorf("Command not found: podman")
	default:
		return t.errorf("Invalid argument: %s", uri)
	}
	mksquashfs, code := lookPath("mksquashfs", t.getenv("PATH"))
	if code != 0 {
		return t.errorf("Command not found: mksquashfs")
	}
	ref, ok := parseURI(uri)
	if !ok {
		return t.errorf("Invalid image reference: %s", uri)
	}
	name := p.last("--output")
	if name == "" {
		name = ref.fileName()
	}
	out, err := realpath(name)
	if err != nil {
		return t.errorf("No such file or directory: %s", name)
	}
	var delay time.Duration
	if v := t.getenv(delayEnv); v != "" {
		if delay, err = time.ParseDuration(v); err != nil {
			return t.errorf("wideep stand-in: %s=%q: %v", delayEnv, v, err)
		}
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return t.errorf("File already exists: %s", out)
	} else if err != nil {
		return t.errorf("%v", err)
	}
	_, err = f.Write(make([]byte, 4096)) // not a squashfs superblock
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return t.errorf("%v", err)
	}
	t.info("Fetching image " + ref.registry + "#" + ref.image + ":" + ref.tag)
	time.Sleep(delay)
	return t.writeSquashfs(mksquashfs, uri, out)
}

// writeSquashfs builds a tiny root filesystem laid out like an enroot
// import (/etc/rc, /etc/rc.local, /etc/environment) and squashes it into
// out, replacing the partial file.
func (t *tool) writeSquashfs(mksquashfs, uri, out string) int {
	tmp := t.getenv("ENROOT_TEMP_PATH")
	if tmp == "" {
		tmp = t.getenv("TMPDIR")
	}
	rootfs, err := os.MkdirTemp(tmp, "enroot.")
	if err != nil {
		return t.errorf("%v", err)
	}
	defer os.RemoveAll(rootfs)
	files := map[string]string{
		"etc/rc":                 "# wideep stand-in image\nif [ -s /etc/rc.local ]; then . /etc/rc.local; fi\nexec \"$@\"\n",
		"etc/rc.local":           "# sourced by /etc/rc when the container starts\n",
		"etc/environment":        "",
		"etc/wideep-standin-uri": uri + "\n",
	}
	for name, content := range files {
		p := filepath.Join(rootfs, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return t.errorf("%v", err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return t.errorf("%v", err)
		}
	}
	t.info("Creating squashfs filesystem...")
	argv := []string{rootfs, out, "-noappend", "-no-progress", "-quiet", "-all-root"}
	if n := t.getenv("ENROOT_MAX_PROCESSORS"); n != "" {
		argv = append(argv, "-processors", n)
	}
	return t.runTool(mksquashfs, argv...)
}

// runTool runs a helper program with its output on stderr, as enroot does
// (>&2), and returns its exit code the way set -e passes it on.
func (t *tool) runTool(path string, args ...string) int {
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = t.stderr, t.stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee) && ee.ExitCode() > 0:
		return ee.ExitCode()
	}
	return t.errorf("%s: %v", path, err)
}

// create unpacks a squashfs image into ENROOT_DATA_PATH/NAME.
func (t *tool) create(p parsed) int {
	image := p.operands[0]
	if image == "" {
		return t.errorf("Invalid argument")
	}
	unsquashfs, code := lookPath("unsquashfs", t.getenv("PATH"))
	if code != 0 {
		return t.errorf("Command not found: unsquashfs")
	}
	abs, err := realpath(image)
	if err != nil {
		return t.errorf("No such file or directory: %s", image)
	}
	if fi, err := os.Stat(abs); err != nil || !fi.Mode().IsRegular() {
		return t.errorf("No such file or directory: %s", abs)
	}
	if exec.Command(unsquashfs, "-s", abs).Run() != nil {
		return t.errorf("Invalid image format: %s", abs)
	}
	name := p.last("--name")
	if name == "" {
		name = strings.TrimSuffix(filepath.Base(abs), ".sqsh")
	}
	if strings.Contains(name, "/") {
		return t.errorf("Invalid argument: %s", name)
	}
	data, err := t.dataPath()
	if err != nil {
		return t.errorf("%v", err)
	}
	rootfs := filepath.Join(data, name)
	if _, err := os.Lstat(rootfs); err == nil {
		if !p.has("--force") && !t.isSet("ENROOT_FORCE_OVERRIDE") {
			return t.errorf("File already exists: %s", rootfs)
		}
		if err := os.RemoveAll(rootfs); err != nil {
			return t.errorf("%v", err)
		}
	}
	t.info("Extracting squashfs filesystem...")
	if code := t.runTool(unsquashfs, "-no-progress", "-d", rootfs, abs); code != 0 {
		return code
	}
	marker, _ := json.Marshal(map[string]any{"image": abs, "name": name, "created": t.now()})
	if err := os.WriteFile(filepath.Join(rootfs, markerFile), marker, 0o644); err != nil {
		return t.errorf("%v", err)
	}
	return 0
}

// start checks the container, the mounts and the environment like enroot,
// then execs the command with the environment a container process gets.
func (t *tool) start(p parsed) int {
	target, argv := p.operands[0], p.operands[1:]
	if target == "" {
		return t.errorf("Invalid argument")
	}
	if !t.isImageFile(target) {
		if strings.Contains(target, "/") {
			return t.errorf("Invalid argument: %s", target)
		}
		data, err := t.dataPath()
		if err != nil {
			return t.errorf("%v", err)
		}
		rootfs := filepath.Join(data, target)
		if fi, err := os.Stat(rootfs); err != nil || !fi.IsDir() {
			return t.errorf("No such file or directory: %s", rootfs)
		}
	}
	for _, m := range p.opts["--mount"] {
		if !mountRe().MatchString(m) {
			return t.errorf("Invalid argument: %s", m)
		}
	}
	for _, e := range p.opts["--env"] {
		if !envRe().MatchString(e) {
			return t.errorf("Invalid argument: %s", e)
		}
	}
	if p.has("--conf") || p.has("--rc") {
		return t.errorf("wideep stand-in: --conf and --rc (scripts run at container start) are not simulated")
	}
	for _, m := range p.opts["--mount"] {
		// enroot-mount fails on a missing bind source after the container
		// is set up; the message imitates its err(3) style.
		src, dst, _ := strings.Cut(m, ":")
		dst, _, _ = strings.Cut(dst, ":")
		if strings.HasPrefix(src, "/") {
			if _, err := os.Stat(src); err != nil {
				fmt.Fprintf(t.stderr, "enroot-mount: failed to mount: %s at %s: No such file or directory\n", src, dst)
				return 1
			}
		}
	}
	if len(argv) == 0 {
		return t.errorf("wideep stand-in: no command given (the stand-in has no image entrypoint to run)")
	}
	env := t.containerEnv(p.opts["--env"])
	path, code := lookPath(argv[0], envValue(env, "PATH"))
	switch code {
	case 127:
		fmt.Fprintf(t.stderr, "/etc/rc: exec: %s: not found\n", argv[0])
		return code
	case 126:
		fmt.Fprintf(t.stderr, "/etc/rc: exec: %s: Permission denied\n", argv[0])
		return code
	}
	// The image's /etc/rc changes to its WORKDIR, "/" when it has none.
	if err := t.chdir("/"); err != nil {
		return t.errorf("%v", err)
	}
	err := t.exec(path, argv, env)
	return t.errorf("wideep stand-in: executing %s: %v", path, err)
}

// isImageFile says whether the start target is a squashfs file, which
// enroot starts directly instead of a created container.
func (t *tool) isImageFile(target string) bool {
	fi, err := os.Stat(target)
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	unsquashfs, code := lookPath("unsquashfs", t.getenv("PATH"))
	return code == 0 && exec.Command(unsquashfs, "-s", target).Run() == nil
}

// containerEnv is the environment a container process gets. enroot-switchroot
// clears the environment (clearenv) and loads only the file enroot built:
// the image's /etc/environment, then each --env entry (a bare NAME takes
// enroot's own value, empty when unset), without ENROOT_* (common::envfmt
// drops them). The login step then sets TERM, HOME, SHELL, USER, LOGNAME
// and PATH where still unset. The stand-in's image is the host, so its
// /etc/environment stands as the stand-in's own PATH.
func (t *tool) containerEnv(entries []string) []string {
	vals := map[string]string{}
	var order []string
	set := func(k, v string, overwrite bool) {
		if _, ok := vals[k]; ok && !overwrite {
			return
		} else if !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	if v := t.getenv("PATH"); v != "" {
		set("PATH", v, true)
	}
	for _, e := range entries {
		name, val, inline := strings.Cut(e, "=")
		if !inline {
			val = t.getenv(name)
		}
		if !strings.HasPrefix(name, "ENROOT_") {
			set(name, val, true)
		}
	}
	home, login := "/", "nobody"
	if u, err := user.Current(); err == nil {
		home, login = u.HomeDir, u.Username
	}
	set("TERM", "dumb", false)
	set("HOME", home, false)
	set("SHELL", "/bin/sh", false)
	set("USER", login, false)
	set("LOGNAME", login, false)
	set("PATH", "/usr/local/bin:/usr/bin:/bin", false)
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+vals[k])
	}
	return out
}

func envValue(env []string, name string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}
