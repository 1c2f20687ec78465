#!/usr/bin/env bash
# A throwaway single-node SLURM cluster on loopback, for tests/test_slurm.py and for trying the
# slurm profile by hand:
#
#   tests/slurm/cluster.sh start DIR   # install (Debian packages) if missing, configure, start
#   eval "$(tests/slurm/cluster.sh env DIR)"   # SLURM_CONF for sbatch/squeue/snakemake
#   tests/slurm/cluster.sh stop DIR    # cancel jobs, stop slurmd, slurmctld and munged,
#                                      # remove their state (the logs in DIR/log stay)
#   tests/slurm/cluster.sh status DIR  # sinfo, or an error if it is not running
#
# Everything the cluster writes (munge key and socket, slurm.conf, gres.conf, state, spool,
# logs, pid files) lives under DIR, so several checkouts do not share state; the one thing
# outside DIR is /etc/slurm/slurm.conf, a symlink made only when that path is free (see
# link_default_conf). The machine has no init system, so this script starts the daemons itself.
# Must run as root: slurmd launches jobs as the submitting user and SlurmUser is root.
#
# Environment: SLURM_TEST_CTLD_PORT / SLURM_TEST_SLURMD_PORT (default 6817/6818),
# SLURM_TEST_PARTITION (default "asymprune"), SLURM_TEST_MIN_JOB_AGE (default 300 s),
# SLURM_TEST_START_TIMEOUT (default 90 s).
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge)
PARTITION=${SLURM_TEST_PARTITION:-asymprune}
CTLD_PORT=${SLURM_TEST_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_TEST_SLURMD_PORT:-6818}
# Without accounting the snakemake plugin can only poll squeue, which forgets a finished job
# MinJobAge seconds after it ends; the plugin needs MinJobAge >= 3 x its
# --slurm-init-seconds-before-status-checks (40 s by default) or it falls back to sacct, which
# has no data here, and waits forever. 300 s (SLURM's own default) covers the default with room.
MIN_JOB_AGE=${SLURM_TEST_MIN_JOB_AGE:-300}
START_TIMEOUT=${SLURM_TEST_START_TIMEOUT:-90}
DEFAULT_CONF=/etc/slurm/slurm.conf

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 {start|stop|status|env} DIR" >&2
    exit 2
}

