"""The trainer under DDP: two gloo ranks on the CPU, launched as the worker launches them
(RANK/LOCAL_RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT in the environment), calling train().

One pair of rank processes (this file run as a module) trains every scenario in turn and
writes what each rank saw to JSON; the tests below check it against single-process runs.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from kdrun import checkpoints, data, models
from kdrun.data.device_loader import DeviceLoader
from kdrun.data.seeded import SeededSampler, ShardBatches
from kdrun.data.shards import Shard, eval_counts, eval_range
from kdrun.errors import ConfigError
from kdrun.recipe import Recipe
from kdrun.train import ddp
from kdrun.train.evaluate import agreement, predict, topk
from kdrun.train.trainer import Hooks, Interrupted, Run, check_world, train

ROOT = Path(__file__).resolve().parent.parent
WORLD = 2
TIMING = ("epoch_time_s", "images_per_s", "wall_time_s", "checkpoint")


def job(teacher: str, method: dict[str, Any], train_size: int, test_size: int,
        **recipe: Any) -> dict[str, Any]:
    return {"kind": "student", "seed": 0, "student": "resnet8",
            "dataset": {"name": "synthetic", "num_classes": 4, "train_size": train_size,
                        "test_size": test_size},
            "teacher": {"name": "t", "arch": "resnet8", "checkpoint": teacher},
            "method": method,
            "recipe": {"epochs": 2, "batch_size": 16, "lr": 0.05, "lr_milestones": [1],
                       "eval_batch_size": 16, "gpus": WORLD, **recipe}}


KD = {"name": "kd", "params": {"T": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}}
CTKD = {"name": "ctkd", "params": {"temperature": "global", "grl_loops": 1}}  # lambda -1


def scenarios(teacher: str) -> dict[str, dict[str, Any]]:
    """Device loader + exact logit cache, one eval batch: rank 0 evaluates nothing (A, and B
    stopped then resumed); torch loader with a method that has its own parameters, uneven
    train and eval shards (C)."""
    a = job(teacher, KD, 32, 24, loader="device", teacher_cache="on", eval_batch_size=32)
    return {"A": a, "B1": a, "B2": a,
            "C": job(teacher, CTKD, 37, 40, loader="torch", epochs=1, teacher_cache="off")}


def rank_main(spec_path: str) -> None:
    """One rank: every scenario in order (a fresh process group each), then its report."""
    spec = json.loads(Path(spec_path).read_text())
    tmp, rank = Path(spec["tmp"]), int(os.environ["RANK"])
    torch.set_num_threads(1)
    report: dict[str, Any] = {}
    for k, (name, config) in enumerate(scenarios(spec["teacher"]).items()):
        os.environ["MASTER_PORT"] = str(spec["ports"][k])
        seen: dict[str, Any] = {"rows": [], "saved": [], "notices": [], "steps": 0}

        def step(epoch: int, done: int, total: int, seen: dict[str, Any] = seen) -> None:
            seen["steps"] += 1

        hooks = Hooks(epoch_done=lambda row, p, s=seen: s["rows"].append(row), step=step,
                      checkpoint_saved=seen["saved"].append,
                      notice=lambda text, bad, s=seen: s["notices"].append(text),
                      # B1: only rank 1 is asked to stop; both must stop together.
                      stop_requested=lambda n=name: n == "B1" and rank == 1)
        run_dir = tmp / "runs" / name.rstrip("12")
        try:
            seen["result"] = train(Run(config, run_dir, tmp / "data"), hooks)
        except Interrupted as e:
            seen["interrupted"] = str(e)
        report[name] = seen
    (tmp / f"rank{rank}.json").write_text(json.dumps(report))


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> tuple[Path, list[dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("ddp")
    torch.manual_seed(1)
    teacher = tmp / "teacher.pt"
    checkpoints.atomic_save({"model": models.create("resnet8", num_classes=4).state_dict()},
                            teacher)
    spec = tmp / "spec.json"
    spec.write_text(json.dumps({"tmp": str(tmp), "teacher": str(teacher),
                                "ports": free_ports(len(scenarios("")))}))
    procs = []
    for r in range(WORLD):
        env = {**os.environ, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(WORLD),
               "LOCAL_WORLD_SIZE": str(WORLD), "MASTER_ADDR": "127.0.0.1",
               "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        log = open(tmp / f"rank{r}.log", "w")  # noqa: SIM115 (closed with the process)
        procs.append((subprocess.Popen([sys.executable, "-m", "tests.test_ddp_train", str(spec)],
                                       cwd=ROOT, env=env, stdout=log, stderr=log), log))
    for p, log in procs:
        try:
            p.wait(timeout=180)
        finally:
            p.kill()
            log.close()
    for r, (p, _) in enumerate(procs):
        assert p.returncode == 0, (tmp / f"rank{r}.log").read_text()[-3000:]
    return tmp, [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(WORLD)]


def without(d: dict[str, Any], keys=TIMING) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


def test_two_rank_job_finishes_once_with_single_process_keys(ddp_runs):
    tmp, (r0, r1) = ddp_runs
    res = r0["A"]["result"]
    assert all(math.isfinite(res[k]) for k in ("best_top1", "last_top5", "kl", "spearman"))
    assert without(r1["A"]["result"]) == without(res)  # every rank returns the same row
    assert res["switches"]["world_size"] == 2 and res["switches"]["teacher"] == "cache"
    # rank 0 alone reports and writes; rank 1 calls no hook
    assert [row["epoch"] for row in r0["A"]["rows"]] == [1, 2]
    assert [s["epoch"] for s in r0["A"]["saved"]] == [1, 2]
    assert r0["A"]["steps"] == 2 * 2  # 32 images, batch 16: two global batches per epoch
    assert (r1["A"]["rows"], r1["A"]["saved"], r1["A"]["steps"]) == ([], [], 0)
    assert all(math.isfinite(row["train_loss"]) for row in r0["A"]["rows"])
    assert set(r0["A"]["rows"][0]["components"]) == {"ce", "kd"}
    final = torch.load(tmp / "runs" / "A" / "model.pt", weights_only=True)["model"]
    assert list(final) == list(models.create("resnet8", num_classes=4).state_dict())
    rng = checkpoints.load(tmp / "runs" / "A" / r0["A"]["saved"][-1]["path"].split("/")[-1])
    assert len(rng["rng"]) == 2  # every rank's RNG state


def test_stop_on_one_rank_stops_both_and_resume_is_exact(ddp_runs):
    tmp, (r0, r1) = ddp_runs
    assert r0["B1"]["interrupted"] == r1["B1"]["interrupted"] == "stopped after epoch 1"
    assert "result" not in r0["B1"] and len(r0["B1"]["rows"]) == 1
    rows = [without(r) for r in r0["B1"]["rows"] + r0["B2"]["rows"]]
    assert rows == [without(r) for r in r0["A"]["rows"]]
    assert without(r0["B2"]["result"]) == without(r0["A"]["result"])
    a = torch.load(tmp / "runs" / "A" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp / "runs" / "B" / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name, counts", [("A", [0, 24]), ("C", [16, 24])])
def test_two_rank_evaluation_equals_single_process_evaluation(ddp_runs, name, counts):
    """A: 24 test images in one eval batch -> rank 0 evaluates none, rank 1 all; C: 40
    in batches of 16 -> rank 0 evaluates 16, rank 1 24. The gathered metrics equal a single
    process's over the same weights, exactly."""
    tmp, (r0, r1) = ddp_runs
    config = scenarios("")[name]
    ds, ebs = config["dataset"], config["recipe"]["eval_batch_size"]
    assert eval_counts(ds["test_size"], ebs, 2) == counts
    res = r0[name]["result"]
    assert without(r1[name]["result"]) == without(res)
    splits = data.load(ds, tmp / "data")
    test = data.eval_loader(splits.test, ebs, torch.device("cpu"), config["recipe"]["loader"])
    student = models.create("resnet8", num_classes=4)
    student.load_state_dict(torch.load(tmp / "runs" / name / "model.pt",
                                       weights_only=True)["model"])
    teacher = models.create("resnet8", num_classes=4)
    teacher.load_state_dict(torch.load(tmp / "teacher.pt", weights_only=True)["model"])
    s_logits, y = predict(student, test, torch.device("cpu"))
    t_logits, _ = predict(teacher, test, torch.device("cpu"))
    assert [res["last_top1"], res["last_top5"]] == topk(s_logits, y)
    assert res["teacher_top1"] == topk(t_logits, y, ks=(1,))[0]
    assert {k: res[k] for k in ("agree_top1", "spearman", "kendall", "kl")} == agreement(
        s_logits, t_logits)


