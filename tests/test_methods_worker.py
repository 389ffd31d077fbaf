"""Every method trains through the real worker (CPU, tiny model, synthetic data, 2 epochs)
and stores each of its loss components per epoch."""

from __future__ import annotations

import torch
from sqlalchemy import select

from kdrun import methods
from kdrun.db import migrate, queue
from kdrun.db.engine import Database
from kdrun.db.models import EpochMetric, Job
from kdrun.grid import expand
from kdrun.worker import WorkerOptions, work
from tests.helpers import tiny_grid

METHODS = ["vanilla", "kd", "dkd", "dist", "kd+ls", "dkd+ls", "cmkd", "cakd", "rkkd",
           "kd+rkkd", "dkd+rkkd", "dist+rkkd", "kd+cmkd",
           # issue 13: the plug-in hosts, a two-view one and one with a trainable module
           "ctkd", "mlkd", "ctkd+ls+rkkd", "mlkd+ls+rkkd"]


def expected_components(name: str, params: dict) -> set[str]:
    """The components the method returns on random logits, computed outside the runner."""
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)
    _, comps = methods.create(name, **params)(s, t, torch.arange(8), epoch=1)
    return set(comps)


def test_every_method_runs_through_the_worker_and_logs_its_components(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'k.db'}", create=True)
    migrate.upgrade(db)
    grid = tiny_grid(methods=METHODS, seeds=[0])
    grid["dataset"]["num_classes"] = 10  # CAKD's default strong set (top 5) needs C > 5
    grid["teachers"]["resnet14"]["recipe"] = {"epochs": 1, "lr_milestones": []}
    name, specs = expand(grid)
    queue.enqueue(db, name, specs)
    opts = WorkerOptions(runs_dir=tmp_path / "runs", data_dir=tmp_path, slots=2,
                         until_empty=True, poll_seconds=0.2)
    work(db, opts, log=lambda *a, **k: None)
    with db.read() as s:
        jobs = s.execute(select(Job).where(Job.kind == "student")).scalars().all()
        assert sorted(j.method for j in jobs) == sorted(METHODS)
        for j in jobs:
            assert j.state == "succeeded", (j.method, j.error)
            rows = s.execute(select(EpochMetric).where(EpochMetric.job_id == j.id)
                             .order_by(EpochMetric.epoch)).scalars().all()
            assert [r.epoch for r in rows] == [1, 2], j.method
            want = expected_components(j.method, j.config["method"]["params"])
            for r in rows:
                assert set(r.components) == want, (j.method, r.components)
                assert all(torch.isfinite(torch.tensor(v)) for v in r.components.values())
