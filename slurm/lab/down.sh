#!/usr/bin/env bash
# down.sh - stop the lab cluster that up.sh started from $SLURM_LAB_DIR (default /tmp/slurm-lab).
#
# Stops only processes that up.sh (or the cluster it started) created, always by PID, never with
# pkill/killall:
#   1. cancels every job of the lab through its slurmctld and waits for the jobs to end;
#   2. stops the daemons listed in $SLURM_LAB_DIR/pids (each first checked to still carry
#      SLURM_LAB_ID=$SLURM_LAB_DIR in its environment, so a recycled PID is never signalled);
#   3. fallback sweep, only for what step 1 could not end (e.g. slurmctld already dead):
#      processes carrying the marker, slurmstepds listening on sockets in our spool dir,
#      job processes (SLURM_JOB_ID set and SLURM_CONF=<our slurm.conf>), processes in the lab's own
#      cgroup subtrees, and anything still inside a network namespace up.sh made;
#   4. deletes the veths/namespaces/bridge listed in $SLURM_LAB_DIR/net;
#   5. removes the lab's cgroup subtrees listed in $SLURM_LAB_DIR/cgroups
#      (/sys/fs/cgroup/<ctrl>/slurm-lab-<net>-<cksum of dir>, in which Slurm made slurm_<node>/...).
# Logs stay in $SLURM_LAB_DIR/log until the next up.sh. Safe to run twice.
set -uo pipefail

T_START=$(date +%s.%N)
DIR=${SLURM_LAB_DIR:-/tmp/slurm-lab}
CONF="$DIR/etc/slurm.conf"
log() { printf '[slurm-lab down %6.2fs] %s\n' "$(awk -v s="$T_START" -v n="$(date +%s.%N)" 'BEGIN{print n-s}')" "$*"; }

