package preflight

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// writeTree writes files (path relative to root → content) under root; a
// path ending in "/" is a directory.
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(root, p)
		if strings.HasSuffix(p, "/") {
			require.NoError(t, os.MkdirAll(full, 0o755))
			continue
		}
		require.NoError(t, os.MkdirAll(filepath.Dir(full), 0o755))
		require.NoError(t, os.WriteFile(full, []byte(content), 0o644))
	}
}

// ibPort is one port of a fake /sys/class/infiniband.
func ibPort(dev, port, state, layer, rate string) map[string]string {
	dir := "sys/class/infiniband/" + dev + "/ports/" + port + "/"
	return map[string]string{dir + "state": state + "\n", dir + "link_layer": layer + "\n", dir + "rate": rate + "\n"}
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

const (
	gib = 1 << 30
	mib = 1 << 20
)

// A healthy RDMA node: an ACTIVE port, nvidia_peermem loaded.
var healthyFabric = merge(
	ibPort("mlx5_0", "1", "4: ACTIVE", "InfiniBand", "400 Gb/sec (4X NDR)"),
	map[string]string{"sys/module/nvidia_peermem/": ""},
)

// fabricCase is one node's fabric: a fake tree under ROOT, what needs RDMA,
// the waived checks, RLIMIT_MEMLOCK (nil: unlimited), /dev/shm's size (0:
// 64 GiB), and what Run must find, exactly.
type fabricCase struct {
	tree     map[string]string
	rdma     []string
	skip     []string
	memlock  func() (uint64, uint64, error)
	shm      uint64
	problems []string
	warnings []string
}

var fabricCases = map[string]fabricCase{
	"healthy": {tree: healthyFabric, rdma: []string{"NIXL", "DeepEP"}},
	"one of two ports ACTIVE passes, the other is named": {
		tree: merge(ibPort("mlx5_0", "1", "1: DOWN", "InfiniBand", "10 Gb/sec (4X SDR)"),
			ibPort("mlx5_1", "1", "4: ACTIVE", "Ethernet", "100 Gb/sec (4X EDR)"),
			map[string]string{"sys/module/nvidia_peermem/": ""}),
		rdma: []string{"NIXL"},
		warnings: []string{"ib-ports: 1 of 2 InfiniBand/RoCE ports are not ACTIVE (mlx5_0 port 1: 1: DOWN, InfiniBand, 10 Gb/sec (4X SDR)); " +
			"NIXL needs RDMA, and a GPU whose NIC is down sends over another one or fails"},
	},
	"one GPU NIC of eight down": {
		tree: merge(ibPort("mlx5_0", "1", "4: ACTIVE", "InfiniBand", "400 Gb/sec (4X NDR)"),
			ibPort("mlx5_1", "1", "4: ACTIVE", "InfiniBand", "400 Gb/sec (4X NDR)"),
			ibPort("mlx5_2", "1", "4: ACTIVE", "InfiniBand", "400 Gb/sec (4X NDR)"),
			ibPort("mlx5_3", "1", "2: INIT", "InfiniBand", "400 Gb/sec (4X NDR)"),
			ibPort("mlx5_4", "1", "4: ACTIVE", "InfiniBand", "400 Gb/sec (4X NDR)"),
			ibPort("mlx5_5", "1", "4: ACTIVE", "InfiniBand", "400 Gb/sec (4X NDR)"),
			ibPort("mlx5_6", "1", "4: ACTIVE", "InfiniBand", "400 Gb/sec (4X NDR)"),
			ibPort("mlx5_7", "1", "4: ACTIVE", "InfiniBand", "400 Gb/sec (4X NDR)"),
			map[string]string{"sys/module/nvidia_peermem/": ""}),
		rdma: []string{"NIXL", "DeepEP"},
		warnings: []string{"ib-ports: 1 of 8 InfiniBand/RoCE ports are not ACTIVE (mlx5_3 port 1: 2: INIT, InfiniBand, 400 Gb/sec (4X NDR)); " +
			"NIXL and DeepEP need RDMA, and a GPU whose NIC is down sends over another one or fails"},
	},
	"port DOWN": {
		tree: merge(ibPort("mlx5_0", "1", "1: DOWN", "Ethernet", "100 Gb/sec (4X EDR)"),
			map[string]string{"sys/module/nvidia_peermem/": ""}),
		rdma: []string{"NIXL", "DeepEP"},
		problems: []string{"ib-ports: no ACTIVE InfiniBand/RoCE port (mlx5_0 port 1: 1: DOWN, Ethernet, 100 Gb/sec (4X EDR)); " +
			"NIXL and DeepEP need RDMA"},
	},
	"no InfiniBand at all": {
		tree: map[string]string{"sys/module/nvidia_peermem/": ""}, rdma: []string{"DeepEP"},
		problems: []string{"ib-ports: no InfiniBand/RoCE device (ROOT/sys/class/infiniband: does not exist); DeepEP needs RDMA"},
	},
	"a device without ports": {
		tree: map[string]string{"sys/class/infiniband/mlx5_0/": "", "sys/module/nvidia_peermem/": ""}, rdma: []string{"NIXL"},
		problems: []string{"ib-ports: no InfiniBand/RoCE port (ROOT/sys/class/infiniband has no device with ports); NIXL needs RDMA"},
	},
	"peermem in /proc/modules": {
		tree: merge(ibPort("mlx5_0", "1", "4: ACTIVE", "InfiniBand", "400 Gb/sec (4X NDR)"),
			map[string]string{"proc/modules": "nvidia_uvm 1 0 - Live 0x0\nnvidia_peermem 16384 0 - Live 0x0\n"}),
		rdma: []string{"NIXL"},
	},
	"the older nv_peer_mem": {
		tree: merge(ibPort("mlx5_0", "1", "4: ACTIVE", "InfiniBand", "400 Gb/sec (4X NDR)"),
			map[string]string{"proc/modules": "nv_peer_mem 16384 0 - Live 0x0\n"}),
		rdma: []string{"NIXL"},
	},
	"no peermem": {
		tree: merge(ibPort("mlx5_0", "1", "4: ACTIVE", "InfiniBand", "400 Gb/sec (4X NDR)"),
			map[string]string{"proc/modules": "nvidia_peermem_not 1 0 - Live 0x0\nnvidia 1 0 - Live 0x0\n"}),
		rdma: []string{"NIXL", "DeepEP"},
		problems: []string{"gpudirect: no GPUDirect RDMA: nvidia_peermem (or nv_peer_mem) is not loaded " +
			"(ROOT/sys/module/nvidia_peermem, ROOT/proc/modules) and the kernel shows no DMA-BUF support; " +
			"NIXL and DeepEP need it (modprobe nvidia_peermem)"},
	},
	"no peermem, but the open kernel module (DMA-BUF)": {
		tree: merge(ibPort("mlx5_0", "1", "4: ACTIVE", "InfiniBand", "400 Gb/sec (4X NDR)"),
			map[string]string{"proc/driver/nvidia/version": "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15\n"}),
		rdma: []string{"NIXL"},
		warnings: []string{"gpudirect: nvidia_peermem is not loaded: GPUDirect RDMA must go through DMA-BUF, " +
			"which needs Linux >= 5.12 and a NIC driver with dma-buf support (or: modprobe nvidia_peermem)"},
	},
	"memlock 64 KiB": {
		tree: healthyFabric, rdma: []string{"NIXL"},
		memlock: func() (uint64, uint64, error) { return 64 << 10, 64 << 10, nil },
		problems: []string{"memlock: ulimit -l is 64 KiB; RDMA needs it unlimited " +
			"(Slurm: PropagateResourceLimits / slurmd LimitMEMLOCK=infinity)"},
	},
	"memlock 8 MiB, hard limit unlimited": {
		tree: healthyFabric, rdma: []string{"NIXL"},
		memlock: func() (uint64, uint64, error) { return 8 * mib, unix.RLIM_INFINITY, nil },
		problems: []string{"memlock: ulimit -l is 8 MiB (hard limit unlimited); RDMA needs it unlimited " +
			"(Slurm: PropagateResourceLimits / slurmd LimitMEMLOCK=infinity)"},
	},
	"memlock 2 GiB is enough": {
		tree: healthyFabric, rdma: []string{"NIXL"},
		memlock: func() (uint64, uint64, error) { return 2 * gib, 2 * gib, nil },
	},
	"memlock unreadable": {
		tree: healthyFabric, rdma: []string{"NIXL"},
		memlock:  func() (uint64, uint64, error) { return 0, 0, errors.New("operation not permitted") },
		problems: []string{"memlock: cannot read RLIMIT_MEMLOCK: operation not permitted"},
	},
	"/dev/shm 64 MiB is a warning": {
		tree: healthyFabric, rdma: []string{"NIXL"}, shm: 64 * mib,
		warnings: []string{"shm: ROOT/dev/shm is 64 MiB; NCCL/PyTorch need a large /dev/shm (at least 1 GiB; containers: a bigger tmpfs)"},
	},
	"without RDMA only shm applies": {
		tree: map[string]string{}, rdma: nil, shm: 64 * mib,
		memlock:  func() (uint64, uint64, error) { return 64 << 10, 64 << 10, nil },
		warnings: []string{"shm: ROOT/dev/shm is 64 MiB; NCCL/PyTorch need a large /dev/shm (at least 1 GiB; containers: a bigger tmpfs)"},
	},
	"--skip-check waives exactly one": {
		tree: merge(ibPort("mlx5_0", "1", "1: DOWN", "Ethernet", "100 Gb/sec (4X EDR)")),
		rdma: []string{"NIXL"}, skip: []string{"ib-ports"},
		memlock: func() (uint64, uint64, error) { return 64 << 10, 64 << 10, nil },
		problems: []string{
			"gpudirect: no GPUDirect RDMA: nvidia_peermem (or nv_peer_mem) is not loaded (ROOT/sys/module/nvidia_peermem, " +
				"ROOT/proc/modules) and the kernel shows no DMA-BUF support; NIXL needs it (modprobe nvidia_peermem)",
			"memlock: ulimit -l is 64 KiB; RDMA needs it unlimited (Slurm: PropagateResourceLimits / slurmd LimitMEMLOCK=infinity)",
		},
	},
	"every fabric check waived": {
		tree: map[string]string{}, rdma: []string{"NIXL"}, shm: 1,
		skip:    []string{"ib-ports", "gpudirect", "memlock", "shm"},
		memlock: func() (uint64, uint64, error) { return 0, 0, nil },
	},
	"an unknown --skip-check is a problem": {
		tree: healthyFabric, rdma: []string{"NIXL"}, skip: []string{"ib-port"},
		problems: []string{`--skip-check: unknown check "ib-port"; valid: ib-ports, gpudirect, memlock, shm, gpu-model, gpu-free`},
	},
}

func TestFabricChecks(t *testing.T) {
	unlimited := func() (uint64, uint64, error) { return unix.RLIM_INFINITY, unix.RLIM_INFINITY, nil }
	for name, tc := range fabricCases {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, tc.tree)
			shm := tc.shm
			if shm == 0 {
				shm = 64 * gib
			}
			var statted []string
			cfg := Config{
				// Simulate: no /dev/nvidia* here; the fabric is checked in the fake root.
				GPUs: 8, Simulate: true, Fabric: true, Sysroot: root, RDMA: tc.rdma, Skip: tc.skip,
				Memlock: tc.memlock,
				StatFS:  func(p string) (uint64, error) { statted = append(statted, p); return shm, nil },
			}
			if cfg.Memlock == nil {
				cfg.Memlock = unlimited
			}
			rep := Run(cfg)
			fix := func(s []string) []string {
				out := make([]string, len(s))
				for i, l := range s {
					out[i] = strings.ReplaceAll(l, "ROOT", root)
				}
				return out
			}
			assert.Equal(t, fix(tc.problems), nilIfEmpty(rep.Problems), "problems")
			assert.Equal(t, fix(tc.warnings), nilIfEmpty(rep.Warnings), "warnings")
			if !slices.Contains(tc.skip, CheckShm) {
				assert.Equal(t, []string{filepath.Join(root, "dev", "shm")}, statted, "shm reads the sysroot's /dev/shm")
			}
		})
	}
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return []string{}
	}
	return s
}

