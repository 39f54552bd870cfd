package cli

import (
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestVersion(t *testing.T) {
	old := Version
	Version = "1.2.3-test" // what -ldflags -X sets
	t.Cleanup(func() { Version = old })
	want := "wideep-launch 1.2.3-test (" + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
	for _, args := range [][]string{{"version"}, {"--version"}, {"-v"}} {
		code, out, errOut := runCLI(t, nil, args...)
		require.Equal(t, 0, code, "%v: %s", args, errOut)
		assert.Equal(t, want, out, "%v", args)
		assert.Empty(t, errOut, "%v", args)
	}
}

func TestVersionErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"argument":     {[]string{"version", "extra"}, `version takes no arguments (got "extra")`},
		"unknown flag": {[]string{"version", "--short"}, "version: unknown flag: --short"},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := runCLI(t, nil, tc.args...)
			assert.Equal(t, 2, code)
			assert.Empty(t, out)
			assert.Contains(t, errOut, tc.want)
		})
	}
}
