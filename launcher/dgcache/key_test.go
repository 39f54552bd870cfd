package dgcache

import (
	"regexp"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// baseInputs is a decode worker of the WideEP guide, as node 5 of 8 would
// compute its key.
func baseInputs() KeyInputs {
	return KeyInputs{
		Role:        "decode",
		Image:       "nvcr.io/nvidia/ai-dynamo/sglang-runtime:0.5.1",
		ImageDigest: "sha256:1111111111111111111111111111111111111111111111111111111111111111",
		GPUModel:    "NVIDIA H100 80GB HBM3",
		ModelID:     "deepseek-ai/DeepSeek-R1",
		Args: []string{
			"--model-path", "/model/", "--served-model-name", "deepseek-ai/DeepSeek-R1",
			"--disaggregation-mode", "decode", "--disaggregation-bootstrap-port", "30001",
			"--host", "0.0.0.0", "--port", "30000", "--nccl-port", "29600",
			"--dist-init-addr", "10.0.0.5:29500", "--nnodes", "4", "--node-rank", "1",
			"--tp-size", "32", "--dp-size", "32", "--enable-dp-attention",
			"--moe-a2a-backend", "deepep", "--deepep-mode", "low_latency",
			"--cuda-graph-bs", "128", "--mem-fraction-static", "0.835",
		},
		Env: map[string]string{"SGLANG_JIT_DEEPGEMM_FAST_WARMUP": "0"},
	}
}

// replaceArg returns args with the value after flag replaced by val.
func replaceArg(args []string, flag, val string) []string {
	out := slices.Clone(args)
	i := slices.Index(out, flag)
	if i < 0 {
		panic("no " + flag)
	}
	out[i+1] = val
	return out
}

func TestKey(t *testing.T) {
	base := baseInputs()
	for name, tc := range map[string]struct {
		edit func(in *KeyInputs)
		same bool
	}{
		"identical inputs": {edit: func(*KeyInputs) {}, same: true},
		"--flag=value spelling": {same: true, edit: func(in *KeyInputs) {
			i := slices.Index(in.Args, "--cuda-graph-bs")
			in.Args = slices.Concat(in.Args[:i], []string{"--cuda-graph-bs=128"}, in.Args[i+2:])
		}},
		"another node of the worker": {same: true, edit: func(in *KeyInputs) {
			in.Args = replaceArg(in.Args, "--node-rank", "3")
		}},
		"another job's head, ports and host": {same: true, edit: func(in *KeyInputs) {
			for flag, val := range map[string]string{
				"--dist-init-addr": "10.9.9.9:29501", "--port": "31000", "--nccl-port": "29700",
				"--disaggregation-bootstrap-port": "31001", "--host": "10.9.9.9",
			} {
				in.Args = replaceArg(in.Args, flag, val)
			}
		}},
		"node-specific flags left out": {same: true, edit: func(in *KeyInputs) {
			in.Args = slices.Concat(in.Args[:6], in.Args[16:18], in.Args[20:])
		}},
		"another --served-model-name": {same: true, edit: func(in *KeyInputs) {
			in.Args = replaceArg(in.Args, "--served-model-name", "r1")
		}},
		"weights mounted elsewhere": {same: true, edit: func(in *KeyInputs) {
			in.Args = replaceArg(in.Args, "--model-path", "/lustre/models/DeepSeek-R1")
		}},
		"image retagged, same digest":  {same: true, edit: func(in *KeyInputs) { in.Image = "registry.local/sglang:prod" }},
		"GPU name with trailing blank": {same: true, edit: func(in *KeyInputs) { in.GPUModel += " \n" }},
		"--cuda-graph-bs 64": {edit: func(in *KeyInputs) {
			in.Args = replaceArg(in.Args, "--cuda-graph-bs", "64")
		}},
		"a flag added": {edit: func(in *KeyInputs) { in.Args = append(in.Args, "--enable-two-batch-overlap") }},
		"flags reordered": {edit: func(in *KeyInputs) {
			i := slices.Index(in.Args, "--tp-size")
			in.Args = slices.Concat(in.Args[:i], in.Args[i+2:i+4], in.Args[i:i+2], in.Args[i+4:])
		}},
		"another GPU model":           {edit: func(in *KeyInputs) { in.GPUModel = "NVIDIA H200" }},
		"another image digest":        {edit: func(in *KeyInputs) { in.ImageDigest = "sha256:2222" }},
		"image without digest":        {edit: func(in *KeyInputs) { in.ImageDigest = "" }},
		"another role":                {edit: func(in *KeyInputs) { in.Role = "prefill" }},
		"another model":               {edit: func(in *KeyInputs) { in.ModelID = "deepseek-ai/DeepSeek-V3" }},
		"fast warmup":                 {edit: func(in *KeyInputs) { in.Env = map[string]string{"SGLANG_JIT_DEEPGEMM_FAST_WARMUP": "1"} }},
		"no kernel environment":       {edit: func(in *KeyInputs) { in.Env = nil }},
		"value moved to another flag": {edit: func(in *KeyInputs) { in.Args = append(in.Args, "--a", "--b=x") }},
	} {
		t.Run(name, func(t *testing.T) {
			in := baseInputs()
			in.Args = slices.Clone(in.Args)
			tc.edit(&in)
			if tc.same {
				assert.Equal(t, Key(base), Key(in))
			} else {
				assert.NotEqual(t, Key(base), Key(in))
			}
		})
	}
}

// A reference without a digest keys by itself: another tag is another image.
func TestKeyWithoutDigestUsesReference(t *testing.T) {
	a, b := baseInputs(), baseInputs()
	a.ImageDigest, b.ImageDigest = "", ""
	b.Image = "/images/sglang.sqsh"
	assert.NotEqual(t, Key(a), Key(b))
}

// The key recipe is pinned: when this value changes, old entries would be
// silently orphaned or, worse, reused under another meaning, so a change
// must come with a new Format. The value was computed outside Go, as the
// first 16 hex digits of SHA-256 over the compact JSON
// {"format":1,"role":"decode","image":"sha256:11…","gpu":…,"model":…,
// "args":[["--disaggregation-mode","decode"],["--nnodes","4"],…],"env":[…]}.
func TestKeyIsStable(t *testing.T) {
	assert.Equal(t, "1c2210b3f164aecd", Key(baseInputs()), "the key recipe changed: bump Format and update this value")
	assert.Regexp(t, regexp.MustCompile(`^[0-9a-f]{16}$`), Key(KeyInputs{}))
}

func TestEntryName(t *testing.T) {
	assert.Equal(t, "prefill-0123456789abcdef", EntryName("prefill", "0123456789abcdef"))
}

func TestNormalizeArgs(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		want [][]string
	}{
		"flags with values":   {args: []string{"--tp-size", "32", "--enable-dp-attention"}, want: [][]string{{"--tp-size", "32"}, {"--enable-dp-attention"}}},
		"equals spelling":     {args: []string{"--tp-size=32", "--x=a=b"}, want: [][]string{{"--tp-size", "32"}, {"--x", "a=b"}}},
		"negative value":      {args: []string{"--watchdog-timeout", "-1"}, want: [][]string{{"--watchdog-timeout", "-1"}}},
		"short flag":          {args: []string{"-v", "--a"}, want: [][]string{{"-v"}, {"--a"}}},
		"several values":      {args: []string{"--cuda-graph-bs", "1", "2", "4"}, want: [][]string{{"--cuda-graph-bs", "1", "2", "4"}}},
		"leading values":      {args: []string{"x", "--a", "1"}, want: [][]string{{"", "x"}, {"--a", "1"}}},
		"bare double dash":    {args: []string{"--a", "--"}, want: [][]string{{"--a", "--"}}},
		"ignored with values": {args: []string{"--host", "0.0.0.0", "--a", "--port=1", "--node-rank", "2"}, want: [][]string{{"--a"}}},
		"nothing":             {args: nil, want: nil},
	} {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, NormalizeArgs(tc.args))
		})
	}
}

