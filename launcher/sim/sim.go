// Package sim holds the simulation stand-ins of `wideep-launch --simulate`:
// lightweight replacements for the SGLang worker (python3 -m dynamo.sglang),
// the Dynamo frontend (python3 -m dynamo.frontend) and the DeepGEMM
// precompile (python3 -m sglang.compile_deep_gemm). Each receives the real
// argv and environment of the process it replaces and behaves like it on the
// network: strict flag parsing, a torch-style rendezvous at --dist-init-addr,
// the ports the real server binds, instance registration in etcd (through
// its HTTP/JSON gateway) and the frontend's /health and /v1/models answers.
//
// Environment read by the stand-ins besides the real programs' own
// (ETCD_ENDPOINTS, DYN_NAMESPACE, DYN_TCP_RPC_HOST, DYN_HTTP_PORT,
// SGLANG_DG_CACHE_DIR, SLURMD_NODENAME):
//
//	WIDEEP_SIM_RECORD_DIR        write <dir>/<node>.<role>.json describing what the stand-in was given and did
//	WIDEEP_SIM_TERM_DELAY        delay between SIGTERM/SIGINT and the clean exit (default 0)
//	WIDEEP_SIM_PRECOMPILE_DELAY  how long the precompile "compiles" (default 0)
//	WIDEEP_SIM_STARTUP_DELAY     how long a worker "loads weights", printing a progress line a second (default 0)
//	WIDEEP_SIM_SGLANG_VERSION    the SGLang the simulated image holds (default 0.5.6.post2; "none": not installed)
//	WIDEEP_SIM_DYNAMO_VERSION    the Dynamo it holds (default 0.8.0)
//	WIDEEP_SIM_PRECOMPILE_LINGER node rank 0's precompile leaves a child holding the dist-init port
//	                             this long after it exits (a duration, or forever)
//	WIDEEP_SIM_LEASE_TTL         etcd lease TTL of worker instances, seconds (default 10, as Dynamo)
//	WIDEEP_SIM_FAIL              injected failures, see Failure
//	WIDEEP_SIM_ORPHAN            1: each worker leaves a setsid daemon ignoring SIGTERM (see EnvOrphan)
//	WIDEEP_SIM_BIND_HOST         bind this address wherever the real program binds every address
//	                             (0.0.0.0): several simulated nodes on one host, each on its own
//	                             loopback address (127.0.0.N), use the same ports without colliding
//
// Durations are Go durations ("1.5s") or plain seconds ("2").
package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Environment variables of the stand-ins.
const (
	EnvRecordDir       = "WIDEEP_SIM_RECORD_DIR"
	EnvTermDelay       = "WIDEEP_SIM_TERM_DELAY"
	EnvPrecompileDelay = "WIDEEP_SIM_PRECOMPILE_DELAY"
	EnvStartupDelay    = "WIDEEP_SIM_STARTUP_DELAY"
	EnvSGLangVersion   = "WIDEEP_SIM_SGLANG_VERSION"
	EnvDynamoVersion   = "WIDEEP_SIM_DYNAMO_VERSION"
	EnvLeaseTTL        = "WIDEEP_SIM_LEASE_TTL"
	EnvFail            = "WIDEEP_SIM_FAIL"
	EnvBindHost        = "WIDEEP_SIM_BIND_HOST"
	// EnvPrecompileLinger makes node rank 0's precompile leave a child that
	// holds the dist-init port this long after it exits ("forever": until
	// killed).
	EnvPrecompileLinger = "WIDEEP_SIM_PRECOMPILE_LINGER"
)

// Roles of the stand-ins, as used in record file names and WIDEEP_SIM_FAIL.
const (
	rolePrefill    = "prefill"
	roleDecode     = "decode"
	roleAggregated = "aggregated" // --disaggregation-mode null
	roleFrontend   = "frontend"
	rolePrecompile = "precompile"
)

