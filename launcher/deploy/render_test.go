package deploy

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	file := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.WriteFile(file, got, 0o644))
		return
	}
	want, err := os.ReadFile(file)
	require.NoError(t, err, "run 'go test ./launcher/deploy -run %s -update' to create it", t.Name())
	assert.Equal(t, string(want), string(got), "differs from %s (-update rewrites it)", file)
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"":                       "''",
		"--tp-size":              "--tp-size",
		"/model/":                "/model/",
		"http://gpu01:2379":      "http://gpu01:2379",
		"A=b,c":                  "A=b,c",
		"a b":                    "'a b'",
		"it's":                   `'it'\''s'`,
		`{"a": 1}`:               `'{"a": 1}'`,
		"$HOME":                  "'$HOME'",
		"x;rm -rf /":             "'x;rm -rf /'",
		"*":                      "'*'",
		"~":                      "'~'",
		"line\nbreak":            "'line\nbreak'",
		"--mem-fraction=0.8":     "--mem-fraction=0.8",
		"max_payload: 64MB":      "'max_payload: 64MB'",
		"back\\slash`tick`!$(x)": "'back\\slash`tick`!$(x)'",
	} {
		assert.Equal(t, want, ShellQuote(in), "%q", in)
	}
}

// shellWords runs line through a real POSIX shell and returns the words it
// sees: proof that the quoting round-trips.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal("needs a POSIX sh")
	}
	out, err := exec.Command(sh, "-c", `for w in `+line+`; do printf '%s\0' "$w"; done`).Output()
	require.NoError(t, err, line)
	words := strings.Split(string(out), "\x00")
	return words[:len(words)-1]
}

