#!/usr/bin/env bash
# Bring up a one-node Slurm cluster on localhost, with accounting, from Debian's packages: enough to
# run `centerloss sweep --launcher slurm` and the tests marked `slurm` against a real Slurm.
#
#   sudo scripts/slurm_local.sh        # as root; a second call finds the cluster up and returns
#
# What it sets up: munge (authentication), MariaDB + slurmdbd (accounting, so that `sacct`, which
# submitit asks for job states, answers instead of failing), slurmctld and slurmd with one node
# `localhost` of this machine's CPUs and memory, in one partition `local`. Logs: /var/log/slurm/.
set -euo pipefail

if [[ $(id -u) != 0 ]]; then
    echo "slurm_local.sh: run it as root (it installs packages and starts daemons)" >&2
    exit 2
fi

CLUSTER=centerloss-local
CONF=/etc/slurm/slurm.conf

up() { sinfo --noheader -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)' && sacct -n -X -S now >/dev/null 2>&1; }

if command -v sinfo >/dev/null && up; then
    echo "slurm_local.sh: Slurm is already up ($(sinfo --noheader -o '%P %D %t' | head -1))"
    exit 0
fi

packages=(slurmctld slurmd slurmdbd slurm-client munge mariadb-server)
if ! dpkg -s "${packages[@]}" >/dev/null 2>&1; then
    echo "slurm_local.sh: installing ${packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi

mkdir -p /etc/slurm /var/log/slurm /var/spool/slurmctld /var/spool/slurmd /run/munge

# munge: a key, and the daemon running as its own user.
[[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile /etc/munge/munge.key
chown munge:munge /etc/munge/munge.key /run/munge && chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged

# MariaDB and the accounting database that slurmdbd writes.
if ! pgrep -x mariadbd >/dev/null && ! pgrep -x mysqld >/dev/null; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    (mysqld_safe >/var/log/slurm/mariadb.log 2>&1 &)
fi
for _ in $(seq 60); do mysqladmin ping >/dev/null 2>&1 && break; sleep 0.5; done
mysql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
          GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

cat >/etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
chmod 600 /etc/slurm/slurmdbd.conf
pgrep -x slurmdbd >/dev/null || slurmdbd
for _ in $(seq 60); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done

# The node: this machine's CPUs, and its memory less 1 GiB for everything else.
cpus=$(nproc)
memory=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
cat >"$CONF" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
# A requeued job waits cred_expire seconds before it may start again: 120 by default, 10 here.
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobRequeue=1
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=localhost CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF

sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd -N localhost
scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true

for _ in $(seq 60); do up && break; sleep 0.5; done
if ! up; then
    echo "slurm_local.sh: Slurm did not come up; see /var/log/slurm/" >&2
    sinfo >&2 || true
    exit 1
fi
echo "slurm_local.sh: Slurm is up ($(sinfo --noheader -o '%P %D %t' | head -1)); sbatch and sacct answer"
