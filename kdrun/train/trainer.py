"""Train one job: dataset, student, frozen teacher, method, SGD with a step schedule.

The loop is deliberately plain (nanoGPT-style): set up, resume if a checkpoint exists, then
for each epoch train, evaluate, checkpoint atomically, and report. Everything needed to
continue bit-for-bit -- weights, optimizer, schedule, best-so-far, RNG states -- is in the
checkpoint, so a killed run resumes where its last finished epoch left off.

How each step runs (bf16 autocast, channels_last, compile) is resolved in `fast`, the step
itself lives in `step`, and where the teacher's logits come from (live forward or the exact
logit cache) in `teacher_cache`; the values a job ran with are recorded in its result's
`switches`.

Launched as N ranks (RANK/WORLD_SIZE/... in the environment, kdrun.train.ddp), the same loop
runs under DistributedDataParallel: each rank trains on its slice of every global batch,
rank 0 alone writes checkpoints and the final weights and calls the hooks (except
`stop_requested`, which every rank reads and all-reduce together), the checkpoint holds every
rank's RNG state, and evaluation gathers every rank's shard. With no such environment
nothing of this runs: the single-process job is unchanged.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdrun import checkpoints, data, methods, models, pretrained
from kdrun.data.shards import eval_counts
from kdrun.errors import ConfigError
from kdrun.recipe import Recipe
from kdrun.train import ddp, fast, teacher_cache
from kdrun.train.evaluate import agreement, predict, predict_shards, topk
from kdrun.train.step import Step

# Each epoch's resumable state goes to last.<attempt>.e<epoch>.pt and the final weights
# ({"model": state_dict}, the published layout) to model.<attempt>.pt: see kdrun.checkpoints.


class NonFiniteLoss(Exception):
    pass


@dataclass
class Hooks:
    """How a trainer talks to its worker: progress out, a stop request in."""

    epoch_done: Callable[[dict[str, Any], dict[str, Any]], None] = lambda row, progress: None
    step: Callable[[int, int, int], None] = lambda epoch, done, total: None
    stop_requested: Callable[[], bool] = lambda: False
    # An epoch's checkpoint is on disk ({"epoch", "path", "sha256"}), before epoch_done.
    checkpoint_saved: Callable[[dict[str, Any]], None] = lambda record: None
    # Resume skipped damaged checkpoints: what happened, and the paths found bad.
    notice: Callable[[str, list[str]], None] = lambda text, bad: None


@dataclass
class Run:
    config: dict[str, Any]
    run_dir: Path
    data_dir: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    teacher_checkpoint: Path | None = None  # resolved by the worker from the teacher's job
    num_workers: int = 0
    download: bool = False  # may fetch a missing dataset (the worker's --download)
    # Shared teacher-logit caches; None: <runs dir>/teacher_cache, the runs dir being the
    # run directory's parent (as the worker lays runs out).
    cache_dir: Path | None = None
    # Set by a worker: names this attempt's files, and lists the checkpoints the database
    # recorded (newest first, paths relative to the runs directory). None: no database, resume
    # from the newest checkpoint file in run_dir.
    attempt: str | None = None
    resume: list[dict[str, Any]] | None = None
    teacher_sha256: str | None = None  # the trained teacher's recorded sha256

    @property
    def teacher_cache_dir(self) -> Path:
        return self.cache_dir or self.run_dir.parent / teacher_cache.DIR


class Interrupted(Exception):
    """Stopped at an epoch boundary on request; the checkpoint is saved, the job can resume."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def teacher_path(run: Run) -> Path:
    t = run.config["teacher"]
    if "torchvision" in t:  # torchvision's weights in this machine's hub cache, verified
        return pretrained.locate(t, download=run.download)[0]
    path = Path(t["checkpoint"]) if "checkpoint" in t else run.teacher_checkpoint
    if path is None:
        raise ConfigError(f"teacher {t['name']}: its training job has no checkpoint")
    if not path.is_file():  # retryable: a worker that shares the folder can run this job
        where = ("every worker must see the file given at enqueue" if "checkpoint" in t else
                 "all workers must share one --runs-dir (KDRUN_RUNS), where the teacher's "
                 "job saved it")
        raise FileNotFoundError(f"teacher {t['name']}: checkpoint {path} not found on this "
                                f"machine; {where}")
    return path


