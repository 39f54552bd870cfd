package argspec

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDynamoFrontend(t *testing.T) {
	fe := DynamoFrontend()
	// FrontendArgGroup @c6b40e78 registers 43 actions, plus argparse's -h.
	assert.Len(t, fe.Flags(), 44)
	for _, opt := range []string{"-h", "--help", "--version", "-i", "--no-interactive", "--http-port", "--kv-events",
		"--no-kv-events", "--no-router-kv-events", "--router-ttl", "--dyn-preprocess-workers"} {
		_, ok := fe.Lookup(opt)
		assert.True(t, ok, opt)
	}
	for _, gone := range []string{"--response-plane", "--tokenizer", "--model-path-or-name"} {
		_, ok := fe.Lookup(gone)
		assert.False(t, ok, gone)
	}

	args, err := fe.Parse([]string{"--http-port=8000", "--router-mode", "kv", "--http-h", "::", "--no-kv-events", "-i"})
	require.NoError(t, err)
	assert.Equal(t, []Arg{
		{Flag: "--http-port", Option: "--http-port", Tokens: []string{"--http-port=8000"}},
		{Flag: "--router-mode", Option: "--router-mode", Tokens: []string{"--router-mode", "kv"}},
		{Flag: "--http-host", Option: "--http-host", Tokens: []string{"--http-h", "::"}},
		{Flag: "--router-kv-events", Option: "--no-kv-events", Tokens: []string{"--no-kv-events"}},
		{Flag: "--interactive", Option: "-i", Tokens: []string{"-i"}},
	}, args)

	tests := map[string]struct {
		argv         []string
		msg          string
		unrecognized []string
	}{
		"bad int":    {[]string{"--http-port", "http"}, "argument --http-port: invalid int value: 'http'", nil},
		"bad choice": {[]string{"--router-mode", "least-loaded"}, "argument --router-mode: invalid choice: 'least-loaded' (choose from 'round-robin', 'random', 'kv', 'direct')", nil},
		"ambiguous":  {[]string{"--router-kv"}, "ambiguous option: --router-kv could match --router-kv-overlap-score-weight, --router-kv-events", nil},
		// Value errors come before unknown arguments, as in parse_known_args.
		"bad value first": {[]string{"--grpc-port=9000", "--http-port", "x"}, "argument --http-port: invalid int value: 'x'", nil},
		"unknown only":    {[]string{"--grpc-port=9000", "--http-port", "1", "a b"}, "unrecognized arguments: --grpc-port=9000 a b", []string{"--grpc-port=9000", "a b"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := fe.Parse(tc.argv)
			var perr *Error
			require.ErrorAs(t, err, &perr)
			assert.Equal(t, tc.msg, perr.Msg)
			assert.Equal(t, tc.unrecognized, perr.Unrecognized)
		})
	}
}