func TestShellQuoteRoundTrip(t *testing.T) {
	in := []string{"", "plain", "a b", "it's", `"dq"`, "$HOME", "`id`", "*", "tab\there", "new\nline", "'", "''", `\`, "ünï"}
	var line []string
	for _, s := range in {
		line = append(line, ShellQuote(s))
	}
	assert.Equal(t, in, shellWords(t, strings.Join(line, " ")))
}

func secretSpec() Spec {
	s := spec8()
	s.PrefillEnv = []string{"HF_TOKEN=hf_abc", "my_api_key=k1", "AWS_SECRET_ACCESS_KEY=s1", "DB_PASSWORD=p1", "PLAIN=visible"}
	s.DecodeArgs = []string{"--api-key sk-123", "--admin-api-key=sk-456"}
	// --admin-api-key came after 0.5.6.post2, whose grammar would refuse it.
	s.SGLangVersion = "0.5.8"
	return s
}

func TestRedaction(t *testing.T) {
	plan, err := NewPlan(secretSpec(), "1", gpuHosts(8), nil)
	require.NoError(t, err)
	var out bytes.Buffer
	require.NoError(t, WriteTable(&out, plan))
	require.NoError(t, WriteJSON(&out, plan))
	require.NoError(t, WriteCommands(&out, plan, nil))
	// Messages name the string only: the output is long.
	for _, secret := range []string{"hf_abc", "=k1", "=s1", "=p1", "sk-123", "sk-456"} {
		assert.False(t, strings.Contains(out.String(), secret), "%q leaked", secret)
	}
	for _, shown := range []string{"'HF_TOKEN=<redacted>'", "'my_api_key=<redacted>'", "'AWS_SECRET_ACCESS_KEY=<redacted>'",
		"'DB_PASSWORD=<redacted>'", "PLAIN=visible", "--api-key '<redacted>'", "'--admin-api-key=<redacted>'",
		"--skip-tokenizer-init", `"HF_TOKEN": "<redacted>"`, `"--api-key",`} {
		assert.True(t, strings.Contains(out.String(), shown), "%q missing", shown)
	}
	// Rendering never changes the plan the runtime will execute.
	assert.Equal(t, "hf_abc", procByName(t, plan.Nodes[0], "prefill").Env["HF_TOKEN"])
	assert.Contains(t, procByName(t, plan.Nodes[4], "decode").Argv, "sk-123")
}

func TestIsSecretEnv(t *testing.T) {
	for name, want := range map[string]bool{
		"HF_TOKEN": true, "hf_token": true, "WIDEEP_JOB_TOKEN": true, "API_KEY": true, "SSH_KEYS": true,
		"Secret": true, "PGPASSWORD": true, "ETCD_ENDPOINTS": false, "NATS_SERVER": false, "PATH": false,
	} {
		assert.Equal(t, want, IsSecretEnv(name), name)
	}
	for f, want := range map[string]bool{
		"--api-key": true, "--hf-token": true, "--admin-api-key": true, "--skip-tokenizer-init": false,
		"--tokenizer-path": false, "--kv-cache-dtype": false, "--keyfile": false,
	} {
		assert.Equal(t, want, isSecretFlag(f), f)
	}
}

// TestWriteCommandsRoundTrip: each printed line, read by a real shell, gives
// back exactly the plan's environment and argv.
func TestWriteCommandsRoundTrip(t *testing.T) {
	s := spec8()
	s.PrefillArgs = []string{`--json-model-override-args={"n": "it's"}`}
	s.PrefillEnv = []string{"WEIRD=a b $c"}
	plan, err := NewPlan(s, "77", gpuHosts(8), nil)
	require.NoError(t, err)
	var out bytes.Buffer
	require.NoError(t, WriteCommands(&out, plan, nil))

	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	var cmds []string
	node := -1
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "# node "):
			node++
			n := plan.Nodes[node]
			assert.True(t, strings.HasPrefix(l, "# node "+strconv.Itoa(n.Index)+" "+n.Host+" ("+string(n.Role)), l)
		case l == "" || strings.HasPrefix(l, "mkdir -p "):
		default:
			cmds = append(cmds, l)
		}
	}
	assert.Contains(t, lines, "# node 0 gpu01 (prefill worker 0 rank 0, infra)")
	assert.Contains(t, lines, "# node 7 gpu08 (decode worker 0 rank 3)")
	assert.Contains(t, lines, `mkdir -p /tmp/wideep-77 && printf '%s\n' 'max_payload: 64MB' > /tmp/wideep-77/nats.conf`)

	var want [][]string
	for _, n := range plan.Nodes {
		for i, p := range n.Processes {
			w := []string{}
			if len(p.Env) > 0 {
				w = append(w, "env")
				for _, k := range sortedKeys(p.Env) {
					w = append(w, k+"="+p.Env[k])
				}
			}
			w = append(w, p.Argv...)
			if !p.Oneshot && i < len(n.Processes)-1 {
				w = append(w, "&")
			}
			want = append(want, w)
		}
	}
	require.Len(t, cmds, len(want))
	for i, c := range cmds {
		got := shellWords(t, strings.TrimSuffix(c, " &"))
		if strings.HasSuffix(c, " &") {
			got = append(got, "&")
		}
		assert.Equal(t, want[i], got, "line %d", i)
	}
}

func sortedKeys(m map[string]string) []string {
	k := make([]string, 0, len(m))
	for key := range m {
		k = append(k, key)
	}
	slices.Sort(k)
	return k
}

func TestWriteTableGolden(t *testing.T) {
	for name, tc := range map[string]struct {
		edit  func(*Spec)
		hosts []string
		addrs []string
	}{
		"plan-gpu01-08.table": {func(*Spec) {}, gpuHosts(8), nil},
		"plan-3p2-1d2-dedicated-resolved.table": {func(s *Spec) {
			s.PrefillWorkers, s.PrefillNodesPerWorker, s.DecodeNodesPerWorker = 3, 2, 2
			s.InfraPlacement, s.NoNATS = InfraDedicated, true
		}, gpuHosts(9), []string{"10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6",
			"10.1.0.7", "10.1.0.8", "10.1.0.9"}},
	} {
		t.Run(name, func(t *testing.T) {
			s := spec8()
			tc.edit(&s)
			plan, err := NewPlan(s, "1234", tc.hosts, tc.addrs)
			require.NoError(t, err)
			var out bytes.Buffer
			require.NoError(t, WriteTable(&out, plan))
			for _, l := range strings.Split(out.String(), "\n") {
				assert.LessOrEqual(t, utf8.RuneCountInString(l), 100, "fits in 100 columns: %q", l)
			}
			golden(t, name, out.Bytes())
		})
	}
}

func TestWriteJSON(t *testing.T) {
	s := spec8()
	s.PrefillNodesPerWorker, s.DecodeNodesPerWorker = 1, 1
	plan, err := NewPlan(s, "1234", gpuHosts(2), nil)
	require.NoError(t, err)
	var out bytes.Buffer
	require.NoError(t, WriteJSON(&out, plan))
	golden(t, "plan-1p1-1d1.json", out.Bytes())

	// The field names the issue fixes, checked on the decoded document.
	var doc map[string]any
	require.NoError(t, json.Unmarshal(out.Bytes(), &doc))
	nodes := doc["nodes"].([]any)
	require.Len(t, nodes, 2)
	n0 := nodes[0].(map[string]any)
	for k, want := range map[string]any{"index": 0.0, "host": "gpu01", "role": "prefill", "worker": 0.0,
		"node_rank": 0.0, "head": "gpu01"} {
		assert.Equal(t, want, n0[k], k)
	}
	procs := n0["processes"].([]any)
	fe := procs[2].(map[string]any)
	assert.Equal(t, "frontend", fe["name"])
	assert.Equal(t, []any{"python3", "-m", "dynamo.frontend", "--http-port=8000"}, fe["argv"])
	assert.Equal(t, "http://gpu01:2379", fe["env"].(map[string]any)["ETCD_ENDPOINTS"])
	etcd := procs[0].(map[string]any)
	assert.Equal(t, map[string]any{}, etcd["env"], "env is an object even when empty")
	for _, k := range []string{"frontend", "etcd_endpoints", "nats_server", "model", "workers", "rendezvous"} {
		assert.Contains(t, doc, k)
	}

	// Decoding gives back the plan.
	var back Plan
	require.NoError(t, json.Unmarshal(out.Bytes(), &back))
	assert.Equal(t, *plan, back)
}

func TestWritePortsGolden(t *testing.T) {
	for name, edit := range map[string]func(*Spec){
		"ports-1p4-1d4":        func(*Spec) {},
		"ports-3p2-1d2":        func(s *Spec) { s.PrefillWorkers, s.PrefillNodesPerWorker, s.DecodeNodesPerWorker = 3, 2, 2 },
		"ports-1p4-1d4-dp8":    func(s *Spec) { s.PrefillDPSize, s.DecodeDPSize = 8, 8 },
		"ports-1p4-1d4-0.5.18": func(s *Spec) { s.SGLangVersion = "0.5.18" },
	} {
		t.Run(name, func(t *testing.T) {
			s := spec8()
			edit(&s)
			plan, err := NewPlan(s, "1234", gpuHosts(s.NodesNeeded()), nil)
			require.NoError(t, err)
			var b bytes.Buffer
			require.NoError(t, WritePorts(&b, plan))
			golden(t, name+".table", b.Bytes())
		})
	}
}
