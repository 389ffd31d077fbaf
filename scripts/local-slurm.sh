#!/usr/bin/env bash
# A single-node Slurm (munge + slurmctld + slurmd) on this machine, for the `slurm` tests and
# for trying `kdrun slurm` by hand. Run as root; idempotent (a Slurm that answers is left as
# it is). Installs the Debian packages when they are missing (waits for another apt). Never
# fails: when Slurm cannot start it says why and exits 0, and the `slurm` tests skip.
#
# The node is this host with a few CPUs and two fake GPUs (GRES without device files, so jobs
# can ask for GPUs and are scheduled by them; nothing is pinned). KillWait and OverTimeLimit
# are short so time-limit tests are quick; jobs may be requeued (scontrol requeue).
#
#   scripts/local-slurm.sh          # install if needed, configure, start, wait until it answers
#   scripts/local-slurm.sh stop     # stop the daemons
set -u

CONF_DIR=/etc/slurm
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOGS=/var/log/slurm
CPUS=${KDRUN_SLURM_CPUS:-8}
PACKAGES="slurmctld slurmd slurm-client munge pgbouncer"

say() { echo "local-slurm: $*"; }

# Answers with a node that takes jobs (not down, drained or invalid).
answers() { timeout 5 sinfo -h -o %T 2>/dev/null | grep -qE "^(idle|mixed|allocated|completing)"; }

# The daemons' pid files (slurm.conf below, and munged's default).
PIDS="/run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid"
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ "${1:-}" = "stop" ]; then
    for f in $PIDS; do
        if running "$f"; then pid=$(cat "$f"); kill "$pid" && say "stopped $pid ($f)"; fi
    done
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    say "not root: cannot start Slurm (slurm tests will skip)"
    exit 0
fi

if answers; then
    say "Slurm already answers"
    exit 0
fi

install() {
    local missing="" p
    for p in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
            || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    command -v apt-get >/dev/null || { say "no apt-get to install$missing"; return 1; }
    say "installing$missing"
    local try
    for _ in $(seq 1 5); do  # another apt may hold the lock: wait for it
        if DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=60 update -qq \
            && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=60 \
                install -y -qq $missing >/dev/null; then
            return 0
        fi
        sleep 5
    done
    return 1
}

install || { say "could not install the packages (slurm tests will skip)"; exit 0; }

NODE=$(hostname -s)
mkdir -p "$CONF_DIR" "$STATE" "$SPOOL" "$LOGS" /run/munge
cat >"$CONF_DIR/slurm.conf" <<EOF
# Written by kdrun's scripts/local-slurm.sh: one node, this host.
ClusterName=kdrun-local
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=10
OverTimeLimit=0
MinJobAge=600
MessageTimeout=10
SchedulerParameters=sched_interval=2,bf_interval=2
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName=$NODE CPUs=$CPUS RealMemory=1000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
# Two fake GPUs: character devices like /dev/null (major 1, minor 3), so Slurm counts and
# schedules them and sets CUDA_VISIBLE_DEVICES, while nothing real is behind them.
mkdir -p /run/kdrun-fake-gpu
for i in 0 1; do
    [ -c /run/kdrun-fake-gpu/gpu$i ] || mknod /run/kdrun-fake-gpu/gpu$i c 1 3
done
cat >"$CONF_DIR/gres.conf" <<EOF
AutoDetect=off
NodeName=$NODE Name=gpu File=/run/kdrun-fake-gpu/gpu[0-1]
EOF

chown munge:munge /run/munge
[ -s /etc/munge/munge.key ] || { mungekey -c 2>/dev/null || /usr/sbin/create-munge-key -f; }
running /run/munge/munged.pid \
    || runuser -u munge -- /usr/sbin/munged --force || say "munged did not start"
# Restart both daemons when running: they read cred_expire and gres.conf only at start.
for f in /run/slurmctld.pid /run/slurmd.pid; do
    running "$f" && kill "$(cat "$f")" && sleep 2
done
/usr/sbin/slurmctld || say "slurmctld did not start"
/usr/sbin/slurmd || say "slurmd did not start"

for _ in $(seq 1 60); do
    if answers; then
        say "Slurm answers: $(sinfo -h -o '%P %D %T %c CPUs %G')"
        exit 0
    fi
    sleep 1
    scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1
done
say "Slurm did not come up within a minute (see $LOGS); slurm tests will skip"
exit 0
