package cli

import (
	"encoding/json"
	"errors"
	"io/fs"
	"path/filepath"

	"github.com/wideep/wideep-launch/launcher/node"
)

func init() {
	register(command{name: "summary", summary: "print a finished job's summary again", run: runSummary})
}

const summaryDescription = `Print the summary node 0 wrote when the job ended (<log-dir>/<job id>/summary.json):
how it ended (ready then stopped, failed, stalled, time limit), the first
failure with the last lines of the process that failed, the DeepGEMM cache,
which node got how far, and where the logs are.`

func runSummary(sys System, args []string) error {
	f := newFlagSet(sys, "summary", "wideep-launch summary [--json] <log-dir>/<job id>", summaryDescription)
	asJSON := f.Bool("json", false, "print summary.json itself")
	if err := parseFlags(f, args); err != nil {
		return err
	}
	if f.NArg() != 1 {
		return usageErrorf("summary takes one job log directory (<log-dir>/<job id>), got %d arguments", f.NArg())
	}
	dir := f.Arg(0)
	s, err := node.ReadSummary(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return usageErrorf("%s: no %s there (node 0 writes it when the job ends)", dir, filepath.Join(dir, node.SummaryFile))
	}
	if err != nil {
		return usageErrorf("%v", err)
	}
	if *asJSON {
		enc := json.NewEncoder(sys.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	return node.WriteSummaryText(sys.Stdout, s)
}
