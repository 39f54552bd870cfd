package sim

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/launcher/sim/simtest"
	"github.com/wideep/wideep-launch/launcher/testport"
	"github.com/wideep/wideep-launch/launcher/testproc"
)

// helpers makes the test binary act as `wideep-launch sim` (the helper
// "sim"; the os/exec helper-process pattern, see launcher/testproc), for the
// tests that need a real process (SIGKILL, real signals).
var helpers = testproc.New("WIDEEP_SIM_TEST_HELPER")

func init() {
	helpers.Register("sim", func(args []string) int {
		sigs := make(chan os.Signal, 2)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		return Main(args, os.LookupEnv, os.Stdout, os.Stderr, sigs)
	})
}

func TestMain(m *testing.M) { helpers.Main(m) }

// waitTimeout bounds every wait of these tests so a bug fails instead of
// hanging; it is never what makes a test pass.
const waitTimeout = 30 * time.Second

// standInRun is a stand-in running in a goroutine of the test.
type standInRun struct {
	t       *testing.T
	stdout  *simtest.SyncBuffer
	stderr  *simtest.SyncBuffer
	sigs    chan os.Signal
	serving chan Record
	exit    chan int
}

// startStandIn runs the stand-in for argv with exactly env as environment.
func startStandIn(t *testing.T, argv []string, env map[string]string) *standInRun {
	t.Helper()
	r := &standInRun{
		t: t, stdout: &simtest.SyncBuffer{}, stderr: &simtest.SyncBuffer{},
		sigs: make(chan os.Signal, 1), serving: make(chan Record, 1), exit: make(chan int, 1),
	}
	s := &standIn{
		env:      func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		stdout:   r.stdout,
		stderr:   r.stderr,
		sigs:     r.sigs,
		hostname: func() (string, error) { return "testhost.example", nil },
		onServing: func(rec Record) {
			r.serving <- rec
		},
	}
	go func() { r.exit <- s.main(argv) }()
	t.Cleanup(func() {
		select {
		case r.sigs <- syscall.SIGTERM:
		default:
		}
		select {
		case <-r.exit:
		case <-time.After(waitTimeout):
			t.Errorf("stand-in %v did not stop; stderr:\n%s", argv, r.stderr)
		}
	})
	return r
}

// run runs the stand-in to completion and returns its exit code.
func run(t *testing.T, argv []string, env map[string]string) (int, *standInRun) {
	t.Helper()
	r := startStandIn(t, argv, env)
	return r.wait(), r
}

// waitServing waits until the stand-in serves; it fails the test if the
// stand-in exits first.
func (r *standInRun) waitServing() Record {
	r.t.Helper()
	select {
	case rec := <-r.serving:
		return rec
	case code := <-r.exit:
		r.exit <- code
		r.t.Fatalf("stand-in exited with code %d before serving; stderr:\n%s", code, r.stderr)
	case <-time.After(waitTimeout):
		r.t.Fatalf("stand-in not serving after %v; stderr:\n%s", waitTimeout, r.stderr)
	}
	return Record{}
}

func (r *standInRun) wait() int {
	r.t.Helper()
	select {
	case code := <-r.exit:
		r.exit <- code // for the cleanup
		return code
	case <-time.After(waitTimeout):
		r.t.Fatalf("stand-in did not exit after %v; stderr:\n%s", waitTimeout, r.stderr)
	}
	return -1
}

// terminate sends SIGTERM and returns the exit code.
func (r *standInRun) terminate() int {
	r.t.Helper()
	r.sigs <- syscall.SIGTERM
	return r.wait()
}

