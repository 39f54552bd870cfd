package enroot

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestArgvBuilders(t *testing.T) {
	im, err := ParseImage("nvcr.io/nvidia/pytorch:25.01-py3")
	require.NoError(t, err)
	imp, err := ImportArgv("enroot", im, "/cache/.x.tmp-1-2")
	require.NoError(t, err)
	assert.Equal(t, []string{"enroot", "import", "--output", "/cache/.x.tmp-1-2", "--", "docker://nvcr.io#nvidia/pytorch:25.01-py3"}, imp)
	assert.Equal(t, []string{"enroot", "create", "--name", "wideep-42", "--", "/cache/x.sqsh"}, CreateArgv("enroot", "wideep-42", "/cache/x.sqsh"))
	assert.Equal(t, []string{"enroot", "remove", "--force", "--", "wideep-42"}, RemoveArgv("enroot", "wideep-42"))
	assert.Equal(t, []string{"enroot", "list"}, ListArgv("enroot"))

	start, err := StartArgv("/usr/bin/enroot", "wideep-42", StartOptions{
		RW:       true,
		Mounts:   []Mount{{Src: "/models", Dst: "/model", ReadOnly: true}, {Src: "/scratch/logs", Dst: "/logs"}},
		EnvNames: []string{"SLURM_JOB_ID", "HF_TOKEN"},
	}, []string{"python3", "-m", "dynamo.frontend", "--http-port=8000"})
	require.NoError(t, err)
	assert.Equal(t, []string{
		"/usr/bin/enroot", "start", "--rw",
		"--mount", "/models:/model:none:x-create=auto,rbind,ro",
		"--mount", "/scratch/logs:/logs:none:x-create=auto,rbind",
		"--env", "SLURM_JOB_ID", "--env", "HF_TOKEN",
		"--", "wideep-42", "python3", "-m", "dynamo.frontend", "--http-port=8000",
	}, start)

	_, err = ImportArgv("enroot", Image{Ref: "/x.sqsh", Path: "/x.sqsh"}, "/o")
	assert.ErrorContains(t, err, "/x.sqsh")
}

// Values never reach the command line: every --env value is a bare name.
func TestStartArgvPassesEnvironmentByNameOnly(t *testing.T) {
	names := []string{"SLURM_JOB_ID", "HF_TOKEN", "NCCL_SOCKET_IFNAME", "_X1"}
	argv, err := StartArgv("enroot", "c", StartOptions{EnvNames: names}, []string{"env"})
	require.NoError(t, err)
	var got []string
	for i, a := range argv {
		if a == "--" {
			break
		}
		if a == "--env" || a == "-e" || strings.HasPrefix(a, "--env=") {
			require.Less(t, i+1, len(argv))
			v := strings.TrimPrefix(a, "--env=")
			if v == a {
				v = argv[i+1]
			}
			assert.NotContains(t, v, "=", "--env %s carries a value", v)
			got = append(got, v)
		}
	}
	assert.Equal(t, names, got)
}

func TestStartArgvRejects(t *testing.T) {
	ok := StartOptions{}
	for name, tc := range map[string]struct {
		container string
		opts      StartOptions
		argv      []string
		want      string
	}{
		"value in env":       {"c", StartOptions{EnvNames: []string{"HF_TOKEN=hf_abc"}}, []string{"x"}, "names only"},
		"ENROOT_ variable":   {"c", StartOptions{EnvNames: []string{"ENROOT_DATA_PATH"}}, []string{"x"}, "ENROOT_DATA_PATH"},
		"bad env name":       {"c", StartOptions{EnvNames: []string{"1X"}}, []string{"x"}, `"1X"`},
		"empty env name":     {"c", StartOptions{EnvNames: []string{""}}, []string{"x"}, "empty"},
		"relative mount":     {"c", StartOptions{Mounts: []Mount{{Src: "models", Dst: "/m"}}}, []string{"x"}, `"models"`},
		"colon in mount":     {"c", StartOptions{Mounts: []Mount{{Src: "/a:b", Dst: "/m"}}}, []string{"x"}, `"/a:b"`},
		"space in mount":     {"c", StartOptions{Mounts: []Mount{{Src: "/a", Dst: "/m n"}}}, []string{"x"}, `"/m n"`},
		"no command":         {"c", ok, nil, "no command"},
		"empty container":    {"", ok, []string{"x"}, `container name ""`},
		"slash in container": {"a/b", ok, []string{"x"}, `"a/b"`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := StartArgv("enroot", tc.container, tc.opts, tc.argv)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestContainerName(t *testing.T) {
	assert.Equal(t, "wideep-1234", ContainerName("1234"))
	assert.Equal(t, "wideep-1234_7", ContainerName("1234_7"))
	assert.Equal(t, "wideep-.._x", ContainerName("../x"), "never a path")
}
