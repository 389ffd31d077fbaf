"""How much of a drain of short jobs is training: one worker, with and without --prestart.

    .venv/bin/python benchmarks/drain.py [--jobs 12] [--slots 1]

Enqueues --jobs tiny jobs (synthetic data, resnet8, 1 epoch: a teacher and vanilla
students) and drains them with one `kdrun worker --cpu --until-empty`, once with each slot's
next training process started ahead (the default) and once with `--no-prestart`. Prints the
drain's wall time, the jobs' own training time (the results' wall_time_s: epochs, not
imports or data set-up) and the share of the drain that was training. Issue 15 asks that a
drain of tiny jobs be mostly training; a training process spends ~2 s importing torch
before it can start.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from sqlalchemy import select

from kdrun.db.engine import Database
from kdrun.db.models import Result

KDRUN = [str(Path(sys.executable).parent / "kdrun")]  # the venv's entry point


def grid(jobs: int) -> dict:
    return {"name": "drain", "dataset": {"name": "synthetic", "num_classes": 10,
                                         "train_size": 256, "test_size": 128},
            "recipe": {"epochs": 1, "batch_size": 64, "lr_milestones": []},
            "teachers": {"resnet8": {"train": True}},  # trained once, like any other job
            "pairs": [{"teacher": "resnet8", "student": "resnet8"}], "methods": ["vanilla"],
            "seeds": list(range(jobs - 1))}


def drain(folder: Path, jobs: int, slots: int, prestart: bool) -> tuple[float, float]:
    url = f"sqlite:///{folder / 'kdrun.db'}"
    base = [*KDRUN, "--db", url, "--runs-dir", str(folder / "runs")]
    (folder / "grid.yaml").write_text(yaml.safe_dump(grid(jobs)))
    subprocess.run([*base, "enqueue", "--grid", str(folder / "grid.yaml")], check=True,
                   capture_output=True)
    flag = "--prestart" if prestart else "--no-prestart"
    t0 = time.perf_counter()
    subprocess.run([*base, "worker", "--cpu", "--slots", str(slots), "--until-empty", flag],
                   check=True, capture_output=True, env={**os.environ, "KDRUN_NO_COLOR": "1"})
    wall = time.perf_counter() - t0
    db = Database(url)
    with db.read() as s:
        trained = sum(s.scalars(select(Result.wall_time_s)).all())
    db.dispose()
    return wall, trained


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=12)
    ap.add_argument("--slots", type=int, default=1)
    a = ap.parse_args()
    print(f"device: cpu ({os.cpu_count()} cores); {a.jobs} jobs of 1 epoch, {a.slots} slot(s)")
    for prestart in (True, False):
        with tempfile.TemporaryDirectory() as d:
            wall, trained = drain(Path(d), a.jobs, a.slots, prestart)
        name = "--prestart   " if prestart else "--no-prestart"
        print(f"{name}  drain {wall:6.1f} s   training {trained:6.1f} s   "
              f"{100 * trained / (wall * a.slots):5.1f} % of slot time training   "
              f"{wall / a.jobs:5.2f} s per job")


if __name__ == "__main__":
    main()