// workerArgv is the reference deployment's command line for one node
// (dynamo-sglang-wideep-h100), with the per-node values filled in; extra
// replaces or adds flags.
func workerArgv(role string, nnodes, rank int, distInit string, extra ...string) []string {
	argv := []string{"python3", "-m", "dynamo.sglang",
		"--model-path", "/model/",
		"--served-model-name", "deepseek-ai/DeepSeek-R1",
		"--skip-tokenizer-init",
		"--disaggregation-mode", role,
		"--disaggregation-transfer-backend", "nixl",
		"--host", "127.0.0.1",
		"--dist-init-addr", distInit,
		"--nnodes", strconv.Itoa(nnodes),
		"--node-rank", strconv.Itoa(rank),
		"--tp-size", strconv.Itoa(8 * nnodes),
		"--dp-size", strconv.Itoa(8 * nnodes),
		"--enable-dp-attention",
		"--decode-log-interval", "1000",
		"--moe-a2a-backend", "deepep",
		"--page-size", "1",
		"--trust-remote-code",
		"--moe-dense-tp-size", "1",
		"--enable-dp-lm-head",
		"--disable-radix-cache",
		"--watchdog-timeout", "1000000",
		"--enable-two-batch-overlap",
		"--ep-num-redundant-experts", "32",
	}
	if role == "prefill" {
		argv = append(argv,
			"--disaggregation-bootstrap-port", "0",
			"--load-balance-method", "round_robin",
			"--deepep-mode", "normal",
			"--mem-fraction-static", "0.85",
			"--deepep-config", "/configs/deepep.json",
			"--ep-dispatch-algorithm", "dynamic",
			"--eplb-algorithm", "deepseek")
	} else {
		argv = append(argv,
			"--disaggregation-bootstrap-port", "30001",
			"--prefill-round-robin-balance",
			"--deepep-mode", "low_latency",
			"--mem-fraction-static", "0.835",
			"--cuda-graph-bs", "128")
	}
	return append(argv, extra...)
}

func readRecord(t *testing.T, dir, node, role string) Record {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, node+"."+role+".json"))
	require.NoError(t, err)
	var rec Record
	require.NoError(t, json.Unmarshal(data, &rec))
	return rec
}

func TestSplitPython(t *testing.T) {
	tests := map[string]struct {
		argv    []string
		module  string
		rest    []string
		wantErr string
	}{
		"plain":           {argv: []string{"python3", "-m", "dynamo.sglang", "--x"}, module: "dynamo.sglang", rest: []string{"--x"}},
		"path and opts":   {argv: []string{"/usr/bin/python3.12", "-u", "-X", "dev", "-m", "dynamo.frontend"}, module: "dynamo.frontend", rest: []string{}},
		"joined -m":       {argv: []string{"python", "-msglang.compile_deep_gemm", "a"}, module: "sglang.compile_deep_gemm", rest: []string{"a"}},
		"not python":      {argv: []string{"etcd", "--data-dir", "x"}, wantErr: `cannot simulate "etcd"`},
		"script":          {argv: []string{"python3", "serve.py"}, wantErr: `python script "serve.py"`},
		"-m without name": {argv: []string{"python3", "-m"}, wantErr: "argument expected for the -m option"},
		"empty":           {argv: nil, wantErr: "no command to simulate"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			module, rest, err := splitPython(tc.argv)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.module, module)
			assert.Equal(t, tc.rest, rest)
		})
	}
}

func TestMainRejectsWhatItCannotSimulate(t *testing.T) {
	tests := map[string]struct {
		argv []string
		want string
	}{
		"unknown module": {[]string{"python3", "-m", "vllm.entrypoints.api_server"}, `no stand-in for python module "vllm.entrypoints.api_server"`},
		"not python":     {[]string{"nats-server", "-js"}, `cannot simulate "nats-server"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := Main(tc.argv, func(string) (string, bool) { return "", false }, &bytes.Buffer{}, &stderr, nil)
			assert.Equal(t, 2, code)
			assert.Contains(t, stderr.String(), tc.want)
		})
	}
}

// The helper process is the stand-in as the launcher runs it: a process of
// its own, with real signals.
func helperCommand(t *testing.T, argv []string, env ...string) (*exec.Cmd, *simtest.SyncBuffer) {
	t.Helper()
	cmd := helpers.Command(t, "sim", argv...)
	cmd.Env = append(cmd.Env, env...)
	out := &simtest.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	return cmd, out
}

func TestMainInHelperProcessRejectsBadNodeRank(t *testing.T) {
	cmd, out := helperCommand(t, workerArgv("decode", 2, 0, "127.0.0.1:1", "--node-rank", "two"))
	err := cmd.Run()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "output:\n%s", out)
	assert.Equal(t, 2, ee.ExitCode())
	assert.Contains(t, out.String(), "python3 -m dynamo.sglang: error: argument --node-rank: invalid int value: 'two'")
}

func envMap(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// freeAddr is 127.0.0.1 with a port that is free together with the 13
// above it (SGLang's derived ports, which the stand-ins check as SGLang
// does), held for this test alone (see testport).
func freeAddr(t *testing.T) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(testport.Window(t, 14)))
}
