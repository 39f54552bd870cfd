#!/usr/bin/env bash
# Figures from the real 8-node lab (make bench), ROUNDS times each:
#  1. a simulated deployment: the rendezvous release latency (node 0's
#     "rendezvous complete" → the last node's "all nodes joined", from the
#     nodes' JSON logs, one clock since the lab is one machine), sbatch →
#     READY, scancel → the job gone from squeue and → the last process of the
#     job gone from every node, and the launchers' peak RSS;
#  2. DeepGEMM, rank 0 leads: sbatch → READY with a cold cache (simulated
#     compile of 20 s) and then warm, with the number of compile processes;
#  3. a job is a gang: a worker fails 2 s after READY without
#     --kill-on-bad-exit; the failure → the last launcher's exit, → the job
#     gone, → the last process gone, and the job's state.
# Prints tables and asserts nothing about speed. "FIGURE name value unit"
# lines (one per round) go to the file FIGURES_OUT when set, else to stdout.
#
# usage: launcher/bench/lab.sh [BIN]     ROUNDS=3
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$(realpath "${1:-$ROOT/bin/wideep-launch}")
ROUNDS=${ROUNDS:-3}
FIGURES_OUT=${FIGURES_OUT:-/dev/stdout}
export SLURM_LAB_DIR=${SLURM_LAB_DIR:-/tmp/wideep-bench-lab}
export SLURM_LAB_NET=${SLURM_LAB_NET:-wbench}
export SLURM_LAB_SUBNET=${SLURM_LAB_SUBNET:-10.213.78}
export SLURM_LAB_CTLD_PORT=${SLURM_LAB_CTLD_PORT:-18917}
WORK=$(mktemp -d /tmp/wideep-bench.XXXXXX)
bash "$ROOT/slurm/lab/up.sh" > "$WORK/up.log" 2>&1 || { tail -20 "$WORK/up.log"; exit 1; }
# The lab goes down whatever happens; the jobs' logs are kept only when something failed.
trap 'rc=$?; bash "$ROOT/slurm/lab/down.sh" > "$WORK/down.log" 2>&1
  if [ "$rc" = 0 ]; then rm -rf "$WORK"; else echo "lab.sh: the jobs'"'"' logs are kept in $WORK" >&2; fi' EXIT
export SLURM_CONF=$SLURM_LAB_DIR/etc/slurm.conf
cd "$WORK"

fig() { echo "FIGURE $*" >> "$FIGURES_OUT"; }
now() { date +%s.%N; }
epoch() { date -d "$1" +%s.%N; }
# time of the first JSON log line in files $2.. whose message is $1
first_time() { local msg=$1; shift; grep -h "\"message\":\"$msg\"" "$@" | sed -n 's/.*"time":"\([^"]*\)".*/\1/p'; }
# the network namespaces of the lab's nodes, as /proc/<pid>/ns/net links name them
NS=$(while read -r _node _addr ns; do echo "net:[$(stat -L -c %i "/run/netns/$ns")]"; done < "$SLURM_LAB_DIR/nodes")
# job_procs: how many processes live in the nodes' namespaces, slurmd and the
# slurmstepds aside (what a job started, setsid daemons included; no zombies)
job_procs() {
  # shellcheck disable=SC2012 # ls -l prints the link targets of every pid at once
  { ls -l /proc/[0-9]*/ns/net 2> /dev/null || true; } | awk -v ns="$NS" '
    BEGIN { n = split(ns, a, "\n"); for (i = 1; i <= n; i++) want[a[i]] = 1 }
    want[$NF] {
      split($(NF - 2), p, "/"); f = "/proc/" p[3] "/stat"
      if ((getline line < f) > 0) {
        close(f); l = index(line, "("); r = 0
        for (i = length(line); i > l; i--) if (substr(line, i, 1) == ")") { r = i; break }
        comm = substr(line, l + 1, r - l - 1); state = substr(line, r + 2, 1)
        if (state != "Z" && comm != "slurmd" && comm != "slurmstepd") c++
      }
    }
    END { print c + 0 }'
}
# wait_end JOB [RUNNING]: waits (at most 60 s) until the job has left squeue
# and its last process is gone; sets GONE_Q and GONE_P to when each first held
# (polled every 50 ms). Unless RUNNING is 1 (the job is known to run), a
# process count of 0 counts only once the job's processes were seen, so a
# pending job is not "gone".
wait_end() {
  local job=$1 seen=${2:-0} n
  GONE_Q= GONE_P=
  for _ in $(seq 1 1200); do
    [ -z "$GONE_Q" ] && ! squeue -h -j "$job" 2> /dev/null | grep -q . && GONE_Q=$(now)
    n=$(job_procs)
    [ "$n" -gt 0 ] && seen=1
    [ -z "$GONE_P" ] && [ "$seen" = 1 ] && [ "$n" = 0 ] && GONE_P=$(now)
    [ -n "$GONE_Q" ] && [ -n "$GONE_P" ] && return 0
    sleep 0.05
  done
  echo "job $job: still there 60 s on (squeue gone: ${GONE_Q:-no}; processes gone: ${GONE_P:-no}, $(job_procs) left)" >&2
  return 1
}
d() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", b - a}'; }

