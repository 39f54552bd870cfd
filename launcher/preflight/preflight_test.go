package preflight

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// preflightFixture is a node's world in temp dirs: a model directory, a PATH
// with some executables, a /dev with some GPUs, and a port known to be free.
type preflightFixture struct {
	model, file, devDir, binDir string
	freePort, busyPort          int
}

func newPreflightFixture(t *testing.T, gpus int) preflightFixture {
	t.Helper()
	root := t.TempDir()
	f := preflightFixture{
		model:  filepath.Join(root, "model"),
		file:   filepath.Join(root, "plain-file"),
		devDir: filepath.Join(root, "dev"),
		binDir: filepath.Join(root, "bin"),
	}
	require.NoError(t, os.MkdirAll(f.model, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(f.model, "config.json"), []byte("{}"), 0o644))
	require.NoError(t, os.WriteFile(f.file, []byte("x"), 0o644))
	require.NoError(t, os.MkdirAll(f.devDir, 0o755))
	// Only nvidiaN are GPUs; the control and UVM devices are not.
	for _, name := range []string{"nvidiactl", "nvidia-uvm", "nvidia-caps"} {
		require.NoError(t, os.WriteFile(filepath.Join(f.devDir, name), nil, 0o644))
	}
	for i := range gpus {
		require.NoError(t, os.WriteFile(filepath.Join(f.devDir, fmt.Sprintf("nvidia%d", i)), nil, 0o644))
	}
	require.NoError(t, os.MkdirAll(f.binDir, 0o755))
	for _, name := range []string{"python3", "etcd"} {
		require.NoError(t, os.WriteFile(filepath.Join(f.binDir, name), []byte("#!/bin/sh\n"), 0o755))
	}
	t.Setenv("PATH", f.binDir)

	busy, err := net.Listen("tcp", ":0")
	require.NoError(t, err)
	t.Cleanup(func() { busy.Close() })
	f.busyPort = busy.Addr().(*net.TCPAddr).Port
	// A port the kernel just handed out and nobody holds.
	free, err := net.Listen("tcp", ":0")
	require.NoError(t, err)
	f.freePort = free.Addr().(*net.TCPAddr).Port
	require.NoError(t, free.Close())
	return f
}

func TestPreflight(t *testing.T) {
	type check func(f preflightFixture, root string) Config
	tests := map[string]struct {
		cfg  check
		want []string // substrings, one per expected problem, in order
	}{
		"all good, missing dirs are created": {
			cfg: func(f preflightFixture, root string) Config {
				return Config{
					ModelPath: f.model, CacheDir: filepath.Join(root, "cache", "dg"), LogDir: filepath.Join(root, "logs"),
					Ports: []int{f.freePort}, GPUs: 8, GPUsOnNode: 8, DevDir: f.devDir,
					Executables: []string{"python3", "etcd"},
				}
			},
		},
		"model may be a file": {
			cfg: func(f preflightFixture, root string) Config {
				return Config{ModelPath: f.file}
			},
		},
		"nothing to check": {
			cfg: func(f preflightFixture, root string) Config { return Config{} },
		},
		"model path missing": {
			cfg: func(f preflightFixture, root string) Config {
				return Config{ModelPath: filepath.Join(root, "no-model")}
			},
			want: []string{"model path " + "ROOT/no-model: does not exist"},
		},
		"dir cannot be created under a file": {
			cfg: func(f preflightFixture, root string) Config {
				return Config{CacheDir: filepath.Join(f.file, "cache"), LogDir: filepath.Join(root, "logs")}
			},
			want: []string{"cache dir ROOT/plain-file/cache: cannot create: not a directory"},
		},
		"port in use, reported once": {
			cfg: func(f preflightFixture, root string) Config {
				return Config{Ports: []int{f.freePort, f.busyPort, f.busyPort}}
			},
			want: []string{"port BUSY: already in use on this node by PID SELF ("},
		},
		"port out of range": {
			cfg: func(f preflightFixture, root string) Config {
				return Config{Ports: []int{70000}}
			},
			want: []string{"port 70000: out of range"},
		},
		"too few GPU devices": {
			cfg: func(f preflightFixture, root string) Config {
				return Config{GPUs: 16, DevDir: f.devDir}
			},
			want: []string{"GPUs: need 16, found 8 ROOT/dev/nvidia* devices"},
		},
		"Slurm allocated too few GPUs": {
			cfg: func(f preflightFixture, root string) Config {
				return Config{GPUs: 8, GPUsOnNode: 4, DevDir: f.devDir}
			},
			want: []string{"GPUs: need 8, Slurm allocated 4 on this node (SLURM_GPUS_ON_NODE); request --gpus-per-node=8"},
		},
		"GPUs not checked in simulation": {
			cfg: func(f preflightFixture, root string) Config {
				return Config{GPUs: 8, GPUsOnNode: 1, Simulate: true, DevDir: filepath.Join(root, "no-dev")}
			},
		},
		"executable missing": {
			cfg: func(f preflightFixture, root string) Config {
				return Config{Executables: []string{"python3", "nats-server", filepath.Join(root, "bin", "etcd"), filepath.Join(root, "bin", "nope")}}
			},
			want: []string{"executable nats-server: not found in PATH", "executable ROOT/bin/nope: does not exist"},
		},
		"every problem at once": {
			cfg: func(f preflightFixture, root string) Config {
				return Config{
					ModelPath: filepath.Join(root, "no-model"), LogDir: filepath.Join(f.file, "logs"),
					Ports: []int{f.busyPort}, GPUs: 9, DevDir: f.devDir, Executables: []string{"nats-server"},
				}
			},
			want: []string{"model path", "log dir", "port BUSY", "GPUs: need 9, found 8", "executable nats-server"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newPreflightFixture(t, 8)
			root := filepath.Dir(f.model)
			cfg := tc.cfg(f, root)
			got := Check(cfg)
			require.Len(t, got, len(tc.want), "problems: %q", got)
			for i, w := range tc.want {
				w = strings.NewReplacer("ROOT", root, "BUSY", fmt.Sprint(f.busyPort), "SELF", fmt.Sprint(os.Getpid())).Replace(w)
				assert.Contains(t, got[i], w)
			}
			for _, d := range []string{cfg.CacheDir, cfg.LogDir} {
				if d != "" && len(tc.want) == 0 {
					entries, err := os.ReadDir(d)
					require.NoError(t, err, "created")
					assert.Empty(t, entries, "the probe file is removed")
				}
			}
		})
	}
}

// Root reads everything, so permission problems can only be shown as non-root.
