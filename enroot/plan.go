package enroot

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/wideep/wideep-launch/launcher/deploy"
)

// ParseMount reads a SRC:DST[:ro|:rw] bind mount (--container-mount).
func ParseMount(s string) (Mount, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return Mount{}, fmt.Errorf("container mount %q: want SRC:DST or SRC:DST:ro", s)
	}
	m := Mount{Src: parts[0], Dst: parts[1]}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			m.ReadOnly = true
		case "rw":
		default:
			return Mount{}, fmt.Errorf("container mount %q: option %q, want ro or rw", s, parts[2])
		}
	}
	if _, err := m.spec(); err != nil {
		return Mount{}, err
	}
	return m, nil
}

// Commands shows, in `plan --show-commands`, what the runtime runs on each
// node: node 0's import (for a registry image), every node's create, each
// process started in the container, the remove at the end.
type Commands struct {
	Bin        string
	Image      Image
	ImageCache string
	Container  string
	Mounts     []Mount
}

func (c Commands) sqsh() string {
	if c.Image.IsFile() {
		return c.Image.Path
	}
	return filepath.Join(c.ImageCache, c.Image.CacheName())
}

func (c Commands) Before(n deploy.NodePlan) [][]string {
	var out [][]string
	if n.Index == 0 && !c.Image.IsFile() {
		// The launcher imports to a staging name and publishes it under a
		// lock; this is the import itself.
		if argv, err := ImportArgv(c.Bin, c.Image, c.sqsh()); err == nil {
			out = append(out, argv)
		}
	}
	return append(out, RemoveArgv(c.Bin, c.Container), CreateArgv(c.Bin, c.Container, c.sqsh()))
}

func (c Commands) Wrap(_ deploy.NodePlan, p deploy.Process) []string {
	argv, err := StartArgv(c.Bin, c.Container, StartOptions{RW: true, Mounts: c.Mounts,
		EnvNames: slices.Sorted(maps.Keys(p.Env))}, p.Argv)
	if err != nil {
		return append([]string{"# " + err.Error()}, p.Argv...)
	}
	return argv
}

func (c Commands) After(deploy.NodePlan) [][]string {
	return [][]string{RemoveArgv(c.Bin, c.Container)}
}
