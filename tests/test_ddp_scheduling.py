"""Scheduling multi-GPU (DDP) jobs: `gpus` in the recipe and the job's identity, claims that
respect a worker's idle and total devices without starving wide jobs, the worker's device pool,
and jobs wider than any worker (they wait, and `status`/`show`/`--until-empty` say why).

Queue-level on SQLite and PostgreSQL; the worker tests replace training with a stub that
succeeds the job, so no model is trained here (tests/test_ddp_worker.py trains 2 ranks)."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from sqlalchemy import func, select

from kdrun.db import migrate, queue
from kdrun.db.engine import Database
from kdrun.db.models import Job
from kdrun.grid import expand
from kdrun.recipe import Recipe
from kdrun.spec import JobSpec, config_hash
from kdrun.worker import loop
from kdrun.worker.loop import WorkerOptions, work
from kdrun.worker.pool import Pool
from kdrun.worker.supervisor import Outcome, Slot
from tests.helpers import cli, tiny_grid, write_grid

RESULT = {"best_top1": 50.0, "best_top5": 90.0, "best_epoch": 1, "last_top1": 50.0,
          "last_top5": 90.0, "last5_top1": 50.0, "selection_split": "test", "wall_time_s": 0.1,
          "images_per_s": 100.0}


def spec(seed: int, gpus: int = 1, nodes: int = 1) -> JobSpec:
    return JobSpec("student", {
        "kind": "student", "dataset": {"name": "synthetic", "num_classes": 4},
        "recipe": {"epochs": 1, "batch_size": 64, "gpus": gpus, "nodes": nodes},
        "student": "resnet8", "teacher": None, "method": {"name": "vanilla", "params": {}},
        "seed": seed})


def make_db(url: str, gpus: list[int]) -> Database:
    """A queue with one job per entry of `gpus` (job i+1 needs gpus[i] devices)."""
    db = Database(url, create=True)
    migrate.upgrade(db)
    queue.enqueue(db, "g", [spec(i, g) for i, g in enumerate(gpus)])
    return db


# --- the recipe and the job's identity ---------------------------------------------------------

# Hashes of the shipped quickstart grid's jobs computed before `gpus`/`nodes` existed: jobs
# already in databases keep their identity, so enqueueing the grid again adds nothing.
QUICKSTART_HASHES = {
    ("teacher", "vanilla", 0): "a40e8beaae300077386509f9605be630fec00bbc0569992c4aad8c50d9bcccac",
    ("student", "vanilla", 0): "a75176c484b613bd05671f70a16f44de5994629cefeef342e0216d2ac3df7a18",
    ("student", "vanilla", 1): "fdf7100e7f598066926063f4d65be41f727023aa7d151579d8efe8ced94b2e3f",
    ("student", "kd", 0): "5804ba71b19d219f0e95889055de508516db69554db6198bd2a020f2bab5a080",
    ("student", "kd", 1): "8b49663f9e772d73044e70b3701f73de322236b121a8c87ea953902da727240d",
    ("student", "kd+rkkd", 0): "3ae6a766096cf1dc163973f4f0ffdb286b00f6fe7c0924320840c0aa3d1e0b9c",
    ("student", "kd+rkkd", 1): "fdb340ae28d276bf0872c4245850e27de7d7906ead082606de04686c1dfc54f2",
}


def test_existing_hashes_unchanged_and_gpus_is_part_of_identity():
    from kdrun import grid

    _, specs = grid.load("kdrun/grids/quickstart.yaml")
    assert all(sp.config["recipe"]["gpus"] == 1 for sp in specs)  # the key is in the config...
    assert {(sp.kind, sp.method, sp.seed): sp.hash for sp in specs} == QUICKSTART_HASHES
    _, wide = grid.load("kdrun/grids/quickstart.yaml", overrides=["recipe.gpus=2"])
    assert all(sp.gpus == 2 for sp in wide)  # ...and, when not 1, in the hash
    assert not {sp.hash for sp in wide} & set(QUICKSTART_HASHES.values())
    cfg = spec(0).config
    without = {**cfg, "recipe": {k: v for k, v in cfg["recipe"].items() if k not in
                                 ("gpus", "nodes")}}
    assert config_hash(cfg) == config_hash(without)


@pytest.mark.parametrize("kw, words", [
    ({"gpus": 3}, ["batch_size=64", "gpus=3", "63 or 66", "1, 2, 4, 8"]),
    ({"gpus": 4, "nodes": 3}, ["gpus=4", "nodes=3", "nodes among 1, 2, 4"]),
    ({"gpus": 0}, ["gpus=0"]),
])
def test_recipe_refuses_bad_gpus(kw, words):
    with pytest.raises(ValueError) as e:
        Recipe(**kw)
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words)
    Recipe(gpus=4, nodes=2, batch_size=64)  # a valid one


def test_batch_size_not_dividing_gpus_is_a_one_line_enqueue_error(tmp_path):
    good = write_grid(tmp_path / "good.yaml", tiny_grid())
    assert cli(tmp_path, "enqueue", "--grid", str(good)).exit_code == 0
    db = Database(f"sqlite:///{tmp_path / 'kdrun.db'}")
    with db.read() as s:
        before = s.execute(select(Job.id, Job.hash, Job.state)).all()
    bad = write_grid(tmp_path / "bad.yaml", tiny_grid(seeds=[0, 1, 2]))  # new jobs too
    r = cli(tmp_path, "enqueue", "--grid", str(bad), "--set", "recipe.gpus=3")
    assert r.exit_code != 0
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    assert "batch_size=16" in lines[0] and "gpus=3" in lines[0] and "15 or 18" in lines[0]
    with db.read() as s:
        assert s.execute(select(Job.id, Job.hash, Job.state)).all() == before
    ok = cli(tmp_path, "enqueue", "--grid", str(bad), "--set", "recipe.gpus=2")
    assert ok.exit_code == 0, ok.output
    with db.read() as s:
        gpus = s.execute(select(Job.gpus, func.count()).group_by(Job.gpus)).all()
    assert sorted(gpus) == [(1, len(before)), (2, 7)]  # a new set of jobs: another identity
    db.dispose()


# --- claims ------------------------------------------------------------------------------------


def test_claim_respects_idle_and_capacity(db_url):
    db = make_db(db_url, [2, 1])
    assert queue.claim(db, "w", 60, idle=1, capacity=2) is None  # job 1 first, needs 2 idle
    narrow = queue.claim(db, "w", 60)  # capacity 1: job 1 can never run here, job 2 can
    assert (narrow.job_id, narrow.gpus) == (2, 1)
    names = []
    wide = queue.claim(db, lambda g: names.append(g) or f"w:cpu#0+{g - 1}", 60,
                       idle=2, capacity=2)
    assert (wide.job_id, wide.gpus, names) == (1, 2, [2])
    with db.read() as s:
        assert s.get(Job, 1).worker == "w:cpu#0+1"  # the group's name is recorded
    db.dispose()


def test_multi_node_job_counts_per_machine_and_needs_an_allocation_that_wide(db_url):
    db = Database(db_url, create=True)
    migrate.upgrade(db)
    queue.enqueue(db, "g", [spec(0, gpus=4, nodes=2), spec(1)])
    with db.read() as s:
        assert [(j.gpus, j.nodes) for j in s.scalars(select(Job).order_by(Job.id))] == [
            (2, 2), (1, 1)]  # 2 devices on each of 2 machines
    # A worker on one machine never takes it (nor waits for it), whatever its devices ...
    narrow = queue.claim(db, "w", 60, idle=4, capacity=4)
    assert narrow.job_id == 2
    queue.succeed(db, narrow, RESULT, None)
    assert not queue.has_runnable_or_running(db, capacity=4, nodes=1)
    assert queue.has_runnable_or_running(db, capacity=2, nodes=2)
    # ... a pilot whose allocation spans 2 machines takes it with 2 devices free here.
    assert queue.claim(db, "w", 60, idle=1, capacity=2, nodes=2) is None
    assert queue.claim(db, "w", 60, idle=2, capacity=2, nodes=2).job_id == 1
    # It holds every device of the worker's machine, not its 2: Slurm picks the srun step's
    # GPUs there, and would not know which ones the worker's other jobs use.
    queue.enqueue(db, "g", [spec(2, gpus=4, nodes=2)])
    assert queue.claim(db, "w", 60, idle=2, capacity=4, nodes=2) is None
    names: list[int] = []
    whole = queue.claim(db, lambda n: names.append(n) or "w", 60, idle=4, capacity=4, nodes=2)
    assert (whole.job_id, whole.gpus, names) == (3, 4, [4])
    db.dispose()


def test_no_starvation_oldest_wide_job_before_younger_narrow_ones(db_url):
    db = make_db(db_url, [1, 2, 1])
    first = queue.claim(db, "w", 60, idle=2, capacity=2)
    assert first.job_id == 1
    # One unit left: job 2 (2 units) is first in line, so job 3 (1 unit) must not overtake it.
    for _ in range(2):
        assert queue.claim(db, "w", 60, idle=1, capacity=2) is None
    queue.succeed(db, first, RESULT, None)
    second = queue.claim(db, "w", 60, idle=2, capacity=2)
    assert (second.job_id, second.gpus) == (2, 2)
    # A 1-unit worker elsewhere is not held up by a job it can never run.
    assert queue.claim(db, "other", 60, idle=1, capacity=1).job_id == 3
    db.dispose()


def test_too_wide_job_waits_and_status_and_show_say_why(tmp_path):
    url = f"sqlite:///{tmp_path / 'kdrun.db'}"
    db = make_db(url, [4, 1])
    assert queue.too_wide(db) == (None, [])  # no worker seen yet: nothing to say
    queue.worker_seen(db, "host:1", 2)
    queue.worker_seen(db, "host:2", 1)
    assert queue.too_wide(db) == (2, [(1, 4)])
    assert queue.claim(db, "w", 60, idle=2, capacity=2).job_id == 2
    assert queue.claim(db, "w", 60, idle=2, capacity=2) is None  # job 1 waits
    assert queue.has_runnable_or_running(db, capacity=8)
    status = cli(tmp_path, "status")
    assert status.exit_code == 0, status.output
    assert "job 1 needs 4 GPUs; the largest worker seen has 2" in " ".join(status.output.split())
    show = cli(tmp_path, "show", "1")
    assert "job 1 needs 4 GPUs; the largest worker seen has 2" in " ".join(show.output.split())
    assert "needs 4 GPUs" not in cli(tmp_path, "show", "2").output
    queue.worker_seen(db, "host:3", 4)  # a bigger worker came: job 1 just waits its turn
    assert queue.too_wide(db) == (4, [])
    assert "needs 4 GPUs" not in cli(tmp_path, "status").output
    db.dispose()


def test_jobs_behind_a_too_wide_teacher_do_not_keep_until_empty_waiting(db_url):
    db = Database(db_url, create=True)
    migrate.upgrade(db)
    name, specs = expand(tiny_grid(recipe={**tiny_grid()["recipe"], "gpus": 4}, seeds=[0]))
    queue.enqueue(db, name, specs)
    assert queue.has_runnable_or_running(db)  # some worker may run them
    assert not queue.has_runnable_or_running(db, capacity=2)  # never this one
    assert queue.has_runnable_or_running(db, capacity=4)
    db.dispose()


def test_migration_upgrades_a_0006_database(db_url):
    db = Database(db_url, create=True)
    migrate.upgrade(db, "0006")
    jobs = sa.table("kdrun_jobs", *(sa.column(c) for c in (
        "hash", "grid", "kind", "dataset", "student", "method", "seed", "config", "priority",
        "state", "attempts", "max_attempts", "not_before", "epoch", "created_at")),
        sa.column("config", sa.JSON))
    sp = spec(0)
    old_config = {**sp.config, "recipe": {"epochs": 1, "batch_size": 64}}  # before `gpus`
    with db.engine.begin() as conn:
        conn.execute(sa.insert(jobs).values(
            hash=config_hash(old_config), grid="g", kind="student", dataset="synthetic",
            student="resnet8", method="vanilla", seed=0, config=old_config, priority=0,
            state="queued", attempts=0, max_attempts=3, not_before=0.0, epoch=0,
            created_at=0.0))
    migrate.upgrade(db)
    assert migrate.current(db) == migrate.head() == "0007"
    assert set(sa.inspect(db.engine).get_table_names()) >= {"kdrun_workers"}
    c = queue.claim(db, "w", 60)  # the old job: 1 GPU, claimable by a 1-unit worker
    assert (c.job_id, c.gpus) == (1, 1)
    # ...and the same job from a new grid is the same job (same hash), not a new one.
    assert queue.enqueue(db, "g", [JobSpec("student", {**old_config, "recipe": {
        "epochs": 1, "batch_size": 64, "gpus": 1, "nodes": 1}})]) == (0, 1)
    db.dispose()


# --- the worker's device pool ------------------------------------------------------------------


def test_pool_lends_distinct_units_and_names_the_group():
    cpu = Pool([Slot(f"h:1:cpu#{k}", "cpu", 1) for k in range(3)])
    assert cpu.capacity == 3 and cpu.idle(0) == 3
    assert cpu.name(1, 2) == "h:1:cpu#1+0"
    slot = cpu.take(1, 2)
    assert (slot.name, slot.devices, slot.threads) == ("h:1:cpu#1+0", ["cpu", "cpu"], 1)
    assert cpu.lent(0) and not cpu.lent(1) and not cpu.lent(2)
    assert cpu.idle(2) == 1
    with pytest.raises(RuntimeError):
        cpu.take(2, 2)
    cpu.give_back(1)
    assert not cpu.lent(0) and cpu.idle(2) == 3
    # GPUs with --slots 2: a group takes one slot on each of distinct GPUs.
    gpu = Pool([Slot(f"h:1:cuda{d}#{k}", f"cuda:{d}") for d in (0, 1) for k in (0, 1)])
    assert gpu.capacity == 2 and gpu.idle(0) == 2
    slot = gpu.take(1, 2)  # cuda:0's second slot claims
    assert (slot.name, slot.devices) == ("h:1:cuda0+cuda1#1", ["cuda:0", "cuda:1"])
    assert gpu.idle(0) == 2  # the GPUs' other slots stay for jobs sharing them (--slots)
    assert gpu.take(0, 1).devices == ["cuda:0"]
    assert gpu.idle(3) == 1


def fake_supervisor(db: Database, log: list, busy: list[int]):
    """Stands in for `supervise`: records what ran on which units, holds them a moment,
    succeeds the job. `busy` tracks the units in use at once."""
    lock = threading.Lock()

    def supervise(db_, claim, slot, settings, stop, start, log_fn, progress,
                  *_warm) -> Outcome:
        with lock:
            busy[0] += len(slot.devices)
            busy[1] = max(busy[1], busy[0])
            log.append((claim.job_id, slot.name.split(":", 2)[2], len(slot.devices)))
        progress(slot.name, f"job {claim.job_id} epoch 1/1", 1, 1)
        time.sleep(0.4)
        queue.succeed(db, claim, RESULT, None)
        with lock:
            busy[0] -= len(slot.devices)
        return Outcome("succeeded", "done")

    return supervise


def test_worker_runs_a_group_job_on_lent_units_without_starving_it(tmp_path, monkeypatch):
    db = make_db(f"sqlite:///{tmp_path / 'k.db'}", [1, 2, 1, 4])
    ran: list = []
    busy = [0, 0]  # units in use now, most at once
    monkeypatch.setattr(loop, "supervise", fake_supervisor(db, ran, busy))
    lines: list[str] = []
    shown: list[str] = []
    opts = WorkerOptions(tmp_path / "runs", tmp_path / "data", devices=["cpu"], slots=2,
                         until_empty=True, poll_seconds=0.05)
    summary = work(db, opts, log=lines.append,
                   progress=lambda slot, desc, done, total: shown.append(desc or ""))
    assert [job for job, _, _ in ran] == [1, 2, 3]  # job 3 did not overtake job 2
    group = [(name, n) for job, name, n in ran if job == 2]
    assert group and group[0][1] == 2 and "+" in group[0][0], ran  # cpu#k+j, both units
    assert busy[1] == 2  # never more units than the worker has
    assert "job 2 epoch 1/1 on 2 CPU ranks" in shown
    assert summary.too_wide == [(4, 4)] and summary.capacity == 2
    assert summary.jobs == 3 and summary.outcomes == {"succeeded": 3}
    assert any("job 4 needs 4 GPUs; this worker has 2" in x for x in lines), lines
    with db.read() as s:
        assert s.execute(select(Job.state).where(Job.id == 4)).scalar() == "queued"
        assert s.execute(select(func.count()).select_from(sa.table("kdrun_workers"))).scalar() == 1
    db.dispose()


def test_until_empty_worker_leaves_too_wide_jobs_and_exits_nonzero(tmp_path):
    url = f"sqlite:///{tmp_path / 'kdrun.db'}"
    make_db(url, [4]).dispose()
    r = cli(tmp_path, "worker", "--cpu", "--slots", "2", "--until-empty", "--poll-seconds", "0.05")
    assert r.exit_code == 1, r.output
    text = " ".join(r.output.split())
    assert "jobs up to gpus: 2" in text
    assert "1 queued job(s) can never run here: job 1 needs 4 GPUs; this worker has 2" in text
    assert r.output.strip().splitlines()[-1].endswith(
        "worker done: 0 job(s) run; 1 job(s) too wide for it left queued")


def test_reports_show_gpus_among_the_switches():
    import pandas as pd

    from kdrun.report import switches

    sw = {"device": "cuda", "amp": "bf16"}
    assert switches.compute_label(sw) == "cuda, bf16"
    assert switches.compute_label(sw, 4) == "cuda, bf16, gpus=4 (DDP)"
    done = pd.DataFrame({"switches": [sw, sw], "recipe": [{"gpus": 4}, {"gpus": 4}],
                         "teacher": [None, None], "kind": ["student", "student"]})
    assert switches.note(done) == ["computed as cuda, bf16, gpus=4 (DDP) (2 jobs)"]
    old = done.assign(recipe=[{}, {"gpus": 1}])  # jobs from before `gpus`: nothing added
    assert switches.note(old) == ["computed as cuda, bf16 (2 jobs)"]


def test_until_empty_worker_leaves_jobs_over_more_machines_and_exits_nonzero(tmp_path):
    url = f"sqlite:///{tmp_path / 'kdrun.db'}"
    db = Database(url, create=True)
    migrate.upgrade(db)
    queue.enqueue(db, "g", [spec(0, gpus=2, nodes=2)])
    db.dispose()
    r = cli(tmp_path, "worker", "--cpu", "--slots", "2", "--until-empty", "--poll-seconds", "0.05")
    assert r.exit_code == 1, r.output
    text = " ".join(r.output.split())
    assert ("1 queued job(s) need more machines than this worker's Slurm allocation spans "
            "(job 1 needs 2, recipe.nodes); run them from `kdrun slurm submit "
            "--nodes-per-worker 2`") in text