// Python modules the stand-ins replace.
const (
	ModuleWorker     = "dynamo.sglang"
	ModuleFrontend   = "dynamo.frontend"
	ModulePrecompile = "sglang.compile_deep_gemm"
)

const (
	exitUsage = 2
	exitError = 1
	// exitTerm is what the launcher sees from a real Python process killed
	// by SIGTERM in the middle of its work.
	exitTerm = 128 + int(syscall.SIGTERM)
)

// Main runs the stand-in for a real command line such as
// `python3 -m dynamo.sglang --model-path /model/ ...` and returns its exit
// code. env is the process environment; sigs delivers SIGTERM/SIGINT (nil
// when the caller does not forward signals).
func Main(args []string, env func(string) (string, bool), stdout, stderr io.Writer, sigs <-chan os.Signal) int {
	s := &standIn{env: env, stdout: stdout, stderr: stderr, sigs: sigs, hostname: os.Hostname}
	return s.main(args)
}

// standIn carries what a stand-in takes from the outside world.
type standIn struct {
	env            func(string) (string, bool)
	stdout, stderr io.Writer
	sigs           <-chan os.Signal
	hostname       func() (string, error)

	// onServing, when set, is called once the stand-in serves (after
	// registration for a worker), with the record it wrote. Tests use it
	// instead of polling.
	onServing func(Record)

	argv   []string // the whole original command line
	logMu  sync.Mutex
	prefix string
	silent bool // an injected hang: nothing more is said
}

func (s *standIn) main(args []string) int {
	s.argv = args
	if len(args) == 1 && args[0] == orphanArg {
		return runOrphan()
	}
	if len(args) > 0 && args[0] == lingerArg {
		return runLinger(args[1:])
	}
	if len(args) == 3 && args[1] == "-c" {
		return s.runVersionProbe(args[2])
	}
	module, rest, err := splitPython(args)
	if err != nil {
		fmt.Fprintf(s.stderr, "wideep-launch sim: %v\n", err)
		return exitUsage
	}
	switch module {
	case ModuleWorker:
		return s.runWorker(rest)
	case ModuleFrontend:
		return s.runFrontend(rest)
	case ModulePrecompile:
		return s.runPrecompile(rest)
	}
	fmt.Fprintf(s.stderr, "wideep-launch sim: no stand-in for python module %q (know %s, %s, %s)\n",
		module, ModuleWorker, ModuleFrontend, ModulePrecompile)
	return exitUsage
}

// splitPython finds the module of a `python3 [options] -m module args...`
// command line.
func splitPython(argv []string) (module string, rest []string, err error) {
	if len(argv) == 0 {
		return "", nil, errors.New("no command to simulate (want: sim python3 -m <module> args...)")
	}
	base := filepath.Base(argv[0])
	if base != "python" && !strings.HasPrefix(base, "python3") && !strings.HasPrefix(base, "python2") {
		return "", nil, fmt.Errorf("cannot simulate %q: only python3 -m <module> command lines have stand-ins", argv[0])
	}
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		switch {
		case a == "-m":
			if i+1 >= len(argv) {
				return "", nil, errors.New("python: argument expected for the -m option")
			}
			return argv[i+1], argv[i+2:], nil
		case strings.HasPrefix(a, "-m"):
			return a[2:], argv[i+1:], nil
		case a == "-W" || a == "-X":
			i++ // option with a separate argument
		case strings.HasPrefix(a, "-") && len(a) > 1:
			// -u, -B, -O, -E, -s, -I, ... take no argument
		default:
			return "", nil, fmt.Errorf("cannot simulate python script %q: only -m <module> has stand-ins", a)
		}
	}
	return "", nil, errors.New("cannot simulate python without -m <module>")
}

func (s *standIn) logf(format string, v ...any) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	if s.silent {
		return
	}
	fmt.Fprintf(s.stderr, "%s"+format+"\n", append([]any{s.prefix}, v...)...)
}

func (s *standIn) getenv(name string) string {
	if s.env == nil {
		return ""
	}
	v, _ := s.env(name)
	return v
}

