#!/usr/bin/env bash
# Times `wideep-launch hostnames`, `scontrol show hostnames` and ClusterShell's
# `nodeset -e` on several shapes of hostlist expression (the ratios differ by
# shape), checks first that they print the same names in the same order, and
# prints per shape the median times and the ratios between them
# (`make bench-hostlist`; `make bench` puts them in launcher/bench/REPORT.md).
# Figures, not a test: it exits 0 whether or not the targets are met, and 1
# when the outputs differ or a tool is missing.
#
# usage: slurm/hostlistbench/bench.sh [-n RUNS] [-s SHAPE,...] [EXPR]
#
# Shapes (default: all):
#   16-prefixes  a[0-65535],b[0-65535],...,p[0-65535]        1,048,576 names
#   one-prefix   n[0-65535,65536-131071,...,983040-1048575]  1,048,576 names
#   one-range    n[0-65535] (Slurm takes at most 65,536 names in one range:
#                n[0-999999] is refused by both, which is checked)
#   two-groups   rack[0-99]-node[0000-9999]                  1,000,000 names
#   suffix       gpu[0000-9999]-ib                           10,000 names
#                (Slurm 22.05 refuses text after the bracket, 23.02.5 takes
#                it: checked against nodeset, scontrol not timed)
#   mixed        p01-[00000-65535],...,p15-[...],rack[1-2]-n[00000-08191]
#                                                             999,424 names
# EXPR times one expression of your own instead. nodeset sorts and folds, so
# it must list its parts in the order nodeset sorts them (distinct prefixes,
# ascending, equal padding on both bounds) or the check fails.
#
# Each round runs the three tools one after the other (stdout to /dev/null,
# process start included); RUNS rounds (default 5) after one warm-up; the
# ratio is taken round by round. WIDEEP_LAUNCH=path times that binary instead
# of building one. Machine-readable lines "FIGURE name value unit" (one per
# run), and "SHAPE name expression", go to the file FIGURES_OUT when set, else
# to stdout after the table.
set -euo pipefail
export LC_ALL=C

usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; }

all_shapes=(16-prefixes one-prefix one-range two-groups suffix mixed)
runs=5
shapes=("${all_shapes[@]}")
while getopts n:s:h opt; do
	case $opt in
	n) runs=$OPTARG ;;
	s) IFS=, read -ra shapes <<<"$OPTARG" ;;
	h) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
if [[ ! $runs =~ ^[1-9][0-9]*$ ]] || (($# > 1)); then
	usage >&2
	exit 2
fi

# shape_expr NAME: the expression of a shape.
shape_expr() {
	local e= i p
	case $1 in
	16-prefixes)
		for p in a b c d e f g h i j k l m n o p; do e+="$p[0-65535],"; done
		echo "${e%,}" ;;
	one-prefix)
		for i in $(seq 0 15); do e+="$((i * 65536))-$((i * 65536 + 65535)),"; done
		echo "n[${e%,}]" ;;
	one-range) echo 'n[0-65535]' ;;
	two-groups) echo 'rack[0-99]-node[0000-9999]' ;;
	suffix) echo 'gpu[0000-9999]-ib' ;;
	mixed)
		for i in $(seq -w 1 15); do e+="p$i-[00000-65535],"; done
		echo "${e}rack[1-2]-n[00000-08191]" ;;
	*) return 1 ;;
	esac
}