def test_shards_partition_every_batch_and_split():
    for m in (16, 5, 2):
        parts = [Shard(r, 2).batch(m) for r in range(2)]
        assert [i for s in parts for i in range(m)[s]] == list(range(m))
    for n, bs, world in ((40, 16, 2), (10, 4, 3), (3, 4, 2)):
        ranges = [eval_range(n, bs, r, world) for r in range(world)]
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] and a[0] % bs == 0
                   for a, b in zip(ranges, ranges[1:], strict=False))
    # the torch path: every rank's batch slices concatenate to the single-process batches
    whole = list(ShardBatches(SeededSampler(37, torch.Generator().manual_seed(3)), 16,
                              Shard()))
    ranks = [list(ShardBatches(SeededSampler(37, torch.Generator().manual_seed(3)), 16,
                               Shard(r, 2))) for r in range(2)]
    assert [a + b for a, b in zip(*ranks, strict=True)] == whole
    assert [len(b) for b in ranks[1]] == [8, 8, 3]
    # the device path: the same for images and labels
    splits = data.load({"name": "synthetic", "num_classes": 4, "train_size": 20,
                        "test_size": 4}, Path("/nonexistent"))
    outs = []
    for shard in (None, Shard(0, 2), Shard(1, 2)):
        dl = DeviceLoader.from_dataset(splits.train, 8, generator=torch.Generator().manual_seed(1),
                                       shard=shard)
        outs.append(list(dl))
    for full, a, b in zip(*outs, strict=True):
        assert torch.equal(full[0], torch.cat([a[0], b[0]]))
        assert torch.equal(full[1], torch.cat([a[1], b[1]]))


