#!/usr/bin/env bash
# Figures from the real 8-node lab (make bench): a simulated deployment is
# submitted ROUNDS times; for each it reports the rendezvous release latency
# (node 0's "rendezvous complete" → the last node's "all nodes joined", from
# the nodes' JSON logs, one clock since the lab is one machine), the time from
# sbatch to READY, from scancel to the job leaving squeue, and the launchers'
# peak RSS. Prints figures; asserts nothing about speed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$(realpath "${1:-$ROOT/bin/wideep-launch}")
ROUNDS=${ROUNDS:-3}
export SLURM_LAB_DIR=${SLURM_LAB_DIR:-/tmp/wideep-bench-lab}
export SLURM_LAB_NET=${SLURM_LAB_NET:-wbench}
export SLURM_LAB_SUBNET=${SLURM_LAB_SUBNET:-10.213.78}
export SLURM_LAB_CTLD_PORT=${SLURM_LAB_CTLD_PORT:-18917}
WORK=$(mktemp -d /tmp/wideep-bench.XXXXXX)
bash "$ROOT/slurm/lab/up.sh" > "$WORK/up.log" 2>&1 || { tail -20 "$WORK/up.log"; exit 1; }
trap 'bash "$ROOT/slurm/lab/down.sh" > "$WORK/down.log" 2>&1' EXIT
export SLURM_CONF=$SLURM_LAB_DIR/etc/slurm.conf
cd "$WORK"

epoch() { date -d "$1" +%s.%N; }
# time of the first JSON log line in files $2.. whose message is $1
first_time() { local msg=$1; shift; grep -h "\"message\":\"$msg\"" "$@" | sed -n 's/.*"time":"\([^"]*\)".*/\1/p'; }