[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
if [ ! -f "$DIR/.slurm-lab" ]; then log "no lab at $DIR; nothing to do"; exit 0; fi
unset SLURM_LAB_ID

# never signal ourselves or any of our ancestors
declare -A SELF
p=$$
while [ -n "$p" ] && [ "$p" != 0 ]; do
  SELF[$p]=1
  s=$(cat "/proc/$p/stat" 2>/dev/null) || break
  s=${s##*) }; s=${s#* }; p=${s%% *}
done

alive() {  # process exists and is not a zombie (builtins only: cheap enough to poll)
  local s
  { s=$(< "/proc/$1/stat"); } 2>/dev/null || return 1
  s=${s##*) }
  [ "${s%% *}" != Z ]
}
has_env() {  # has_env PID VAR=VALUE
  { tr '\0' '\n' < "/proc/$1/environ"; } 2>/dev/null | grep -qxF "$2"
}
is_ours() { alive "$1" && has_env "$1" "SLURM_LAB_ID=$DIR"; }
pids_with_env() {  # every PID whose environment holds exactly VAR=VALUE
  grep -lzxF "$1" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | sort -u
}
# stop_pids SECONDS PID... : SIGTERM, wait up to SECONDS, then SIGKILL the rest (callers vetted the PIDs)
stop_pids() {
  local secs=$1; shift
  local p left=() still
  for p in "$@"; do [ -z "${SELF[$p]:-}" ] && alive "$p" && kill -TERM "$p" 2>/dev/null && left+=("$p"); done
  [ "${#left[@]}" -gt 0 ] || return 0
  for _ in $(seq 1 $((secs * 10))); do
    still=()
    for p in "${left[@]}"; do alive "$p" && still+=("$p"); done
    [ "${#still[@]}" -gt 0 ] || return 0
    sleep 0.1
  done
  for p in "${still[@]}"; do
    alive "$p" || continue
    log "SIGKILL $p ($({ tr '\0' ' ' < "/proc/$p/cmdline"; } 2>/dev/null | cut -c1-60))"
    kill -KILL "$p" 2>/dev/null
  done
  sleep 0.2
}

declare -A PID
if [ -f "$DIR/pids" ]; then
  while read -r name pid; do PID[$name]=$pid; done < "$DIR/pids"
fi
ctld=${PID[slurmctld]:-}

# 1. cancel every job so slurmstepd and the job's processes go away the normal way
if [ -n "$ctld" ] && is_ours "$ctld" && [ -f "$CONF" ]; then
  export SLURM_CONF="$CONF"
  jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    log "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    kw=$(awk -F= '/^KillWait=/{print $2}' "$CONF"); kw=${kw:-30}
    for _ in $(seq 1 $(( (kw + 15) * 5 ))); do
      [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
fi

# 2. slurmds, then slurmctld, then munged (each vetted by its marker)
# shellcheck disable=SC2254  # $1 is a glob on purpose
daemons() { local n; for n in "${!PID[@]}"; do case "$n" in $1) is_ours "${PID[$n]}" && echo "${PID[$n]}";; esac; done; }
# shellcheck disable=SC2046
stop_pids 10 $(daemons 'slurmd:*')
# shellcheck disable=SC2046
stop_pids 10 $(daemons slurmctld)
# shellcheck disable=SC2046
stop_pids 10 $(daemons munged)

# 3. fallback sweep
job_procs=$(comm -12 <(pids_with_env "SLURM_CONF=$CONF") \
                     <(grep -lz '^SLURM_JOB_ID=' /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | sort -u))
marked=$(pids_with_env "SLURM_LAB_ID=$DIR")
# slurmstepds clear their environment, but each listens on a unix socket in our spool dir
# (visible from here in multi mode; in netns mode they are found through the namespaces below)
stepds=$(ss -xlpH 2>/dev/null | grep -F "$DIR/spool/" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -un)
# every process in the lab's cgroup subtrees was put there by one of our slurmstepds
in_cgroups=""
if [ -f "$DIR/cgroups" ]; then
  while read -r kind cg; do
    [ "$kind" = cgroup ] && [ -d "$cg" ] || continue
    in_cgroups+=" $(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | tr '\n' ' ')"
  done < "$DIR/cgroups"
fi
left=()
for p in $job_procs $marked $stepds $in_cgroups; do [ -z "${SELF[$p]:-}" ] && alive "$p" && left+=("$p"); done
if [ "${#left[@]}" -gt 0 ]; then
  log "stopping ${#left[@]} leftover process(es) of this lab: ${left[*]}"
  stop_pids 5 "${left[@]}"
fi

# 4. network namespaces: whatever is still inside them was started by our slurmds; then delete them
if [ -f "$DIR/net" ]; then
  while read -r kind name; do
    [ "$kind" = netns ] && [ -e "/run/netns/$name" ] || continue
    inside=$(ip netns pids "$name" 2>/dev/null | tr '\n' ' ')
    if [ -n "${inside// /}" ]; then
      log "stopping processes left in netns $name: $inside"
      # shellcheck disable=SC2086
      stop_pids 5 $inside
    fi
  done < "$DIR/net"
  while read -r kind name; do
    case "$kind" in
      veth)  ip link del "$name" 2>/dev/null || true ;;
      netns) ip netns del "$name" 2>/dev/null || true ;;
    esac
  done < "$DIR/net"
  while read -r kind name; do
    [ "$kind" = bridge ] && { ip link del "$name" 2>/dev/null || true; }
  done < "$DIR/net"
  rm -f "$DIR/net"
fi

# 5. the lab's cgroup subtrees (Slurm leaves its empty slurm_<node> hierarchies in them)
cg_left=()
if [ -f "$DIR/cgroups" ]; then
  while read -r kind cg; do
    [ "$kind" = cgroup ] && [ -d "$cg" ] || continue
    find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
    [ -d "$cg" ] && cg_left+=("$cg")
  done < "$DIR/cgroups"
  if [ "${#cg_left[@]}" -eq 0 ]; then rm -f "$DIR/cgroups"; fi
fi

# 6. report
still=()
for name in "${!PID[@]}"; do is_ours "${PID[$name]}" && still+=("$name:${PID[$name]}"); done
if [ "${#still[@]}" -gt 0 ]; then
  log "WARNING: still running: ${still[*]}"
  exit 1
fi
if [ "${#cg_left[@]}" -gt 0 ]; then
  log "WARNING: cgroups not removable (processes left in them?): ${cg_left[*]}"
  exit 1
fi
rm -f "$DIR/pids" "$DIR/env.sh" "$DIR/info" "$DIR/nodes"
log "lab at $DIR stopped (logs kept in $DIR/log)"