def teacher_sha256(run: Run) -> str:
    """The teacher checkpoint's sha256: fixed at enqueue for files, recorded with the teacher
    job's result for trained ones (hashed when neither is known)."""
    return (run.config["teacher"].get("sha256") or run.teacher_sha256
            or checkpoints.sha256(teacher_path(run)))


def build_teacher(run: Run, num_classes: int) -> torch.nn.Module | None:
    t = run.config.get("teacher")
    if not t:
        return None
    dataset = run.config["dataset"]["name"]
    path = teacher_path(run)
    if "sha256" in t and checkpoints.sha256(path) != t["sha256"]:
        raise ConfigError(
            f"teacher checkpoint {path} changed since enqueue (sha256 differs); re-enqueue the grid"
        )
    if "sha256" not in t and run.teacher_sha256 and checkpoints.sha256(path) != run.teacher_sha256:
        raise ConfigError(f"teacher checkpoint {path} is damaged (sha256 differs from the one "
                          "its job recorded); `kdrun retry` the teacher job to retrain it")
    model = models.create(t["arch"], num_classes=num_classes, dataset=dataset)
    sd = checkpoints.extract_state_dict(checkpoints.load(path), path)
    checkpoints.load_into(model, sd, f"teacher checkpoint {path}")
    model.to(run.device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _rng_state(loader_gen: torch.Generator, dev: torch.device) -> dict[str, Any]:
    # numpy's key array travels as a tensor: weights-only loading refuses numpy objects.
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(), "loader": loader_gen.get_state(),
        # The job's own GPU only: other visible GPUs are not its state (and reading theirs
        # would create a CUDA context on each).
        "cuda": [torch.cuda.get_rng_state(dev)] if dev.type == "cuda" else [],
    }


