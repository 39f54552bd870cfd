package testport

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCandidatesAvoidTheEphemeralRange(t *testing.T) {
	for name, tc := range map[string]struct {
		eLow, eHigh       int
		first, last, size int
	}{
		"Linux default":           {32768, 60999, 20000, 32736, 399},
		"range from 1024":         {1024, 65535, 0, 0, 0},
		"range above ours":        {49152, 65535, 20000, 39968, 625},
		"range inside ours":       {30000, 35000, 20000, 39968, 312 + 156},
		"range ending in a block": {20000, 20000, 20032, 39968, 624},
	} {
		t.Run(name, func(t *testing.T) {
			got := candidates(tc.eLow, tc.eHigh)
			assert.Len(t, got, tc.size)
			for _, b := range got {
				assert.True(t, b+BlockSize-1 < tc.eLow || b > tc.eHigh, "block %d overlaps %d-%d", b, tc.eLow, tc.eHigh)
			}
			if tc.size > 0 {
				assert.Equal(t, tc.first, got[0])
				assert.Equal(t, tc.last, got[len(got)-1])
			}
		})
	}
}
