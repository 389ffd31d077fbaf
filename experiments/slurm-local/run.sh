#!/usr/bin/env bash
# The record in README.md here: a grid drained by a 2-pilot Slurm array on the local
# single-node Slurm (scripts/local-slurm.sh), with PostgreSQL behind PgBouncer (transaction
# mode), one pilot hitting a (forced) time limit and one requeued with `scontrol requeue`.
# Run as root from the repository root: experiments/slurm-local/run.sh
set -euo pipefail
HERE=experiments/slurm-local
KD=$PWD/.venv/bin/kdrun
WORK=/tmp/kdrun-slurm-local
step() { printf '\n$ %s\n' "$*"; "$@"; }
db_sql() { psql -h 127.0.0.1 -U postgres -d kdrun_slurm_local -c "$1"; }
wait_sql() {  # wait until a SQL query returns 't'
    for _ in $(seq 1 600); do
        [ "$(psql -h 127.0.0.1 -U postgres -d kdrun_slurm_local -tAc "$1")" = t ] && return 0
        sleep 1
    done
    echo "timed out waiting for: $1"; return 1
}

scripts/local-slurm.sh
rm -rf "$WORK"; mkdir -p "$WORK/pgbouncer"; chmod 755 "$WORK"
chown postgres "$WORK/pgbouncer"  # it drops to this user: its pid and log files go here
# PgBouncer, transaction mode, on 6432 in front of the PostgreSQL on 5432.
printf '"postgres" ""\n' >"$WORK/users.txt"
cat >"$WORK/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=5432
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 6432
unix_socket_dir =
auth_type = trust
auth_file = $WORK/users.txt
pool_mode = transaction
default_pool_size = 4
max_client_conn = 500
server_reset_query =
pidfile = $WORK/pgbouncer/pgbouncer.pid
logfile = $WORK/pgbouncer/pgbouncer.log
INI
pgbouncer -d -u postgres "$WORK/pgbouncer.ini"
psql -h 127.0.0.1 -U postgres -d test -qc "DROP DATABASE IF EXISTS kdrun_slurm_local WITH (FORCE)"
psql -h 127.0.0.1 -U postgres -d test -qc "CREATE DATABASE kdrun_slurm_local"

export KDRUN_DB=postgresql+psycopg://postgres@127.0.0.1:6432/kdrun_slurm_local
export KDRUN_RUNS=$WORK/runs KDRUN_DATA=$WORK/data
step sinfo -o "%P %D %T %c %G"
step "$KD" db upgrade
step "$KD" enqueue --grid $HERE/grid.yaml
step "$KD" slurm submit --workers 2 --grace 0 --idle-exit 60 --dry-run
step "$KD" slurm submit --workers 2 --grace 0 --idle-exit 60
ARRAY=$(psql -h 127.0.0.1 -U postgres -d kdrun_slurm_local -tAc "SELECT max(array_id) FROM kdrun_pilots")
wait_sql "SELECT bool_or(epoch >= 2) FROM kdrun_jobs WHERE state = 'running'"
step "$KD" slurm status

# A time limit, forced: TimeLimit=0 makes Slurm end pilot _0 at its next check (SIGTERM to
# every process, SIGKILL after KillWait=10 s).
step scontrol update JobId=${ARRAY}_0 TimeLimit=0
wait_sql "SELECT count(*) = 1 FROM kdrun_attempts WHERE outcome = 'requeued'"
sleep 5
step squeue
step db_sql "SELECT id, label, state, epoch, attempts, handbacks FROM kdrun_jobs ORDER BY id"

# A requeue (what pre-emption with PreemptMode=REQUEUE does): pilot _1 is ended and queued again.
wait_sql "SELECT bool_or(epoch >= 1) FROM kdrun_jobs WHERE state = 'running'"
step scontrol requeue ${ARRAY}_1
wait_sql "SELECT count(*) = 2 FROM kdrun_attempts WHERE outcome = 'requeued'"
step db_sql "SELECT id, label, state, epoch, attempts, handbacks FROM kdrun_jobs ORDER BY id"
sleep 5
step squeue
# Pilot _0 is gone (TIMEOUT); a fresh one takes its place beside the requeued _1.
step "$KD" slurm submit --workers 1 --grace 0 --idle-exit 60

wait_sql "SELECT count(*) = 0 FROM kdrun_jobs WHERE state <> 'succeeded'"
for _ in $(seq 1 120); do [ -z "$(squeue -h)" ] && break; sleep 1; done
step "$KD" status
step "$KD" slurm status --all
step db_sql "SELECT j.id, j.label, j.attempts, j.handbacks, string_agg(a.outcome || '@' || a.worker, ', ' ORDER BY a.id) AS attempts_log FROM kdrun_jobs j JOIN kdrun_attempts a ON a.job_id = j.id GROUP BY j.id ORDER BY j.id"
step "$KD" report --table top1
for f in "$WORK"/runs/slurm/*/pilot-*.out; do printf '\n$ cat %s\n' "$f"; cat "$f"; done
kill "$(cat "$WORK/pgbouncer/pgbouncer.pid")"
