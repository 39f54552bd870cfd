package cli

import (
	"fmt"
	"io"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/launcher/deploy"
)

func TestRegisterFlags(t *testing.T) {
	s := deploy.DefaultSpec()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	bindSpecFlags(fs, &s)

	fs.VisitAll(func(f *pflag.Flag) {
		assert.Contains(t, f.Usage, "(env "+EnvName(f.Name)+")", "--%s names its variable", f.Name)
	})
	require.NoError(t, fs.Parse([]string{
		"--model-path", "/m", "--prefill-workers=3", "--prefill-nodes-per-worker", "2",
		"--decode-nodes-per-worker=2", "--infra-node", "dedicated", "--no-nats", "--precompile=false",
		"--prefill-arg", "--cuda-graph-bs 1 2", "--prefill-arg", "--chunked-prefill-size=4096,8192",
		"--decode-env", "A=1,2", "--gpus-per-node", "4", "--sglang-port", "31000",
	}))
	assert.Equal(t, "/m", s.ModelPath)
	assert.Equal(t, 3, s.PrefillWorkers)
	assert.Equal(t, 2, s.PrefillNodesPerWorker)
	assert.Equal(t, 2, s.DecodeNodesPerWorker)
	assert.Equal(t, deploy.InfraDedicated, s.InfraPlacement)
	assert.True(t, s.NoNATS)
	assert.Equal(t, deploy.PrecompileNever, s.Precompile, "the old boolean spelling still works")
	assert.Equal(t, []string{"--cuda-graph-bs 1 2", "--chunked-prefill-size=4096,8192"}, s.PrefillArgs, "commas are not separators")
	assert.Equal(t, []string{"A=1,2"}, s.DecodeEnv)
	assert.Equal(t, 4, s.GPUsPerNode)
	assert.Equal(t, 31000, s.SGLangPort)
	assert.Equal(t, "deepseek-ai/DeepSeek-R1", s.ServedModelName, "unset flags keep the defaults")
}

func TestPrecompileFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
		err  string
	}{
		{nil, deploy.PrecompileAuto, ""},
		{[]string{"--precompile"}, "", "flag needs an argument: --precompile"},
		{[]string{"--precompile=always"}, deploy.PrecompileAlways, ""},
		{[]string{"--precompile", "never"}, deploy.PrecompileNever, ""},
		{[]string{"--precompile=true"}, deploy.PrecompileAuto, ""},
		{[]string{"--precompile=sometimes"}, "", `invalid argument "sometimes" for "--precompile" flag: want auto, always or never`},
	} {
		t.Run(fmt.Sprint(tc.args), func(t *testing.T) {
			s := deploy.DefaultSpec()
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			fs.SetOutput(io.Discard)
			bindSpecFlags(fs, &s)
			err := fs.Parse(tc.args)
			if tc.err != "" {
				require.Error(t, err)
				assert.Equal(t, tc.err, err.Error())
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, s.Precompile)
		})
	}
}

func TestFinishSpec(t *testing.T) {
	env := map[string]string{"SLURM_TMPDIR": "/local/job9", "SGLANG_JIT_DEEPGEMM_FAST_WARMUP": "1"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	environ := []string{"SGLANG_JIT_DEEPGEMM_FAST_WARMUP=1", "SGLANG_DG_CACHE_DIR=/x", "HOME=/root"}

	s := deploy.DefaultSpec()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	bindSpecFlags(fs, &s)
	require.NoError(t, fs.Parse(nil))
	finishSpec(fs, lookup, environ, &s)
	assert.Equal(t, "/local/job9/wideep-dg", s.DGLocalDir, "Slurm's per-job local disk when it has one")
	assert.Equal(t, map[string]string{"SGLANG_JIT_DEEPGEMM_FAST_WARMUP": "1"}, s.KernelEnv, "cache dirs are per node, not in the key")

	s = deploy.DefaultSpec()
	fs = pflag.NewFlagSet("test", pflag.ContinueOnError)
	bindSpecFlags(fs, &s)
	require.NoError(t, fs.Parse([]string{"--dg-local-dir", "/nvme/dg"}))
	finishSpec(fs, lookup, environ, &s)
	assert.Equal(t, "/nvme/dg", s.DGLocalDir, "the flag wins")
}

func TestEnvName(t *testing.T) {
	assert.Equal(t, "WIDEEP_PREFILL_NODES_PER_WORKER", EnvName("prefill-nodes-per-worker"))
	assert.Equal(t, "WIDEEP_IFACE", EnvName("iface"))
}
