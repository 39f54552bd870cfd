package slurm

import "errors"

// ErrNotInSlurm is returned when the environment has no SLURM_JOB_ID: the
// launcher was started outside a Slurm job.
var ErrNotInSlurm = errors.New("not inside a Slurm job: SLURM_JOB_ID is not set " +
	"(run it as 'srun wideep-launch run' inside sbatch, or see the plan offline with " +
	"'wideep-launch plan --nodelist \"gpu[01-08]\"')")
