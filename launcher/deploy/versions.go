package deploy

import (
	"encoding/json"
	"fmt"
	"strings"
)

// VersionProbe is the Python the launcher runs in the image (python3 -c,
// through the runtime) to learn which SGLang and Dynamo it holds: it prints
// one JSON object of distribution → version (null when not installed). The
// distributions are SGLang's and Dynamo's pip names.
const VersionProbe = `import json
from importlib import metadata
v = {}
for d in ("sglang", "ai-dynamo", "ai-dynamo-runtime"):
    try:
        v[d] = metadata.version(d)
    except metadata.PackageNotFoundError:
        v[d] = None
print(json.dumps(v))`

// Versions is what VersionProbe found.
type Versions struct {
	SGLang        string `json:"sglang"`
	Dynamo        string `json:"dynamo"`
	DynamoRuntime string `json:"dynamo_runtime,omitempty"`
}

// ParseVersions reads VersionProbe's output.
func ParseVersions(out []byte) (Versions, error) {
	var m map[string]*string
	if err := json.Unmarshal([]byte(strings.TrimSpace(string(out))), &m); err != nil {
		return Versions{}, fmt.Errorf("the version probe printed %q: %w", strings.TrimSpace(string(out)), err)
	}
	get := func(k string) string {
		if v := m[k]; v != nil {
			return *v
		}
		return ""
	}
	return Versions{SGLang: get("sglang"), Dynamo: get("ai-dynamo"), DynamoRuntime: get("ai-dynamo-runtime")}, nil
}

// String is "SGLang 0.5.6.post2, Dynamo 0.8.0".
func (v Versions) String() string {
	or := func(s string) string {
		if s == "" {
			return "not installed"
		}
		return s
	}
	return "SGLang " + or(v.SGLang) + ", Dynamo " + or(v.Dynamo)
}

// CheckImage says what is wrong with running this plan on an image holding
// v: an SGLang the plan was not made for binds other ports and takes other
// flags. "" when it fits.
func (s Spec) CheckImage(v Versions) string {
	switch {
	case v.SGLang == "":
		return "the image has no sglang package (python3 -c 'importlib.metadata.version(\"sglang\")' fails in it)"
	case v.SGLang != s.SGLangVersion:
		return fmt.Sprintf("the image holds SGLang %s, but the plan is made for SGLang %s (its ports and flags differ "+
			"between releases): pass --sglang-version %s, or use the image the plan was made for", v.SGLang, s.SGLangVersion, v.SGLang)
	}
	return ""
}

// deprecation is a worker flag that changed meaning or went away in a
// release: the plan warns before the worker would.
type deprecation struct {
	flag    string
	since   string // the SGLang release
	removed string // the release that refuses it ("": none known)
	what    string
}

// deprecations come from SGLang's history: --prefill-round-robin-balance is
// a no-op with a warning since 0.5.8 (sgl-project/sglang PR #16195) and no
// longer parsed by 0.5.20; --cuda-graph-bs became an alias of
// --cuda-graph-bs-decode in 0.5.14.
var deprecations = []deprecation{
	{"--prefill-round-robin-balance", "0.5.8", "0.5.20", "deprecated since SGLang 0.5.8 (a no-op with a warning) and refused by later releases: remove it with !--prefill-round-robin-balance"},
	{"--cuda-graph-bs", "0.5.14", "", "an alias of --cuda-graph-bs-decode since SGLang 0.5.14: prefill graphs use --cuda-graph-bs-prefill"},
}

// Deprecations lists the planned worker flags the plan's SGLang release
// deprecated, one warning each, naming role and flag.
func (s Spec) Deprecations() []string {
	have, err := parseVersion(s.SGLangVersion)
	if err != nil {
		return nil
	}
	var out []string
	if have.less(portModelSince) {
		out = append(out, fmt.Sprintf("SGLang %s: the plan's port model starts at 0.5.3.post2; before it each DP rank "+
			"bound --dist-init-port+1+rank, which the preflight does not check", s.SGLangVersion))
	}
	for _, r := range s.roles() {
		for _, a := range s.roleArgs(r) {
			for _, d := range deprecations {
				since, _ := parseVersion(d.since)
				if a.flag == d.flag && !have.less(since) && !d.refusedBy(have) {
					out = append(out, fmt.Sprintf("%s worker flag %s: %s", r.role, d.flag, d.what))
				}
			}
		}
	}
	return out
}

// portModelSince is the first release whose ports the plan models: from it
// on the DP ranks' ports are random (see sglangPorts).
var portModelSince, _ = parseVersion("0.5.3.post2")

func (d deprecation) refusedBy(v version) bool {
	if d.removed == "" {
		return false
	}
	removed, err := parseVersion(d.removed)
	return err == nil && !v.less(removed)
}

// validateRemovedFlags refuses the planned worker flags the plan's SGLang
// release no longer parses: the worker would exit with argparse's usage
// error after the image, the compile and the weights, on every node.
func (s Spec) validateRemovedFlags(v *validator) {
	have, err := parseVersion(s.SGLangVersion)
	if err != nil {
		return
	}
	for _, r := range s.roles() {
		for _, a := range s.roleArgs(r) {
			for _, d := range deprecations {
				if a.flag == d.flag && d.refusedBy(have) {
					v.addf("%s worker flag %s: SGLang %s no longer accepts it (removed in %s): remove it with --%s-arg '!%s'",
						r.role, d.flag, s.SGLangVersion, d.removed, r.role, d.flag)
				}
			}
		}
	}
}