// The fabric checks only run where asked (not in a plain simulation) and
// only on a node that runs a worker.
func TestFabricChecksOnlyWhereTheyApply(t *testing.T) {
	empty := t.TempDir()
	for name, cfg := range map[string]Config{
		"fabric off (simulation)":   {GPUs: 8, Fabric: false, Sysroot: empty, RDMA: []string{"NIXL"}},
		"no worker on this node":    {GPUs: 0, Fabric: true, Sysroot: empty, RDMA: []string{"NIXL"}},
		"nothing asked of the node": {},
	} {
		t.Run(name, func(t *testing.T) {
			cfg.Memlock = func() (uint64, uint64, error) { return 0, 0, nil }
			cfg.StatFS = func(string) (uint64, error) { return 0, nil }
			cfg.DevDir, cfg.Simulate = empty, true
			rep := Run(cfg)
			assert.Empty(t, rep.Problems)
			assert.Empty(t, rep.Warnings)
		})
	}
}

func TestValidateSkips(t *testing.T) {
	require.NoError(t, ValidateSkips(nil))
	require.NoError(t, ValidateSkips(CheckNames()))
	err := ValidateSkips([]string{"shm", "gpu", "IB-PORTS", "gpu"})
	require.Error(t, err)
	assert.Equal(t, `unknown check "gpu", "IB-PORTS"; valid: ib-ports, gpudirect, memlock, shm, gpu-model, gpu-free`, err.Error())
}

func TestRDMAUsers(t *testing.T) {
	for name, tc := range map[string]struct {
		argv []string
		want []string
	}{
		"the guide's worker": {argv: []string{"python3", "-m", "dynamo.sglang", "--disaggregation-transfer-backend", "nixl",
			"--tp", "32", "--moe-a2a-backend", "deepep"}, want: []string{"NIXL", "DeepEP"}},
		"flag=value":          {argv: []string{"--moe-a2a-backend=deepep"}, want: []string{"DeepEP"}},
		"other backends":      {argv: []string{"--disaggregation-transfer-backend", "mooncake", "--moe-a2a-backend", "none"}},
		"a value, not a flag": {argv: []string{"--served-model-name", "--moe-a2a-backend"}},
	} {
		t.Run(name, func(t *testing.T) { assert.Equal(t, tc.want, RDMAUsers(tc.argv)) })
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 64 << 10: "64 KiB", 64 * mib: "64 MiB", gib: "1 GiB", 3 * gib / 2: "1.5 GiB"} {
		assert.Equal(t, want, Bytes(n))
	}
}
