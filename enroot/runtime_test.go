package enroot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/wideep/wideep-launch/launcher/supervise"
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

// A stop ends the whole enroot command — the bash script and what it runs
// (curl, mksquashfs) — not only the script.
func TestRunKillsTheCommandsChildrenOnStop(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	script := filepath.Join(dir, "enroot")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/bash\nsleep 300 </dev/null >/dev/null 2>&1 &\necho $! > "+pidFile+"\nwait\n"), 0o755))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&Runtime{}).run(ctx, []string{script, "import", "docker://x"}, os.Environ()) }()
	var pid int
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "the script started its child")
	cancel()
	select {
	case err := <-done:
		assert.Error(t, err, "a stopped command is no success")
	case <-time.After(20 * time.Second):
		require.FailNow(t, "run did not return after the stop")
	}
	assert.Eventually(t, func() bool { return gone(pid) }, 5*time.Second, 20*time.Millisecond, "the script's child %d was killed too", pid)
}

// gone: no such process, or only its zombie left for its new parent to reap.
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// The created container skips the image's ENTRYPOINT (pyxis' rc.local),
// and enroot gets no login shell unless the admin set one.
func TestCreateSkipsTheEntrypointWithoutLoginShell(t *testing.T) {
	data := t.TempDir()
	var envs [][]string
	r := &Runtime{DataPath: data, Container: "wideep-42", Env: []string{"HOME=/home/u"},
		Run: func(_ context.Context, argv, env []string) error {
			envs = append(envs, env)
			if argv[1] == "create" { // what enroot create leaves: the rootfs
				return os.MkdirAll(filepath.Join(data, "wideep-42", "etc"), 0o755)
			}
			return nil
		}}
	require.NoError(t, r.create(context.Background(), "/cache/x.sqsh"))
	rc, err := os.ReadFile(filepath.Join(data, "wideep-42", "etc", "rc.local"))
	require.NoError(t, err)
	assert.Equal(t, "exec \"$@\"\n", string(rc))
	require.NotEmpty(t, envs)
	assert.Contains(t, envs[len(envs)-1], "ENROOT_LOGIN_SHELL=n")

	r.Env = append(r.Env, "ENROOT_LOGIN_SHELL=y")
	assert.NotContains(t, r.enrootEnv(), "ENROOT_LOGIN_SHELL=n", "the admin's choice stands")

	// An image whose rc.local is an absolute symlink: seen from the host it
	// points out of the rootfs; the link is replaced, its target untouched.
	outside := filepath.Join(t.TempDir(), "host-rc.local")
	require.NoError(t, os.WriteFile(outside, []byte("host file\n"), 0o644))
	rcPath := filepath.Join(data, "wideep-42", "etc", "rc.local")
	require.NoError(t, os.Remove(rcPath))
	require.NoError(t, os.Symlink(outside, rcPath))
	require.NoError(t, r.skipEntrypoint())
	assert.Equal(t, "host file\n", readString(t, outside), "the symlink's target is not written")
	assert.Equal(t, "exec \"$@\"\n", readString(t, rcPath))
	fi, err := os.Lstat(rcPath)
	require.NoError(t, err)
	assert.True(t, fi.Mode().IsRegular(), "a file of its own now")
}

func readString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

// The node's Reaper runs while enroot commands do (the supervisor already
// supervises by then): it must not take their exit status from the
// exec.Cmd waiting for it. Seen in an e2e run when the commands had a
// process group of their own: 'waitid: no child processes' for an
// 'enroot start ... command -v nats-server' that had found it.
func TestRunKeepsItsExitStatusBesideTheReaper(t *testing.T) {
	s := &supervise.Supervisor{Reaper: supervise.NewReaper(), Log: zerolog.Nop(), Prefix: "node1", Grace: time.Second}
	require.NoError(t, s.Start(supervise.ProcSpec{Name: "idle", Argv: []string{"sleep", "60"}}))
	t.Cleanup(func() { s.Shutdown("test over") })
	r := &Runtime{}
	for i := range 50 {
		require.NoError(t, r.run(context.Background(), []string{"/bin/sh", "-c", "sleep 0.01"}, os.Environ()), "run %d", i)
		err := r.run(context.Background(), []string{"/bin/sh", "-c", "exit 3"}, os.Environ())
		require.ErrorContains(t, err, "exit status 3", "run %d", i)
	}
}
