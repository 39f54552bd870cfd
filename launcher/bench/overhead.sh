#!/usr/bin/env bash
# Launcher overhead (make bench): time from starting the launcher to the
# worker's exit, with the worker /bin/true and no container, against running
# /bin/true directly; and the launcher's peak RSS while it supervises.
# Prints figures; it asserts nothing about speed.
set -euo pipefail
BIN=$(realpath "${1:-bin/wideep-launch}")
N=${N:-200}        # runs per round
ROUNDS=${ROUNDS:-5}

# mean wall time of one run over N runs, in microseconds
round() {
  local s e
  s=$(date +%s%N)
  for ((i = 0; i < N; i++)); do "$@" > /dev/null; done
  e=$(date +%s%N)
  echo $(( (e - s) / N / 1000 ))
}
median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

direct=$(for ((r = 0; r < ROUNDS; r++)); do round /bin/true; done | median)
launched=$(for ((r = 0; r < ROUNDS; r++)); do round "$BIN" exec -- /bin/true; done | median)
# The worker reads its parent's (the launcher's) high-water mark of resident memory.
rss=$("$BIN" exec -- sh -c 'awk "/^VmHWM/{print \$2}" /proc/$PPID/status' | awk '{print $2}')

printf 'launcher overhead, median of %d rounds x %d runs (worker /bin/true, no container)\n' "$ROUNDS" "$N"
printf '  /bin/true directly:                   %6d us/run\n' "$direct"
printf '  wideep-launch exec -- /bin/true:      %6d us/run\n' "$launched"
printf '  added by the launcher:                %6d us/run (%.1fx; target <= 5000 us)\n' \
  $((launched - direct)) "$(awk -v a="$launched" -v b="$direct" 'BEGIN{print a/b}')"
printf '  launcher peak RSS while supervising:  %6d KiB (target <= 20480 KiB)\n' "$rss"
