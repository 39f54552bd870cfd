package slurmtest

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Job is a job as `scontrol show job` describes it. Finished jobs stay visible
// for 300 s (the lab's MinJobAge).
type Job struct {
	ID    string
	State string // PENDING, RUNNING, COMPLETING, COMPLETED, FAILED, CANCELLED, TIMEOUT, …

	// ExitCode and Signal split scontrol's ExitCode=<code>:<signal>: the batch
	// script's exit status, or the signal that killed it.
	ExitCode int
	Signal   int

	Reason   string
	NodeList string
	StdOut   string // path of the job's stdout file

	Fields map[string]string // every Key=Value scontrol printed
}

// terminalStates are the states of a job that has left squeue for good.
var terminalStates = map[string]bool{
	"COMPLETED": true, "FAILED": true, "CANCELLED": true, "TIMEOUT": true,
	"NODE_FAIL": true, "PREEMPTED": true, "BOOT_FAIL": true, "DEADLINE": true,
	"OUT_OF_MEMORY": true,
}

// pollEvery is how often WaitJob and WaitState ask slurmctld; a call costs a
// few ms, and jobs start on ~1 s scheduler passes.
const pollEvery = 100 * time.Millisecond

// Sbatch submits the batch script at path script with sbatch's options args
// (e.g. "-N", "8", "--ntasks-per-node=1") and returns the job id. With script
// "" the job is given by args alone (--wrap=…). The job runs with Env() (so
// SLURM_CONF and the test's PATH reach it) and, unless args say otherwise,
// with WorkDir() as working directory, where slurm-<id>.out is written.
// Script arguments can't be given: pass values through SbatchEnv.
func (c *Cluster) Sbatch(ctx context.Context, script string, args ...string) (string, error) {
	return c.SbatchEnv(ctx, nil, script, args...)
}

// SbatchEnv is Sbatch with env ("NAME=value") added to the environment the
// job inherits. Prefer it to --export=ALL,NAME=value, which splits values at
// commas (and t.TempDir paths contain the test's name, commas included).
func (c *Cluster) SbatchEnv(ctx context.Context, env []string, script string, args ...string) (string, error) {
	argv := append([]string{"--parsable"}, args...)
	if script != "" {
		abs, err := filepath.Abs(script)
		if err != nil {
			return "", err
		}
		argv = append(argv, abs)
	}
	cmd := c.Command(ctx, "sbatch", argv...)
	cmd.Env = append(cmd.Env, env...)
	out, err := output(cmd)
	if err != nil {
		return "", err
	}
	// --parsable prints "<id>" or "<id>;<cluster>"
	id, _, _ := strings.Cut(strings.TrimSpace(out), ";")
	if _, err := strconv.ParseUint(id, 10, 64); err != nil {
		return "", fmt.Errorf("sbatch printed %q, not a job id", strings.TrimSpace(out))
	}
	return id, nil
}

// Job returns the job's current description.
func (c *Cluster) Job(ctx context.Context, jobID string) (Job, error) {
	out, err := c.run(ctx, "scontrol", "-o", "show", "job", jobID)
	if err != nil {
		return Job{}, err
	}
	return parseJob(out)
}

// WaitJob waits until the job has ended (left squeue: no longer pending,
// running or completing) and returns its final state. Without a deadline in
// ctx it gives up after DefaultWait.
func (c *Cluster) WaitJob(ctx context.Context, jobID string) (Job, error) {
	var job Job
	err := c.poll(ctx, jobID, func(j Job) (bool, error) {
		job = j
		return terminalStates[j.State], nil
	})
	return job, err
}

// WaitState waits until the job is in state (e.g. "RUNNING"). It fails at
// once if the job ends in another state. Without a deadline in ctx it gives
// up after DefaultWait.
func (c *Cluster) WaitState(ctx context.Context, jobID, state string) error {
	return c.poll(ctx, jobID, func(j Job) (bool, error) {
		if j.State == state {
			return true, nil
		}
		if terminalStates[j.State] {
			return false, fmt.Errorf("job %s ended %s (exit %d:%d, reason %s) without reaching %s",
				jobID, j.State, j.ExitCode, j.Signal, j.Reason, state)
		}
		return false, nil
	})
}

// poll calls done with the job's description every pollEvery until it says
// so or fails. A failing scontrol is retried (slurmctld can be slow to answer
// on a busy machine) and reported if the wait times out.
func (c *Cluster) poll(ctx context.Context, jobID string, done func(Job) (bool, error)) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultWait)
		defer cancel()
	}
	var last Job
	var lastErr error
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		job, err := c.Job(ctx, jobID)
		if err == nil {
			last, lastErr = job, nil
			ok, err := done(job)
			if ok || err != nil {
				return err
			}
		} else {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("waiting for job %s: %w (last error: %v)", jobID, ctx.Err(), lastErr)
			}
			return fmt.Errorf("waiting for job %s: %w (last state %s, reason %s)",
				jobID, ctx.Err(), last.State, last.Reason)
		case <-tick.C:
		}
	}
}

// Cancel runs scancel with args (e.g. "--signal=USR1") for the job.
func (c *Cluster) Cancel(jobID string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cmdLimit)
	defer cancel()
	_, err := c.run(ctx, "scancel", append(args, jobID)...)
	return err
}

// parseJob parses one job of `scontrol -o show job`: space-separated
// Key=Value pairs on one line. A value holding spaces (a command line, a
// comment) continues in the words that have no '='.
func parseJob(out string) (Job, error) {
	line := strings.TrimSpace(out)
	if i := strings.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	fields := map[string]string{}
	var lastKey string
	for _, word := range strings.Fields(line) {
		k, v, ok := strings.Cut(word, "=")
		if !ok || k == "" {
			if lastKey != "" {
				fields[lastKey] += " " + word
			}
			continue
		}
		fields[k], lastKey = v, k
	}
	job := Job{
		ID:       fields["JobId"],
		State:    fields["JobState"],
		Reason:   fields["Reason"],
		NodeList: fields["NodeList"],
		StdOut:   fields["StdOut"],
		Fields:   fields,
	}
	if job.ID == "" || job.State == "" {
		return Job{}, fmt.Errorf("no JobId/JobState in scontrol output %q", line)
	}
	code, sig, ok := strings.Cut(fields["ExitCode"], ":")
	if !ok {
		return Job{}, fmt.Errorf("job %s: ExitCode %q is not <code>:<signal>", job.ID, fields["ExitCode"])
	}
	var err error
	if job.ExitCode, err = strconv.Atoi(code); err != nil {
		return Job{}, fmt.Errorf("job %s: ExitCode %q: %w", job.ID, fields["ExitCode"], err)
	}
	if job.Signal, err = strconv.Atoi(sig); err != nil {
		return Job{}, fmt.Errorf("job %s: ExitCode %q: %w", job.ID, fields["ExitCode"], err)
	}
	return job, nil
}
