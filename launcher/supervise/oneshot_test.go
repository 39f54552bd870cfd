package supervise

import (
	"context"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func init() {
	helpers.Register("leave-port", helperLeavePort)
	helpers.Register("hold-port", helperHoldPort)
}

// helperLeavePort is a oneshot like the precompile: it starts a child that
// binds a TCP port (hold-port), waits until the child reports "<pid> <port>"
// in -ready, and exits 0 while the child still holds the port.
func helperLeavePort(args []string) int {
	fl := flag.NewFlagSet("leave-port", flag.ContinueOnError)
	ready := fl.String("ready", "", "file the child writes its pid and port to")
	setsid := fl.Bool("setsid", false, "the child starts a new session")
	hold := fl.Duration("hold", 0, "how long the child keeps the port after we exit; 0: until killed")
	if fl.Parse(args) != nil {
		return 2
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "leave-port:", err)
		return 99
	}
	cmd := exec.Command(exe, "-ready", *ready, "-hold", hold.String())
	cmd.Env = append(os.Environ(), helperEnv+"=hold-port") // exec.Cmd: the last value wins
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr          // the child keeps our output open too
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: *setsid}
	if err := cmd.Start(); err != nil { // never waited for: it is meant to outlive us
		fmt.Fprintln(os.Stderr, "leave-port:", err)
		return 99
	}
	for deadline := time.Now().Add(waitTimeout); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(*ready); err == nil {
			return 0
		}
	}
	fmt.Fprintln(os.Stderr, "leave-port: the child never reported")
	return 98
}

// helperHoldPort binds a port on 127.0.0.1, reports it, and keeps it until
// -hold after its parent exited (or forever), ignoring SIGTERM.
func helperHoldPort(args []string) int {
	fl := flag.NewFlagSet("hold-port", flag.ContinueOnError)
	ready := fl.String("ready", "", "file that gets \"<pid> <port>\"")
	hold := fl.Duration("hold", 0, "how long to keep the port after the parent exited; 0: forever")
	if fl.Parse(args) != nil {
		return 2
	}
	signal.Ignore(syscall.SIGTERM)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "hold-port:", err)
		return 99
	}
	parent := os.Getppid()
	writeFileAtomic(*ready, fmt.Sprintf("%d %d", os.Getpid(), ln.Addr().(*net.TCPAddr).Port))
	if *hold == 0 {
		select {}
	}
	for os.Getppid() == parent {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(*hold)
	ln.Close()
	return 0
}

func TestRunOneshotHandOver(t *testing.T) {
	require.NoError(t, BecomeSubreaper())
	for name, tc := range map[string]struct {
		args  []string
		grace time.Duration
		// killed: the child outlived the grace period and was killed
		killed bool
	}{
		"child in the group frees the port 1 s after the oneshot": {args: []string{"-hold", "1s"}, grace: waitTimeout},
		"setsid child frees the port 1 s after the oneshot":       {args: []string{"-hold", "1s", "-setsid"}, grace: waitTimeout},
		"setsid child that never exits is killed after Grace":     {args: []string{"-setsid"}, grace: 300 * time.Millisecond, killed: true},
		"child in the group that never exits is killed":           {grace: 300 * time.Millisecond, killed: true},
	} {
		t.Run(name, func(t *testing.T) {
			ready := filepath.Join(t.TempDir(), "ready")
			var logs syncBuffer
			s := &Supervisor{Reaper: testReaper, Log: zerolog.New(&logs), Prefix: "node1", Grace: tc.grace}
			t.Cleanup(func() { s.Shutdown("test over") })
			argv, env := helpers.Exec(t, "leave-port", append([]string{"-ready", ready}, tc.args...)...)

			e, err := s.RunOneshot(context.Background(), ProcSpec{Name: "precompile", Argv: argv, Env: env, Oneshot: true})

			require.NoError(t, err)
			assert.Equal(t, 0, ExitCodeOf(e), "the oneshot's own exit: %v", e)
			var child, port int
			_, err = fmt.Sscan(waitFile(t, ready), &child, &port)
			require.NoError(t, err)
			// Right after RunOneshot: the worker that comes next binds it.
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if assert.NoError(t, err, "port %d is free when RunOneshot returns", port) {
				ln.Close()
			}
			_, err = readProcStat(child)
			assert.ErrorIs(t, err, fs.ErrNotExist, "the child %d is gone and reaped", child)
			killLine := ""
			for _, line := range strings.Split(logs.String(), "\n") {
				if strings.Contains(line, "still running after it ended") {
					killLine = line
				}
			}
			if tc.killed {
				assert.Contains(t, killLine, fmt.Sprintf(`"left":"%d (`, child), "the log names the child's pid")
				assert.Contains(t, killLine, argv[0], "and its command")
			} else {
				assert.Empty(t, killLine, "the child exited on its own, within Grace")
			}
		})
	}
}

// A process stuck in the kernel survives SIGKILL; RunOneshot gives up on it
// after killTimeout instead of waiting forever. The kill func drops the
// signals, which is what such a process looks like from here.
func TestRunOneshotSurvivesKill(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "ready")
	var dropping atomic.Bool
	dropping.Store(true)
	sent := &sentSignals{}
	s := &Supervisor{
		Reaper: testReaper, Log: zerolog.New(zerolog.NewTestWriter(t)), Prefix: "node1",
		Grace: 100 * time.Millisecond, killWait: 300 * time.Millisecond,
		kill: func(pid int, sig syscall.Signal) error {
			if dropping.Load() {
				sent.mu.Lock()
				sent.calls = append(sent.calls, sentSignal{pid, sig})
				sent.mu.Unlock()
				return nil
			}
			return syscall.Kill(pid, sig)
		},
	}
	t.Cleanup(func() {
		dropping.Store(false)
		s.Shutdown("test over")
	})
	ctx, cancel := context.WithCancel(context.Background())
	afterFile(ready, cancel)
	type result struct {
		e   Exit
		err error
	}
	done := make(chan result, 1)
	go func() {
		e, err := s.RunOneshot(ctx, workerSpec(t, "precompile", "-ready", ready))
		done <- result{e, err}
	}()

	var res result
	select {
	case res = <-done:
	case <-time.After(waitTimeout):
		require.FailNow(t, "RunOneshot still waits for a process that survived SIGKILL")
	}

	pid := waitPid(t, ready)
	assert.ErrorIs(t, res.err, context.Canceled)
	assert.Equal(t, pid, res.e.Pid)
	assert.EqualError(t, res.e.Err, "survived SIGKILL")
	assert.Equal(t, 125, ExitCodeOf(res.e), "a launcher failure, not the process's code")
	assert.Equal(t, []sentSignal{{-pid, syscall.SIGTERM}, {-pid, syscall.SIGKILL}}, sent.list())
	_, err := readProcStat(pid)
	assert.NoError(t, err, "the process is still there (the signals were dropped)")
}