[ "$(job_procs)" = 0 ] || { echo "lab.sh: the new lab's nodes already run $(job_procs) processes" >&2; exit 1; }

printf '%-6s %13s %13s %15s %17s %15s\n' round "release (ms)" "to READY (s)" "scancel→gone (s)" "scancel→no proc (s)" "peak RSS (MiB)"
for r in $(seq 1 "$ROUNDS"); do
  t0=$(now)
  job=$(LAUNCHER=$BIN WIDEEP_SIM_WORK=$WORK/r$r WIDEEP_GRACE=3s WIDEEP_LOG_FORMAT=json sbatch --parsable -N 8 "$ROOT/examples/wideep-sim.sbatch")
  logs=$WORK/r$r/logs/$job
  for _ in $(seq 1 1200); do [ -s "$logs/endpoint" ] && break; sleep 0.05; done
  [ -s "$logs/endpoint" ] || { echo "round $r: no READY"; tail -30 "$WORK/wideep-sim-$job.out"; exit 1; }
  t1=$(now)
  complete=$(epoch "$(first_time 'rendezvous complete: address table sent to every node' "$logs"/*.launcher.log)")
  last=$(for t in $(first_time 'all nodes joined' "$logs"/*.launcher.log); do epoch "$t"; done | sort -n | tail -1)
  scancel "$job"; t2=$(now)
  wait_end "$job" 1
  rss=$( (grep -ho "launcher_peak_rss=[0-9.]*" "$logs"/*.launcher.log || true) | cut -d= -f2 | sort -n | tail -1)
  rel=$(awk -v c="$complete" -v l="$last" 'BEGIN{printf "%.3f", (l - c) * 1000}')
  printf '%-6s %13s %13s %15s %17s %15s\n' "$r" "$rel" "$(d "$t0" "$t1")" "$(d "$t2" "$GONE_Q")" "$(d "$t2" "$GONE_P")" "${rss:--}"
  fig lab.release_ms "$rel" ms
  fig lab.sbatch_to_ready_s "$(d "$t0" "$t1")" s
  fig lab.scancel_to_job_gone_s "$(d "$t2" "$GONE_Q")" s
  fig lab.scancel_to_last_process_s "$(d "$t2" "$GONE_P")" s
  [ -n "$rss" ] && fig lab.launcher_peak_rss_mib "$rss" MiB
done
echo "(release: last node holding the address table after node 0 saw the last arrival; target <= 50 ms."
echo " scancel with WIDEEP_GRACE=3s; the simulated workers stop at once on SIGTERM)"

# DeepGEMM, rank 0 leads: time from sbatch to READY with a cold cache (the
# simulated compile takes 20 s, as WIDEEP_SIM_PRECOMPILE_DELAY) and then with
# the warm cache the first job left (the same layout: nothing to compile), and
# how many compile processes each ran (the stand-ins' records).
# ready_after WORK RECORDS [VAR=value...]: submit, wait for READY, print the
# seconds and the number of precompile records, scancel, wait for the end.
ready_after() {
  local work=$1 rec=$2; shift 2
  mkdir -p "$rec"
  local t0 job t1 n
  t0=$(now)
  job=$(env "$@" LAUNCHER="$BIN" WIDEEP_SIM_WORK="$work" WIDEEP_SIM_RECORD_DIR="$rec" WIDEEP_GRACE=3s \
    WIDEEP_LOG_FORMAT=json sbatch --parsable -N 8 "$ROOT/examples/wideep-sim.sbatch")
  for _ in $(seq 1 2400); do [ -s "$work/logs/$job/endpoint" ] && break; sleep 0.05; done
  [ -s "$work/logs/$job/endpoint" ] || { echo "job $job: no READY" >&2; tail -30 "$WORK/wideep-sim-$job.out" >&2; exit 1; }
  t1=$(now)
  n=$(find "$rec" -name '*.precompile.json' | wc -l)
  scancel "$job"
  wait_end "$job" 1 >&2 || exit 1
  echo "$(d "$t0" "$t1") $n"
}
printf '\n%-6s %16s %10s %16s %10s\n' round "cold READY (s)" compiles "warm READY (s)" compiles
for r in $(seq 1 "$ROUNDS"); do
  cold=$(ready_after "$WORK/dg$r" "$WORK/dg$r/rec-cold" WIDEEP_SIM_PRECOMPILE_DELAY=20s) || exit 1
  warm=$(ready_after "$WORK/dg$r" "$WORK/dg$r/rec-warm" WIDEEP_SIM_PRECOMPILE_DELAY=20s) || exit 1
  read -r cs cn <<< "$cold"
  read -r ws wn <<< "$warm"
  printf '%-6s %16s %10s %16s %10s\n' "$r" "$cs" "$cn" "$ws" "$wn"
  fig lab.deepgemm.cold_ready_s "$cs" s
  fig lab.deepgemm.cold_compiles "$cn" processes
  fig lab.deepgemm.warm_ready_s "$ws" s
  fig lab.deepgemm.warm_compiles "$wn" processes
done
echo "(8 nodes, 1P×4 + 1D×4, simulated compile 20 s: cold = one compile per layout on all 8 nodes; warm = zero compiles)"

# A job is a gang: a worker fails 2 s after READY, in a batch script without
# --kill-on-bad-exit; from the failing worker's exit (its node's "process
# exited" line) to the last launcher's exit line, the grace aside (the
# simulated workers stop at once on SIGTERM), and to the job gone from squeue
# and its last process gone (polled).
printf '\n%-6s %20s %14s %16s %10s\n' round "failure→last exit (s)" "→job gone (s)" "→no process (s)" "job state"
for r in $(seq 1 "$ROUNDS"); do
  job=$(LAUNCHER=$BIN WIDEEP_SIM_WORK=$WORK/f$r WIDEEP_GRACE=3s WIDEEP_LOG_FORMAT=json KILL_ON_BAD_EXIT=0 \
    WIDEEP_SIM_FAIL=node6:serve=2s:3 sbatch --parsable -N 8 "$ROOT/examples/wideep-sim.sbatch")
  wait_end "$job"
  logs=$WORK/f$r/logs/$job
  failed=$(epoch "$(first_time 'process exited: stopping this node' "$logs/node6.launcher.log")")
  last=$(for f in "$logs"/*.launcher.log; do grep -h '"exit_code":' "$f" | grep '"message":"\(NODE\|node\|JOB\)' | tail -1 |
    sed -n 's/.*"time":"\([^"]*\)".*/\1/p'; done | while read -r t; do epoch "$t"; done | sort -n | tail -1)
  state=$(scontrol show job "$job" 2> /dev/null | grep -o 'JobState=[A-Z]*' | cut -d= -f2 || true)
  printf '%-6s %20s %14s %16s %10s\n' "$r" "$(d "$failed" "$last")" "$(d "$failed" "$GONE_Q")" "$(d "$failed" "$GONE_P")" "${state:-?}"
  fig lab.failure_to_last_exit_s "$(d "$failed" "$last")" s
  fig lab.failure_to_job_gone_s "$(d "$failed" "$GONE_Q")" s
  fig lab.failure_to_last_process_s "$(d "$failed" "$GONE_P")" s
  fig lab.failure_job_failed "$([ "${state:-}" = FAILED ] && echo 1 || echo 0)" bool
done
echo "(target: every launcher gone <= 2 s after the failure, the grace aside, without --kill-on-bad-exit)"
