// Package standin is a strict stand-in for the enroot command, for tests:
// real enroot needs user namespaces, squashfuse and a registry, none of
// which the test machines have. It accepts exactly enroot 4.1.2's grammar
// (grammar.go) with the real tool's messages and exit codes, keeps its
// containers under ENROOT_DATA_PATH as the real tool does, imports by
// writing a small real squashfs with mksquashfs, and starts a command by
// exec'ing it, so that the PID, signals and exit status are the command's,
// as they are with `enroot start`.
//
// Every call is appended as one JSON line (Record) to the file named by
// $WIDEEP_ENROOT_RECORD. $WIDEEP_ENROOT_IMPORT_DELAY (a Go duration) makes
// import hold a partial output file that long before finishing it.
//
// It is reached as `wideep-launch sim-enroot ARGS...`; tests put a two-line
// wrapper named enroot on PATH.
package standin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Version is what `enroot version` prints.
const Version = "4.1.2"

const (
	recordEnv = "WIDEEP_ENROOT_RECORD"
	delayEnv  = "WIDEEP_ENROOT_IMPORT_DELAY"
	// markerFile, in a created container, names the image it came from.
	markerFile = ".wideep-standin.json"
)

// Record is one call of the stand-in, as written to $WIDEEP_ENROOT_RECORD.
type Record struct {
	Time    time.Time `json:"time"`
	PID     int       `json:"pid"`
	Command string    `json:"command"`
	Args    []string  `json:"args"`
	// EnvNames are the --env entries given by name only.
	EnvNames []string `json:"env_names,omitempty"`
	// EnvInline are the names of --env entries given as NAME=VALUE, which
	// put the value on the command line; the values are not recorded.
	EnvInline []string `json:"env_inline,omitempty"`
	// Config holds the ENROOT_* variables of the stand-in's environment
	// (ENROOT_DATA_PATH, ENROOT_MAX_PROCESSORS, ...).
	Config map[string]string `json:"config,omitempty"`
}

