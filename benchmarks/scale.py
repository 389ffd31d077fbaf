"""Status, reports, export and enqueue at scale: wall time and peak memory of each command.

    nice python benchmarks/scale.py [--finished 10000] [--epochs 240] [--jobs 100000]
                                    [--only NAME[,NAME]] [--keep DIR] [--repeat 3]

Builds, through kdrun's own models and queue, (a) a database of --finished succeeded jobs with
--epochs per-epoch metric rows each and a result each, and (b) one of --jobs jobs in a mix of
states (90 % succeeded with results, the rest queued, running, failed), then runs each command
as its own `kdrun` process, as a user would, and prints its wall time and peak resident memory
(the process's own maxrss, from wait4): the median wall and CPU time of --repeat runs and the
largest peak (the first run may read the database from disk; the machine's other load varies).
The `enqueue` figure is the one `kdrun enqueue` that fills database (b) from a grid of --jobs
jobs; `enqueue --dry-run` plans that grid against it.

Targets (issue 15, on a 2-core machine): status and every report table under 2 s and 300 MB
on (a) and under 5 s on (b); export of (a) under 20 s; enqueue of 100k jobs under 10 s.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from sqlalchemy import insert, select, update

from kdrun.db import migrate, queue
from kdrun.db.engine import Database
from kdrun.db.models import EpochMetric, Job, Result
from kdrun.grid import expand

METHODS = ["vanilla", "kd", {"kd": {"T": [2, 8]}}, "dkd", "dist", "kd+ls", "dkd+ls", "rkkd"]
PAIRS = [{"teacher": "resnet14", "student": "resnet8"},
         {"teacher": "resnet14", "student": "resnet8x4"}]
# `kdrun`, run so that it reports its own peak memory at exit: VmHWM of its address space
# (ru_maxrss would include this benchmark's memory, inherited across fork and exec).
KDRUN = [sys.executable, "-c",
         "import atexit, sys\n"
         "out = sys.argv.pop(1)\n"
         "atexit.register(lambda: open(out, 'w').write(open('/proc/self/status').read()))\n"
         "sys.argv[0] = 'kdrun'\n"
         "from kdrun.cli import main\n"
         "main()\n"]
PER_SEED = len(PAIRS) * (len(METHODS) + 1)  # students per seed ({kd: T: [2, 8]} is two)


def grid(jobs: int, epochs: int, name: str) -> dict:
    """A synthetic-data grid of about `jobs` jobs (one teacher, students over many seeds)."""
    seeds = max(1, (jobs - 1) // PER_SEED)
    return {"name": name,
            "dataset": {"name": "synthetic", "num_classes": 10, "train_size": 64,
                        "test_size": 32},
            "recipe": {"epochs": epochs, "batch_size": 16, "lr": 0.05,
                       "lr_milestones": [max(1, epochs // 2)]},
            "teachers": {"resnet14": {"train": True}}, "pairs": PAIRS, "methods": METHODS,
            "seeds": list(range(seeds))}


def result_row(job_id: int, rng: random.Random) -> dict:
    top1 = rng.uniform(40, 80)
    return {"job_id": job_id, "best_top1": top1, "best_top5": top1 + 15, "best_epoch": 200,
            "last_top1": top1 - 0.3, "last_top5": top1 + 14, "last5_top1": top1 - 0.2,
            "selection_split": "test", "wall_time_s": 3600.0, "images_per_s": 5000.0,
            "teacher_top1": 75.0, "agree_top1": 80.0, "spearman": 0.9, "kendall": 0.8,
            "kl": 0.5, "checkpoint": f"{job_id:06d}/model.pt", "sha256": "0" * 64,
            "switches": {"device": "cuda", "amp": "bf16", "channels_last": True,
                         "compile": True, "loader": "device", "teacher": "cache"}}


def finish_all(db: Database, ids: list[int], epochs: int, seed: int = 0) -> None:
    """Mark jobs succeeded with a result and `epochs` metric rows each (bulk Core inserts)."""
    rng = random.Random(seed)
    with db.write() as s:
        for i in range(0, len(ids), 30000):  # only these jobs (the rest stay queued)
            s.execute(update(Job).where(Job.id.in_(ids[i:i + 30000]))
                      .values(state="succeeded", attempts=1, started_at=0.0,
                              finished_at=3600.0, epoch=epochs, worker="bench:1:cuda0#0"))
        conn = s.connection()
        conn.execute(insert(Result), [result_row(i, rng) for i in ids])
        if not epochs:
            return
        batch = []
        for i in ids:
            base = rng.uniform(30, 70)
            for e in range(1, epochs + 1):
                batch.append({"job_id": i, "epoch": e, "lr": 0.05, "train_loss": 2.0 / e,
                              "components": {"ce": 1.0 / e, "kd": 1.0 / e},
                              "train_top1": base + e * 0.05, "test_top1": base + e * 0.04,
                              "test_top5": base + 20, "val_top1": None, "epoch_time_s": 15.0,
                              "images_per_s": 3333.3})
            if len(batch) >= 200_000:
                conn.execute(insert(EpochMetric), batch)
                batch = []
        if batch:
            conn.execute(insert(EpochMetric), batch)


def run(args: list[str], env: dict[str, str], out: Path | None = None,
        repeat: int = 1) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MiB) of a `kdrun` process:
    the median times and the largest peak of `repeat` runs."""
    runs = sorted(_run_once(args, env, out) for _ in range(repeat))
    mid = runs[len(runs) // 2]
    return mid[0], statistics.median(r[1] for r in runs), max(r[2] for r in runs)


def _run_once(args: list[str], env: dict[str, str],
              out: Path | None) -> tuple[float, float, float]:
    with tempfile.NamedTemporaryFile("r", suffix=".status") as status:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        with open(out or os.devnull, "w") as sink:
            p = subprocess.run([*KDRUN, status.name, *args], stdout=sink,
                               stderr=subprocess.PIPE, env=env, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if p.returncode != 0:
            raise SystemExit(f"kdrun {' '.join(args)} failed:\n{p.stderr}")
        hwm = next(line for line in Path(status.name).read_text().splitlines()
                   if line.startswith("VmHWM:"))
    return wall, cpu, int(hwm.split()[1]) / 1024


def report(name: str, figures: tuple[float, float, float], target_s: float | None = None) -> None:
    wall, cpu, rss = figures
    goal = f"   (target < {target_s:g} s)" if target_s else ""
    print(f"  {name:34s} {wall:7.2f} s wall {cpu:7.2f} s cpu {rss:6.0f} MiB{goal}", flush=True)


def checkpoint(db: Database) -> None:
    """Fold the write-ahead log into the database file, as a long-lived database would be
    (readers of a freshly bulk-written one walk a WAL of hundreds of MB)."""
    with db.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def build_finished(path: Path, finished: int, epochs: int) -> Database:
    db = Database(f"sqlite:///{path}", create=True)
    migrate.upgrade(db)
    _, specs = expand(grid(finished, epochs, "finished"))
    t0 = time.perf_counter()
    queue.enqueue(db, "finished", specs)
    with db.read() as s:
        ids = list(s.scalars(select(Job.id)))
    finish_all(db, ids, epochs)
    checkpoint(db)
    print(f"built {len(ids)} finished jobs x {epochs} epochs in "
          f"{time.perf_counter() - t0:.0f} s ({path.stat().st_size / 2**20:.0f} MiB)", flush=True)
    return db


def mix_states(db: Database) -> None:
    """90 % succeeded (with results), 100 running, 100 failed, the rest queued."""
    with db.read() as s:
        ids = list(s.scalars(select(Job.id).order_by(Job.id)))
    n = len(ids)
    done, running, failed = ids[: n * 9 // 10], ids[-200:-100], ids[-100:]
    finish_all(db, done, 0)
    with db.write() as s:
        s.execute(update(Job).where(Job.id.in_(running)).values(
            state="running", attempts=1, worker="bench:2:cuda0#0", lease_token="t",
            lease_expires_at=4e9, heartbeat_at=0.0, epoch=100,
            progress={"epoch": 100, "epochs": 240, "loss": 1.0, "test_top1": 50.0,
                      "images_per_s": 3000.0, "eta_s": 600.0}))
        s.execute(update(Job).where(Job.id.in_(failed)).values(
            state="failed", attempts=3, finished_at=0.0,
            error="RuntimeError: CUDA error: an illegal memory access\nTraceback ..."))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--finished", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=240)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--only", default="finished,big", help="finished, big (comma-separated)")
    ap.add_argument("--keep", type=Path, help="build the databases here and keep them")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    a = ap.parse_args()
    tmp = a.keep or Path(tempfile.mkdtemp(prefix="kdrun-scale-"))
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KDRUN_RUNS": str(tmp / "runs"), "KDRUN_DATA": str(tmp / "data"),
           "COLUMNS": "200"}
    env.pop("KDRUN_DB", None)
    only = set(a.only.split(","))
    print(f"kdrun scale benchmark in {tmp} (python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs; median of {a.repeat} runs)", flush=True)
    k = a.repeat
    report("kdrun --help", run(["--help"], env, repeat=k), 0.5)

    if "finished" in only:
        path = tmp / "finished.db"
        if not path.exists():
            build_finished(path, a.finished, a.epochs)
        url = ["--db", f"sqlite:///{path}"]
        print(f"database (a): {a.finished} finished jobs x {a.epochs} epochs", flush=True)
        report("status", run([*url, "status"], env, repeat=k), 2)
        report("status --json", run([*url, "status", "--json"], env, repeat=k), 2)
        for table in ("top1", "top5", "delta", "diminishing", "agreement", "curves"):
            extra = ["--baseline", "kd(T=4.0)"] if table == "delta" else []  # kd is swept
            report(f"report --table {table}", run([*url, "report", "--table", table, *extra],
                                                  env, repeat=k), 2)
        report("export --format csv", run([*url, "export", "--format", "csv", "--out",
                                           str(tmp / "export")], env, repeat=k), 20)
        size = sum(p.stat().st_size for p in (tmp / "export").glob("*.csv")) / 2**20
        print(f"  (export wrote {size:.0f} MiB of CSV)", flush=True)

    if "big" in only:
        path = tmp / "big.db"
        gpath = tmp / "big.yaml"
        gpath.write_text(yaml.safe_dump(grid(a.jobs, 240, "big"), sort_keys=False))
        url = ["--db", f"sqlite:///{path}"]
        if not path.exists():
            n = len(expand(grid(a.jobs, 240, "big"))[1])
            print(f"database (b): {n} jobs", flush=True)
            report(f"enqueue ({n} new jobs)", run([*url, "enqueue", "--grid", str(gpath)], env),
                   10)
            big = Database(f"sqlite:///{path}")
            mix_states(big)
            checkpoint(big)
        report("enqueue again (all present)",
               run([*url, "enqueue", "--grid", str(gpath)], env, repeat=k))
        report("enqueue --dry-run",
               run([*url, "enqueue", "--grid", str(gpath), "--dry-run"], env, repeat=k))
        report("status", run([*url, "status"], env, repeat=k), 5)
        report("status --json", run([*url, "status", "--json"], env, repeat=k), 5)
        report("report --table top1", run([*url, "report", "--table", "top1"], env, repeat=k), 5)
    if not a.keep:
        print(f"(databases left in {tmp}; delete when done)")


if __name__ == "__main__":
    main()
