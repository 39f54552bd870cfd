package cli

import (
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
	assert.False(t, s.Precompile)
	assert.Equal(t, []string{"--cuda-graph-bs 1 2", "--chunked-prefill-size=4096,8192"}, s.PrefillArgs, "commas are not separators")
	assert.Equal(t, []string{"A=1,2"}, s.DecodeEnv)
	assert.Equal(t, 4, s.GPUsPerNode)
	assert.Equal(t, 31000, s.SGLangPort)
	assert.Equal(t, "deepseek-ai/DeepSeek-R1", s.ServedModelName, "unset flags keep the defaults")
}

func TestEnvName(t *testing.T) {
	assert.Equal(t, "WIDEEP_PREFILL_NODES_PER_WORKER", EnvName("prefill-nodes-per-worker"))
	assert.Equal(t, "WIDEEP_IFACE", EnvName("iface"))
}