func TestDescribe(t *testing.T) {
	d := baseInputs().Describe()
	assert.Equal(t, "decode", d["role"])
	assert.Equal(t, "1", d["format"])
	assert.Equal(t, baseInputs().ImageDigest, d["image_digest"])
	assert.Equal(t, "NVIDIA H100 80GB HBM3", d["gpu_model"])
	assert.Equal(t, "deepseek-ai/DeepSeek-R1", d["model_id"])
	assert.Equal(t, "SGLANG_JIT_DEEPGEMM_FAST_WARMUP=0", d["env"])
	assert.Contains(t, d["sglang_args"], "--cuda-graph-bs 128")
	assert.NotContains(t, d["sglang_args"], "--node-rank", "node-specific flags are not key inputs")
	assert.Len(t, d["sglang_args_sha256"], 64)

	other := baseInputs()
	other.Args = replaceArg(other.Args, "--node-rank", "0")
	assert.Equal(t, d, other.Describe(), "what the key ignores, the description ignores too")
	_, ok := KeyInputs{Role: "prefill"}.Describe()["image_digest"]
	assert.False(t, ok, "unknown values are left out, not written empty")
}

func TestKernelEnv(t *testing.T) {
	got := KernelEnv([]string{
		"SGLANG_JIT_DEEPGEMM_FAST_WARMUP=1", "SGL_DG_USE_NVRTC=1", "DG_JIT_USE_NVRTC=0",
		"SGLANG_ENABLE_JIT_DEEPGEMM=1",
		"SGLANG_DG_CACHE_DIR=/tmp/node5/dg", "SGL_DG_CACHE_DIR=/tmp/node5/dg", "DG_JIT_CACHE_DIR=/x",
		"SGLANG_DG_CACHE_DIR_PER_PROCESS=1", "HOME=/root", "SLURM_NODEID=5", "NO_EQUALS",
	})
	require.Equal(t, map[string]string{
		"SGLANG_JIT_DEEPGEMM_FAST_WARMUP": "1", "SGL_DG_USE_NVRTC": "1", "DG_JIT_USE_NVRTC": "0",
		"SGLANG_ENABLE_JIT_DEEPGEMM": "1",
	}, got)
}
