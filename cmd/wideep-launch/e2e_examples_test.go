package main

// The example batch scripts are planned as they are written: each runs
// under bash with a stand-in srun that gives node 0's step environment and
// adds --dry-run, so the launcher prints the plan the real job would follow
// (every flag the script passes, checked) and starts nothing.

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestExamplesPlan(t *testing.T) {
	fake, err := filepath.Abs(filepath.Join("testdata", "examples"))
	require.NoError(t, err)
	examples, err := filepath.Abs(filepath.Join("..", "..", "examples"))
	require.NoError(t, err)
	for _, tc := range []struct {
		script, nodelist, node0 string
		env                     []string
	}{
		{"wideep.sbatch", "gpu[01-08]", "gpu01", nil},
		{"wideep-3p1d.sbatch", "gpu[01-08]", "gpu01", nil},
		{"wideep-enroot.sbatch", "gpu[01-08]", "gpu01", nil},
		{"wideep-sim.sbatch", "node[1-8]", "node1", nil},
	} {
		t.Run(tc.script, func(t *testing.T) {
			submit := t.TempDir()
			cmd := exec.Command("bash", filepath.Join(examples, tc.script))
			cmd.Dir = submit
			cmd.Env = append([]string{
				"PATH=" + fake + ":" + os.Getenv("PATH"),
				"HOME=" + submit,
				"LAUNCHER=" + launcherBin, "EXAMPLE_LAUNCHER=" + launcherBin,
				"SLURM_JOB_ID=4242", "SLURM_JOB_NODELIST=" + tc.nodelist, "SLURM_JOB_NUM_NODES=8",
				"SLURM_SUBMIT_DIR=" + submit, "EXAMPLE_NODE0=" + tc.node0,
				// Fixed, so the plans do not depend on the test's temp dirs.
				"WIDEEP_SIM_WORK=" + filepath.Join(submit, "sim"), "IMAGE_CACHE=" + filepath.Join(submit, "images"),
				"CONFIG_DIR=" + filepath.Join(submit, "configs"), "MODEL_DIR=/shared/models/DeepSeek-R1",
			}, tc.env...)
			out, err := cmd.Output()
			var stderr string
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			require.NoError(t, err, "%s", stderr)
			out = []byte(strings.ReplaceAll(string(out), submit, "<submit-dir>"))
			// The keys hash the model path, here under the test's temp dir;
			// deploy's tests pin them.
			out = cacheKey.ReplaceAll(out, []byte("-<key>"))
			golden(t, filepath.Join("examples", strings.TrimSuffix(tc.script, ".sbatch")+".plan"), out)
			assert.Contains(t, string(out), "dry run: this is node 0")
		})
	}
}

var cacheKey = regexp.MustCompile(`-[0-9a-f]{16}\b`)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name (-update rewrites it).
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, got, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run with -update to create %s", path)
	assert.Equal(t, string(want), string(got), "differs from %s (-update rewrites it)", path)
}