printf '%-6s %14s %14s %14s %16s\n' round "release (ms)" "to READY (s)" "scancel (s)" "peak RSS (MiB)"
for r in $(seq 1 "$ROUNDS"); do
  t0=$(date +%s.%N)
  job=$(LAUNCHER=$BIN WIDEEP_SIM_WORK=$WORK/r$r WIDEEP_GRACE=3s WIDEEP_LOG_FORMAT=json sbatch --parsable -N 8 "$ROOT/examples/wideep-sim.sbatch")
  logs=$WORK/r$r/logs/$job
  for _ in $(seq 1 1200); do [ -s "$logs/endpoint" ] && break; sleep 0.05; done
  [ -s "$logs/endpoint" ] || { echo "round $r: no READY"; tail -30 "$WORK/wideep-sim-$job.out"; exit 1; }
  t1=$(date +%s.%N)
  complete=$(epoch "$(first_time 'rendezvous complete: address table sent to every node' "$logs"/*.launcher.log)")
  last=$(for t in $(first_time 'all nodes joined' "$logs"/*.launcher.log); do epoch "$t"; done | sort -n | tail -1)
  scancel "$job"; t2=$(date +%s.%N)
  for _ in $(seq 1 600); do squeue -h -j "$job" | grep -q . || break; sleep 0.05; done
  t3=$(date +%s.%N)
  rss=$( (grep -ho "launcher_peak_rss=[0-9.]*" "$logs"/*.launcher.log || true) | cut -d= -f2 | sort -n | tail -1)
  awk -v r="$r" -v c="$complete" -v l="$last" -v a="$t0" -v b="$t1" -v s="$t2" -v e="$t3" -v m="$rss" \
    'BEGIN{printf "%-6s %14.2f %14.2f %14.2f %16s\n", r, (l-c)*1000, b-a, e-s, m}'
done
echo "(release: last node holding the address table after node 0 saw the last arrival; target <= 50 ms)"

# DeepGEMM, rank 0 leads: time from sbatch to READY with a cold cache (the
# simulated compile takes 20 s, as WIDEEP_SIM_PRECOMPILE_DELAY) and then with
# the warm cache the first job left (the same layout: nothing to compile), and
# how many compile processes each ran (the stand-ins' records).
# ready_after WORK RECORDS [VAR=value...]: submit, wait for READY, print the
# seconds and the number of precompile records, scancel, wait for the exit.
ready_after() {
  local work=$1 rec=$2; shift 2
  mkdir -p "$rec"
  local t0 job t1 n
  t0=$(date +%s.%N)
  job=$(env "$@" LAUNCHER="$BIN" WIDEEP_SIM_WORK="$work" WIDEEP_SIM_RECORD_DIR="$rec" WIDEEP_GRACE=3s \
    WIDEEP_LOG_FORMAT=json sbatch --parsable -N 8 "$ROOT/examples/wideep-sim.sbatch")
  for _ in $(seq 1 2400); do [ -s "$work/logs/$job/endpoint" ] && break; sleep 0.05; done
  [ -s "$work/logs/$job/endpoint" ] || { echo "job $job: no READY" >&2; tail -30 "$WORK/wideep-sim-$job.out" >&2; exit 1; }
  t1=$(date +%s.%N)
  n=$(find "$rec" -name '*.precompile.json' | wc -l)
  scancel "$job"
  for _ in $(seq 1 600); do squeue -h -j "$job" | grep -q . || break; sleep 0.05; done
  awk -v a="$t0" -v b="$t1" -v n="$n" 'BEGIN{printf "%.2f %d", b-a, n}'
}
printf '\n%-6s %16s %10s %16s %10s\n' round "cold READY (s)" compiles "warm READY (s)" compiles
for r in $(seq 1 "$ROUNDS"); do
  read -r cs cn <<< "$(ready_after "$WORK/dg$r" "$WORK/dg$r/rec-cold" WIDEEP_SIM_PRECOMPILE_DELAY=20s)"
  read -r ws wn <<< "$(ready_after "$WORK/dg$r" "$WORK/dg$r/rec-warm" WIDEEP_SIM_PRECOMPILE_DELAY=20s)"
  printf '%-6s %16s %10s %16s %10s\n' "$r" "$cs" "$cn" "$ws" "$wn"
done
echo "(8 nodes, 1P×4 + 1D×4: cold = one compile per layout on all 8 nodes; warm = zero compiles)"

# A job is a gang: a worker fails 2 s after READY, in a batch script without
# --kill-on-bad-exit; the time from the failing worker's exit (its node's
# "process exited" line) to the last launcher's exit line, the grace aside
# (the simulated workers stop at once on SIGTERM).
printf '\n%-6s %24s %12s\n' round "failure -> last exit (s)" "job state"
for r in $(seq 1 "$ROUNDS"); do
  job=$(LAUNCHER=$BIN WIDEEP_SIM_WORK=$WORK/f$r WIDEEP_GRACE=3s WIDEEP_LOG_FORMAT=json KILL_ON_BAD_EXIT=0 \
    WIDEEP_SIM_FAIL=node6:serve=2s:3 sbatch --parsable -N 8 "$ROOT/examples/wideep-sim.sbatch")
  for _ in $(seq 1 1200); do squeue -h -j "$job" | grep -q . || break; sleep 0.05; done
  logs=$WORK/f$r/logs/$job
  failed=$(epoch "$(first_time 'process exited: stopping this node' "$logs/node6.launcher.log")")
  last=$(for f in "$logs"/*.launcher.log; do grep -h '"exit_code":' "$f" | grep '"message":"\(NODE\|node\|JOB\)' | tail -1 |
    sed -n 's/.*"time":"\([^"]*\)".*/\1/p'; done | while read -r t; do epoch "$t"; done | sort -n | tail -1)
  state=$(scontrol show job "$job" 2>/dev/null | grep -o 'JobState=[A-Z]*' | cut -d= -f2)
  awk -v r="$r" -v f="$failed" -v l="$last" -v s="${state:-?}" 'BEGIN{printf "%-6s %24.2f %12s\n", r, l-f, s}'
done
echo "(target: every launcher gone <= 2 s after the failure, the grace aside, without --kill-on-bad-exit)"
