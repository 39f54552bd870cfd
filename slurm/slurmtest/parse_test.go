package slurmtest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseJob(t *testing.T) {
	for name, tc := range map[string]struct {
		out     string
		want    Job
		wantErr string
	}{
		"failed with exit 3": {
			out: "JobId=7 JobName=job.sh UserId=root(0) JobState=FAILED Reason=NonZeroExitCode " +
				"ExitCode=3:0 NodeList=node1 StdOut=/tmp/l/work/slurm-7.out\n",
			want: Job{ID: "7", State: "FAILED", ExitCode: 3, Reason: "NonZeroExitCode",
				NodeList: "node1", StdOut: "/tmp/l/work/slurm-7.out"},
		},
		"killed by a signal": {
			out:  "JobId=8 JobState=CANCELLED Reason=None ExitCode=0:15 NodeList=node[1-8]",
			want: Job{ID: "8", State: "CANCELLED", Signal: 15, Reason: "None", NodeList: "node[1-8]"},
		},
		"value with spaces and '=' stays whole": {
			out:  "JobId=9 Comment=a b=c d JobState=COMPLETED ExitCode=0:0 Command=/x/job.sh",
			want: Job{ID: "9", State: "COMPLETED"},
		},
		"not a job": {
			out:     "slurm_load_jobs error: Invalid job id specified",
			wantErr: "no JobId/JobState",
		},
		"bad exit code": {
			out:     "JobId=9 JobState=COMPLETED ExitCode=zero",
			wantErr: "not <code>:<signal>",
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := parseJob(tc.out)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want.ID, got.ID)
			assert.Equal(t, tc.want.State, got.State)
			assert.Equal(t, tc.want.ExitCode, got.ExitCode)
			assert.Equal(t, tc.want.Signal, got.Signal)
			assert.Equal(t, tc.want.Reason, got.Reason)
			assert.Equal(t, tc.want.NodeList, got.NodeList)
			assert.Equal(t, tc.want.StdOut, got.StdOut)
		})
	}
}

func TestParseJobKeepsFields(t *testing.T) {
	got, err := parseJob("JobId=9 Comment=a b=c d JobState=COMPLETED ExitCode=0:0")
	require.NoError(t, err)
	// "b=c" looks like a pair, so only the '='-free word rejoins the comment
	assert.Equal(t, "a", got.Fields["Comment"])
	assert.Equal(t, "c d", got.Fields["b"])
}

func TestScrubEnv(t *testing.T) {
	in := []string{
		"PATH=/usr/bin", "SLURM_JOB_ID=4", "SLURM_CONF=/etc/slurm/slurm.conf", "SLURMD_NODENAME=gpu1",
		"SBATCH_PARTITION=x", "SRUN_CPUS_PER_TASK=2", "SQUEUE_FORMAT=%i", "SLURM_LAB_DIR=/tmp/slurm-lab",
		"SLURMTEST_LAB_SCRIPTS=/src/slurm/lab", "HOME=/root", "MY_SLURM_THING=1",
	}
	assert.Equal(t, []string{
		"PATH=/usr/bin", "SLURMTEST_LAB_SCRIPTS=/src/slurm/lab", "HOME=/root", "MY_SLURM_THING=1",
	}, scrubEnv(in))
}

func TestParseStat(t *testing.T) {
	for name, tc := range map[string]struct {
		stat      string
		want      Proc
		wantState string
		wantErr   bool
	}{
		"plain":                 {stat: "42 (sleep) S 7 42 7 0", want: Proc{Pid: 42, PPid: 7, Comm: "sleep"}, wantState: "S"},
		"comm with ) and space": {stat: "5 (a) b (c) Z 1 5", want: Proc{Pid: 5, PPid: 1, Comm: "a) b (c"}, wantState: "Z"},
		"truncated":             {stat: "5 (x)", wantErr: true},
		"garbage":               {stat: "hello", wantErr: true},
	} {
		t.Run(name, func(t *testing.T) {
			got, state, err := parseStat(tc.stat)
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.wantState, state)
		})
	}
}

func TestReadLabFiles(t *testing.T) {
	dir := t.TempDir()
	nodes := filepath.Join(dir, "nodes")
	require.NoError(t, os.WriteFile(nodes, []byte("node1 10.213.5.1 slt5-n1\nnode2 10.213.5.2 slt5-n2\n"), 0o644))
	got, err := readNodes(nodes)
	require.NoError(t, err)
	assert.Equal(t, []node{{"node1", "10.213.5.1", "slt5-n1"}, {"node2", "10.213.5.2", "slt5-n2"}}, got)

	require.NoError(t, os.WriteFile(nodes, []byte("node1 10.213.5.1\n"), 0o644))
	_, err = readNodes(nodes)
	assert.ErrorContains(t, err, "want")

	pids := filepath.Join(dir, "pids")
	require.NoError(t, os.WriteFile(pids, []byte("munged 10\nslurmctld 11\nslurmd:node1 12\nslurmd:node2 13\n"), 0o644))
	gotPids, err := readSlurmdPids(pids)
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"node1": 12, "node2": 13}, gotPids)
}

func TestSlotNames(t *testing.T) {
	s := newSlot(5)
	assert.Equal(t, "slt5", s.net)
	assert.Equal(t, "10.213.5", s.subnet)
	assert.Equal(t, 17010, s.port)
	// up.sh limits SLURM_LAB_NET to 8 characters (interface names hold 15)
	assert.LessOrEqual(t, len(newSlot(lastSlot).net), 8)
}
