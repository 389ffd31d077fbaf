"""Claim throughput and latency of the job queue, on SQLite and PostgreSQL.

    python benchmarks/queue_claims.py [--jobs 400] [--claimers 1,4,16] [--pg URL] [--no-pg]

For each backend and each number of concurrent claimers, a fresh queue of --jobs jobs is
drained by that many processes, started together, each looping claim -> succeed (with a fake
result) as fast as it can. Reported: claims per second (jobs drained / wall time of the whole
drain, so it includes the succeed writes that compete for the same locks) and the p50 / p99
latency of one `claim()` call -- one transaction that reaps expired leases, picks the next
runnable job, leases it and records the attempt. SQLite runs on a file in a temporary
directory; PostgreSQL in a temporary database on the --pg server, skipped (with the reason)
when that server does not answer.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import secrets
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from kdrun.db import migrate, queue
from kdrun.db.engine import Database, redact
from kdrun.spec import JobSpec

PG_DEFAULT = os.environ.get("KDRUN_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RESULT = {"best_top1": 50.0, "best_top5": 90.0, "best_epoch": 1, "last_top1": 50.0,
          "last_top5": 90.0, "last5_top1": 50.0, "selection_split": "test", "wall_time_s": 1.0,
          "images_per_s": 1.0}


def fill(url: str, jobs: int) -> None:
    db = Database(url, create=True)
    migrate.upgrade(db)
    queue.enqueue(db, "bench", [JobSpec("student", {
        "kind": "student", "dataset": {"name": "synthetic"}, "recipe": {"epochs": 1},
        "student": "resnet8", "teacher": None, "method": {"name": "vanilla", "params": {}},
        "seed": i}) for i in range(jobs)])
    db.dispose()


def claimer(url: str, name: str, barrier, results) -> None:
    db = Database(url)
    queue.counts(db)  # connect before the start line
    barrier.wait()
    start, latencies = time.perf_counter(), []
    while True:
        t0 = time.perf_counter()
        c = queue.claim(db, name, lease_seconds=600)
        latencies.append(time.perf_counter() - t0)
        if c is None:
            break
        queue.succeed(db, c, RESULT, None)
    results.put((start, time.perf_counter(), latencies[:-1]))  # the last found nothing


def drain(url: str, claimers: int) -> tuple[float, float, float]:
    """(claims/s, p50 ms, p99 ms) for `claimers` processes draining the queue at `url`."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(claimers), ctx.Queue()
    procs = [ctx.Process(target=claimer, args=(url, f"c{i}", barrier, results))
             for i in range(claimers)]
    for p in procs:
        p.start()
    out = [results.get() for _ in procs]
    for p in procs:
        p.join()
    wall = max(end for _, end, _ in out) - min(start for start, _, _ in out)
    lat = sorted(x for _, _, xs in out for x in xs)
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    return len(lat) / wall, 1000 * statistics.median(lat), 1000 * p99


def pg_server(url: str):
    """An AUTOCOMMIT engine on the server, or the reason there is none."""
    try:
        engine = create_engine(url, isolation_level="AUTOCOMMIT",
                               connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            version = conn.execute(text("SHOW server_version")).scalar()
        return engine, version
    except Exception as e:
        lines = str(getattr(e, "orig", None) or e).strip().splitlines()
        return None, lines[0] if lines else type(e).__name__


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=400)
    ap.add_argument("--claimers", default="1,4,16")
    ap.add_argument("--pg", default=PG_DEFAULT, help="PostgreSQL server (a database on it)")
    ap.add_argument("--no-pg", action="store_true")
    args = ap.parse_args()
    counts = [int(x) for x in args.claimers.split(",")]
    print(f"{args.jobs} jobs per drain, claim -> succeed loops; {os.cpu_count()} CPUs; "
          f"SQLite {sqlite3.sqlite_version}")
    print(f"{'backend':<11}{'claimers':>9}{'claims/s':>10}{'p50 ms':>9}{'p99 ms':>9}")

    def report(backend: str, n: int, url: str) -> None:
        fill(url, args.jobs)
        rate, p50, p99 = drain(url, n)
        print(f"{backend:<11}{n:>9}{rate:>10.0f}{p50:>9.1f}{p99:>9.1f}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            report("sqlite", n, f"sqlite:///{Path(tmp) / f'q{n}.db'}")

    if args.no_pg:
        return
    server, version = pg_server(args.pg)
    if server is None:
        print(f"postgresql skipped: {redact(args.pg)} not reachable: {version}")
        return
    for n in counts:
        name = f"kdrun_bench_{secrets.token_hex(4)}"
        with server.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = make_url(args.pg).set(database=name).render_as_string(hide_password=False)
            report(f"postgres{version.split('.')[0]}", n, url)
        finally:
            with server.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