[[ $# -eq 2 ]] || usage
CMD=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd)
CONF=$DIR/slurm.conf
MUNGE_SOCKET=$DIR/munge/munge.socket.2
export SLURM_CONF=$CONF

log_tails() {
    local f
    for f in "$DIR"/log/munged.log "$DIR"/log/slurmctld.log "$DIR"/log/slurmd.log; do
        [[ -f $f ]] || continue
        echo "---- last lines of $f" >&2
        tail -n 25 "$f" >&2
    done
}

pid_alive() {
    # a pid file whose process still runs
    local pidfile=$1 pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

ensure_packages() {
    local missing=0 bin
    for bin in slurmctld slurmd sbatch squeue sinfo munged; do
        command -v "$bin" >/dev/null 2>&1 || missing=1
    done
    [[ $missing -eq 0 ]] && return 0
    [[ $(id -u) -eq 0 ]] || die "SLURM is not installed and installing it needs root"
    command -v apt-get >/dev/null 2>&1 || die "SLURM is not installed and there is no apt-get"
    echo "cluster.sh: installing ${PACKAGES[*]} with apt-get" >&2
    local aptlog=$DIR/apt-get.log
    # noninteractive: the packages' debconf questions would otherwise block a CI job
    if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
            --no-install-recommends "${PACKAGES[@]}"; } >"$aptlog" 2>&1; then
        tail -n 30 "$aptlog" >&2
        die "apt-get install ${PACKAGES[*]} failed (full log: $aptlog)"
    fi
}

start_munge() {
    mkdir -p "$DIR/munge" "$DIR/log" "$DIR/run"
    # the key must stay private to root; every client of this munged is root too
    chmod 700 "$DIR/munge"
    if pid_alive "$DIR/run/munged.pid"; then
        return 0
    fi
    (( ${#MUNGE_SOCKET} < 100 )) || die "DIR is too long for a unix socket path: $MUNGE_SOCKET"
    if [[ ! -s $DIR/munge/munge.key ]]; then
        # a fresh key per cluster: nothing else on the machine can talk to this one
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$DIR/munge/munge.key"
    fi
    rm -f "$MUNGE_SOCKET"
    # --force: munged wants every directory above its socket enterable by all users, which
    # pytest's private tmp dirs (mode 700) are not; only root talks to this daemon
    munged --force --socket="$MUNGE_SOCKET" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munged.seed" \
        || { log_tails; die "munged did not start"; }
}

write_conf() {
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/run"
    # slurmd -C reports this machine's real topology; slurmd marks a node INVAL when
    # slurm.conf claims more CPUs or memory than it finds, so take its numbers.
    local hw cpus boards sockets cores threads real mem headroom defmem
    hw=$(slurmd -C | head -n 1)
    field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$hw"; }
    cpus=$(field CPUs); boards=$(field Boards); sockets=$(field SocketsPerBoard)
    cores=$(field CoresPerSocket); threads=$(field ThreadsPerCore); real=$(field RealMemory)
    [[ -n $cpus && -n $real ]] || die "could not read CPUs/RealMemory from 'slurmd -C': $hw"
    # leave the OS, the test runner and snakemake itself some memory
    headroom=$(( real / 10 > 1024 ? real / 10 : 1024 ))
    mem=$(( real - headroom ))
    # a job without --mem would otherwise be given the whole node and block every other job
    defmem=$(( mem / cpus < 1024 ? mem / cpus : 1024 ))
    # Default=NO on the partition: a submission that forgets the partition fails here as it
    # would on most production clusters, so the test proves the profile passes one.
    cat >"$CONF" <<EOF
# Written by tests/slurm/cluster.sh: a single-node test cluster on loopback. Do not edit.
ClusterName=asymprunetest
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no mail on this machine; the default /bin/mail is missing and slurmctld logs an error
MailProg=/bin/true
# Track job processes through /proc and bind nothing: the cgroup plugins need a delegated,
# writable cgroup tree and a cgroup.conf, which containers and init-less VMs often lack (this VM
# mounts cgroup v1 writable, CI containers may not), and the test needs no confinement.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
# CPUs and memory are consumable, so jobs share the node as on a real cluster
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$defmem
GresTypes=gpu
# no slurmdbd: sacct has nothing, the plugin must poll squeue (see MinJobAge)
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=$MIN_JOB_AGE
# short intervals: the test waits on these
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MessageTimeout=10
Waittime=0
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus Boards=${boards:-1} SocketsPerBoard=${sockets:-1} CoresPerSocket=${cores:-$cpus} ThreadsPerCore=${threads:-1} RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=NO MaxTime=INFINITE State=UP
EOF
    # A GPU for scheduling only: SLURM drops a gpu without a File= and the node goes INVAL;
    # /dev/null exists everywhere. Jobs that ask for a GPU get CUDA_VISIBLE_DEVICES=0 and no GPU.
    cat >"$DIR/gres.conf" <<EOF
# Written by tests/slurm/cluster.sh: one fake GPU, for scheduling only.
NodeName=localhost Name=gpu File=/dev/null
EOF
}

link_default_conf() {
    # The plugin's job step (snakemake-executor-plugin-slurm-jobstep) strips every SLURM_*
    # variable, SLURM_CONF included, before it calls srun inside the job, so srun reads the
    # default path. Point that path at this cluster, but only when nothing else owns it.
    if [[ -L $DEFAULT_CONF || ! -e $DEFAULT_CONF ]]; then
        mkdir -p "$(dirname "$DEFAULT_CONF")"
        ln -sfn "$CONF" "$DEFAULT_CONF"
    elif [[ $(readlink -f "$DEFAULT_CONF") != "$CONF" ]]; then
        echo "cluster.sh: warning: $DEFAULT_CONF belongs to another cluster; srun inside jobs" \
             "will use it, not $CONF" >&2
    fi
}

unlink_default_conf() {
    if [[ -L $DEFAULT_CONF && $(readlink "$DEFAULT_CONF") == "$CONF" ]]; then
        rm -f "$DEFAULT_CONF"
    fi
}

port_taken() {
    # bash's /dev/tcp: connecting succeeds only if something listens there
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

node_state() {
    sinfo -h -N -n localhost -o '%t' 2>/dev/null | head -n 1 || true
}

start() {
    [[ $(id -u) -eq 0 ]] || die "start needs root (SlurmUser=root, jobs run as the submitter)"
    ensure_packages
    local port
    for port in "$CTLD_PORT" "$SLURMD_PORT"; do
        # a cluster left running from another DIR would answer sinfo with the wrong munge key
        if port_taken "$port" && ! pid_alive "$DIR/run/slurmctld.pid"; then
            die "port $port is in use (another SLURM, e.g. a test cluster left running:" \
                "'$0 stop ITS_DIR'), or set SLURM_TEST_CTLD_PORT/SLURM_TEST_SLURMD_PORT"
        fi
    done
    start_munge
    if pid_alive "$DIR/run/slurmctld.pid" && pid_alive "$DIR/run/slurmd.pid"; then
        echo "cluster.sh: already running in $DIR" >&2
    else
        write_conf
        link_default_conf
        if ! pid_alive "$DIR/run/slurmctld.pid"; then
            # -c: forget jobs saved by a cluster that died without 'stop', or they would run
            slurmctld -c -f "$CONF" || { log_tails; die "slurmctld did not start"; }
        fi
        if ! pid_alive "$DIR/run/slurmd.pid"; then
            # -N: the node is called localhost whatever this machine's hostname is
            slurmd -f "$CONF" -N localhost || { log_tails; die "slurmd did not start"; }
        fi
    fi
    local deadline=$(( SECONDS + START_TIMEOUT )) state=""
    while (( SECONDS < deadline )); do
        state=$(node_state)
        case $state in
            idle|mix|alloc) break ;;
            inval*|drain*|drng*|fail*)
                scontrol show node localhost >&2 || true
                log_tails
                die "node localhost is '$state' (see the reason above)" ;;
        esac
        # a node that registered as down before slurmd was up comes back on its own
        # (ReturnToService=2); resume it if it stays down
        if [[ $state == down* ]]; then
            scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
        fi
        sleep 1
    done
    if [[ ! $state =~ ^(idle|mix|alloc)$ ]]; then
        scontrol show node localhost >&2 || true
        log_tails
        die "node localhost not idle after ${START_TIMEOUT}s (state: '${state:-no answer}')"
    fi
    echo "cluster.sh: SLURM cluster up in $DIR (partition $PARTITION); export SLURM_CONF=$CONF" >&2
}

stop_pidfile() {
    # TERM, then KILL after 15 s: slurmctld saves its state on TERM
    local pidfile=$1 pid i
    pid_alive "$pidfile" || { rm -f "$pidfile"; return 0; }
    pid=$(<"$pidfile")
    kill "$pid" 2>/dev/null || true
    for (( i = 0; i < 30; i++ )); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

stop() {
    if [[ -f $CONF ]] && pid_alive "$DIR/run/slurmctld.pid"; then
        # jobs first, so slurmd reaps their step daemons before it goes
        local jobs i
        jobs=$(squeue -h -o '%i' 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            # shellcheck disable=SC2086  # one job id per word
            scancel $jobs 2>/dev/null || true
            for (( i = 0; i < 20; i++ )); do
                [[ -z $(squeue -h -t running,completing -o '%i' 2>/dev/null || true) ]] && break
                sleep 0.5
            done
        fi
    fi
    stop_pidfile "$DIR/run/slurmd.pid"
    stop_pidfile "$DIR/run/slurmctld.pid"
    stop_pidfile "$DIR/run/munged.pid"
    unlink_default_conf
    # the next start is a fresh cluster; the logs stay for a post-mortem
    rm -rf "$DIR/state" "$DIR/spool" "$DIR/run" "$DIR/munge"
    echo "cluster.sh: stopped the cluster in $DIR (logs kept in $DIR/log)" >&2
}

status() {
    pid_alive "$DIR/run/slurmctld.pid" && pid_alive "$DIR/run/slurmd.pid" \
        || die "not running in $DIR"
    sinfo
}

case $CMD in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) usage ;;
esac
