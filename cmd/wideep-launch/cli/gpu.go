package cli

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// SimGPUModelEnv names the GPU model a simulated job keys its DeepGEMM
// cache with; unset, it is simGPUModel.
const SimGPUModelEnv = "WIDEEP_SIM_GPU_MODEL"

const simGPUModel = "NVIDIA H100 80GB HBM3 (simulated)"

// detectGPUModel is the GPU model for the DeepGEMM cache key, and where it
// came from (for the log). Without one the key leaves the GPU out, which is
// logged: kernels built for one GPU could then be reused on another.
func detectGPUModel(sys System, simulate bool) (model, from string) {
	if simulate {
		if v, ok := sys.LookupEnv(SimGPUModelEnv); ok && v != "" {
			return v, SimGPUModelEnv
		}
		return simGPUModel, "simulation"
	}
	if sys.GPUModel == nil {
		return "", "not detected: no GPU probe"
	}
	m, err := sys.GPUModel()
	if err != nil {
		return "", "not detected: " + err.Error()
	}
	return m, "nvidia-smi"
}

// nvidiaSMIModel asks nvidia-smi for the first GPU's name: kernels are built
// per architecture and tuned to its SM count, and a job's GPUs are alike.
func nvidiaSMIModel() (string, error) {
	bin, err := exec.LookPath("nvidia-smi")
	if err != nil {
		return "", errors.New("nvidia-smi not found (pass --gpu-model)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--query-gpu=name", "--format=csv,noheader").Output()
	if err != nil {
		return "", fmt.Errorf("nvidia-smi --query-gpu=name: %w", err)
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if first = strings.TrimSpace(first); first == "" {
		return "", errors.New("nvidia-smi --query-gpu=name printed no GPU")
	}
	return first, nil
}