def test_without_the_environment_there_is_no_process_group(monkeypatch):
    for k in ddp.ENV:
        monkeypatch.delenv(k, raising=False)
    assert ddp.Dist.from_env() == ddp.Dist() and not ddp.Dist().enabled
    assert ddp.Dist.from_env({"WORLD_SIZE": "1"}) == ddp.Dist()
    d = ddp.Dist.from_env({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2",
                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"})
    assert (d.rank, d.local_rank, d.world, d.is_main) == (1, 1, 2, False)
    assert d.device(torch.device("cuda")) == torch.device("cuda", 1)
    with pytest.raises(RuntimeError, match="MASTER_PORT"):
        ddp.Dist.from_env({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "x"})
    config = scenarios("x")["C"]  # gpus: 2
    with pytest.raises(ConfigError, match="recipe.gpus is 2 but this job runs as 1"):
        train(Run(config, Path("/nonexistent/run"), Path("/nonexistent")))  # never alone
    monkeypatch.setenv("WORLD_SIZE", "2")  # a stray environment: refused before any group
    for k, v in (("RANK", "0"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "1")):
        monkeypatch.setenv(k, v)
    config["recipe"] = {**config["recipe"], "gpus": 1}
    with pytest.raises(ConfigError, match="recipe.gpus is 1 but this job runs as 2"):
        train(Run(config, Path("/nonexistent/run"), Path("/nonexistent")))
    with pytest.raises(ConfigError, match="last batch of each epoch has 1 image"):
        check_world(Recipe(batch_size=16, gpus=2), ddp.Dist(0, 0, 2), 33)


if __name__ == "__main__":
    rank_main(sys.argv[1])
