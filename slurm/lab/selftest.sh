#!/usr/bin/env bash
# selftest.sh - prove up.sh/down.sh work and are repeatable:
#   up -> sbatch -N <nodes> running 'srun --ntasks-per-node=1 env' -> <nodes> distinct SLURM_PROCIDs
#   -> second up.sh is refused while running -> down -> nothing of ours left -> up again -> job again -> down.
# Run from the repo root: bash slurm/lab/selftest.sh (uses /tmp/slurm-lab unless SLURM_LAB_DIR is set).
# Honours the same SLURM_LAB_* variables as up.sh. Prints 'N passed, M failed' and exits non-zero on failure.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${SLURM_LAB_DIR:-/tmp/slurm-lab}
N=${SLURM_LAB_NODES:-8}
MODE=${SLURM_LAB_MODE:-netns}
NET=${SLURM_LAB_NET:-slab}
OUT=$(mktemp -d /tmp/slurm-lab-selftest.XXXXXX)
pass=0; fail=0
ok()   { pass=$((pass + 1)); echo "ok   - $*"; }
bad()  { fail=$((fail + 1)); echo "FAIL - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
secs() { awk -v s="$1" -v e="$2" 'BEGIN{printf "%.2f", e - s}'; }

run_job() {  # run_job ROUND
  local round=$1 jid t0 t1 st
  export SLURM_CONF="$DIR/etc/slurm.conf"
  cat > "$OUT/job.sh" <<EOF
#!/bin/bash
env | sort > "$OUT/batch-env-\$SLURM_JOB_ID.txt"
srun --ntasks-per-node=1 bash -c 'env | sort > "$OUT/task-env-\$SLURM_JOB_ID-\$SLURM_PROCID.txt"; echo "\$SLURM_PROCID \$SLURM_NODEID \$SLURMD_NODENAME \$(hostname)"'
EOF
  t0=$(date +%s.%N)
  jid=$(sbatch --parsable -N "$N" --ntasks-per-node=1 -t 2 -o "$OUT/job-%j.out" "$OUT/job.sh") || { bad "round $round: sbatch"; return; }
  for _ in $(seq 1 600); do squeue -h -j "$jid" 2>/dev/null | grep -q . || break; sleep 0.1; done
  t1=$(date +%s.%N)
  st=$(scontrol show job "$jid" 2>/dev/null | grep -o 'JobState=[A-Z]*')
  check "round $round: job $jid $st in $(secs "$t0" "$t1")s" [ "$st" = JobState=COMPLETED ]
  local procids nodenames hosts
  procids=$(cat "$OUT"/task-env-"$jid"-*.txt 2>/dev/null | grep '^SLURM_PROCID=' | sort -u | wc -l)
  nodenames=$(cat "$OUT"/task-env-"$jid"-*.txt 2>/dev/null | grep '^SLURMD_NODENAME=' | sort -u | wc -l)
  hosts=$(awk '{print $4}' "$OUT/job-$jid.out" | sort -u | wc -l)
  check "round $round: $procids distinct SLURM_PROCIDs (want $N)" [ "$procids" -eq "$N" ]
  check "round $round: $nodenames distinct SLURMD_NODENAMEs (want $N)" [ "$nodenames" -eq "$N" ]
  if [ "$MODE" = netns ]; then
    check "round $round: $hosts distinct hostnames (want $N)" [ "$hosts" -eq "$N" ]
  else
    check "round $round: all tasks share one hostname in multi mode ($hosts)" [ "$hosts" -eq 1 ]
  fi
}

nothing_left() {
  local p n=0
  for p in $(grep -lzxF "SLURM_LAB_ID=$DIR" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3); do
    [ "$(awk '{print $3}' /proc/"$p"/stat 2>/dev/null)" = Z ] || n=$((n + 1))
  done
  [ "$n" -eq 0 ] || { echo "  $n marked processes left"; return 1; }
  if compgen -G "/sys/fs/cgroup/*/slurm-lab-$NET-$(printf '%s' "$DIR" | cksum | cut -d' ' -f1)" >/dev/null; then
    echo "  cgroup subtrees left"; return 1
  fi
  if [ "$MODE" = netns ]; then
    ! ip link show "$NET-br" >/dev/null 2>&1 && ! ip netns list | grep -q "^$NET-n"
  fi
}

for round in 1 2; do
  t0=$(date +%s.%N)
  if bash "$HERE/up.sh" > "$OUT/up-$round.log" 2>&1; then
    ok "round $round: up.sh ($MODE, $N nodes) in $(secs "$t0" "$(date +%s.%N)")s"
  else
    bad "round $round: up.sh"; tail -20 "$OUT/up-$round.log"; break
  fi
  run_job "$round"
  if [ "$round" = 1 ]; then
    if bash "$HERE/up.sh" > "$OUT/up-again.log" 2>&1; then bad "second up.sh while running should fail"
    else check "second up.sh while running is refused" grep -q 'already running' "$OUT/up-again.log"; fi
  fi
  t0=$(date +%s.%N)
  if bash "$HERE/down.sh" > "$OUT/down-$round.log" 2>&1; then
    ok "round $round: down.sh in $(secs "$t0" "$(date +%s.%N)")s"
  else
    bad "round $round: down.sh"; cat "$OUT/down-$round.log"
  fi
  check "round $round: no lab process, bridge, netns or cgroup left" nothing_left
done

echo "outputs in $OUT"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
