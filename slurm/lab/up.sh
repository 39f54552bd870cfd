#!/usr/bin/env bash
# up.sh - stand up a real Slurm cluster (1 slurmctld + N slurmd "nodes") on this one machine.
#
# Used by `make cluster-up` and by the Go package slurm/slurmtest (which gives every cluster its own
# SLURM_LAB_DIR, _NET, _SUBNET and _CTLD_PORT so that several labs can run at once); see README.md.
#
# Uses Debian 12's own packages (slurm-wlm 22.05.8, munge 0.5.15), installed with apt-get if missing.
# Everything it writes lives under $SLURM_LAB_DIR (default /tmp/slurm-lab), apart from the lab's
# network objects and its cgroup subtrees /sys/fs/cgroup/<ctrl>/slurm-lab-<net>-<cksum of dir>
# (listed in $SLURM_LAB_DIR/net and $SLURM_LAB_DIR/cgroups). Every daemon it starts is recorded in
# $SLURM_LAB_DIR/pids and carries SLURM_LAB_ID=$SLURM_LAB_DIR in its environment, so down.sh can stop
# exactly those processes by PID.
#
# Settings (environment variables, all optional):
#   SLURM_LAB_NODES=8            number of compute nodes (1..250)
#   SLURM_LAB_MODE=netns         netns : each slurmd in its own network + UTS + mount namespace
#                                        (own IP 10.213.77.<i>, hostname == node name, node names
#                                        resolvable inside jobs, every node has its own port space)
#                                multi : Slurm "multiple slurmd" mode: all slurmds share the host's
#                                        network and hostname, distinguished only by port (and by
#                                        SLURMD_NODENAME); no network setup at all
#   SLURM_LAB_DIR=/tmp/slurm-lab state/config/log directory owned by this script (wiped on each up)
#   SLURM_LAB_NODE_PREFIX=node   node names are <prefix><i> ...
#   SLURM_LAB_NODE_WIDTH=0       ... with <i> zero-padded to this width (e.g. 2 -> node01..node08)
#   SLURM_LAB_CPUS=4             CPUs each node advertises (may exceed the real core count)
#   SLURM_LAB_MEM=4000           RealMemory (MB) each node advertises
#   SLURM_LAB_GPUS=0             fake GPUs per node: gres/gpu backed by device nodes $DIR/dev/nvidia<i>
#                                (c 195 <i>, no driver behind them); jobs asking --gpus* get
#                                CUDA_VISIBLE_DEVICES, SLURM_STEP_GPUS, SLURM_JOB_GPUS etc.
#   SLURM_LAB_KILLWAIT=5         slurm.conf KillWait (seconds between SIGTERM and SIGKILL)
#   SLURM_LAB_PROCTRACK=auto     proctrack/cgroup when the cgroup v1 freezer is mounted (as here),
#                                else proctrack/linuxproc; proctrack/pgid also works. With cgroup,
#                                scancel's non-KILL signals reach only each task's top process (as on
#                                real clusters); with linuxproc they reach every descendant.
#   SLURM_LAB_TASK=task/none     task/cgroup also works (needs proctrack/cgroup)
#   SLURM_LAB_CTLD_PORT=16817    slurmctld port (multi mode: slurmds use CTLD_PORT+100+i)
#   SLURM_LAB_NET=slab           name prefix for bridge/veth/netns objects (netns mode); unique
#                                among running labs
#   SLURM_LAB_SUBNET=10.213.77   /24 used only inside the namespaces this script makes (netns mode)
#   SLURM_LAB_TIMEOUT=60         seconds to wait for each start-up stage (munged, slurmctld, all
#                                nodes idle, smoke job)
#   SLURM_LAB_EXTRA_CONF=        extra lines appended to slurm.conf
#   SLURM_LAB_NO_INSTALL=0       1 = never call apt-get
#   SLURM_LAB_SMOKE=1            0 = skip the final 'srun -N <nodes> printenv SLURMD_NODENAME' check
#   SLURM_LAB_SETTLE=1           0 = return as soon as nodes are idle (~0.8 s) instead of waiting until
#                                slurmctld is 3.5 s old; before then a first sbatch job waits ~2.5 s
#   SLURM_LAB_KEEP_ON_FAIL=0     1 = leave a half-started lab running when up.sh fails (for debugging)
#
# On success it prints the line to use, e.g.   export SLURM_CONF=/tmp/slurm-lab/etc/slurm.conf
# (also written to $SLURM_LAB_DIR/env.sh), writes $SLURM_LAB_DIR/nodes ("<node> <addr> <netns>" per
# line; netns is "-" in multi mode) and $SLURM_LAB_DIR/info, and exits 0.
set -euo pipefail

