package cli

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"

	"github.com/rs/zerolog"

	"github.com/wideep/wideep-launch/launcher/supervise"
)

func init() {
	register(command{name: "exec", summary: "run one command under the launcher's supervision (signals, grace, no orphans)", run: runExec})
}

const execDescription = `Run one command the way 'run' runs every process of a node: in its own
process group, signals forwarded (SIGTERM/SIGINT stop it: SIGTERM, --grace,
then SIGKILL of the group and of every descendant, even daemons that called
setsid), and the command's exit code passed through (128+N for signal N).
Its stdout and stderr come out on stdout, each line prefixed "[COMMAND] ".
Use it for other job steps that must not leave processes behind:

  srun --ntasks-per-node=1 wideep-launch exec -- python3 my_benchmark.py`

func runExec(sys System, args []string) (err error) {
	fs := newFlagSet(sys, "exec", "wideep-launch exec [flags] -- COMMAND [ARG...]", execDescription)
	defer func() { err = withEnvSources(fs, sys.LookupEnv, err) }()
	fs.SetInterspersed(false)
	grace := fs.Duration("grace", supervise.DefaultGrace, "time between SIGTERM and SIGKILL; keep it below Slurm's KillWait (env "+EnvName("grace")+")")
	logFile := fs.String("log", "", "also copy the command's output to this file (env "+EnvName("log")+")")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := applyEnvDefaults(fs, sys.LookupEnv); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageErrorf("exec needs a command (wideep-launch exec -- COMMAND [ARG...])")
	}
	if *grace <= 0 {
		return usageErrorf("--grace %s: must be positive", *grace)
	}
	// Signals are caught before the command starts, so none is lost.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, supervise.ForwardSignals()...)
	defer signal.Stop(sigs)
	if err := supervise.BecomeSubreaper(); err != nil {
		return err
	}
	log := zerolog.New(zerolog.ConsoleWriter{Out: sys.Stderr, NoColor: true, TimeFormat: "15:04:05.000"}).
		Level(zerolog.ErrorLevel).With().Timestamp().Logger()
	sup := &supervise.Supervisor{Log: log, Output: sys.Stdout, Grace: *grace, Reaper: supervise.NewReaper()}
	argv := fs.Args()
	spec := supervise.ProcSpec{Name: filepath.Base(argv[0]), Argv: argv, Env: sys.Environ(), LogPath: *logFile}
	if code := supervise.SuperviseOne(context.Background(), sup, spec, sigs); code != 0 {
		return passedThrough(code)
	}
	return nil
}
