// Package preflight checks, on each node and in its first seconds,
// everything cheap that would otherwise fail late, after other nodes have
// started heavy work: model path, shared and log directories, the ports the
// node will bind, GPUs, executables. Every problem names the thing and why;
// the rendezvous then reports all nodes' problems to every node at once.
package preflight

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"syscall"
)

// Config says what this node is about to use. Empty fields are not
// checked.
type Config struct {
	// ModelPath is a local model directory or file. Leave it empty when the
	// model is a hub id that the engine downloads itself.
	ModelPath string
	// CacheDir and LogDir are created if missing and must be writable.
	CacheDir string
	LogDir   string
	// Ports are the TCP ports this node's processes will bind (not the
	// rendezvous port, which rank 0 has bound already), at BindHost ("":
	// every address, as the processes' --host 0.0.0.0 does).
	Ports    []int
	BindHost string
	// GPUs is how many GPUs this node's processes need.
	GPUs int
	// GPUsOnNode is SLURM_GPUS_ON_NODE (0 when unset: then only the device
	// files are counted).
	GPUsOnNode int
	// Simulate skips the GPU check: stand-ins need no GPU.
	Simulate bool
	// Executables must be found in PATH (or exist, when given as paths), as
	// LookPath sees them.
	Executables []string
	// LookPath finds an executable where the processes will run (the host,
	// a container); nil is exec.LookPath on the host.
	LookPath func(name string) (string, error)
	// DevDir is where the NVIDIA device files are; "" means /dev.
	DevDir string
}

var nvidiaDevice = regexp.MustCompile(`^nvidia[0-9]+$`)

// Check returns every problem found on this node, each naming the thing
// and why; none means ready.
func Check(cfg Config) []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	if cfg.ModelPath != "" {
		if err := checkReadable(cfg.ModelPath); err != nil {
			add("model path %s: %v", cfg.ModelPath, err)
		}
	}
	for _, d := range []struct{ what, path string }{{"cache dir", cfg.CacheDir}, {"log dir", cfg.LogDir}} {
		if d.path == "" {
			continue
		}
		if err := checkWritableDir(d.path); err != nil {
			add("%s %s: %v", d.what, d.path, err)
		}
	}
	seen := map[int]bool{}
	for _, p := range cfg.Ports {
		if seen[p] {
			continue
		}
		seen[p] = true
		if p < 1 || p > 65535 {
			add("port %d: out of range 1-65535", p)
			continue
		}
		if err := checkPortFree(cfg.BindHost, p); err != nil {
			add("port %d: %s", p, err)
		}
	}
	if cfg.GPUs > 0 && !cfg.Simulate {
		problems = append(problems, checkGPUs(cfg)...)
	}
	lookPath := cfg.LookPath
	if lookPath == nil {
		lookPath = exec.LookPath
	}
	for _, name := range cfg.Executables {
		if _, err := lookPath(name); err != nil {
			if errors.Is(err, exec.ErrNotFound) {
				add("executable %s: not found in PATH", name)
			} else {
				add("executable %s: %s", name, reason(err))
			}
		}
	}
	return problems
}

func reason(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		// The path is already in the message; keep the cause.
		err = pe.Err
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "does not exist"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	}
	return err.Error()
}

// checkReadable opens the path as the engine will: a directory must be
// listable, a file readable.
func checkReadable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return errors.New(reason(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return errors.New(reason(err))
	}
	if st.IsDir() {
		if _, err := f.Readdirnames(1); err != nil && err != io.EOF {
			return fmt.Errorf("cannot list: %s", reason(err))
		}
		return nil
	}
	if _, err := f.Read(make([]byte, 1)); err != nil && err != io.EOF {
		return fmt.Errorf("cannot read: %s", reason(err))
	}
	return nil
}

// checkWritableDir writes and removes a file: permission bits alone do not
// tell about read-only mounts, quotas or root squash on shared filesystems.
func checkWritableDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cannot create: %s", reason(err))
	}
	f, err := os.CreateTemp(dir, ".wideep-preflight-*")
	if err != nil {
		return fmt.Errorf("not writable: %s", reason(err))
	}
	_, werr := f.Write([]byte("ok\n"))
	cerr := f.Close()
	rerr := os.Remove(f.Name())
	if err := cmp.Or(werr, cerr, rerr); err != nil {
		return fmt.Errorf("not writable: %s", reason(err))
	}
	return nil
}

func checkPortFree(host string, port int) error {
	// The processes bind the wildcard address, which conflicts with a listener
	// on any address.
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return errors.New("already in use on this node")
		}
		return err
	}
	return ln.Close()
}

func checkGPUs(cfg Config) []string {
	dev := cfg.DevDir
	if dev == "" {
		dev = "/dev"
	}
	var problems []string
	entries, err := os.ReadDir(dev)
	if err != nil {
		return []string{fmt.Sprintf("GPUs: listing %s: %s", dev, reason(err))}
	}
	n := 0
	for _, e := range entries {
		if nvidiaDevice.MatchString(e.Name()) {
			n++
		}
	}
	if n < cfg.GPUs {
		problems = append(problems, fmt.Sprintf("GPUs: need %d, found %d %s/nvidia* devices", cfg.GPUs, n, dev))
	}
	if cfg.GPUsOnNode > 0 && cfg.GPUsOnNode < cfg.GPUs {
		problems = append(problems, fmt.Sprintf("GPUs: need %d, Slurm allocated %d on this node (SLURM_GPUS_ON_NODE); request --gpus-per-node=%d", cfg.GPUs, cfg.GPUsOnNode, cfg.GPUs))
	}
	return problems
}
