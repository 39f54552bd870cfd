package enroot

import (
	"os"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
)

func lookupOf(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

func TestDataPath(t *testing.T) {
	for name, tc := range map[string]struct {
		env  map[string]string
		want string
	}{
		"job scratch":        {map[string]string{"SLURM_TMPDIR": "/local/job42", "USER": "ann"}, "/local/job42/enroot-data"},
		"per user in /tmp":   {map[string]string{"USER": "ann"}, "/tmp/enroot-data-ann"},
		"LOGNAME":            {map[string]string{"LOGNAME": "bob"}, "/tmp/enroot-data-bob"},
		"no user name":       {map[string]string{}, "/tmp/enroot-data-" + strconv.Itoa(os.Getuid())},
		"hostile user":       {map[string]string{"USER": "../etc"}, "/tmp/enroot-data-" + strconv.Itoa(os.Getuid())},
		"empty SLURM_TMPDIR": {map[string]string{"SLURM_TMPDIR": "", "USER": "ann"}, "/tmp/enroot-data-ann"},
	} {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, DataPath(lookupOf(tc.env)))
		})
	}
}

func TestMaxProcessors(t *testing.T) {
	for name, tc := range map[string]struct {
		env      map[string]string
		taskCPUs int
		want     string
	}{
		"user's value":   {map[string]string{"ENROOT_MAX_PROCESSORS": "4"}, 16, "4"},
		"task's CPUs":    {nil, 16, "16"},
		"empty is unset": {map[string]string{"ENROOT_MAX_PROCESSORS": ""}, 8, "8"},
		"unknown count":  {nil, 0, "1"},
	} {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, MaxProcessors(lookupOf(tc.env), tc.taskCPUs))
		})
	}
}

func TestDetectPyxis(t *testing.T) {
	for name, tc := range map[string]struct {
		env    map[string]string
		files  []string
		inside bool
		why    string
	}{
		"bare host": {files: []string{"/etc/rc.local"}, why: "no pyxis or enroot marker"},
		"pyxis --container-image": {
			env: map[string]string{"SLURM_SPANK__SLURM_SPANK_OPTION_pyxis_container_image": "nvcr.io#nvidia/pytorch:25.01-py3"}, inside: true,
			why: "SLURM_SPANK__SLURM_SPANK_OPTION_pyxis_container_image",
		},
		"pyxis --container-name": {
			env: map[string]string{"SLURM_SPANK__SLURM_SPANK_OPTION_pyxis_container_name": "x"}, inside: true,
			why: "--container-name",
		},
		"enroot rootfs lock":     {files: []string{"/.lock"}, inside: true, why: "/.lock"},
		"enroot 3.x rootfs lock": {files: []string{"/.enroot.lock"}, inside: true, why: "/.enroot.lock"},
		"enroot image scripts":   {files: []string{"/etc/rc", "/etc/rc.local"}, inside: true, why: "docker::configure"},
		"empty option value":     {env: map[string]string{"SLURM_SPANK__SLURM_SPANK_OPTION_pyxis_container_image": ""}, why: "no pyxis"},
	} {
		t.Run(name, func(t *testing.T) {
			stat := func(p string) error {
				for _, f := range tc.files {
					if f == p {
						return nil
					}
				}
				return os.ErrNotExist
			}
			inside, why := DetectPyxis(lookupOf(tc.env), stat)
			assert.Equal(t, tc.inside, inside)
			assert.Contains(t, why, tc.why)
		})
	}
}
