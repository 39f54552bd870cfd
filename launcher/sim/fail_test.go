package sim

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseFailures(t *testing.T) {
	tests := map[string]struct {
		spec    string
		want    []Failure
		wantErr string
	}{
		"empty": {spec: "", want: nil},
		"startup with code": {
			spec: "gpu06:startup:3",
			want: []Failure{{Host: "gpu06", Role: "worker", Stage: StageStartup, Code: 3}},
		},
		"default code": {
			spec: "*:startup",
			want: []Failure{{Host: "*", Role: "worker", Stage: StageStartup, Code: 1}},
		},
		"serve with role and several entries": {
			spec: "gpu01/frontend:serve=1m30s:7, gpu07/decode:noregister",
			want: []Failure{
				{Host: "gpu01", Role: "frontend", Stage: StageServe, After: 90 * time.Second, Code: 7},
				{Host: "gpu07", Role: "decode", Stage: StageNoRegister, Code: 1},
			},
		},
		"trailing comma": {
			spec: "n1/precompile:startup:0,",
			want: []Failure{{Host: "n1", Role: "precompile", Stage: StageStartup, Code: 0}},
		},
		"unknown stage":        {spec: "gpu01:boot:1", wantErr: `unknown stage "boot"`},
		"serve needs duration": {spec: "gpu01:serve:1", wantErr: "serve needs a duration"},
		"bad duration":         {spec: "gpu01:serve=soon:1", wantErr: `bad duration "soon"`},
		"startup with arg":     {spec: "gpu01:startup=1s:1", wantErr: "takes no '=' argument"},
		"code out of range":    {spec: "gpu01:startup:256", wantErr: `exit code "256"`},
		"code not a number":    {spec: "gpu01:startup:x", wantErr: `exit code "x"`},
		"unknown role":         {spec: "gpu01/router:startup", wantErr: `unknown role "router"`},
		"empty host":           {spec: ":startup", wantErr: "empty host"},
		"one field":            {spec: "gpu01", wantErr: "want 2 or 3 fields"},
		"too many fields":      {spec: "gpu01:startup:1:2", wantErr: "want 2 or 3 fields"},
		"second entry is bad":  {spec: "gpu01:startup,gpu02", wantErr: `entry "gpu02"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseFailures(tc.spec)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				assert.Contains(t, err.Error(), "WIDEEP_SIM_FAIL")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestFindFailure(t *testing.T) {
	fails, err := ParseFailures("gpu06:startup:3,gpu01/frontend:serve=1s:4,*/precompile:startup:5,gpu02/prefill:noregister")
	require.NoError(t, err)
	tests := map[string]struct {
		hosts    []string
		role     string
		stage    string
		wantCode int
		want     bool
	}{
		"worker on the named node":         {hosts: []string{"gpu06"}, role: roleDecode, stage: StageStartup, want: true, wantCode: 3},
		"matched by host name":             {hosts: []string{"n6", "gpu06"}, role: rolePrefill, stage: StageStartup, want: true, wantCode: 3},
		"default role is workers only":     {hosts: []string{"gpu06"}, role: roleFrontend, stage: StageStartup},
		"other node":                       {hosts: []string{"gpu05"}, role: roleDecode, stage: StageStartup},
		"other stage":                      {hosts: []string{"gpu06"}, role: roleDecode, stage: StageServe},
		"explicit role":                    {hosts: []string{"gpu01"}, role: roleFrontend, stage: StageServe, want: true, wantCode: 4},
		"wildcard host":                    {hosts: []string{"anything"}, role: rolePrecompile, stage: StageStartup, want: true, wantCode: 5},
		"role prefill does not hit decode": {hosts: []string{"gpu02"}, role: roleDecode, stage: StageNoRegister},
		"role prefill hits prefill":        {hosts: []string{"gpu02"}, role: rolePrefill, stage: StageNoRegister, want: true, wantCode: 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			fl, ok := findFailure(fails, tc.hosts, tc.role, tc.stage)
			require.Equal(t, tc.want, ok)
			if ok {
				assert.Equal(t, tc.wantCode, fl.Code)
			}
		})
	}
}