// nodeNames are the names this node answers to: SLURMD_NODENAME (the Slurm
// node name) first, then the host name and its short form. The first one
// names the record file.
func (s *standIn) nodeNames() []string {
	var names []string
	add := func(n string) {
		if n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	add(s.getenv("SLURMD_NODENAME"))
	if s.hostname != nil {
		if h, err := s.hostname(); err == nil {
			add(h)
			short, _, _ := strings.Cut(h, ".")
			add(short)
		}
	}
	if len(names) == 0 {
		names = []string{"localhost"}
	}
	return names
}

// durationEnv reads a duration variable: a Go duration or plain seconds.
func (s *standIn) durationEnv(name string, def time.Duration) (time.Duration, error) {
	v := strings.TrimSpace(s.getenv(name))
	if v == "" {
		return def, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return d, nil
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil && secs >= 0 {
		return time.Duration(secs * float64(time.Second)), nil
	}
	return 0, fmt.Errorf("%s=%q: want a duration such as 1.5s or a number of seconds", name, v)
}

// terminated returns a context cancelled when SIGTERM or SIGINT arrives, and
// a function that stops watching.
func (s *standIn) terminated() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case sig, ok := <-s.sigs:
				if !ok {
					return
				}
				if sig == syscall.SIGTERM || sig == os.Interrupt {
					s.logf("received %s", signalName(sig))
					cancel(errTerminated{sig})
					return
				}
			}
		}
	}()
	var once sync.Once
	return ctx, func() { once.Do(func() { close(done); cancel(nil) }) }
}

type errTerminated struct{ sig os.Signal }

func (e errTerminated) Error() string { return "terminated by " + signalName(e.sig) }

func signalName(sig os.Signal) string {
	switch sig {
	case syscall.SIGTERM:
		return "SIGTERM"
	case os.Interrupt:
		return "SIGINT"
	}
	return sig.String()
}

// terminationReason says which signal stopped the stand-in.
func terminationReason(ctx context.Context) string {
	if err := context.Cause(ctx); err != nil {
		return err.Error()
	}
	return "terminated"
}

// isTerminated tells whether ctx ended because of a termination signal.
func isTerminated(ctx context.Context) bool {
	var t errTerminated
	return errors.As(context.Cause(ctx), &t)
}