def _set_rng_state(s: dict[str, Any], loader_gen: torch.Generator, dev: torch.device) -> None:
    random.setstate(s["python"])
    kind, keys, pos, has_gauss, gauss = s["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(s["torch"])
    loader_gen.set_state(s["loader"])
    if s["cuda"] and dev.type == "cuda":  # saved on a GPU, resumed on a GPU
        torch.cuda.set_rng_state(s["cuda"][0], dev)


def train(run: Run, hooks: Hooks | None = None) -> dict[str, Any]:
    """Run (or resume) one job to the end; returns the row for the results table. As one rank
    of a DDP job (kdrun.train.ddp), every rank returns the same row; only rank 0 calls the
    hooks (every rank reads its own stop flag) and writes files."""
    hooks = hooks or Hooks()
    dist = ddp.Dist.from_env()
    gpus = Recipe(**run.config["recipe"]).gpus
    if gpus != dist.world:  # before joining a group that would wait for ranks never started
        raise ConfigError(f"recipe.gpus is {gpus} but this job runs as {dist.world} "
                          "process(es) (WORLD_SIZE; a worker launches one per GPU)")
    if not dist.enabled:
        return _train(run, hooks, dist)
    run = replace(run, device=dist.device(run.device))
    if not dist.is_main:
        hooks = Hooks(stop_requested=hooks.stop_requested)
    with dist.group(run.device):
        return _train(run, hooks, dist)


def check_world(recipe: Recipe, dist: ddp.Dist, train_size: int) -> None:
    """A DDP job's data must fit its process group (a one-line error, before training; that
    recipe.gpus equals the world size is checked before the group is joined, in `train`, and
    that it divides batch_size by Recipe itself)."""
    last = train_size % recipe.batch_size
    if 0 < last < dist.world:
        raise ConfigError(f"the last batch of each epoch has {last} image(s), fewer than the "
                          f"{dist.world} ranks; choose a batch_size that leaves at least "
                          f"{dist.world} (or none)")


def _train(run: Run, hooks: Hooks, dist: ddp.Dist) -> dict[str, Any]:
    cfg, dev = run.config, run.device
    recipe = Recipe(**cfg["recipe"])
    speed = fast.resolve(recipe, dev)
    seed_everything(cfg["seed"])
    if dev.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)

    splits = data.load(cfg["dataset"], run.data_dir, download=run.download)
    if dist.enabled:
        check_world(recipe, dist, len(splits.train))
    shard = dist.shard if dist.enabled else None
    dataset = cfg["dataset"]["name"]
    student = speed.prepare(models.create(cfg["student"], num_classes=splits.num_classes,
                                          dataset=dataset))
    teacher = build_teacher(run, splits.num_classes)
    if teacher is not None:
        speed.prepare(teacher)
    method_cls = methods.get(cfg["method"]["name"])
    method = methods.create(cfg["method"]["name"], **cfg["method"]["params"])
    method.prepare(splits.num_classes)  # a method's own module (ctkd) exists before the optimizer
    method.to(dev)

    gen = torch.Generator().manual_seed(cfg["seed"])  # shuffling + augmentation; checkpointed
    loaders = data.make_loaders(splits, recipe.loader, dev, gen, batch_size=recipe.batch_size,
                                eval_batch_size=recipe.eval_batch_size, num_workers=run.num_workers,
                                views=method_cls.views, gpu_decode=recipe.gpu_decode == "on",
                                shard=shard)
    train_loader, test_loader, val_loader = loaders.train, loaders.test, loaders.val
    teacher_logits, teacher_rec = teacher_cache.teacher_source(
        recipe.teacher_cache, teacher=teacher, teacher_sha256=lambda: teacher_sha256(run),
        method=method_cls, loader=train_loader, loader_kind=loaders.kind,
        train_set=splits.train, num_classes=splits.num_classes, epochs=recipe.epochs,
        batch_size=recipe.batch_size // dist.world, speed=speed, cache_dir=run.teacher_cache_dir,
        meta={"teacher": (cfg.get("teacher") or {}).get("name"), "dataset": cfg["dataset"]},
        dist=dist if dist.enabled else None)
    switches = {**speed.record(), "loader": loaders.kind, **loaders.record(), **teacher_rec}
    if dist.enabled:
        switches["world_size"] = dist.world

    def evaluate(model: torch.nn.Module, loader: Any, split: Any) -> tuple[torch.Tensor, ...]:
        """(logits, labels) over a whole split: this rank's shard, gathered (DDP)."""
        if not dist.enabled:
            return predict(model, loader, dev)
        counts = eval_counts(len(split), recipe.eval_batch_size, dist.world)
        return predict_shards(model, loader, dev, dist, counts, splits.num_classes)

    # A method's trainable parameters (ctkd's temperature) train with the student, as in the
    # authors' code; for every other method this is the student's parameters alone.
    opt = torch.optim.SGD([*student.parameters(), *method.parameters()], lr=recipe.lr,
                          momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay, nesterov=recipe.nesterov)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, recipe.lr_milestones, recipe.lr_gamma)
    # DDP: the wrapper trains; `student` itself is evaluated and saved (single-process keys).
    model = dist.wrap(student, dev)
    step = Step(model, teacher_logits, method, opt, speed, recipe.batch_size // dist.world,
                dist)

    state = {"epoch": 0, "history": [], "train_time": 0.0, "images": 0}
    ck = resume_point(run, hooks)
    if dist.enabled:  # same records, same digest checks: the same checkpoint on every rank
        chosen = dist.all_gather_object(None if ck is None else ck["state"]["epoch"])
        if len(set(chosen)) > 1:
            raise RuntimeError(f"ranks resumed from different epochs: {chosen}")
    if ck is not None:  # resume: everything continues exactly where the last epoch ended
        student.load_state_dict(ck["model"])
        method.load_state_dict(ck.get("method", {}))
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        state = ck["state"]
        _set_rng_state(rank_rng(ck["rng"], dist), gen, dev)
    if state["epoch"] < recipe.epochs:
        note_switches(state, switches)

    n_batches = len(train_loader)
    n_train = len(splits.train)
    test_logits = test_y = None  # from the last epoch trained
    for epoch in range(state["epoch"] + 1, recipe.epochs + 1):
        student.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=dev)
        comp_sum: dict[str, torch.Tensor] = {}
        correct = torch.zeros((), device=dev)
        seen = 0
        for i, (x, y, views) in enumerate(step.batches(train_loader)):
            y = y.to(dev, non_blocking=True)
            b = y.shape[0]
            # DDP: this shard's share of the global batch, times the world size (1 when even)
            weight = (b * dist.world / min(recipe.batch_size, n_train - i * recipe.batch_size)
                      if dist.enabled else 1.0)
            loss, comps, logits = step(x, y, views, epoch, weight)
            loss_sum += loss * b
            for k, v in comps.items():
                comp_sum[k] = comp_sum.get(k, 0) + v.detach() * b
            correct += (logits.argmax(1) == y).sum()
            seen += b
            hooks.step(epoch, i + 1, n_batches)
        if dist.enabled:  # the epoch's row is the global one: sums over all ranks
            keys = sorted(comp_sum)
            total = dist.all_sum(torch.stack([t.double() for t in (
                loss_sum, correct, torch.tensor(seen, device=dev),
                *(comp_sum[k] for k in keys))]))
            loss_sum, correct, seen = total[0], total[1], int(total[2].item())
            comp_sum = dict(zip(keys, total[3:], strict=True))
            dist.broadcast_buffers(student)  # rank 0's BatchNorm statistics, as saved
        lr = opt.param_groups[0]["lr"]
        sched.step()
        train_loss = loss_sum.item() / seen
        if not math.isfinite(train_loss):
            raise NonFiniteLoss(f"non-finite training loss ({train_loss}) in epoch {epoch}")
        elapsed = time.perf_counter() - t0

        test_logits, test_y = evaluate(student, test_loader, splits.test)
        top1, top5 = topk(test_logits, test_y)
        val1 = (topk(*evaluate(student, val_loader, splits.val), ks=(1,))[0] if val_loader
                else None)
        state["train_time"] += elapsed
        state["images"] += seen
        state["epoch"] = epoch
        state["history"].append({"epoch": epoch, "test_top1": top1, "test_top5": top5,
                                 "val_top1": val1})
        row = {
            "epoch": epoch, "lr": lr, "train_loss": train_loss,
            "components": {k: v.item() / seen for k, v in comp_sum.items()},
            "train_top1": 100.0 * correct.item() / seen, "test_top1": top1, "test_top5": top5,
            "val_top1": val1, "epoch_time_s": elapsed, "images_per_s": seen / elapsed,
        }
        left = recipe.epochs - epoch
        # Checkpoint under this attempt's own name, then report: the worker records the epoch
        # and its file in one lease-fenced write, so only the lease holder's file is ever
        # resumed (kdrun.checkpoints). A crash in between repeats the epoch.
        rng = _rng_state(gen, dev)
        if dist.enabled:  # every rank's, in rank order (a resume restores each its own)
            rng = dist.all_gather_object(rng)
        if dist.is_main:
            save_epoch(run, hooks, epoch, {"model": student.state_dict(),
                                           "method": method.state_dict(),
                                           "optimizer": opt.state_dict(),
                                           "scheduler": sched.state_dict(), "state": state,
                                           "rng": rng})
        per_epoch = state["train_time"] / max(len(state["history"]), 1)
        hooks.epoch_done(row, {"epoch": epoch, "epochs": recipe.epochs, "loss": train_loss,
                               "test_top1": top1, "images_per_s": seen / elapsed,
                               "eta_s": left * per_epoch})
        if left and dist.any(hooks.stop_requested()):  # any rank asked: all stop together
            raise Interrupted(f"stopped after epoch {epoch}")

    if test_logits is None:  # resumed from the final epoch's checkpoint: nothing left to train
        test_logits, test_y = evaluate(student, test_loader, splits.test)
    if not dist.same_everywhere(student, method):
        raise RuntimeError("the DDP replicas' weights differ at the end of training")
    return finish(run, student, teacher, state, test_logits, test_y,
                  lambda m: evaluate(m, test_loader, splits.test), dist)


