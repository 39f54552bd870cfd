package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// helpGoldens maps the --help of every visible command (and of the program)
// to its golden file. plan's is TestPlanHelp's.
var helpGoldens = map[string]string{
	"":          "help.golden",
	"hostnames": "hostnames-help.golden",
	"hostlist":  "hostlist-help.golden",
	"version":   "version-help.golden",
	"exec":      "exec-help.golden",
	"run":       "run-help.golden",
	"plan":      "plan-help.golden",
	"summary":   "summary-help.golden",
}

// pollutedEnv sets variables that would change the commands' behaviour, some
// of them invalid: the help must neither show them nor fail on them.
func pollutedEnv() map[string]string {
	return map[string]string{
		"SLURM_JOB_ID": "9", "SLURM_STEP_NODELIST": "node[1-8]", "SLURM_NODEID": "x",
		"WIDEEP_GRACE": "soon", "WIDEEP_ROLE": "decode", "WIDEEP_LOG_DIR": "/elsewhere", "WIDEEP_LOG": "/tmp/x.log",
		"WIDEEP_PREFILL_WORKERS": "three", "WIDEEP_MODEL_PATH": "/elsewhere", "WIDEEP_LOG_FORMAT": "json",
	}
}

func TestHelp(t *testing.T) {
	for cmd, file := range helpGoldens {
		if cmd == "plan" {
			continue // TestPlanHelp
		}
		name := cmd
		if name == "" {
			name = "wideep-launch"
		}
		t.Run(name, func(t *testing.T) {
			args := []string{"--help"}
			if cmd != "" {
				args = []string{cmd, "--help"}
			}
			code, out, errOut := runCLI(t, nil, args...)
			require.Equal(t, 0, code, errOut)
			assert.Empty(t, errOut)
			golden(t, file, []byte(out))
			for _, l := range strings.Split(out, "\n") {
				assert.LessOrEqual(t, utf8.RuneCountInString(l), 100, "%q", l)
			}

			// -h is --help, and the environment changes nothing.
			short := append(args[:len(args)-1:len(args)-1], "-h")
			code, outShort, errOut := runCLI(t, nil, short...)
			require.Equal(t, 0, code, errOut)
			assert.Equal(t, out, outShort, "%v", short)
			code, outEnv, errOut := runCLI(t, pollutedEnv(), args...)
			require.Equal(t, 0, code, errOut)
			assert.Equal(t, out, outEnv, "help with WIDEEP_* and SLURM_* set")
		})
	}
}

func TestHelpCommand(t *testing.T) {
	code, want, _ := runCLI(t, nil, "--help")
	require.Equal(t, 0, code)
	code, out, errOut := runCLI(t, nil, "help")
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, want, out)

	// "help CMD" is "CMD --help"; an unknown CMD is a usage error.
	code, want, _ = runCLI(t, nil, "run", "--help")
	require.Equal(t, 0, code)
	code, out, errOut = runCLI(t, nil, "help", "run")
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, want, out)
	code, out, errOut = runCLI(t, nil, "help", "bogus")
	assert.Equal(t, 2, code)
	assert.Empty(t, out)
	assert.Contains(t, errOut, `unknown command "bogus"`)
}

// Every visible command is listed and has a golden help; hidden ones (sim)
// are not listed.
func TestHelpListsVisibleCommands(t *testing.T) {
	code, out, errOut := runCLI(t, nil, "--help")
	require.Equal(t, 0, code, errOut)
	require.NotEmpty(t, commands)
	for name, c := range commands {
		line := "\n  " + name + " "
		if c.hidden {
			assert.NotContains(t, out, line, "hidden command %s is listed", name)
			continue
		}
		assert.Contains(t, out, line+strings.Repeat(" ", 10-len(name))+c.summary, "command %s", name)
		file, ok := helpGoldens[name]
		if assert.True(t, ok, "command %s has no help golden file in helpGoldens", name) {
			_, err := os.Stat(filepath.Join("testdata", file))
			assert.NoError(t, err)
		}
	}
	require.Contains(t, commands, "sim", "the hidden command this test relies on")
}

func TestRouting(t *testing.T) {
	_, usage, _ := runCLI(t, nil, "--help")
	require.NotEmpty(t, usage)
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"no command":         {nil, "wideep-launch: no command given\n"},
		"unknown command":    {[]string{"bogus"}, "wideep-launch: unknown command \"bogus\"\n"},
		"flag for a command": {[]string{"--bogus"}, "wideep-launch: unknown command \"--bogus\"\n"},
		"empty command":      {[]string{""}, "wideep-launch: unknown command \"\"\n"},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := runCLI(t, nil, tc.args...)
			assert.Equal(t, 2, code)
			assert.Empty(t, out)
			assert.Equal(t, usage+tc.want, errOut, "usage, then the error, on stderr")
		})
	}
}

// generatedBlock matches a README block the binary writes: its command line
// in the opening comment, the output in a text fence.
var generatedBlock = regexp.MustCompile("(?s)<!-- generated: ([^>]*?) -->\n(.*?)<!-- /generated -->")

// The README shows the reference plan and the flag reference as the binary
// prints them; -update rewrites them there.
func TestREADMEShowsWhatTheBinaryPrints(t *testing.T) {
	path := filepath.Join("..", "..", "..", "README.md")
	readme, err := os.ReadFile(path)
	require.NoError(t, err)
	blocks := generatedBlock.FindAllSubmatchIndex(readme, -1)
	require.Len(t, blocks, 3, "the plan and the run and plan flag references")
	var out bytes.Buffer
	last := 0
	for _, b := range blocks {
		args := strings.Fields(string(readme[b[2]:b[3]]))
		code, stdout, stderr := runCLI(t, nil, args...)
		require.Equal(t, 0, code, "%v: %s", args, stderr)
		want := "```text\n" + stdout + "```\n"
		if !*update {
			assert.Equal(t, want, string(readme[b[4]:b[5]]), "README block %q differs from the binary's output (-update rewrites it)", args)
		}
		out.Write(readme[last:b[4]])
		out.WriteString(want)
		last = b[5]
	}
	out.Write(readme[last:])
	if *update {
		require.NoError(t, os.WriteFile(path, out.Bytes(), 0o644))
	}
}