// ReadRecords reads the records of a $WIDEEP_ENROOT_RECORD file.
func ReadRecords(path string) ([]Record, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []Record
	for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var r Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, i+1, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// Main runs the stand-in with args (without the program name) and returns
// the exit code; `start` does not return when it manages to exec.
func Main(args []string, env func(string) (string, bool), stdout, stderr io.Writer) int {
	t := &tool{
		env: env, stdin: os.Stdin, stdout: stdout, stderr: stderr,
		exec: syscall.Exec, chdir: os.Chdir, now: time.Now, pid: os.Getpid(),
	}
	return t.run(args)
}

// tool is the stand-in with its outside world; tests replace exec and chdir
// to look at what start would run without replacing the test process.
type tool struct {
	env            func(string) (string, bool)
	stdin          io.Reader
	stdout, stderr io.Writer
	exec           func(path string, argv, env []string) error
	chdir          func(string) error
	now            func() time.Time
	pid            int
}

func (t *tool) run(args []string) int {
	rec := Record{Time: t.now(), PID: t.pid, Args: args, Config: t.config()}
	if len(args) > 0 {
		rec.Command = args[0]
	}
	s, known := syntaxes[rec.Command]
	var p parsed
	help, ok := false, false
	if known {
		p, help, ok = s.parse(args[1:])
		if ok && !help && rec.Command == "start" {
			rec.EnvNames, rec.EnvInline = splitEnv(p.opts["--env"])
		}
	}
	// Every call is recorded, usage errors included.
	if err := t.record(rec); err != nil {
		return t.errorf("wideep stand-in: recording the call in $%s: %v", recordEnv, err)
	}
	switch rec.Command {
	case "version":
		fmt.Fprintln(t.stdout, Version)
		return 0
	case "help":
		fmt.Fprint(t.stdout, mainUsage)
		return 0
	case "load", "digest", "export", "exec", "batch", "bundle", "info":
		return t.errorf("wideep stand-in: %q is a real enroot command that the stand-in does not simulate", rec.Command)
	}
	if !known {
		fmt.Fprint(t.stdout, mainUsage)
		return 1
	}
	if help || !ok {
		fmt.Fprintf(t.stdout, "Usage: enroot %s\n\n(wideep stand-in for enroot %s; the real tool's --help lists the options)\n", s.usage, Version)
		if help {
			return 0
		}
		return 1
	}
	switch rec.Command {
	case "import":
		return t.importImage(p)
	case "create":
		return t.create(p)
	case "start":
		return t.start(p)
	case "remove":
		return t.remove(p)
	default:
		return t.list(p)
	}
}

// splitEnv separates --env entries given by name from NAME=VALUE ones,
// keeping only the names of the latter.
func splitEnv(entries []string) (names, inline []string) {
	for _, e := range entries {
		if name, _, isInline := strings.Cut(e, "="); isInline {
			inline = append(inline, name)
		} else {
			names = append(names, e)
		}
	}
	return names, inline
}

// errorf reports like common::err: "[ERROR] ..." on stderr, exit 1.
func (t *tool) errorf(format string, a ...any) int {
	fmt.Fprintf(t.stderr, "[ERROR] "+format+"\n", a...)
	return 1
}

func (t *tool) info(msg string) { fmt.Fprintf(t.stderr, "[INFO] %s\n", msg) }

func (t *tool) getenv(name string) string {
	v, _ := t.env(name)
	return v
}

// config collects the ENROOT_* settings the stand-in was given.
func (t *tool) config() map[string]string {
	out := map[string]string{}
	for _, n := range []string{"ENROOT_DATA_PATH", "ENROOT_CACHE_PATH", "ENROOT_RUNTIME_PATH", "ENROOT_TEMP_PATH",
		"ENROOT_MAX_PROCESSORS", "ENROOT_FORCE_OVERRIDE", "ENROOT_CONFIG_PATH"} {
		if v, ok := t.env(n); ok {
			out[n] = v
		}
	}
	return out
}

// record appends one line; a single write of a small line with O_APPEND
// keeps lines of concurrent calls whole.
func (t *tool) record(r Record) error {
	path := t.getenv(recordEnv)
	if path == "" {
		return nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// isSet reads an enroot boolean setting: enroot unsets the ones equal to
// n, no, f, false (in any of their spellings), so any other value is true.
func (t *tool) isSet(name string) bool {
	v, ok := t.env(name)
	if !ok || v == "" {
		return false
	}
	switch v {
	case "n", "no", "N", "No", "NO", "f", "false", "F", "False", "FALSE":
		return false
	}
	return true
}

// dataPath is ENROOT_DATA_PATH, with enroot's default, created like enroot
// creates it (umask 077).
func (t *tool) dataPath() (string, error) {
	dir := t.getenv("ENROOT_DATA_PATH")
	if dir == "" {
		base := t.getenv("XDG_DATA_HOME")
		if base == "" {
			base = filepath.Join(t.getenv("HOME"), ".local", "share")
		}
		dir = filepath.Join(base, "enroot")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	return dir, nil
}

// realpath is `readlink -f`: the parent must exist, the last part need not.
func realpath(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		return r, nil
	}
	dir, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, filepath.Base(abs)), nil
}

// lookPath finds name in a PATH value, as a shell's exec does. It returns
// the shell's exit code for a miss: 127 not found, 126 not executable.
func lookPath(name, pathValue string) (string, int) {
	if strings.Contains(name, "/") {
		return name, executable(name)
	}
	code := 127
	for _, dir := range filepath.SplitList(pathValue) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		switch executable(p) {
		case 0:
			return p, 0
		case 126:
			code = 126
		}
	}
	return "", code
}

func executable(p string) int {
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		return 127
	case fi.IsDir() || fi.Mode()&0o111 == 0:
		return 126
	}
	return 0
}

// remove deletes containers; without --force it asks on stdin like enroot.
func (t *tool) remove(p parsed) int {
	data, err := t.dataPath()
	if err != nil {
		return t.errorf("%v", err)
	}
	force := p.has("--force") || t.isSet("ENROOT_FORCE_OVERRIDE")
	for _, name := range p.operands {
		switch {
		case name == "":
			return t.errorf("Invalid argument")
		case strings.Contains(name, "/"):
			return t.errorf("Invalid argument: %s", name)
		}
		rootfs := filepath.Join(data, name)
		if fi, err := os.Stat(rootfs); err != nil || !fi.IsDir() {
			return t.errorf("No such file or directory: %s", rootfs)
		}
		if !force {
			answer, err := readLine(t.stdin)
			if err != nil {
				return 1 // read fails at end of input and set -e ends enroot
			}
			if answer != "y" && answer != "Y" {
				continue
			}
		}
		if err := os.RemoveAll(rootfs); err != nil {
			return t.errorf("%v", err)
		}
	}
	return 0
}

func readLine(r io.Reader) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for {
		n, err := r.Read(one)
		if n == 1 {
			if one[0] == '\n' {
				return string(b), nil
			}
			b = append(b, one[0])
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(b) > 0 {
				return string(b), nil
			}
			return "", err
		}
	}
}

// list prints the container names like `ls -1` of the data path.
func (t *tool) list(p parsed) int {
	data, err := t.dataPath()
	if err != nil {
		return t.errorf("Could not change directory: %s", t.getenv("ENROOT_DATA_PATH"))
	}
	entries, err := os.ReadDir(data)
	if err != nil {
		return t.errorf("Could not change directory: %s", data)
	}
	var names []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	if p.has("--fancy") && len(names) > 0 {
		fmt.Fprintln(t.stdout, "NAME")
	}
	for _, n := range names {
		fmt.Fprintln(t.stdout, n)
	}
	return 0
}
