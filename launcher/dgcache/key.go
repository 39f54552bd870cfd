package dgcache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Format versions both the key recipe and COMPLETE.json. It is part of every
// key, so bumping it (when either changes meaning) turns every old entry
// into a miss instead of a wrong hit.
const Format = 1

// KeyInputs is everything the kernels of one worker layout depend on.
type KeyInputs struct {
	// Role is the worker role ("prefill", "decode"): prefill and decode
	// compile different kernels (contiguous vs masked grouped GEMM).
	Role string
	// Image is the container image reference or .sqsh path the job runs,
	// and ImageDigest its content digest when known. The digest alone
	// identifies the image when given (a retag must not recompile); without
	// it the reference stands in, so a .sqsh rebuilt in place at the same
	// path keeps its key: pass a digest when images are rebuilt in place.
	Image       string
	ImageDigest string
	// GPUModel is the GPU's name (nvidia-smi --query-gpu=name): kernels are
	// built for one architecture (sm_90a) and tuned to its SM count.
	GPUModel string
	// ModelID names the model (e.g. "deepseek-ai/DeepSeek-R1") and stands
	// in for --model-path, which the key ignores: kernel shapes follow the
	// model's dimensions, not where its weights live, and a model mounted
	// at another path on another cluster must still hit. Two different
	// models served from one path are told apart only by ModelID.
	ModelID string
	// Args is the SGLang server argument list (what follows
	// "python3 -m sglang.compile_deep_gemm"), normalized by NormalizeArgs.
	Args []string
	// Env holds the environment variables that change which kernels are
	// compiled or how (see KernelEnv); the cache directory variables must
	// not be in it, their values differ per node.
	Env map[string]string
}

// ignoredFlags do not change the kernels, and differ between nodes, jobs or
// deployments of one layout; keeping them in the key would make every job
// miss.
var ignoredFlags = map[string]bool{
	"--node-rank":                     true, // per node
	"--dist-init-addr":                true, // the head node's address, per job
	"--nccl-init-addr":                true, // older name of --dist-init-addr
	"--host":                          true,
	"--port":                          true,
	"--nccl-port":                     true,
	"--disaggregation-bootstrap-port": true,
	"--served-model-name":             true, // a label; the model is ModelID
	"--model-path":                    true, // a location; see KeyInputs.ModelID
	"--model":                         true, // alias of --model-path
	"--tokenizer-path":                true, // a location, like --model-path
	"--timeout":                       true, // compile_deep_gemm's own time limit
}

// Key names the kernels of one layout: 16 hex digits of a SHA-256 over
// Format, the role, the image identity, the GPU model, the model id, the
// normalized SGLang arguments and the kernel environment.
//
// Argument order is kept: SGLang's argparse lets the last of several flags
// with one destination win (--tp and --tp-size, --model and --model-path),
// so a reordered list can mean another layout. A reordering therefore costs
// a recompile (a miss), never a wrong hit, which would cost runtime JIT
// compiles and NCCL timeouts.
func Key(in KeyInputs) string {
	b, err := json.Marshal(in.canonical())
	if err != nil {
		// Strings and slices of strings always marshal.
		panic(fmt.Sprintf("dgcache: encoding key inputs: %v", err))
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:16]
}

// EntryName is the entry's directory name under Cache.Dir.
func EntryName(role, key string) string { return role + "-" + key }

// canonicalKey is what Key hashes. JSON gives it an unambiguous encoding:
// no value can pass for a field boundary.
type canonicalKey struct {
	Format int         `json:"format"`
	Role   string      `json:"role"`
	Image  string      `json:"image"`
	GPU    string      `json:"gpu"`
	Model  string      `json:"model"`
	Args   [][]string  `json:"args"`
	Env    [][2]string `json:"env"`
}

func (in KeyInputs) canonical() canonicalKey {
	k := canonicalKey{
		Format: Format,
		Role:   in.Role,
		Image:  in.imageIdentity(),
		GPU:    strings.TrimSpace(in.GPUModel),
		Model:  in.ModelID,
		Args:   NormalizeArgs(in.Args),
	}
	for _, name := range slices.Sorted(maps.Keys(in.Env)) {
		k.Env = append(k.Env, [2]string{name, in.Env[name]})
	}
	return k
}

