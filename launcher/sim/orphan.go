package sim

import (
	"os"
	"os/signal"
	"syscall"
)

// EnvOrphan makes every simulated worker leave behind a daemon, as SGLang's
// DP scheduler processes do when they escape their parent (sglang#23627): a
// setsid'd grandchild that ignores SIGTERM. Tests use it to prove the
// launcher leaves no orphan whatever the Slurm proctrack plugin.
const EnvOrphan = "WIDEEP_SIM_ORPHAN"

// orphanArg is argv[1] of the daemon: `wideep-launch sim orphan`.
const orphanArg = "orphan"

// startOrphan starts the daemon and does not wait for it.
func (s *standIn) startOrphan() {
	self, err := os.Executable()
	if err != nil {
		s.logf("%s: %v", EnvOrphan, err)
		return
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		s.logf("%s: %v", EnvOrphan, err)
		return
	}
	defer null.Close()
	p, err := os.StartProcess(self, []string{self, "sim", orphanArg}, &os.ProcAttr{
		Files: []*os.File{null, null, null},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		s.logf("%s: %v", EnvOrphan, err)
		return
	}
	s.logf("started a setsid daemon that ignores SIGTERM (pid %d)", p.Pid)
	_ = p.Release()
}

// runOrphan is the daemon: it ignores the polite signals and waits to be killed.
func runOrphan() int {
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	select {}
}
