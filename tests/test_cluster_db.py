"""PostgreSQL at cluster scale: through PgBouncer in transaction mode (started here on a
loopback port in front of the test server; skipped without the `pgbouncer` binary or the
server), a bounded number of connections per worker, and writes that outlive a brief outage.

The drain runs four real worker loops (claims, reaping, `--until-empty`) in four processes;
each job's supervisor is replaced by one that makes the same fenced writes a training job
makes (run dir, provenance, heartbeats, two epochs, result) without training, so forty jobs
drain in seconds and every statement crosses the pooler many times.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from kdrun.db import migrate, queue
from kdrun.db.engine import Database
from kdrun.db.models import Attempt, EpochMetric, Job, Result
from tests.test_queue import RESULT, ROW, spec

pytestmark = pytest.mark.postgres
PGBOUNCER = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer"
                                          if Path("/usr/sbin/pgbouncer").exists() else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bouncer:
    """A PgBouncer in transaction mode, two server connections per database, trust auth."""

    def __init__(self, server: str) -> None:
        # Its own folder under /tmp: pytest's are private to root, and pgbouncer drops to
        # the postgres user when started as root.
        folder = Path(tempfile.mkdtemp(prefix="kdrun-pgbouncer-"))
        folder.chmod(0o755)
        self.folder, self.port = folder, _free_port()
        url = make_url(server)
        (folder / "users.txt").write_text(f'"{url.username}" ""\n')
        (folder / "pgbouncer.ini").write_text(
            f"[databases]\n* = host={url.host} port={url.port or 5432}\n"
            f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            f"unix_socket_dir =\nauth_type = trust\nauth_file = {folder / 'users.txt'}\n"
            "pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 200\n"
            "server_reset_query =\nlog_connections = 0\nlog_disconnections = 0\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        user = ["-u", "postgres"] if os.geteuid() == 0 else []  # it refuses to run as root
        self.proc = subprocess.Popen([PGBOUNCER, *user, str(self.folder / "pgbouncer.ini")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    pytest.skip(f"pgbouncer did not start: {self.proc.stderr.read()!r}")
                time.sleep(0.05)
        pytest.skip("pgbouncer did not listen within 10 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def url(self, direct: str) -> str:
        return make_url(direct).set(host="127.0.0.1", port=self.port).render_as_string(
            hide_password=False)


@pytest.fixture
def bouncer(pg_admin):
    if PGBOUNCER is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    b = Bouncer(str(pg_admin.url))
    b.start()
    yield b
    b.stop()
    shutil.rmtree(b.folder, ignore_errors=True)


def test_transaction_pooling_breaks_prepared_statements_unless_they_are_off(bouncer, pg_url):
    """Why kdrun sets prepare_threshold=None: two clients sharing one server connection
    collide on psycopg's prepared statement names (what workers hit after 5 executions)."""
    conninfo = make_url(bouncer.url(pg_url)).render_as_string(hide_password=False)
    conninfo = conninfo.replace("postgresql+psycopg://", "postgresql://")
    with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
        with psycopg.connect(conninfo, prepare_threshold=0, autocommit=True) as a, \
                psycopg.connect(conninfo, prepare_threshold=0, autocommit=True) as b:
            for _ in range(4):
                a.execute("SELECT 1 + %s", (1,))
                b.execute("SELECT 1 + %s", (1,))
    a, b = Database(bouncer.url(pg_url)), Database(bouncer.url(pg_url))  # kdrun's engines
    for _ in range(20):  # far past psycopg's default threshold of 5 executions
        for db in (a, b):
            with db.read() as s:
                assert s.execute(text("SELECT 1 + :x"), {"x": 1}).scalar() == 2
    a.dispose()
    b.dispose()


