#!/usr/bin/env bash
# Times `wideep-launch hostnames`, `scontrol show hostnames` and ClusterShell's
# `nodeset -e` on one expression of about a million names, checks that the
# three print the same names in the same order, and prints the median times
# and the ratios between them (`make bench-hostlist`). Figures, not a test:
# it exits 0 whether or not the targets are met, and 1 when the outputs differ
# or a tool is missing.
#
# usage: slurm/hostlistbench/bench.sh [-n RUNS] [EXPR]
#
# The default expression is 15 ranges of 65,536 and one two-group token
# (999,424 names). nodeset sorts and folds what it prints, so an EXPR of your
# own must list its parts in the order nodeset sorts them (distinct prefixes,
# ascending, equal padding on both bounds) or the check fails.
set -euo pipefail
export LC_ALL=C

usage() { sed -n 's/^# \{0,1\}//; 2,/^usage/p' "$0" | sed '$d'; echo "usage: $0 [-n RUNS] [EXPR]"; }

runs=5
while getopts n:h opt; do
	case $opt in
	n) runs=$OPTARG ;;
	h) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
if [[ ! $runs =~ ^[1-9][0-9]*$ ]] || (($# > 1)); then
	usage >&2
	exit 2
fi

if (($# == 1)); then
	expr=$1
else
	expr=
	for i in $(seq -w 1 15); do
		expr+="p$i-[00000-65535],"
	done
	expr+="rack[1-2]-n[00000-08191]"
fi

if [[ -z ${EPOCHREALTIME:-} ]]; then
	echo "bench.sh: needs bash 5 (EPOCHREALTIME)" >&2
	exit 1
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

(cd "$root" && "${GO:-go}" build -o "$tmp/wideep-launch" ./cmd/wideep-launch)
# scontrol only needs a slurm.conf to read; no controller is contacted.
printf 'ClusterName=x\nSlurmctldHost=localhost\n' >"$tmp/slurm.conf"
export SLURM_CONF=$tmp/slurm.conf

names=("wideep-launch hostnames" "scontrol show hostnames" "nodeset -e")
# run_tool I: runs tool I on the expression, its names on stdout ("--": the
# expression may start with '-').
run_tool() {
	case $1 in
	0) "$tmp/wideep-launch" hostnames -- "$expr" ;;
	1) scontrol -- show hostnames "$expr" ;;
	2) nodeset -e -- "$expr" ;;
	esac
}

# The check: identical names, one per line (nodeset separates by spaces).
run_tool 0 >"$tmp/out0"
run_tool 1 >"$tmp/out1"
run_tool 2 | tr ' ' '\n' >"$tmp/out2"
count=$(wc -l <"$tmp/out0")
sums=()
for i in 0 1 2; do
	sums[i]=$(sha256sum <"$tmp/out$i" | cut -d' ' -f1)
done
shown=$expr
((${#shown} <= 100)) || shown="${shown:0:97}..."
echo "expression: $shown"
if [[ ${sums[0]} != "${sums[1]}" || ${sums[0]} != "${sums[2]}" ]]; then
	for i in 0 1 2; do
		printf '  %-26s %s  %d lines\n' "${names[i]}" "${sums[i]}" "$(wc -l <"$tmp/out$i")"
	done
	echo "bench.sh: the outputs differ; first difference from wideep-launch:" >&2
	for i in 1 2; do
		cmp "$tmp/out0" "$tmp/out$i" >&2 || true
	done
	exit 1
fi
echo "outputs identical: $count names each, sha256 ${sums[0]}"

# Interleaved runs so that load from elsewhere hits all three alike.
# times[I*runs+R] is run R of tool I in microseconds.
times=()
for ((r = 0; r < runs; r++)); do
	for i in 0 1 2; do
		start=${EPOCHREALTIME/./}
		run_tool "$i" >/dev/null
		end=${EPOCHREALTIME/./}
		times[i * runs + r]=$((end - start))
	done
done

# median I: median run time of tool I in microseconds.
median() {
	printf '%s\n' "${times[@]:$1*runs:runs}" | sort -n |
		awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
m=("$(median 0)" "$(median 1)" "$(median 2)")
echo "median of $runs runs (stdout to /dev/null, process start included):"
for i in 0 1 2; do
	awk -v n="${names[i]}" -v us="${m[i]}" 'BEGIN {printf "  %-26s %9.1f ms\n", n, us / 1000}'
done
awk -v w="${m[0]}" -v s="${m[1]}" -v c="${m[2]}" 'BEGIN {
	rs = s / w; rc = c / w
	printf "ratios: scontrol / wideep-launch = %.1fx (target >= 3x: %s)\n", rs, (rs >= 3) ? "met" : "MISSED"
	printf "        nodeset / wideep-launch  = %.1fx (target >= 30x: %s)\n", rc, (rc >= 30) ? "met" : "MISSED"
}'