func (in KeyInputs) imageIdentity() string {
	if in.ImageDigest != "" {
		return in.ImageDigest
	}
	return in.Image
}

// Describe is the key's inputs in readable form, for COMPLETE.json and log
// lines: an operator comparing two entries sees why their keys differ.
func (in KeyInputs) Describe() map[string]string {
	args := NormalizeArgs(in.Args)
	b, _ := json.Marshal(args) // a [][]string always marshals
	sum := sha256.Sum256(b)
	d := map[string]string{
		"format":             strconv.Itoa(Format),
		"role":               in.Role,
		"image":              in.Image,
		"gpu_model":          strings.TrimSpace(in.GPUModel),
		"sglang_args":        joinArgs(args),
		"sglang_args_sha256": hex.EncodeToString(sum[:]),
	}
	if in.ImageDigest != "" {
		d["image_digest"] = in.ImageDigest
	}
	if in.ModelID != "" {
		d["model_id"] = in.ModelID
	}
	if len(in.Env) > 0 {
		var env []string
		for _, name := range slices.Sorted(maps.Keys(in.Env)) {
			env = append(env, name+"="+in.Env[name])
		}
		d["env"] = strings.Join(env, " ")
	}
	return d
}

// NormalizeArgs groups an argument list into flags with their values, in
// order, spelling "--flag=value" as "--flag value" (argparse reads both the
// same) and dropping the flags that do not change the kernels. A token is a
// flag when it starts with "--" or with "-" and a letter; "-1" is a value.
// Values before the first flag (SGLang takes none) form a group of their own
// under the empty flag.
func NormalizeArgs(args []string) [][]string {
	var groups [][]string
	for _, a := range args {
		if isFlag(a) {
			flag, val, hasVal := strings.Cut(a, "=")
			g := []string{flag}
			if hasVal {
				g = append(g, val)
			}
			groups = append(groups, g)
			continue
		}
		if len(groups) == 0 {
			groups = append(groups, []string{""})
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], a)
	}
	return slices.DeleteFunc(groups, func(g []string) bool { return ignoredFlags[g[0]] })
}

func isFlag(a string) bool {
	if strings.HasPrefix(a, "--") {
		return len(a) > 2 // a bare "--" ends the options; it is no flag
	}
	return len(a) > 1 && a[0] == '-' && (a[1] >= 'a' && a[1] <= 'z' || a[1] >= 'A' && a[1] <= 'Z')
}

func joinArgs(groups [][]string) string {
	var parts []string
	for _, g := range groups {
		for _, s := range g {
			if s == "" || strings.ContainsAny(s, " \t\n'\"") {
				s = strconv.Quote(s)
			}
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, " ")
}

// kernelEnvPrefixes select the variables through which SGLang and DeepGEMM
// choose what to compile (SGLANG_JIT_DEEPGEMM_FAST_WARMUP compiles ~3K
// instead of ~128K variants) and how (SGL_DG_USE_NVRTC/DG_JIT_USE_NVRTC pick
// the compiler, which is part of DeepGEMM's own kernel hash).
var kernelEnvPrefixes = []string{
	"DG_JIT_", "SGL_DG_", "SGLANG_DG_", "SGL_JIT_DEEPGEMM", "SGLANG_JIT_DEEPGEMM",
	"SGL_ENABLE_JIT_DEEPGEMM", "SGLANG_ENABLE_JIT_DEEPGEMM",
}

// KernelEnv picks from environ ("NAME=value" entries, as os.Environ) the
// variables for KeyInputs.Env. Cache directory variables (SGLANG_DG_CACHE_DIR,
// DG_JIT_CACHE_DIR, ...) are left out: they name per-node paths, and
// SGLang overwrites DG_JIT_CACHE_DIR anyway.
func KernelEnv(environ []string) map[string]string {
	env := map[string]string{}
	for _, kv := range environ {
		name, val, _ := strings.Cut(kv, "=")
		if strings.Contains(name, "CACHE_DIR") {
			continue
		}
		for _, p := range kernelEnvPrefixes {
			if strings.HasPrefix(name, p) {
				env[name] = val
				break
			}
		}
	}
	return env
}
