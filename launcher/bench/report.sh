#!/usr/bin/env bash
# The benchmark report (make bench): runs every benchmark once, collects its
# figures and writes ONE Markdown report, launcher/bench/REPORT.md (atomically:
# a temporary file, then mv), every figure beside its target or reference,
# with the date, the machine, the tool versions and the git commit at the top;
# then prints it. Figures, not tests: nothing is asserted about speed. It exits
# 1 when a part failed (a wrong answer, a broken build, a lab that did not
# come up); the report is written all the same and names what is missing.
#
#   1. hostlist expansion vs scontrol and nodeset, six shapes: slurm/hostlistbench/bench.sh
#   2. launcher overhead and peak RSS:                         launcher/bench/overhead.sh
#   3./5. Go benchmarks (-benchmem): plan at 4,096 nodes, heartbeat overhead, ...
#   4. the real 8-node lab in simulation:                       launcher/bench/lab.sh
#
# Every part hands its samples over as lines "FIGURE name value unit" (the
# FIGURES_OUT file); `go run ./launcher/bench/figures summarize` turns them
# into count, min, median and max.
#
# usage: launcher/bench/report.sh [BIN]
#   HOSTLIST_RUNS=5  rounds per hostlist shape     RUNS=50    overhead rounds
#   ROUNDS=3         lab rounds                    REPORT=... where to write
#   PARTS="hostlist overhead gobench lab"          the parts to run (the rest: not measured)
set -euo pipefail
export LC_ALL=C
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$(realpath "${1:-$ROOT/bin/wideep-launch}")
OUT=${REPORT:-$ROOT/launcher/bench/REPORT.md}
HOSTLIST_RUNS=${HOSTLIST_RUNS:-5}
PARTS=${PARTS:-hostlist overhead gobench lab}
export ROUNDS=${ROUNDS:-3}
GO=${GO:-go}
[ -x "$BIN" ] || { echo "report.sh: no launcher at $BIN (make build)" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$ROOT"
"$GO" build -o "$tmp/figures" ./launcher/bench/figures
export FIGURES_TOOL=$tmp/figures FIGURES_OUT=$tmp/samples
: > "$FIGURES_OUT"

# --- the machine, before anything runs ---
T0=$(date +%s)
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
CPU=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
MEM=$(awk '/^MemTotal/{printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
GOV=$("$GO" env GOVERSION)
SLURMV=$(dpkg-query -W -f '${Version}' slurm-client 2> /dev/null || echo '?')
CSV=$(nodeset --version 2> /dev/null | awk '{print $NF}' || echo '?')
COMMIT=$(git rev-parse HEAD 2> /dev/null || echo unknown)
DIRTY=$(git status --porcelain 2> /dev/null | wc -l)
LAUNCHER_V=$("$BIN" version 2> /dev/null | head -1 || echo '?')

# part NAME CMD...: runs one part, its output on the terminal and in its log;
# a part that fails is recorded and the others still run.
FAILED=()
part() {
  local name=$1; shift
  local t=$SECONDS rc=0
  printf '\n===== %s =====\n' "$name"
  { "$@" 2>&1; echo $? > "$tmp/$name.rc"; } | tee "$tmp/$name.log"
  rc=$(cat "$tmp/$name.rc")
  printf '(%s: %d s, exit %d)\n' "$name" $((SECONDS - t)) "$rc"
  echo "PART $name $((SECONDS - t)) $rc" >> "$tmp/parts"
  [ "$rc" = 0 ] || FAILED+=("$name (exit $rc; its last lines: $(tail -3 "$tmp/$name.log" | tr '\n' ' ' | cut -c1-300))")
}

# Go benchmarks of the packages that have any (./slurm/ and ./launcher/...),
# each result as FIGURE go.<benchmark>.<unit> lines.
gobench() {
  local pkgs
  pkgs=$(grep -l '^func Benchmark' slurm/*_test.go $(find launcher -name '*_test.go') 2> /dev/null |
    xargs -n1 dirname | sort -u | sed 's|^|./|')
  # shellcheck disable=SC2086
  "$GO" test -run '^$' -bench . -benchmem -count=1 $pkgs | tee "$tmp/gobench.txt"
  local rc=${PIPESTATUS[0]}
  awk '/^Benchmark/ && NF >= 4 {
      name = $1; sub(/^Benchmark/, "", name); sub(/-[0-9]+$/, "", name)
      for (i = 3; i + 1 <= NF; i += 2) printf "FIGURE go.%s.%s %s %s\n", name, $(i + 1), $i, $(i + 1)
    }' "$tmp/gobench.txt" >> "$FIGURES_OUT"
  return "$rc"
}

for p in $PARTS; do
  case $p in
  hostlist) part hostlist env WIDEEP_LAUNCH="$BIN" bash slurm/hostlistbench/bench.sh -n "$HOSTLIST_RUNS" ;;
  overhead) part overhead bash launcher/bench/overhead.sh "$BIN" ;;
  gobench) part gobench gobench ;;
  lab) part lab bash launcher/bench/lab.sh "$BIN" ;;
  *) echo "report.sh: unknown part '$p' in PARTS (hostlist overhead gobench lab)" >&2; exit 2 ;;
  esac
done

# --- the figures ---
"$tmp/figures" summarize < "$FIGURES_OUT" > "$tmp/summary"
declare -A CNT MIN MED MAX UNIT
while read -r _ name n lo mid hi unit; do
  CNT[$name]=$n MIN[$name]=$lo MED[$name]=$mid MAX[$name]=$hi UNIT[$name]=$unit
done < "$tmp/summary"
has() { [ -n "${MED[$1]:-}" ]; }
# v NAME [FMT [SCALE]]: the median, scaled and printed with FMT; "—" when absent
v() {
  has "$1" || { echo "—"; return; }
  awk -v x="${MED[$1]}" -v f="${2:-%.1f}" -v s="${3:-1}" 'BEGIN{printf f, x * s}'
}
# s NAME FMT [SCALE] [WHAT]: "median (min–max, n WHAT)", or the one value
s() {
  has "$1" || { echo "—"; return; }
  local f=${2:-%.1f} sc=${3:-1} what=${4:-runs}
  if [ "${CNT[$1]}" = 1 ]; then v "$1" "$f" "$sc"; return; fi
  if [ "${MIN[$1]}" = "${MAX[$1]}" ]; then echo "$(v "$1" "$f" "$sc") (all ${CNT[$1]} $what)"; return; fi
  awk -v a="${MIN[$1]}" -v m="${MED[$1]}" -v b="${MAX[$1]}" -v n="${CNT[$1]}" -v f="$f" -v s="$sc" -v w="$what" \
    'BEGIN{printf f " (" f "–" f ", %d %s)", m * s, a * s, b * s, n, w}'
}

# medians GLOB: the medians of the figures whose names match, ascending
medians() {
  local k
  for k in "${!MED[@]}"; do
    if [[ $k == $1 ]]; then echo "${MED[$k]}"; fi
  done | sort -g
}

# r NAME FMT [SCALE]: "median (min–max)", for a table that says the count
r() {
  has "$1" || { echo "—"; return; }
  awk -v a="${MIN[$1]}" -v m="${MED[$1]}" -v b="${MAX[$1]}" -v f="$2" -v s="${3:-1}" \
    'BEGIN{printf f " (" f "–" f ")", m * s, a * s, b * s}'
}
# thousands: 1048576 → 1,048,576
thousands() { echo "$1" | sed ':a; s/\B[0-9]\{3\}\>/,&/; ta'; }

# --- the report ---
ELAPSED=$(($(date +%s) - T0))
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p "$(dirname "$OUT")"
new=$(mktemp "$OUT.XXXXXX")
trap 'rm -rf "$tmp" "$new"' EXIT
{
  echo "# wideep-launch benchmark report"
  echo
  echo "Written by \`make bench\` (launcher/bench/report.sh) in $((ELAPSED / 60)) min $((ELAPSED % 60)) s. Figures are printed,"
  echo "never asserted. A figure is the **median**, with (min–max, count) of the runs or rounds behind it."
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| date | $DATE |"
  echo "| machine | $(nproc) cores ($CPU), $MEM, kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME") |"
  echo "| load average (1/5/15 min) | at start $LOAD0, at end $LOAD1 (other work on the machine shows here) |"
  echo "| Go | $GOV |"
  echo "| Slurm | slurm-client $SLURMV (\`scontrol\`; the lab's slurmctld and slurmd are the same release) |"
  echo "| ClusterShell | nodeset $CSV |"
  echo "| git commit | \`$COMMIT\`$( [ "$DIRTY" -gt 0 ] && echo " plus $DIRTY uncommitted paths" ) |"
  echo "| launcher | $LAUNCHER_V |"
  echo "| parts (wall) | $(awk '{printf "%s%s %d s (exit %d)", (NR > 1 ? ", " : ""), $2, $3, $4}' "$tmp/parts") |"
  echo
  echo "## Figures"
  echo
  echo "| # | what | figure | target / reference | measured by |"
  echo "|---|---|---|---|---|"
  # 1. hostlist: the spread of the ratios over the shapes scontrol accepts
  lo_s=$(medians 'hostlist.*.scontrol/wideep.ratio' | head -1)
  hi_s=$(medians 'hostlist.*.scontrol/wideep.ratio' | tail -1)
  lo_n=$(medians 'hostlist.*.nodeset/wideep.ratio' | head -1)
  hi_n=$(medians 'hostlist.*.nodeset/wideep.ratio' | tail -1)
  if [ -n "$lo_s" ]; then
    printf '| 1 | hostlist expansion, %s shapes (table below) | `scontrol show hostnames` / wideep-launch %.1f× to %.1f×; `nodeset -e` / wideep-launch %.1f× to %.1f× (whole processes) | ≥ 3× scontrol, ≥ 30× nodeset, on every shape | `make bench-hostlist` |\n' \
      "$(grep -c '^SHAPE ' "$FIGURES_OUT")" "$lo_s" "$hi_s" "$lo_n" "$hi_n"
  else
    echo "| 1 | hostlist expansion | not measured | ≥ 3× scontrol, ≥ 30× nodeset | \`make bench-hostlist\` |"
  fi
  if has overhead.launcher.wall_ms; then
    added=$(awk -v a="${MED[overhead.launcher.wall_ms]}" -v b="${MED[overhead.direct.wall_ms]}" 'BEGIN{printf "%.2f", a - b}')
    echo "| 2 | launcher overhead: \`wideep-launch exec -- /bin/true\` vs \`/bin/true\` | +$added ms per run: $(s overhead.launcher.wall_ms %.2f) ms vs $(s overhead.direct.wall_ms %.2f) ms; ratio $(v overhead.launcher/direct.ratio %.1f)× | ≤ 5 ms added | launcher/bench/overhead.sh |"
  else
    echo "| 2 | launcher overhead | not measured | ≤ 5 ms added | launcher/bench/overhead.sh |"
  fi
  echo "| 2 | launcher peak RSS, \`exec\` | $(v overhead.launcher.peak_rss_kib %.1f 0.0009765625) MiB (max RSS as \`/usr/bin/time -v\` counts it); $(v overhead.launcher.vmhwm_kib %.1f 0.0009765625) MiB VmHWM while supervising | ≤ 20 MiB | same |"
  echo "| 2 | launcher peak RSS, \`run\` (8-node lab, largest node) | $(s lab.launcher_peak_rss_mib %.1f 1 rounds) MiB (\`launcher_peak_rss\`) | ≤ 20 MiB | launcher/bench/lab.sh |"
  echo "| 3 | plan at 4,096 nodes (names only / with addresses) | $(v go.Plan4096/offline.ns/op %.1f 0.000001) / $(v go.Plan4096/resolved.ns/op %.1f 0.000001) ms; $(v go.Plan4096/offline.B/op %.1f 0.000001) / $(v go.Plan4096/resolved.B/op %.1f 0.000001) MB allocated in $(v go.Plan4096/offline.allocs/op %.0f) / $(v go.Plan4096/resolved.allocs/op %.0f) allocations | ≤ 10 ms; \"a few MB\" (open) | \`go test ./launcher/deploy -bench Plan4096 -benchmem\` |"
  echo "| 4 | rendezvous release, 8-node lab | $(s lab.release_ms %.1f 1 rounds) ms from node 0 seeing the last arrival to the last node holding the table | ≤ 50 ms | launcher/bench/lab.sh |"
  echo "| 4 | sbatch → READY (simulation, 8 nodes) | $(s lab.sbatch_to_ready_s %.2f 1 rounds) s | | same |"
  echo "| 4 | scancel → job gone from \`squeue\` | $(s lab.scancel_to_job_gone_s %.2f 1 rounds) s | none (the job's grace 3 s, the lab's KillWait 5 s) | same |"
  echo "| 4 | scancel → last process of the job gone | $(s lab.scancel_to_last_process_s %.2f 1 rounds) s | none (grace 3 s; the simulated workers stop at once on SIGTERM) | same |"
  echo "| 4 | worker failure → last launcher exit (no \`--kill-on-bad-exit\`) | $(s lab.failure_to_last_exit_s %.2f 1 rounds) s; job gone $(s lab.failure_to_job_gone_s %.2f 1 rounds) s, last process gone $(s lab.failure_to_last_process_s %.2f 1 rounds) s; job state FAILED in $(awk -v x="${MIN[lab.failure_job_failed]:-0}" -v n="${CNT[lab.failure_job_failed]:-0}" 'BEGIN{print (x == 1 ? "all " n : "NOT all of the " n) }') rounds | ≤ 2 s after the grace | same |"
  echo "| 4 | DeepGEMM cold cache: sbatch → READY (sim compile 20 s) | $(s lab.deepgemm.cold_ready_s %.2f 1 rounds) s, $(s lab.deepgemm.cold_compiles %.0f 1 rounds) compile processes | one compile per layout: 8 processes (2 layouts × 4 nodes) | same |"
  echo "| 4 | DeepGEMM warm cache: sbatch → READY | $(s lab.deepgemm.warm_ready_s %.2f 1 rounds) s, $(s lab.deepgemm.warm_compiles %.0f 1 rounds) compile processes | 0 compiles; ≈ sbatch → READY | same |"
  echo "| 5 | heartbeat overhead on node 0, 8 peers | $(v go.HeartbeatOverhead/peers=8.cpu-%-of-core %.3f) % of a core, $(v go.HeartbeatOverhead/peers=8.B/s/peer %.1f) B/s per peer | well under 1 % of a core | \`go test ./launcher/rendezvous -bench HeartbeatOverhead\` |"
  echo "| 5 | heartbeat overhead on node 0, 1,024 peers | $(v go.HeartbeatOverhead/peers=1024.cpu-%-of-core %.3f) % of a core, $(v go.HeartbeatOverhead/peers=1024.B/s/peer %.1f) B/s per peer | well under 1 % of a core | same |"
  echo
  echo "### 1. Hostlist expansion by shape"
  echo
  echo "Whole processes, output to /dev/null, process start included; each round runs the three tools in turn"
  echo "after one warm-up round, and the ratio is taken round by round. Before timing, the outputs are checked"
  echo "identical, name for name and in order (wideep-launch vs scontrol, and vs nodeset)."
  echo
  echo "Median (min–max) of $HOSTLIST_RUNS rounds."
  echo
  echo "| shape | expression | names | wideep-launch (ms) | scontrol (ms) | nodeset (ms) | scontrol / wideep | nodeset / wideep |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  grep '^SHAPE ' "$FIGURES_OUT" | while read -r _ shape expr; do
    p=hostlist.$shape
    [ ${#expr} -le 60 ] || expr="${expr:0:57}…"
    if has "$p.scontrol.wall_ms"; then sc="$(r "$p.scontrol.wall_ms" %.1f)"; sr="$(r "$p.scontrol/wideep.ratio" %.1f)×"
    else sc="refused by Slurm 22.05"; sr="—"; fi
    echo "| $shape | \`$expr\` | $(thousands "$(v "$p.names" %.0f)") | $(r "$p.wideep.wall_ms" %.1f) | $sc | $(r "$p.nodeset.wall_ms" %.1f) | $sr | $(r "$p.nodeset/wideep.ratio" %.1f)× |"
  done
  echo
  echo "Peak RSS (median): $(grep '^SHAPE ' "$FIGURES_OUT" | while read -r _ shape _; do
    printf '%s: wideep-launch %s, scontrol %s, nodeset %s MiB; ' "$shape" "$(v "hostlist.$shape.wideep.peak_rss_kib" %.1f 0.0009765625)" \
      "$(v "hostlist.$shape.scontrol.peak_rss_kib" %.1f 0.0009765625)" "$(v "hostlist.$shape.nodeset.peak_rss_kib" %.1f 0.0009765625)"; done | sed 's/; $/./')"
  echo "Before this report README quoted one shape only, \`mixed\`: 16.4 ms vs scontrol 223.5 ms (13.6×) and nodeset 1023 ms (62×)."
  echo
  echo "### Go benchmarks (one run each, \`-benchmem\`)"
  echo
  echo "| benchmark | ns/op | B/op | allocs/op | other |"
  echo "|---|---:|---:|---:|---|"
  [ -f "$tmp/gobench.txt" ] && awk '/^Benchmark/ && NF >= 4 {
      name = $1; sub(/-[0-9]+$/, "", name); ns = b = a = "—"; other = ""
      for (i = 3; i + 1 <= NF; i += 2) {
        if ($(i + 1) == "ns/op") ns = $i; else if ($(i + 1) == "B/op") b = $i
        else if ($(i + 1) == "allocs/op") a = $i; else other = other (other == "" ? "" : ", ") $i " " $(i + 1)
      }
      printf "| %s | %s | %s | %s | %s |\n", name, ns, b, a, other
    }' "$tmp/gobench.txt" 2> /dev/null || true
  echo
  echo "## Not measured, and why"
  echo
  echo "- \`scontrol\` on the \`suffix\` shape (\`gpu[0000-9999]-ib\`): Slurm 22.05, Debian 12's, answers \"Invalid hostlist\" to any"
  echo "  text after a bracket (23.02.5 accepts it, as wideep-launch does). Checked against nodeset instead."
  echo "- One range of about a million names (\`n[0-999999]\`): Slurm takes at most 65,536 names in one range, and"
  echo "  wideep-launch refuses it alike$(has hostlist.range-1M.refused_by_both && echo ' (checked)'). The \`one-range\` shape is the longest legal range; \`one-prefix\` writes 1,048,576"
  echo "  contiguous names under one prefix as 16 ranges of one bracket group."
  echo "- GPU figures (real SGLang, real DeepGEMM compile, NCCL): the lab runs the simulation stand-ins; no GPU here."
  for f in ${FAILED[@]+"${FAILED[@]}"}; do echo "- **part failed**: $f"; done
  for p in hostlist overhead gobench lab; do
    [[ " $PARTS " == *" $p "* ]] || echo "- part \`$p\` not run (PARTS=\"$PARTS\"): its figures show —."
  done
  echo
  echo "Rerun: \`make bench\` (ROUNDS=3 lab rounds, HOSTLIST_RUNS=5, RUNS=50 overhead rounds; REPORT=path elsewhere)."
} > "$new"
chmod 644 "$new"
mv "$new" "$OUT"
trap 'rm -rf "$tmp"' EXIT

printf '\n===== %s =====\n' "${OUT#"$ROOT"/}"
cat "$OUT"
[ ${#FAILED[@]} = 0 ]
