#!/usr/bin/env bash
# Start the services the sweep tests use, on this machine, as root, without systemd:
#   - a one-node SLURM cluster (munge, slurmctld, slurmd) for `launcher=slurm`
#   - PostgreSQL on loopback with a test user/database for shared Optuna studies
# Idempotent: installs only what is missing, starts only what is not running.
#   sudo bash .ci/services.sh
# Tests find the database with EXPKIT_TEST_POSTGRES_URL (default below) and skip without it
# locally; under CI=true they fail instead.
set -euo pipefail

PG_USER=expkit
PG_PASSWORD=expkit
PG_DB=expkit_test
PACKAGES=(munge slurmctld slurmd slurm-client postgresql)

log() { echo "services.sh: $*" >&2; }
trap 'log "FAILED at line $LINENO: $BASH_COMMAND"' ERR

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (installs Debian packages, starts daemons)"
    exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # policy-rc.d: no init scripts start from package scripts; this script starts what it needs.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
fi

# --- munge: authentication between SLURM daemons and clients -------------------------------
if [ ! -s /etc/munge/munge.key ]; then
    mungekey -c -f -k /etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! pgrep -u munge -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
fi
munge -n | unmunge >/dev/null

# --- SLURM: one node, this host, all its CPUs and memory -----------------------------------
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
CONF=$(cat <<EOF
# Written by .ci/services.sh: a one-node test cluster, no accounting, no cgroups.
ClusterName=expkit-ci
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
ReturnToService=2
MpiDefault=none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
# Jobs that ask for no memory get 2 GB a CPU, not the whole node (which would serialize them).
DefMemPerCPU=2048
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
)
if [ ! -f /etc/slurm/slurm.conf ] || [ "$(cat /etc/slurm/slurm.conf)" != "$CONF" ]; then
    echo "$CONF" > /etc/slurm/slurm.conf
    # A changed config needs fresh daemons.
    for daemon in slurmctld slurmd; do
        pid=$(cat "/run/slurm/$daemon.pid" 2>/dev/null || true)
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
        for _ in $(seq 30); do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    done
fi
running() { local pid; pid=$(cat "/run/slurm/$1.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null; }
running slurmctld || /usr/sbin/slurmctld
running slurmd || /usr/sbin/slurmd
for _ in $(seq 60); do
    state=$(sinfo -h -n "$HOST" -o '%T' 2>/dev/null || true)
    case "$state" in idle*|mixed*|allocated*) break ;; esac
    sleep 1
done
case "${state:-}" in
    idle*|mixed*|allocated*) log "SLURM node $HOST is $state" ;;
    *) log "SLURM node $HOST never became idle (state '${state:-none}'); see /var/log/slurm/"; exit 1 ;;
esac

# --- PostgreSQL on loopback with a test user and database ----------------------------------
if ! pg_lsclusters -h | grep -q .; then
    pg_createcluster "$(ls /usr/lib/postgresql | sort -V | tail -1)" main
fi
read -r PG_VERSION PG_CLUSTER PG_PORT PG_STATUS _ < <(pg_lsclusters -h | head -1)
if [ "$PG_STATUS" != "online" ]; then
    pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start -- -o "-c listen_addresses=127.0.0.1"
fi
psql_root() { runuser -u postgres -- psql -p "$PG_PORT" -v ON_ERROR_STOP=1 -qtAc "$1"; }
if [ "$(psql_root "SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'")" != "1" ]; then
    psql_root "CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD'"
fi
if [ "$(psql_root "SELECT 1 FROM pg_database WHERE datname='$PG_DB'")" != "1" ]; then
    psql_root "CREATE DATABASE $PG_DB OWNER $PG_USER"
fi
PGPASSWORD=$PG_PASSWORD psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" -qtAc "SELECT 1" >/dev/null
log "PostgreSQL: postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