T_START=$(date +%s.%N)
N=${SLURM_LAB_NODES:-8}
MODE=${SLURM_LAB_MODE:-netns}
DIR=${SLURM_LAB_DIR:-/tmp/slurm-lab}
PREFIX=${SLURM_LAB_NODE_PREFIX:-node}
WIDTH=${SLURM_LAB_NODE_WIDTH:-0}
CPUS=${SLURM_LAB_CPUS:-4}
MEM=${SLURM_LAB_MEM:-4000}
GPUS=${SLURM_LAB_GPUS:-0}
KILLWAIT=${SLURM_LAB_KILLWAIT:-5}
PROCTRACK=${SLURM_LAB_PROCTRACK:-auto}
TASKPLUGIN=${SLURM_LAB_TASK:-task/none}
CTLD_PORT=${SLURM_LAB_CTLD_PORT:-16817}
NET=${SLURM_LAB_NET:-slab}
SUBNET=${SLURM_LAB_SUBNET:-10.213.77}
TIMEOUT=${SLURM_LAB_TIMEOUT:-60}
EXTRA_CONF=${SLURM_LAB_EXTRA_CONF:-}
NO_INSTALL=${SLURM_LAB_NO_INSTALL:-0}

log() { printf '[slurm-lab up %6.2fs] %s\n' "$(awk -v s="$T_START" -v n="$(date +%s.%N)" 'BEGIN{print n-s}')" "$*"; }
die() { echo "[slurm-lab up] ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
case "$MODE" in netns|multi) ;; *) die "SLURM_LAB_MODE must be netns or multi (got '$MODE')";; esac
[[ "$N" =~ ^[0-9]+$ ]] && [ "$N" -ge 1 ] && [ "$N" -le 250 ] || die "SLURM_LAB_NODES must be 1..250"
case "$DIR" in /*) ;; *) die "SLURM_LAB_DIR must be an absolute path";; esac
[ "${#NET}" -le 8 ] || die "SLURM_LAB_NET must be at most 8 characters (interface names are limited to 15)"
[[ "$NET" =~ ^[A-Za-z0-9_.-]+$ ]] || die "SLURM_LAB_NET may hold only letters, digits, '_', '.', '-'"
[[ "$SUBNET" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "SLURM_LAB_SUBNET must look like 10.213.77"
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] && [ "$TIMEOUT" -ge 1 ] || die "SLURM_LAB_TIMEOUT must be a positive integer"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Locks shared by every lab on this machine (whatever TMPDIR says): one for apt-get, one for claiming
# network names, subnets and cgroup subtrees. Their fds are closed before any daemon starts, so no
# daemon ever holds them.
LOCKDIR=/run/lock
{ [ -d "$LOCKDIR" ] && [ -w "$LOCKDIR" ]; } || LOCKDIR=/tmp

# On any failure after we started something, tear it down again (logs are kept) unless asked not to.
STARTED=0
on_exit() {
  local rc=$?
  if [ "$rc" != 0 ] && [ "$STARTED" = 1 ] && [ "${SLURM_LAB_KEEP_ON_FAIL:-0}" != 1 ]; then
    echo "[slurm-lab up] failed (rc=$rc); cleaning up with down.sh (logs stay in $DIR/log)" >&2
    env -u SLURM_LAB_ID SLURM_LAB_DIR="$DIR" bash "$HERE/down.sh" >&2 || true
  fi
}
trap on_exit EXIT
# bash skips the EXIT trap when a signal kills it; turn the usual stop signals into an exit so a
# cancelled up.sh (Ctrl-C, a Go test's context) still tears down what it started
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ---------------------------------------------------------------------------------------------
# 1. packages (idempotent: apt-get only runs when a needed command is missing)
# ---------------------------------------------------------------------------------------------
missing_pkgs() {
  need_pkgs=()
  command -v slurmctld >/dev/null || need_pkgs+=(slurmctld)
  command -v slurmd    >/dev/null || need_pkgs+=(slurmd)
  command -v sbatch    >/dev/null || need_pkgs+=(slurm-client)
  command -v munged    >/dev/null || need_pkgs+=(munge)
  command -v setsid    >/dev/null || need_pkgs+=(util-linux)
  command -v unshare   >/dev/null || need_pkgs+=(util-linux)
  command -v flock     >/dev/null || need_pkgs+=(util-linux)
  if [ "$MODE" = netns ]; then
    command -v ip      >/dev/null || need_pkgs+=(iproute2)
    command -v nsenter >/dev/null || need_pkgs+=(util-linux)
  fi
  command -v ss >/dev/null || need_pkgs+=(iproute2)
  return 0
}
missing_pkgs
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  [ "$NO_INSTALL" = 1 ] && die "missing packages ${need_pkgs[*]} and SLURM_LAB_NO_INSTALL=1"
  # Labs started in parallel on a bare machine (Go test packages run concurrently) take turns here;
  # whoever comes second usually finds everything installed. flock itself may be what is missing.
  if command -v flock >/dev/null; then
    exec 9>>"$LOCKDIR/slurm-lab-apt.lock"
    flock -w 900 9 || die "waited 900 s for another slurm-lab apt-get ($LOCKDIR/slurm-lab-apt.lock)"
    missing_pkgs
  fi
fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing ${need_pkgs[*]} with apt-get"
  # Keep the packages' own init scripts from starting system-wide daemons during install.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made_policy=1
  fi
  rc=0
  # DPkg::Lock::Timeout: wait for somebody else's apt/dpkg instead of failing at once
  { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
      --no-install-recommends "${need_pkgs[@]}"; } > /tmp/slurm-lab-apt.log 2>&1 || rc=$?
  if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  [ "$rc" = 0 ] || { tail -20 /tmp/slurm-lab-apt.log >&2; die "apt-get failed (log: /tmp/slurm-lab-apt.log)"; }
  log "packages installed"
fi
exec 9>&-

# proctrack/cgroup is what real clusters run, and it changes who gets signals (see README); it needs
# the cgroup v1 freezer hierarchy (Slurm 22.05's cgroup/v2 would want systemd, absent here)
if [ "$PROCTRACK" = auto ]; then
  if awk '$3=="cgroup" && $2=="/sys/fs/cgroup/freezer"' /proc/mounts | grep -q .; then
    PROCTRACK=proctrack/cgroup
  else
    PROCTRACK=proctrack/linuxproc
    echo "[slurm-lab up] note: no cgroup v1 freezer mounted; using proctrack/linuxproc" >&2
  fi
fi

# ---------------------------------------------------------------------------------------------
# 2. refuse to clobber a running lab, then (re)create the state directory
# ---------------------------------------------------------------------------------------------
# is_ours PID: the process exists, is not a zombie, and carries our marker in its environment
is_ours() {
  local pid=$1 st
  [ -r "/proc/$pid/environ" ] || return 1
  st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ "$st" != Z ] || return 1
  { tr '\0' '\n' < "/proc/$pid/environ"; } 2>/dev/null | grep -qxF "SLURM_LAB_ID=$DIR"
}
# alive: the process we just started still runs. Not is_ours: until it has
# exec'd, its environ is the shell's, without SLURM_LAB_ID.
alive() {
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ "$st" != Z ]
}
if [ -f "$DIR/pids" ]; then
  while read -r _name pid; do
    if is_ours "$pid"; then die "a lab is already running from $DIR (pid $pid); run down.sh first"; fi
  done < "$DIR/pids"
fi
if [ -e "$DIR" ]; then
  [ -f "$DIR/.slurm-lab" ] || die "$DIR exists and was not made by slurm-lab; choose another SLURM_LAB_DIR"
  rm -rf "$DIR"
fi
mkdir -p "$DIR"/{etc,log,state,spool,run,munge-key,munge-sock,dev}
touch "$DIR/.slurm-lab"
chmod 755 "$DIR" "$DIR/munge-sock"
chmod 700 "$DIR/munge-key"
: > "$DIR/pids"
STARTED=1

# node names
NODES=()
for i in $(seq 1 "$N"); do NODES+=("$(printf "%s%0${WIDTH}d" "$PREFIX" "$i")"); done
if [ "$WIDTH" -gt 0 ]; then
  NODESPEC="${PREFIX}[$(printf "%0${WIDTH}d" 1)-$(printf "%0${WIDTH}d" "$N")]"
else
  NODESPEC="${PREFIX}[1-$N]"
fi
if [ "$N" = 1 ]; then NODESPEC=${NODES[0]}; fi
HOST_SHORT=$(hostname -s)

# ports must be free (we never take over somebody else's daemon)
port_busy() { ss -Htln "sport = :$1" 2>/dev/null | grep -q .; }
port_busy "$CTLD_PORT" && die "port $CTLD_PORT is in use; set SLURM_LAB_CTLD_PORT"
if [ "$MODE" = multi ]; then
  for i in $(seq 1 "$N"); do p=$((CTLD_PORT + 100 + i)); port_busy "$p" && die "port $p is in use; set SLURM_LAB_CTLD_PORT"; done
fi

# ---------------------------------------------------------------------------------------------
# 3. munge: private key, private socket, our own munged
# ---------------------------------------------------------------------------------------------
head -c 1024 /dev/urandom > "$DIR/munge-key/munge.key"
chmod 400 "$DIR/munge-key/munge.key"
SOCK="$DIR/munge-sock/munge.socket"

start_daemon() {  # start_daemon NAME LOGFILE CMD... : detached, own session, stdio to LOGFILE, PID recorded
  local name=$1 logf=$2; shift 2
  # SLURM_LAB_ID is the marker down.sh looks for (slurmstepds clear their environment, so down.sh
  # finds those through their spool-dir sockets or through our network namespaces instead)
  SLURM_LAB_ID="$DIR" setsid "$@" < /dev/null > "$logf" 2>&1 &
  local pid=$!
  echo "$name $pid" >> "$DIR/pids"
  LAST_PID=$pid
}
start_daemon munged "$DIR/log/munged.out" munged -F \
  --key-file="$DIR/munge-key/munge.key" --seed-file="$DIR/munge-key/munged.seed" \
  --socket="$SOCK" --pid-file="$DIR/munge-sock/munged.pid" --log-file="$DIR/log/munged.log"
PID_munged=$LAST_PID
# The socket appears before munged serves it: poll a real credential round trip.
munge_ok=0
for _ in $(seq 1 $((TIMEOUT * 20))); do
  if [ -S "$SOCK" ] && munge -S "$SOCK" -n 2>/dev/null | unmunge -S "$SOCK" >/dev/null 2>&1; then munge_ok=1; break; fi
  alive "$PID_munged" || break; sleep 0.05
done
[ "$munge_ok" = 1 ] || { cat "$DIR/log/munged.out" >&2; die "munged did not come up"; }
log "munged up (pid $PID_munged)"

# ---------------------------------------------------------------------------------------------
# 4. network namespaces (netns mode)
# ---------------------------------------------------------------------------------------------
# Checking that names, subnet and cgroup subtrees are free and then taking them happens under one
# machine-wide lock, and each object is recorded (for down.sh) only once this lab has created it, so
# two labs started at the same moment can't both pass the checks, and a lab that loses never deletes
# the winner's objects when it cleans up.
exec 8>>"$LOCKDIR/slurm-lab-claim.lock"
flock -w "$TIMEOUT" 8 || die "waited ${TIMEOUT}s for $LOCKDIR/slurm-lab-claim.lock"
: > "$DIR/net"
: > "$DIR/cgroups"

# Each lab gets its own subtree /sys/fs/cgroup/<ctrl>/slurm-lab-<net>-<cksum of $DIR>, bind-mounted
# over /sys/fs/cgroup/<ctrl> inside every node's private mount namespace. Slurm then creates its
# per-node hierarchy (slurm_<node>/uid_0/job_<id>/step_<id>) inside the lab's subtree: two labs can
# both have a node1 running a job 2 without sharing (and freezing or killing) each other's cgroups.
# The name follows $DIR, which no running lab shares with us (checked above), so a subtree that
# already exists was left by an earlier lab from this $DIR.
CG_NAME="slurm-lab-$NET-$(printf '%s' "$DIR" | cksum | cut -d' ' -f1)"
CG_CTRLS=()
for ctrl in freezer cpuset memory devices cpuacct; do
  awk -v d="/sys/fs/cgroup/$ctrl" '$3=="cgroup" && $2==d {f=1} END{exit !f}' /proc/mounts || continue
  cg="/sys/fs/cgroup/$ctrl/$CG_NAME"
  if [ -d "$cg" ]; then
    find "$cg" -depth -mindepth 1 -type d -exec rmdir {} \; 2>/dev/null || true
    [ -z "$(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null)" ] \
      || die "cgroup $cg still has processes of an earlier lab from $DIR; stop them or choose another SLURM_LAB_DIR"
  else
    mkdir "$cg"
  fi
  if [ "$ctrl" = cpuset ]; then  # a cpuset cgroup takes no task until it has cpus and mems
    cat /sys/fs/cgroup/cpuset/cpuset.cpus > "$cg/cpuset.cpus"
    cat /sys/fs/cgroup/cpuset/cpuset.mems > "$cg/cpuset.mems"
  fi
  echo "cgroup $cg" >> "$DIR/cgroups"
  CG_CTRLS+=("$ctrl")
done

BR="${NET}-br"
if [ "$MODE" = netns ]; then
  CTL_ADDR="$SUBNET.254"
  ip link show "$BR" >/dev/null 2>&1 && die "interface $BR already exists (another lab? set SLURM_LAB_NET)"
  for i in $(seq 1 "$N"); do
    [ -e "/run/netns/${NET}-n$i" ] && die "netns ${NET}-n$i already exists (another lab? set SLURM_LAB_NET)"
    ip link show "${NET}-v$i" >/dev/null 2>&1 && die "interface ${NET}-v$i already exists (another lab? set SLURM_LAB_NET)"
  done
  if ip -4 addr show | grep -q "inet $SUBNET\." || ip -4 route show | grep -q "^$SUBNET\."; then
    die "subnet $SUBNET.0/24 already in use here; set SLURM_LAB_SUBNET"
  fi
  ip link add "$BR" type bridge
  echo "bridge $BR" >> "$DIR/net"
  sysctl -qw "net.ipv6.conf.$BR.disable_ipv6=1" || true
  ip addr add "$CTL_ADDR/24" dev "$BR"
  ip link set "$BR" up
  for i in $(seq 1 "$N"); do
    ns="${NET}-n$i"; veth="${NET}-v$i"
    ip netns add "$ns"; echo "netns $ns" >> "$DIR/net"
    ip link add "$veth" type veth peer name eth0 netns "$ns"; echo "veth $veth" >> "$DIR/net"
    sysctl -qw "net.ipv6.conf.$veth.disable_ipv6=1" || true
    ip link set "$veth" master "$BR" up
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.eth0.disable_ipv6=1 || true
    ip -n "$ns" addr add "$SUBNET.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
  done
  # hosts file bind-mounted over /etc/hosts inside each node's mount namespace
  {
    echo "127.0.0.1 localhost"
    echo "::1 localhost ip6-localhost ip6-loopback"
    echo "$CTL_ADDR $HOST_SHORT slurm-lab-ctl"
    for i in $(seq 1 "$N"); do echo "$SUBNET.$i ${NODES[$((i-1))]}"; done
  } > "$DIR/etc/hosts"
  log "network namespaces up: bridge $BR $CTL_ADDR/24, ${NET}-n1..${NET}-n$N"
else
  CTL_ADDR=127.0.0.1
fi
exec 8>&-
if [ "${#CG_CTRLS[@]}" -gt 0 ]; then log "cgroup subtrees: /sys/fs/cgroup/{$(IFS=,; echo "${CG_CTRLS[*]}")}/$CG_NAME"; fi

# ---------------------------------------------------------------------------------------------
# 5. configuration
# ---------------------------------------------------------------------------------------------
CONF="$DIR/etc/slurm.conf"
{
  cat <<EOF
# generated by slurm-lab/up.sh ($MODE mode, $N nodes)
ClusterName=lab
SlurmctldHost=$HOST_SHORT($CTL_ADDR)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=$PROCTRACK
TaskPlugin=$TASKPLUGIN
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=$KILLWAIT
MinJobAge=300
InactiveLimit=0
SlurmdTimeout=60
SchedulerParameters=batch_sched_delay=0
EOF
  gres=""
  if [ "$GPUS" -gt 0 ]; then
    echo "GresTypes=gpu"
    gres=" Gres=gpu:$GPUS"
  fi
  if [ "$MODE" = netns ]; then
    echo "NodeName=$NODESPEC NodeHostname=$NODESPEC NodeAddr=$SUBNET.[1-$N] CPUs=$CPUS RealMemory=$MEM$gres State=UNKNOWN"
  else
    echo "NodeName=$NODESPEC NodeHostname=localhost NodeAddr=127.0.0.1 Port=[$((CTLD_PORT + 101))-$((CTLD_PORT + 100 + N))] CPUs=$CPUS RealMemory=$MEM$gres State=UNKNOWN"
  fi
  echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
  if [ -n "$EXTRA_CONF" ]; then printf '%s\n' "$EXTRA_CONF"; fi
} > "$CONF"
if [ "$N" = 1 ]; then
  sed -i -e "s|NodeAddr=$SUBNET.\[1-1\]|NodeAddr=$SUBNET.1|" -e "s|Port=\[\([0-9]*\)-[0-9]*\]|Port=\1|" "$CONF"
fi

cat > "$DIR/etc/cgroup.conf" <<EOF
CgroupPlugin=autodetect
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
EOF
if [ "$GPUS" -gt 0 ]; then
  # slurmd wants character devices; these mimic /dev/nvidia<i> (c 195 <i>) and, with no driver
  # loaded, fail with ENXIO if anything opens them. task/none: nothing is constrained.
  for g in $(seq 0 $((GPUS - 1))); do mknod "$DIR/dev/nvidia$g" c 195 "$g"; done
  if [ "$GPUS" = 1 ]; then
    echo "Name=gpu File=$DIR/dev/nvidia0" > "$DIR/etc/gres.conf"
  else
    echo "Name=gpu File=$DIR/dev/nvidia[0-$((GPUS - 1))]" > "$DIR/etc/gres.conf"
  fi
fi
export SLURM_CONF="$CONF"

# ---------------------------------------------------------------------------------------------
# 6. slurmctld, then the slurmds
# ---------------------------------------------------------------------------------------------
start_daemon slurmctld "$DIR/log/slurmctld.out" slurmctld -D -f "$CONF"
PID_slurmctld=$LAST_PID
T_CTLD=$(date +%s.%N)
ok=0
for _ in $(seq 1 $((TIMEOUT * 10))); do
  if scontrol ping 2>/dev/null | grep -q 'is UP'; then ok=1; break; fi
  alive "$PID_slurmctld" || break
  sleep 0.1
done
[ "$ok" = 1 ] || { tail -20 "$DIR/log/slurmctld.out" >&2; die "slurmctld did not come up"; }
log "slurmctld up (pid $PID_slurmctld, $CTL_ADDR:$CTLD_PORT)"

# node.sh runs inside the node's own mount (and, in netns mode, UTS) namespace and becomes slurmd
cat > "$DIR/etc/node.sh" <<'NODE_SH'
#!/bin/sh
# node.sh MODE NODE SLURM_CONF HOSTS CGROUP_NAME CTRL... (written by slurm/lab/up.sh)
set -e
mode=$1 node=$2 conf=$3 hosts=$4 cgname=$5
shift 5
for ctrl in "$@"; do mount --bind "/sys/fs/cgroup/$ctrl/$cgname" "/sys/fs/cgroup/$ctrl"; done
if [ "$mode" = netns ]; then
  mount --bind "$hosts" /etc/hosts
  hostname "$node"
fi
exec slurmd -D -N "$node" -f "$conf"
NODE_SH
for i in $(seq 1 "$N"); do
  node=${NODES[$((i-1))]}
  mkdir -p "$DIR/spool/$node"
  if [ "$MODE" = netns ]; then
    # nsenter (not 'ip netns exec', which remounts /sys and hides /sys/fs/cgroup from slurmd)
    start_daemon "slurmd:$node" "$DIR/log/slurmd-$node.out" \
      nsenter --net="/run/netns/${NET}-n$i" unshare --uts --mount --propagation private \
      sh "$DIR/etc/node.sh" netns "$node" "$CONF" "$DIR/etc/hosts" "$CG_NAME" "${CG_CTRLS[@]}"
  else
    start_daemon "slurmd:$node" "$DIR/log/slurmd-$node.out" \
      unshare --mount --propagation private \
      sh "$DIR/etc/node.sh" multi "$node" "$CONF" - "$CG_NAME" "${CG_CTRLS[@]}"
  fi
done

# ---------------------------------------------------------------------------------------------
# 7. wait for every node to be idle
# ---------------------------------------------------------------------------------------------
deadline=$(( $(date +%s) + TIMEOUT ))
while :; do
  idle=$(sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2=="idle"' | sort -u | wc -l)
  [ "$idle" -eq "$N" ] && break
  if [ "$(date +%s)" -ge "$deadline" ]; then
    sinfo -N >&2 || true
    for f in "$DIR"/log/slurmd-*.out; do echo "--- $f" >&2; tail -5 "$f" >&2; done
    die "only $idle of $N nodes idle after ${TIMEOUT}s (logs in $DIR/log); run down.sh to clean up"
  fi
  sleep 0.2
done

# end-to-end check (munge credentials, step launch on every node, I/O back to srun); it also gets
# slurmctld past its start-up phase, in which a batch job can wait ~3 s for its first scheduling pass
if [ "${SLURM_LAB_SMOKE:-1}" = 1 ]; then
  seen=$(timeout "$TIMEOUT" srun -N "$N" --ntasks-per-node=1 -t 1 -J slurm-lab-smoke printenv SLURMD_NODENAME 2>"$DIR/log/smoke.err" | sort -u | wc -l) || true
  [ "$seen" -eq "$N" ] || { cat "$DIR/log/smoke.err" >&2; die "smoke test: srun reached $seen of $N nodes"; }
  # wait for the smoke job to leave COMPLETING, so the next job can be placed at submit time
  for _ in $(seq 1 $((TIMEOUT * 10))); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.1; done
  log "smoke test: srun -N $N ran a task on each of the $N nodes"
fi

# slurmctld never starts a batch job at submit time (only its scheduler pass does), and its first
# scheduler pass comes 3 s after it starts: wait for that, so the first sbatch starts within ~1 s
if [ "${SLURM_LAB_SETTLE:-1}" = 1 ]; then
  while awk -v s="$T_CTLD" -v n="$(date +%s.%N)" 'BEGIN{exit !(n - s < 3.5)}'; do sleep 0.1; done
fi

# env.sh exports only SLURM_CONF (anything else exported there would show up in every job's env)
echo "export SLURM_CONF=$CONF" > "$DIR/env.sh"
for i in $(seq 1 "$N"); do
  if [ "$MODE" = netns ]; then
    echo "${NODES[$((i-1))]} $SUBNET.$i ${NET}-n$i"
  else
    echo "${NODES[$((i-1))]} 127.0.0.1 -"
  fi
done > "$DIR/nodes"
printf 'mode=%s\nnodes=%s\nnodelist=%s\nctld=%s:%s\nproctrack=%s\nnet=%s\nsubnet=%s\nkillwait=%s\ncgroup=%s\n' \
  "$MODE" "$N" "$NODESPEC" "$CTL_ADDR" "$CTLD_PORT" "$PROCTRACK" "$NET" "$SUBNET" "$KILLWAIT" "$CG_NAME" > "$DIR/info"
rss=0
while read -r _name pid; do
  r=$(awk '/^VmRSS:/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0); rss=$((rss + ${r:-0}))
done < "$DIR/pids"
log "cluster up: $N nodes idle ($NODESPEC, $MODE mode), daemons' RSS $((rss / 1024)) MiB"
sinfo
echo "export SLURM_CONF=$CONF"