def _drain(barrier, results, url: str, runs: str) -> None:
    """One worker process: the real loop, with a supervisor that only writes (see above)."""
    from kdrun.worker import loop
    from kdrun.worker.supervisor import Lease, Outcome

    def write_only(db, claim, slot, ws, stop, lease_start, log, progress, *_warm):
        lease = Lease(db, claim, ws.lease_seconds, lease_start, log)
        lease.persist(queue.set_run_dir, db, claim, f"run-{claim.job_id}")
        lease.persist(queue.set_provenance, db, claim, {"device_name": "cpu"})
        for epoch in (1, 2):
            lease.keep()
            lease.persist(queue.heartbeat, db, claim, ws.lease_seconds)
            lease.persist(queue.record_epoch, db, claim, {**ROW, "epoch": epoch}, {"epochs": 2})
        lease.persist(queue.succeed, db, claim, RESULT, None)
        return Outcome("succeeded", "written")

    loop.supervise = write_only
    lines: list[str] = []
    barrier.wait()
    summary = loop.work(Database(url, name="kdrun test drain"),
                        loop.WorkerOptions(Path(runs), Path(runs), until_empty=True,
                                           poll_seconds=0.05, lease_seconds=30),
                        log=lines.append)
    results.put((summary.jobs, summary.stopped_because, lines))


def test_four_workers_drain_forty_jobs_through_pgbouncer(bouncer, pg_url, tmp_path):
    url = bouncer.url(pg_url)
    db = Database(url, create=True)
    migrate.upgrade(db)  # migrations through the pooler too
    queue.enqueue(db, "g", [spec(i) for i in range(40)])
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_drain, args=(barrier, results, url, str(tmp_path)))
             for _ in range(4)]
    for p in procs:
        p.start()
    out = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert sum(jobs for jobs, _, _ in out) == 40
    for _, stopped, lines in out:
        assert stopped is None
        assert not [x for x in lines if "unavailable" in x or "error" in x.lower()], lines
    with db.read() as s:
        assert s.execute(select(Job.state, func.count()).group_by(Job.state)).all() == [
            ("succeeded", 40)]
        assert s.execute(select(func.count()).select_from(Result)).scalar() == 40
        assert s.execute(select(func.count()).select_from(EpochMetric)).scalar() == 80
        assert set(s.scalars(select(Job.attempts))) == {1}
        assert s.execute(select(Attempt.outcome, func.count()).group_by(Attempt.outcome)
                         ).all() == [("succeeded", 40)]
    db.dispose()


def test_a_worker_holds_one_connection_plus_one_per_writing_slot(pg_url):
    db = Database(pg_url, name="kdrun budget test")
    gate = threading.Barrier(3)
    during: list[int] = []

    def connections() -> int:
        with db.read() as s:
            return s.execute(text("SELECT count(*) FROM pg_stat_activity WHERE "
                                  "application_name = 'kdrun budget test'")).scalar()

    def write() -> None:
        with db.read() as s:
            s.execute(text("SELECT 1"))
            gate.wait(10)  # three transactions at once
            during.append(s.execute(text("SELECT count(*) FROM pg_stat_activity WHERE "
                                         "application_name = 'kdrun budget test'")).scalar())
            gate.wait(10)

    threads = [threading.Thread(target=write) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(during) == 3  # one per slot inside a transaction
    end = time.monotonic() + 10  # a closed connection's server process takes a moment to go
    while connections() != 1 and time.monotonic() < end:
        time.sleep(0.1)
    assert connections() == 1  # idle, only one stays
    db.dispose()


def test_writes_wait_out_a_brief_outage_and_give_up_with_the_lease(bouncer, pg_url):
    from kdrun.worker.supervisor import Lease

    url = bouncer.url(pg_url)
    db = Database(url, create=True)
    migrate.upgrade(db)
    queue.enqueue(db, "g", [spec(0)])
    start = time.monotonic()
    claim = queue.claim(db, "w", lease_seconds=30)
    lines: list[str] = []
    lease = Lease(db, claim, 30, start, lines.append)
    bouncer.stop()  # the database is unreachable for two seconds
    threading.Timer(2.0, bouncer.start).start()
    lease.persist(queue.record_epoch, db, claim, ROW, {"epochs": 2})
    assert any("database unavailable" in x for x in lines)
    lease.persist(queue.succeed, db, claim, RESULT, None)
    assert queue.counts(db)["succeeded"] == 1

    queue.enqueue(db, "g", [spec(1)])
    claim = queue.claim(db, "w", lease_seconds=1.5)
    lease = Lease(db, claim, 1.5, time.monotonic(), lines.append)
    bouncer.stop()  # longer than the lease: give up, never write after it
    with pytest.raises(queue.LeaseLost):
        lease.persist(queue.record_epoch, db, claim, ROW, {"epochs": 2})
    db.dispose()