def rank_rng(saved: Any, dist: ddp.Dist) -> dict[str, Any]:
    """This rank's RNG state from a checkpoint's "rng" (a list of every rank's under DDP)."""
    ranks = len(saved) if isinstance(saved, list) else 1
    if ranks != dist.world:
        raise ConfigError(f"the checkpoint was written by a job of {ranks} process(es), this "
                          f"one runs {dist.world}; it cannot resume it exactly")
    return saved[dist.rank] if isinstance(saved, list) else saved


def resume_point(run: Run, hooks: Hooks) -> dict[str, Any] | None:
    """The newest good checkpoint (digest-verified against the database's records), or None
    to start at epoch 0; skipped ones are reported to the log and through hooks.notice."""
    base = run.run_dir.parent
    if run.resume is None:
        records = checkpoints.local_records(run.run_dir)
    else:
        records = [checkpoints.Record(r["epoch"], r["path"], r["sha256"]) for r in run.resume]
        legacy = run.run_dir / checkpoints.LEGACY_LAST
        if not records and legacy.is_file():  # written by a kdrun before fencing
            records = [checkpoints.Record(-1, f"{run.run_dir.name}/{legacy.name}", None)]

    def note(text: str, bad: list[str]) -> None:
        print(f"checkpoint: {text}", file=sys.stderr, flush=True)
        hooks.notice(text, bad)

    found = checkpoints.resume(records, base, note)
    return None if found is None else found[0]


