package health

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/launcher/deploy"
)

// FuzzParse feeds arbitrary bodies to the /health parser node 0 polls. It
// must never panic; an error quotes only a bounded excerpt of the body (it
// goes to every progress line); the counts only count distinct "generate"
// instances of the roles; and what it parsed, written back as a body,
// parses the same (the counts depend on nothing Parse dropped).
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"status":"healthy","instances":[{"component":"prefill","endpoint":"generate","namespace":"dynamo","instance_id":7587888160958628000,"transport":{"tcp":"10.0.0.1:34567"}},` +
			`{"component":"backend","endpoint":"generate","instance_id":1,"transport":{"nats_tcp":"x"}}]}`,
		`{"status":"unhealthy","endpoints":[],"instances":[]}`,
		`{"status":"healthy","instances":[{"component":"decode","endpoint":"generate","instance_id":18446744073709551615,"host":"gpu05"}]}`,
		`{"instances":[{"component":"prefill","endpoint":"generate","instance_id":1},{"component":"prefill","endpoint":"generate","instance_id":1}]}`,
		`{"instances":[null,{"host":7,"transport":{"tcp":"tcp://[::1]:80/x"}}]}`, `{"status":null}`, `[]`, `null`, ``, `{"status":"ok"} trailing`,
		`{"instances":{"a":1}}`, "{\"status\":\"\xff\"}", `{"status":1e999}`,
	} {
		f.Add([]byte(s))
	}
	// Every real body (testdata/dynamo).
	real, err := filepath.Glob(filepath.Join("testdata", "dynamo", "*.json"))
	require.NoError(f, err)
	for _, name := range real {
		f.Add(realBody(f, filepath.Base(name)))
	}
	// A long body that is not JSON: the error must quote only its start.
	f.Add(bytes.Repeat([]byte("\x00<html>"), 1024))
	f.Fuzz(func(t *testing.T, body []byte) {
		st, err := Parse(body)
		if err != nil {
			require.Zero(t, st.Prefill+st.Decode)
			require.LessOrEqual(t, len(err.Error()), 2048, "error quotes too much of a %d-byte body", len(body))
			return
		}
		var generate [3]int // by role: none, prefill, decode
		for _, in := range st.Instances {
			if in.Endpoint == "generate" {
				generate[roleIndex(healthRole(in.Component))]++
			}
		}
		require.LessOrEqual(t, st.Prefill, generate[1])
		require.LessOrEqual(t, st.Decode, generate[2])
		require.GreaterOrEqual(t, st.Prefill, min(generate[1], 1), "a prefill instance was not counted")
		require.GreaterOrEqual(t, st.Decode, min(generate[2], 1), "a decode instance was not counted")

		again, err := Parse(writeBody(t, st))
		require.NoError(t, err)
		require.Equal(t, st, again, "%q written back parses differently", body)
	})
}

func roleIndex(r deploy.Role) int {
	switch r {
	case deploy.RolePrefill:
		return 1
	case deploy.RoleDecode:
		return 2
	}
	return 0
}

// writeBody is a /health body with st's status and instances.
func writeBody(t *testing.T, st Status) []byte {
	type instance struct {
		Component  string `json:"component"`
		Endpoint   string `json:"endpoint"`
		Namespace  string `json:"namespace"`
		InstanceID string `json:"instance_id"`
		Host       string `json:"host"`
	}
	body := struct {
		Status    string     `json:"status"`
		Instances []instance `json:"instances"`
	}{Status: st.Status}
	for _, in := range st.Instances {
		body.Instances = append(body.Instances, instance{in.Component, in.Endpoint, in.Namespace, in.InstanceID, in.Host})
	}
	b, err := json.Marshal(body)
	require.NoError(t, err)
	return b
}
