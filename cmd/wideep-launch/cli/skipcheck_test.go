package cli

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// --skip-check takes only the preflight's check names, from the command
// line or WIDEEP_SKIP_CHECK (one a line); a typo is a usage error listing
// the valid names, before anything else is looked at.
func TestRunSkipCheck(t *testing.T) {
	const valid = "valid: ib-ports, gpudirect, memlock, shm, gpu-model, gpu-free"
	for name, tc := range map[string]struct {
		env  map[string]string
		args []string
		want []string
	}{
		"unknown name": {args: []string{"--skip-check", "shm", "--skip-check", "ibports"},
			want: []string{`--skip-check: unknown check "ibports"; ` + valid}},
		"unknown name from the environment": {env: map[string]string{"WIDEEP_SKIP_CHECK": "shm\ngpu"},
			want: []string{`--skip-check: unknown check "gpu"; ` + valid, `WIDEEP_SKIP_CHECK="shm\ngpu" (for --skip-check)`}},
		// Valid names pass, and the next check (outside Slurm) fails instead.
		"valid names": {args: []string{"--skip-check", "ib-ports", "--skip-check", "gpu-free"},
			want: []string{"not inside a Slurm job"}},
		"valid names from the environment": {env: map[string]string{"WIDEEP_SKIP_CHECK": "memlock\n shm \n"},
			want: []string{"not inside a Slurm job"}},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tc.env, append([]string{"run"}, tc.args...)...)
			assert.Equal(t, exitInput, code)
			assert.Empty(t, out)
			for _, w := range tc.want {
				assert.Contains(t, errOut, w)
			}
		})
	}
}
