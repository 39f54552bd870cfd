package enroot

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// The launcher checks a container path on the node through the mounts: the
// example mounts the model directory at /model, and the host has no /model.
func TestHostPath(t *testing.T) {
	r := &Runtime{Mounts: []Mount{
		{Src: "/lustre/models/DeepSeek-R1", Dst: "/model", ReadOnly: true},
		{Src: "/shared/configs", Dst: "/configs"},
		{Src: "/shared/configs-override", Dst: "/configs/deep"},
		{Src: "/scratch/job", Dst: "/scratch/job"},
	}}
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"/model", "/lustre/models/DeepSeek-R1", true},
		{"/model/", "/lustre/models/DeepSeek-R1", true},
		{"/model/config.json", "/lustre/models/DeepSeek-R1/config.json", true},
		{"/modelx", "", false},                                            // a sibling, not under the mount
		{"/configs/deep/x.json", "/shared/configs-override/x.json", true}, // the deepest mount wins
		{"/configs/deepep.json", "/shared/configs/deepep.json", true},
		{"/scratch/job/../job/m", "/scratch/job/m", true},
		{"/opt/models/r1", "", false}, // in the image
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := r.HostPath(tc.in)
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.want, got)
		})
	}
}
