#!/usr/bin/env bash
# make demo: one simulated wide-EP deployment on a real local 8-node Slurm,
# start to finish: cluster up, plan, sbatch, READY, one chat request, scancel,
# timeline, proof that no process is left, cluster down.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$(realpath "${1:-$ROOT/bin/wideep-launch}")
# The demo's own lab, so it never collides with `make cluster-up` or tests.
export SLURM_LAB_DIR=${SLURM_LAB_DIR:-/tmp/wideep-demo-lab}
export SLURM_LAB_NET=${SLURM_LAB_NET:-wdemo}
export SLURM_LAB_SUBNET=${SLURM_LAB_SUBNET:-10.213.79}
export SLURM_LAB_CTLD_PORT=${SLURM_LAB_CTLD_PORT:-18817}
WORK=$(mktemp -d /tmp/wideep-demo.XXXXXX)
T0=$(date +%s.%N)
step() { printf '\n\033[1m=== %s\033[0m (%.1fs)\n' "$*" "$(awk -v s="$T0" -v n="$(date +%s.%N)" 'BEGIN{print n-s}')"; }

step "1. a real Slurm cluster: 8 nodes, each with its own network namespace and address"
bash "$ROOT/slurm/lab/up.sh" > "$WORK/lab-up.log" 2>&1 || { cat "$WORK/lab-up.log"; exit 1; }
trap 'bash "$ROOT/slurm/lab/down.sh" > "$WORK/lab-down.log" 2>&1 || cat "$WORK/lab-down.log"' EXIT
export SLURM_CONF=$SLURM_LAB_DIR/etc/slurm.conf
sinfo
NODELIST=$(sinfo -h -o %N)

step "2. the plan, before anything starts (wideep-launch plan)"
"$BIN" plan --nodelist "$NODELIST" --model-path "$WORK/model" --cache-dir "$WORK/cache"

step "3. sbatch examples/wideep-sim.sbatch (srun wideep-launch run --simulate on every node)"
cd "$WORK"
JOB=$(LAUNCHER=$BIN WIDEEP_SIM_WORK=$WORK WIDEEP_GRACE=3s sbatch --parsable -N 8 "$ROOT/examples/wideep-sim.sbatch")
OUT=$WORK/wideep-sim-$JOB.out
echo "job $JOB, output $OUT, logs $WORK/logs/$JOB/"

step "4. following the job until node 0 says READY"
for _ in $(seq 1 1200); do
  [ -s "$WORK/logs/$JOB/endpoint" ] && break
  if ! squeue -h -j "$JOB" 2>/dev/null | grep -q .; then
    echo "job $JOB ended before READY:"; tail -40 "$OUT"; exit 1
  fi
  sleep 0.1
done
[ -s "$WORK/logs/$JOB/endpoint" ] || { echo "no READY after 120 s"; tail -40 "$OUT"; exit 1; }
grep -h 'READY http' "$OUT" | grep -v '"message"' | tail -1
URL=$(cat "$WORK/logs/$JOB/endpoint")
echo "endpoint file: $URL"

step "5. one chat request through the (simulated) Dynamo frontend"
curl -sS --max-time 10 "$URL/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"model":"deepseek-ai/DeepSeek-R1","messages":[{"role":"user","content":"Hello"}]}'
echo

step "6. scancel $JOB: every launcher sends its processes one SIGTERM, waits, reaps"
scancel "$JOB"
for _ in $(seq 1 600); do squeue -h -j "$JOB" 2>/dev/null | grep -q . || break; sleep 0.1; done
scontrol show job "$JOB" | grep -o 'JobState=[A-Z]* Reason=[^ ]*'
cat "$WORK/logs/$JOB/timeline.txt" 2>/dev/null || true
# Each node's own timeline, from its launcher log (stdout lines written while
# Slurm tears a cancelled step down can be lost; the log file keeps them).
grep -ho 'timeline node [^"]*' "$WORK/logs/$JOB"/*.launcher.log | sort -t' ' -k3n || true

step "7. no process left on any node"
# slurmstepd may still be reaping the step for a moment after the job left squeue.
count_left() {
  local n=0 ns pid st
  for ns in $(awk '$1=="netns"{print $2}' "$SLURM_LAB_DIR/net"); do
    for pid in $(ip netns pids "$ns"); do
      st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || continue
      [ "$st" = Z ] && continue
      case "$(cat "/proc/$pid/comm" 2>/dev/null)" in slurmd|slurmstepd) ;; *) n=$((n + 1));; esac
    done
  done
  echo "$n"
}
for _ in $(seq 1 150); do left=$(count_left); [ "$left" -eq 0 ] && break; sleep 0.1; done
echo "processes left besides slurmd: $left"

step "8. tearing the cluster down"
bash "$ROOT/slurm/lab/down.sh" > "$WORK/lab-down.log" 2>&1 || cat "$WORK/lab-down.log"
trap - EXIT
printf '\ndemo finished in %.1fs; job output and logs kept in %s\n' "$(awk -v s="$T0" -v n="$(date +%s.%N)" 'BEGIN{print n-s}')" "$WORK"
[ "$left" -eq 0 ]
