#!/usr/bin/env bash
# Launcher overhead (make bench): the whole-process time of
# `wideep-launch exec -- /bin/true` (no container) against running /bin/true
# directly, the two in turn, RUNS rounds after WARMUP (the ratio taken round by
# round); and the launcher's peak RSS, both as the kernel accounts the finished
# process (ru_maxrss, /usr/bin/time -v's "Maximum resident set size") and as
# its own high-water mark (VmHWM) read by the worker while it is supervised.
# Prints figures; asserts nothing about speed. "FIGURE name value unit" lines
# (one per run) go to the file FIGURES_OUT when set, else to stdout after the
# table.
#
# usage: launcher/bench/overhead.sh [BIN]     RUNS=50 WARMUP=3
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$(realpath "${1:-$ROOT/bin/wideep-launch}")
RUNS=${RUNS:-50}
WARMUP=${WARMUP:-3}
TRUE=/bin/true
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
figures=${FIGURES_TOOL:-}
if [[ -z $figures ]]; then
  figures=$tmp/figures
  (cd "$ROOT" && "${GO:-go}" build -o "$figures" ./launcher/bench/figures)
fi

"$figures" pair -n "$RUNS" -warmup "$WARMUP" -prefix overhead \
  "direct=$TRUE" "launcher=$BIN exec -- $TRUE" > "$tmp/samples" 2> "$tmp/pair.log" ||
  { cat "$tmp/pair.log" >&2; exit 1; }
# The worker reads its parent's (the launcher's) high-water mark of resident memory.
hwm=$("$BIN" exec -- sh -c 'awk "/^VmHWM/{print \$2}" /proc/$PPID/status' | awk '{print $2}')
echo "FIGURE overhead.launcher.vmhwm_kib $hwm KiB" >> "$tmp/samples"
"$figures" summarize < "$tmp/samples" > "$tmp/summary"
get() { awk -v n="$1" -v c="$2" '$2 == n {print $c}' "$tmp/summary"; }   # column 5 = median

direct=$(get overhead.direct.wall_ms 5)
launched=$(get overhead.launcher.wall_ms 5)
printf 'launcher overhead, %d rounds after %d warm-up (worker /bin/true, no container), wall ms min / median / max\n' "$RUNS" "$WARMUP"
printf '  /bin/true directly:                   %7.3f %7.3f %7.3f ms\n' "$(get overhead.direct.wall_ms 4)" "$direct" "$(get overhead.direct.wall_ms 6)"
printf '  wideep-launch exec -- /bin/true:      %7.3f %7.3f %7.3f ms\n' "$(get overhead.launcher.wall_ms 4)" "$launched" "$(get overhead.launcher.wall_ms 6)"
printf '  added by the launcher (median):       %7.3f ms; ratio %.1fx (target: <= 5 ms added)\n' \
  "$(awk -v a="$launched" -v b="$direct" 'BEGIN{print a-b}')" "$(get overhead.launcher/direct.ratio 5)"
printf '  launcher peak RSS (ru_maxrss, median): %6d KiB; VmHWM while supervising: %d KiB (target <= 20480 KiB)\n' \
  "$(get overhead.launcher.peak_rss_kib 5)" "$hwm"

if [[ -n ${FIGURES_OUT:-} ]]; then cat "$tmp/samples" >> "$FIGURES_OUT"; else cat "$tmp/samples"; fi