if (($# == 1)); then
	shapes=(custom)
	custom_expr=$1
else
	for s in "${shapes[@]}"; do
		shape_expr "$s" >/dev/null || { echo "bench.sh: unknown shape '$s' (${all_shapes[*]})" >&2; exit 2; }
	done
fi

missing=()
for tool in "${GO:-go}" scontrol nodeset sha256sum; do
	command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
	echo "bench.sh: missing ${missing[*]} (Debian: golang, slurm-client, clustershell, coreutils; 'make deps' installs them)" >&2
	exit 1
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [[ -n ${WIDEEP_LAUNCH:-} ]]; then
	wl=$(realpath "$WIDEEP_LAUNCH")
else
	wl=$tmp/wideep-launch
	(cd "$root" && CGO_ENABLED=0 "${GO:-go}" build -trimpath -ldflags '-s -w' -o "$wl" ./cmd/wideep-launch)
fi
figures=${FIGURES_TOOL:-}
if [[ -z $figures ]]; then
	figures=$tmp/figures
	(cd "$root" && "${GO:-go}" build -o "$figures" ./launcher/bench/figures)
fi
# scontrol only needs a slurm.conf to read; no controller is contacted.
printf 'ClusterName=x\nSlurmctldHost=localhost\n' >"$tmp/slurm.conf"
export SLURM_CONF=$tmp/slurm.conf
samples=$tmp/samples
: >"$samples"
fig() { echo "FIGURE $*" >>"$samples"; }

echo "hostlist expansion: wideep-launch $("$wl" version 2>/dev/null | head -1 || true)," \
	"$(scontrol --version), ClusterShell nodeset $(nodeset --version 2>/dev/null | awk '{print $NF}')"

# The check of the shape Slurm cannot take in one range: both must refuse it.
if [[ ${#shapes[@]} -gt 1 || ${shapes[0]} == one-range ]]; then
	big='n[0-999999]'
	if "$wl" hostnames -- "$big" >/dev/null 2>&1 || [[ -n $(scontrol -- show hostnames "$big" 2>/dev/null) ]]; then
		echo "bench.sh: $big: wideep-launch and scontrol must both refuse it (a range of more than 65,536 names)" >&2
		exit 1
	fi
	echo "check: $big (1,000,000 names in one range) is refused by wideep-launch and by scontrol alike"
	fig hostlist.range-1M.refused_by_both 1 bool
fi

for shape in "${shapes[@]}"; do
	if [[ $shape == custom ]]; then expr=$custom_expr; else expr=$(shape_expr "$shape"); fi
	shown=$expr
	((${#shown} <= 90)) || shown="${shown:0:87}..."
	echo
	echo "== $shape: $shown"
	# The check: identical names, one per line (nodeset separates by spaces).
	"$wl" hostnames -- "$expr" >"$tmp/w" || { echo "bench.sh: wideep-launch refused $shape" >&2; exit 1; }
	scontrol -- show hostnames "$expr" >"$tmp/s" 2>"$tmp/s.err" || true
	nodeset -e -- "$expr" | tr ' ' '\n' >"$tmp/n"
	count=$(wc -l <"$tmp/w")
	sw=$(sha256sum <"$tmp/w" | cut -d' ' -f1)
	sn=$(sha256sum <"$tmp/n" | cut -d' ' -f1)
	if [[ -s $tmp/s ]]; then
		scontrol_ok=1
		ss=$(sha256sum <"$tmp/s" | cut -d' ' -f1)
	else
		# 22.05 says "Invalid hostlist" on stderr and exits 0.
		scontrol_ok=0
		ss="refused: $(head -c 120 "$tmp/s.err" | tr '\n' ' ')"
	fi
	if [[ $sw != "$sn" || ($scontrol_ok == 1 && $sw != "$ss") ]]; then
		printf '  %-10s %s  %d lines\n' wideep "$sw" "$count" scontrol "$ss" "$(wc -l <"$tmp/s")" nodeset "$sn" "$(wc -l <"$tmp/n")"
		echo "bench.sh: $shape: the outputs differ; first difference from wideep-launch:" >&2
		cmp "$tmp/w" "$tmp/s" >&2 || true
		cmp "$tmp/w" "$tmp/n" >&2 || true
		exit 1
	fi
	if ((scontrol_ok)); then
		echo "   outputs identical (wideep-launch, scontrol, nodeset): $count names, sha256 ${sw:0:16}"
	else
		echo "   scontrol $ss"
		echo "   outputs identical (wideep-launch, nodeset): $count names, sha256 ${sw:0:16}; scontrol not timed"
	fi
	echo "SHAPE $shape $expr" >>"$samples"
	fig "hostlist.$shape.names" "$count" names
	fig "hostlist.$shape.scontrol_accepts" "$scontrol_ok" bool
	# Expressions hold no white space: each command is one string, split at spaces.
	cmds=("wideep=$wl hostnames -- $expr")
	((scontrol_ok)) && cmds+=("scontrol=scontrol show hostnames $expr")
	cmds+=("nodeset=nodeset -e -- $expr")
	"$figures" pair -n "$runs" -prefix "hostlist.$shape" "${cmds[@]}" >>"$samples" 2>"$tmp/pair.log" ||
		{ cat "$tmp/pair.log" >&2; exit 1; }
	sed 's/^/   /' "$tmp/pair.log"
done

# The table: medians per shape.
"$figures" summarize <"$samples" >"$tmp/summary"
# med NAME FORMAT: the median of a figure, printed with FORMAT ('-' when absent).
med() { awk -v n="$1" -v f="$2" '$2 == n {printf f, $5; x = 1} END {if (!x) printf "-"}' "$tmp/summary"; }
echo
echo "hostlist expansion, median wall time of $runs runs, ratio = median of the per-round ratios"
printf '%-12s %9s %11s %11s %11s %16s %15s\n' shape names "wideep" scontrol nodeset "scontrol/wideep" "nodeset/wideep"
for shape in "${shapes[@]}"; do
	printf '%-12s %9s %11s %11s %11s %16s %15s\n' "$shape" "$(med "hostlist.$shape.names" %d)" \
		"$(med "hostlist.$shape.wideep.wall_ms" '%.1f ms')" "$(med "hostlist.$shape.scontrol.wall_ms" '%.1f ms')" \
		"$(med "hostlist.$shape.nodeset.wall_ms" '%.1f ms')" "$(med "hostlist.$shape.scontrol/wideep.ratio" '%.1fx')" \
		"$(med "hostlist.$shape.nodeset/wideep.ratio" '%.1fx')"
done
echo "(targets: scontrol/wideep >= 3x, nodeset/wideep >= 30x; printed, not asserted; '-': scontrol refuses the shape)"

if [[ -n ${FIGURES_OUT:-} ]]; then
	cat "$samples" >>"$FIGURES_OUT"
else
	cat "$samples"
fi
