package enroot

import (
	"errors"
	"fmt"
	"strings"
)

// The builders below follow enroot 4.1.2's grammar (see standin/grammar.go):
// options come before the operands (the parser stops at the first word that
// is not an option), every option value is a separate, non-empty word, and
// "--" ends the options so that a name or command starting with '-' is
// still an operand. They only build argv arrays: nothing here goes through
// a shell.

// ContainerName is the name of the job's container on every node. The job
// id keeps two jobs sharing a node apart; ENROOT_DATA_PATH is node-local,
// so nodes never share it.
func ContainerName(jobID string) string {
	return "wideep-" + strings.Map(func(r rune) rune {
		if isAlnum(r) || r == '_' || r == '.' || r == '-' {
			return r
		}
		return '_'
	}, jobID)
}

// Mount is a bind mount from the host into the container.
type Mount struct {
	Src, Dst string
	ReadOnly bool
	// Create has the launcher create Src before the container starts (a
	// job's own directory, which need not exist yet).
	Create bool
}

// spec is the mount in enroot's colon-separated fstab form. enroot checks
// it against ^[^[:space:]]+:[^[:space:]]+$ and turns ':' into field
// separators, so neither path may hold a ':' or white space.
func (m Mount) spec() (string, error) {
	for _, p := range []string{m.Src, m.Dst} {
		if !strings.HasPrefix(p, "/") {
			return "", fmt.Errorf("mount %s:%s: %q is not an absolute path", m.Src, m.Dst, p)
		}
		if strings.ContainsAny(p, ": \t\n") {
			return "", fmt.Errorf("mount %s:%s: %q holds a ':' or white space, which enroot's --mount cannot carry", m.Src, m.Dst, p)
		}
	}
	opts := "x-create=auto,rbind"
	if m.ReadOnly {
		opts += ",ro"
	}
	return m.Src + ":" + m.Dst + ":none:" + opts, nil
}

// StartOptions are the options of one `enroot start`.
type StartOptions struct {
	// RW makes the container's root filesystem writable (--rw).
	RW bool
	// Mounts are bind mounts (--mount).
	Mounts []Mount
	// EnvNames are the variables the process gets, by name only: enroot
	// takes each value from its own environment, so values (tokens,
	// passwords) never appear in the command line that ps shows. The
	// caller puts the values in the environment of the enroot process.
	// enroot clears everything else (enroot-switchroot calls clearenv).
	EnvNames []string
}

// ImportArgv imports a registry image into the squashfs file output.
// enroot refuses an output that exists, so output must be a fresh name.
func ImportArgv(bin string, im Image, output string) ([]string, error) {
	if im.IsFile() {
		return nil, fmt.Errorf("image %s is a squashfs file: there is nothing to import", im)
	}
	if output == "" {
		return nil, fmt.Errorf("importing %s: no output file", im)
	}
	return []string{bin, "import", "--output", output, "--", im.URI()}, nil
}

// CreateArgv unpacks the squashfs file sqsh into the container name. enroot
// refuses a name that exists (there is no --force here on purpose: a
// leftover container of the same job is removed first with RemoveArgv).
func CreateArgv(bin, name, sqsh string) []string {
	return []string{bin, "create", "--name", name, "--", sqsh}
}

// StartArgv runs argv in the container name.
func StartArgv(bin, name string, o StartOptions, argv []string) ([]string, error) {
	if name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("container name %q: empty or holds a '/'", name)
	}
	if len(argv) == 0 {
		return nil, errors.New("enroot start " + name + ": no command")
	}
	out := []string{bin, "start"}
	if o.RW {
		out = append(out, "--rw")
	}
	for _, m := range o.Mounts {
		s, err := m.spec()
		if err != nil {
			return nil, err
		}
		out = append(out, "--mount", s)
	}
	for _, n := range o.EnvNames {
		if err := checkEnvName(n); err != nil {
			return nil, err
		}
		out = append(out, "--env", n)
	}
	out = append(out, "--", name)
	return append(out, argv...), nil
}

// checkEnvName accepts what enroot accepts as a name alone
// (^[[:alpha:]_][[:alnum:]_]*$) and refuses ENROOT_*, which enroot drops
// from the container's environment without a word.
func checkEnvName(n string) error {
	if strings.Contains(n, "=") {
		return fmt.Errorf("environment variable %q: pass names only, never values, on enroot's command line", n)
	}
	if strings.HasPrefix(n, "ENROOT_") {
		return fmt.Errorf("environment variable %s: enroot removes ENROOT_* variables from the container", n)
	}
	for i, r := range n {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return fmt.Errorf("environment variable %q is not a valid name", n)
		}
	}
	if n == "" {
		return errors.New("empty environment variable name")
	}
	return nil
}

// RemoveArgv deletes the container name without asking (--force; without
// it enroot reads a y/N answer from stdin, and exits 1 at end of input).
func RemoveArgv(bin, name string) []string {
	return []string{bin, "remove", "--force", "--", name}
}

// ListArgv lists the containers, one name per line.
func ListArgv(bin string) []string {
	return []string{bin, "list"}
}