// Record is what a stand-in writes to $WIDEEP_SIM_RECORD_DIR/<node>.<role>.json:
// what it was given and what it actually did on the network, so tests can
// check the plan against reality.
type Record struct {
	Role     string            `json:"role"` // prefill, decode, aggregated, frontend, precompile
	Module   string            `json:"module"`
	Node     string            `json:"node"` // SLURMD_NODENAME, else the host name
	Hostname string            `json:"hostname,omitempty"`
	PID      int               `json:"pid"`
	Argv     []string          `json:"argv"`
	Env      map[string]string `json:"env"`
	// CPUs is how many CPUs the stand-in may run on (its affinity).
	CPUs int `json:"cpus"`

	NodeRank     int    `json:"node_rank"`
	NNodes       int    `json:"nnodes"`
	DistInitAddr string `json:"dist_init_addr,omitempty"`
	Model        string `json:"model,omitempty"`

	Rendezvous *RendezvousRecord `json:"rendezvous,omitempty"`
	// Listen maps what a port is for ("dist_init", "http", "bootstrap") to
	// the address actually bound.
	Listen   map[string]string `json:"listen,omitempty"`
	Instance *Instance         `json:"instance,omitempty"`
	EtcdKey  string            `json:"etcd_key,omitempty"`
	CacheDir string            `json:"cache_dir,omitempty"`
	Kernels  []string          `json:"kernels,omitempty"`

	State    string `json:"state"` // starting, serving, exited
	ExitCode *int   `json:"exit_code,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Started  string `json:"started"`
	Updated  string `json:"updated"`
}

// RendezvousRecord is the torch-style rendezvous as one node saw it.
type RendezvousRecord struct {
	// Listen is the address node rank 0 listened on.
	Listen string `json:"listen,omitempty"`
	// ConnectedTo is the remote address of the connection of a node rank >0
	// to rank 0, i.e. the address --dist-init-addr actually reached.
	ConnectedTo string `json:"connected_to,omitempty"`
	LocalAddr   string `json:"local_addr,omitempty"`
	// Peers are all node ranks of the worker as rank 0 acknowledged them.
	Peers []Hello `json:"peers,omitempty"`
}

// recordedEnv are the variables copied into records: the ones the launcher
// exports to the real processes.
var recordedEnv = []string{
	"ETCD_ENDPOINTS", "NATS_SERVER",
	"DYN_TCP_RPC_HOST", "DYN_TCP_RESPONSE_STREAM_HOST", "DYN_EVENT_PLANE_HOST",
	"DYN_NAMESPACE", "DYN_REQUEST_PLANE", "DYN_EVENT_PLANE", "DYN_SYSTEM_PORT", "DYN_HTTP_PORT",
	"DYN_LOG", "DYN_SKIP_SGLANG_LOG_FORMATTING",
	"GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", "CUDA_VISIBLE_DEVICES",
	"SGLANG_DG_CACHE_DIR", "SGL_DG_CACHE_DIR", "TORCH_DISTRIBUTED_DEFAULT_TIMEOUT",
	"SLURM_JOB_ID", "SLURM_NODEID", "SLURM_PROCID", "SLURMD_NODENAME",
	// Recorded so that tests can tell they did not come through.
	"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "SLURM_CPU_BIND", "SLURM_TRES_PER_TASK", "WIDEEP_SECRET",
}

func (s *standIn) newRecord(role, module string) *Record {
	names := s.nodeNames()
	env := map[string]string{}
	for _, name := range recordedEnv {
		if s.env != nil {
			if v, ok := s.env(name); ok {
				env[name] = v
			}
		}
	}
	var hostname string
	if s.hostname != nil {
		hostname, _ = s.hostname()
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	var cpus unix.CPUSet
	_ = unix.SchedGetaffinity(0, &cpus)
	return &Record{
		Role: role, Module: module, Node: names[0], Hostname: hostname, PID: os.Getpid(),
		Argv: s.argv, Env: env, CPUs: cpus.Count(),
		NNodes: 1, State: "starting", Started: now, Updated: now,
	}
}

// save publishes rec (write temp + rename) when WIDEEP_SIM_RECORD_DIR is set.
func (s *standIn) save(rec *Record) {
	dir := s.getenv(EnvRecordDir)
	if dir == "" {
		return
	}
	rec.Updated = time.Now().UTC().Format(time.RFC3339Nano)
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		s.logf("record: %v", err)
		return
	}
	if err := writeFileAtomic(filepath.Join(dir, rec.Node+"."+rec.Role+".json"), append(data, '\n')); err != nil {
		s.logf("record: %v", err)
	}
}

func (s *standIn) finish(rec *Record, code int, reason string) int {
	rec.State = "exited"
	rec.ExitCode = &code
	rec.Reason = reason
	s.save(rec)
	return code
}

// writeFileAtomic publishes data at path: readers see the old file or the
// whole new one, never a partial write.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// bindHost is where the stand-in binds when the real program would bind
// host: WIDEEP_SIM_BIND_HOST replaces a wildcard.
func (s *standIn) bindHost(host string) string {
	if v := s.getenv(EnvBindHost); v != "" && (host == "" || host == "0.0.0.0" || host == "::") {
		return v
	}
	return host
}

// listenTCP binds host:port; an IPv4 host (0.0.0.0 included) binds IPv4
// only, as Python servers given that host do.
func listenTCP(host string, port int) (net.Listener, error) {
	network := "tcp"
	if ip := net.ParseIP(host); ip != nil && ip.To4() != nil {
		network = "tcp4"
	}
	return net.Listen(network, net.JoinHostPort(host, strconv.Itoa(port)))
}

// sleepCtx waits d or until ctx ends; it reports whether the full d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