def save_epoch(run: Run, hooks: Hooks, epoch: int, obj: dict[str, Any]) -> None:
    """Write one epoch's checkpoint and hand its record to the worker (without one, keep the
    newest KEEP files)."""
    name = checkpoints.epoch_name(run.attempt or "local", epoch)
    digest = checkpoints.save(obj, run.run_dir / name)
    hooks.checkpoint_saved({"epoch": epoch, "path": f"{run.run_dir.name}/{name}",
                            "sha256": digest})
    if run.resume is None:
        newest = [r.path for r in checkpoints.local_records(run.run_dir)[:checkpoints.KEEP]]
        checkpoints.prune(run.run_dir, keep=[*newest, checkpoints.final_name(None)])


def note_switches(state: dict[str, Any], switches: dict[str, Any]) -> None:
    """Remember the switches each stretch of epochs ran with (a resume may run elsewhere)."""
    runs = state.setdefault("switches", [])
    if not runs or {k: v for k, v in runs[-1].items() if k != "from_epoch"} != switches:
        runs.append({"from_epoch": state["epoch"] + 1, **switches})


def recorded_switches(state: dict[str, Any]) -> dict[str, Any] | None:
    """For the result row: the last stretch's switches, earlier differing ones under
    `earlier` (a job resumed on another device)."""
    runs = state.get("switches") or []
    if not runs:
        return None
    out = {k: v for k, v in runs[-1].items() if k != "from_epoch"}
    if len(runs) > 1:
        out["earlier"] = runs[:-1]
    return out


def finish(run, student, teacher, state, test_logits, test_y, predict_test,
           dist: ddp.Dist) -> dict[str, Any]:
    """Best/last metrics, teacher agreement, and the final weights file (DDP: written by
    rank 0, its digest shared so every rank returns the same row)."""
    hist = state["history"]
    key = "val_top1" if hist[-1]["val_top1"] is not None else "test_top1"
    best = max(hist, key=lambda h: (h[key], h["epoch"]))
    final = run.run_dir / checkpoints.final_name(run.attempt)
    digest = checkpoints.save({"model": student.state_dict()}, final) if dist.is_main else None
    digest = dist.broadcast_object(digest)
    out = {
        "best_top1": best["test_top1"], "best_top5": best["test_top5"], "best_epoch": best["epoch"],
        "last_top1": hist[-1]["test_top1"], "last_top5": hist[-1]["test_top5"],
        "last5_top1": float(np.mean([h["test_top1"] for h in hist[-5:]])),
        "selection_split": "val" if key == "val_top1" else "test",
        "wall_time_s": state["train_time"],
        "images_per_s": state["images"] / max(state["train_time"], 1e-9),
        "checkpoint": str(final), "sha256": digest,
        "teacher_top1": None, "agree_top1": None, "spearman": None, "kendall": None, "kl": None,
        "switches": recorded_switches(state),
    }
    if teacher is not None:
        t_logits, _ = predict_test(teacher)
        out["teacher_top1"] = topk(t_logits, test_y, ks=(1,))[0]
        out.update(agreement(test_logits, t_logits))
    return out
