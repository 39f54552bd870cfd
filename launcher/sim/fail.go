package sim

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Stages of an injected failure (WIDEEP_SIM_FAIL).
const (
	// StageStartup exits with the code right after the arguments were
	// parsed, before any rendezvous or listening.
	StageStartup = "startup"
	// StageServe exits with the code after serving for a while (after the
	// instance was registered).
	StageServe = "serve"
	// StageNoRegister serves normally but never registers in etcd, so the
	// health gate never sees the instance.
	StageNoRegister = "noregister"
	// StageDeregister serves for a while, then removes its registration
	// from etcd and goes on running: a worker alive but no longer serving.
	StageDeregister = "deregister"
	// StageHang serves for a while, then stops answering: a frontend whose
	// requests never return, a worker that prints nothing more. Written
	// without a duration ("node4:hang") it is StageStartupHang.
	StageHang = "hang"
	// StageStartupHang is a worker that goes silent during its start-up,
	// after "Load weight begin", and never registers: a hang in NCCL or
	// DeepEP initialisation. Written "hang" in WIDEEP_SIM_FAIL.
	StageStartupHang = "hang-at-startup"
	// StageSyncFail is a precompile that compiles every kernel and then
	// fails as compile_deep_gemm does when the server refuses its last
	// request (images without the FAKE_BOOTSTRAP_HOST fix): a traceback
	// ending in "RuntimeError: Sync request failed: ..." and exit 1.
	StageSyncFail = "syncfail"
)

// Failure is one entry of WIDEEP_SIM_FAIL:
//
//	<host>[/<role>]:<stage>[:<code>]
//
// host is a node name or "*"; role is worker (the default: any SGLang
// worker), prefill, decode, frontend, precompile or "*"; stage is startup,
// serve=<duration>, noregister, deregister=<duration>, hang=<duration>,
// hang (silent at start-up) or syncfail (precompile only);
// code defaults to 1 (only startup and serve exit). Entries are separated by
// commas, e.g. "gpu06:startup:3,*/frontend:serve=30s:1,gpu05:deregister=2s".
type Failure struct {
	Host  string
	Role  string
	Stage string
	After time.Duration // how long to serve first (StageServe, StageDeregister, StageHang)
	Code  int
}

func (f Failure) String() string {
	stage := f.Stage
	if stage == StageStartupHang {
		stage = StageHang
	}
	if f.Stage == StageServe || f.Stage == StageDeregister || f.Stage == StageHang {
		stage += "=" + f.After.String()
	}
	return fmt.Sprintf("%s/%s:%s:%d", f.Host, f.Role, stage, f.Code)
}

var failRoles = []string{"worker", "prefill", "decode", "frontend", "precompile", "*"}

// ParseFailures parses a WIDEEP_SIM_FAIL value. All entries are checked so a
// typo fails the stand-in loudly instead of silently injecting nothing.
func ParseFailures(spec string) ([]Failure, error) {
	var out []Failure
	for _, entry := range strings.Split(spec, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		fl, err := parseFailure(entry)
		if err != nil {
			return nil, fmt.Errorf("WIDEEP_SIM_FAIL entry %q: %w (want <host>[/<role>]:<stage>[:<code>], stage startup, serve=<duration>, noregister, deregister=<duration>, hang, hang=<duration> or syncfail)", entry, err)
		}
		out = append(out, fl)
	}
	return out, nil
}

func parseFailure(entry string) (Failure, error) {
	parts := strings.Split(entry, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return Failure{}, fmt.Errorf("want 2 or 3 fields separated by ':', got %d", len(parts))
	}
	fl := Failure{Host: parts[0], Role: "worker", Code: 1}
	if h, r, ok := strings.Cut(parts[0], "/"); ok {
		fl.Host, fl.Role = h, r
		if !slices.Contains(failRoles, r) {
			return Failure{}, fmt.Errorf("unknown role %q (one of %s)", r, strings.Join(failRoles, ", "))
		}
	}
	if fl.Host == "" {
		return Failure{}, fmt.Errorf("empty host (use '*' for every node)")
	}
	stage, arg, hasArg := strings.Cut(parts[1], "=")
	switch stage {
	case StageStartup, StageNoRegister, StageSyncFail:
		if hasArg {
			return Failure{}, fmt.Errorf("stage %s takes no '=' argument", stage)
		}
	case StageHang:
		if !hasArg {
			fl.Stage = StageStartupHang
			break
		}
		d, err := time.ParseDuration(arg)
		if err != nil || d < 0 {
			return Failure{}, fmt.Errorf("bad duration %q for stage %s", arg, stage)
		}
		fl.After, fl.Stage = d, stage
	case StageServe, StageDeregister:
		if !hasArg {
			return Failure{}, fmt.Errorf("stage %s needs a duration: %s=<duration>", stage, stage)
		}
		d, err := time.ParseDuration(arg)
		if err != nil || d < 0 {
			return Failure{}, fmt.Errorf("bad duration %q for stage %s", arg, stage)
		}
		fl.After = d
	default:
		return Failure{}, fmt.Errorf("unknown stage %q", parts[1])
	}
	if fl.Stage == "" {
		fl.Stage = stage
	}
	if len(parts) == 3 {
		code, err := strconv.Atoi(parts[2])
		if err != nil || code < 0 || code > 255 {
			return Failure{}, fmt.Errorf("exit code %q is not a number in 0..255", parts[2])
		}
		fl.Code = code
	}
	return fl, nil
}

// findFailure returns the first failure of the given stage that applies to a
// stand-in of role running on a node known by any of hosts.
func findFailure(fails []Failure, hosts []string, role, stage string) (Failure, bool) {
	for _, fl := range fails {
		if fl.Stage != stage || !roleMatches(fl.Role, role) {
			continue
		}
		if fl.Host == "*" || slices.Contains(hosts, fl.Host) {
			return fl, true
		}
	}
	return Failure{}, false
}

func roleMatches(want, role string) bool {
	switch want {
	case "*", role:
		return true
	case "worker":
		return role == rolePrefill || role == roleDecode || role == roleAggregated
	}
	return false
}
