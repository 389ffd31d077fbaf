"""Exact teacher-logit cache: a teacher's logits for every augmented view of a training set.

RandomCrop(32, padding=4) + horizontal flip gives each image (2*4+1)^2 * 2 = 162 distinct
views, so the logits of all of them can be computed once (162 teacher forwards per image,
0.675 of one 240-epoch run's 240) and looked up for every student, method and seed that uses
the same teacher on the same data: the lookup key of a view is
    ((index * 9 + dy) * 9 + dx) * 2 + flip        (dy, dx: crop offsets in 0..8)
and the DeviceLoader names every view it samples, so the lookup is exact.

Layout: one `.npy` array [images, 162, classes] at
    <runs dir>/teacher_cache/<teacher sha256[:16]>-<data hash>-crop<p>flip-<dtype>.npy
keyed by the teacher checkpoint's sha256, a hash of the training images and normalization
(so a held-out split or another dataset never meets a wrong cache) and the augmentation. A
sidecar `.json` says what it holds. `fp32` caches hold the fp32 teacher's logits (exact up to
how the batch is blocked, ~1e-6 relative); `fp16` caches hold the bf16-autocast teacher's
logits, which fp16 represents exactly for |x| in [6e-5, 65504] (the live bf16 teacher itself
differs from run to run by bf16 rounding, 2^-8 relative, as kernels change with batch size).
A job uses the dtype its amp switch gives its teacher: fp16 with bf16, fp32 without.

It is built by the first job that needs it (or `kdrun teacher cache NAME`) under an exclusive
fcntl lock on `<file>.lock`, written to a temporary file and renamed into place, so a second
worker waits and then reads the finished file, and a killed build leaves nothing half-written.
Readers memory-map it; on CUDA it is copied to the GPU when it takes at most half the free
memory, else looked up on the host (one small host sync per step).

Under DDP (kdrun.train.ddp) rank 0 decides whether the job uses the cache and every rank
follows; the ranks race for the build lock like workers do (one builds, the others wait and
read the finished file); each rank then looks up the views of its own shard of each batch.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from kdrun.checkpoints import sha256
from kdrun.data.device_loader import DeviceLoader, Views
from kdrun.data.images import ArrayImages
from kdrun.errors import ConfigError
from kdrun.methods.base import Method
from kdrun.train.fast import Speed
from kdrun.train.step import LiveTeacher, NoTeacher, TeacherLogits

if TYPE_CHECKING:
    from kdrun.train.ddp import Dist

DIR = "teacher_cache"  # under the runs directory
Dtype = Literal["fp16", "fp32"]
NP_DTYPE = {"fp16": np.float16, "fp32": np.float32}
GPU_SHARE = 0.5  # copy a cache to the GPU when it takes at most this share of free memory


def views_per_image(padding: int) -> int:
    return (2 * padding + 1) ** 2 * 2


def view_key(v: Views, padding: int) -> Tensor:
    """Row of each view in the cache flattened to [images * views, classes]."""
    n = 2 * padding + 1
    return ((v.index * n + v.dy) * n + v.dx) * 2 + v.flip.long()


def all_views(index: Tensor, padding: int) -> Views:
    """Every crop+flip view of the given images, in key order."""
    n = 2 * padding + 1
    k = torch.arange(views_per_image(padding))
    reps = index.shape[0]
    return Views(index.repeat_interleave(k.shape[0]), (k // (2 * n)).repeat(reps),
                 (k // 2 % n).repeat(reps), (k % 2).bool().repeat(reps))


def data_hash(ds: ArrayImages) -> str:
    """What the teacher's logits depend on in a dataset: its images and normalization."""
    h = hashlib.sha256(np.ascontiguousarray(ds.data).data)
    h.update(json.dumps({"shape": list(ds.data.shape), "stats": ds.stats}).encode())
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class CacheSpec:
    teacher_sha256: str
    data: str  # data_hash of the training split
    padding: int
    dtype: Dtype

    @property
    def filename(self) -> str:
        return f"{self.teacher_sha256[:16]}-{self.data}-crop{self.padding}flip-{self.dtype}.npy"


def cache_dtype(speed: Speed) -> Dtype:
    return "fp16" if speed.amp else "fp32"


def logits_only(method: type[Method]) -> bool:
    """Whether a method (a composed one: each of its parts) needs only the teacher's logits."""
    return method.teacher_logits_only


def _log(msg: str) -> None:
    print(f"teacher cache: {msg}", file=sys.stderr, flush=True)


@torch.inference_mode()
def teacher_logits(teacher: nn.Module, loader: DeviceLoader, views: Views,
                   speed: Speed) -> Tensor:
    """The teacher's logits for the given views, as the job's teacher computes them."""
    with speed.autocast():
        return teacher(speed.inputs(loader.render(views))).float()


def build(teacher: nn.Module, loader: DeviceLoader, path: Path, dtype: Dtype, speed: Speed,
          images_per_batch: int | None = None, log: Callable[[str], None] = _log) -> None:
    """Write the cache of `teacher` over every image of `loader` to `path` (a new .npy).
    `speed` is the job's (fp16 goes with speed.amp: the bf16 teacher's logits, held exactly)."""
    teacher.eval()
    n, p = loader.targets.shape[0], loader.padding
    per = images_per_batch or (16 if loader.device.type == "cuda" else 2)
    first = teacher_logits(teacher, loader, all_views(torch.arange(min(per, n)), p), speed)
    classes = first.shape[1]
    out = np.lib.format.open_memmap(path, mode="w+", dtype=NP_DTYPE[dtype],
                                    shape=(n, views_per_image(p), classes))
    t0 = last = time.perf_counter()
    for start in range(0, n, per):
        idx = torch.arange(start, min(start + per, n))
        logits = first if start == 0 else teacher_logits(teacher, loader, all_views(idx, p), speed)
        stored = logits.to(torch.float16 if dtype == "fp16" else torch.float32)
        if not bool(torch.isfinite(stored).all()):
            raise ConfigError(f"teacher logits of images {start}..{idx[-1].item()} are not finite "
                              f"in {dtype}; use teacher_cache: off")
        out[start : start + idx.shape[0]] = stored.cpu().numpy().reshape(idx.shape[0], -1, classes)
        if time.perf_counter() - last > 30:
            last = time.perf_counter()
            log(f"{idx[-1].item() + 1}/{n} images, {last - t0:.0f} s")
    out.flush()
    del out


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path.with_name(path.name + ".lock"), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released by the kernel if this process dies
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure(path: Path, build_to: Callable[[Path], None], meta: dict[str, Any] | None = None,
           log: Callable[[str], None] = _log) -> bool:
    """Make sure the cache at `path` exists, building it with `build_to(temporary path)` unless
    another process has (or is building it: then wait for it). True when this call built it.
    A cache whose sha256 differs from the one its sidecar recorded at build is rebuilt."""
    if path.exists() and intact(path):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        if path.exists():  # built by another worker while we waited for the lock
            if intact(path):
                return False
            log(f"{path.name} is damaged (sha256 differs from its build's); rebuilding")
            path.unlink()
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # a killed builder's leftovers
            stale.unlink(missing_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        log(f"building {path.name}")
        t0 = time.perf_counter()
        try:
            build_to(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            info = {**(meta or {}), "file": path.name,
                    "build_s": round(time.perf_counter() - t0, 1), "sha256": sha256(tmp)}
            side = path.with_suffix(".json")
            side_tmp = side.with_name(f".{side.name}.{os.getpid()}.tmp")
            side_tmp.write_text(json.dumps(info, indent=1) + "\n")
            os.replace(side_tmp, side)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        log(f"built {path.name} in {time.perf_counter() - t0:.1f} s")
        return True


def intact(path: Path) -> bool:
    """Whether the cache file has the sha256 its build recorded (caches built before digests
    were recorded cannot be checked and count as intact)."""
    try:
        want = json.loads(path.with_suffix(".json").read_text()).get("sha256")
    except (OSError, ValueError):
        want = None
    return want is None or sha256(path) == want


class CachedTeacher:
    """Looks the teacher's logits for each sampled view up in a cache (float32 out)."""

    kind, needs_views = "cache", True

    def __init__(self, table: Tensor, padding: int) -> None:
        self.table, self.padding = table, padding  # [images * views, classes]

    @classmethod
    def open(cls, path: Path, device: torch.device, images: int, classes: int,
             padding: int) -> CachedTeacher:
        arr = np.load(path, mmap_mode="c")  # copy-on-write map: pages shared, never loaded whole
        want = (images, views_per_image(padding), classes)
        if arr.shape != want:
            raise ConfigError(f"teacher cache {path} holds {arr.shape}, expected {want}; "
                              "delete it to rebuild")
        table = torch.from_numpy(arr).view(-1, classes)
        if device.type == "cuda" and table.nbytes <= GPU_SHARE * torch.cuda.mem_get_info(device)[0]:
            table = table.to(device)
        return cls(table, padding)

    def __call__(self, x: Tensor, views: Views | None) -> Tensor:
        assert views is not None, "the cache looks logits up by view: use DeviceLoader batches"
        key = view_key(views, self.padding)
        if key.device != self.table.device:  # a host-resident cache: gather there
            return self.table[key.cpu()].to(x.device, torch.float32, non_blocking=True)
        return self.table[key].float()


@dataclass
class Choice:
    """Where a job's teacher logits come from, and why (recorded with the job)."""

    use_cache: bool
    note: str


def choose(setting: str, *, has_teacher: bool, method: type[Method], loader_kind: str,
           epochs: int, padding: int, exists: Callable[[], bool]) -> Choice:
    """Whether a job uses the cache: only when exact, and for `auto` only when it pays."""
    if not has_teacher:
        return Choice(False, "no teacher")
    if setting not in ("auto", "on", "off"):
        raise ConfigError(f"recipe.teacher_cache: {setting!r} is not one of 'auto', 'on', 'off'")
    if setting == "off":
        return Choice(False, "teacher_cache: off")
    if not logits_only(method):
        return Choice(False, f"method {method.name} needs more of the teacher than its logits")
    if loader_kind != "device":
        return Choice(False, f"loader {loader_kind}: the sampled views are not known "
                             "(use loader: device)")
    views = views_per_image(padding)
    if setting == "auto" and epochs < views and not exists():
        return Choice(False, f"auto: {epochs} epochs < {views} views per image, and no cache "
                             "was built yet (teacher_cache: on, or kdrun teacher cache)")
    return Choice(True, "")


def teacher_source(setting: str, *, teacher: nn.Module | None, teacher_sha256: Callable[[], str],
                   method: type[Method], loader: Any, loader_kind: str, train_set: Any,
                   num_classes: int, epochs: int, batch_size: int, speed: Speed,
                   cache_dir: Path, meta: dict[str, Any] | None = None,
                   dist: Dist | None = None) -> tuple[TeacherLogits, dict[str, Any]]:
    """The job's TeacherLogits and what to record about it: {"teacher", "teacher_note"}.
    `batch_size` is what one step of this process feeds the teacher (DDP: the shard's)."""
    if teacher is None:
        return NoTeacher(), {"teacher": "none", "teacher_note": "no teacher"}
    padding = getattr(loader, "padding", 4)
    spec: list[CacheSpec] = []

    def path() -> Path:
        if not spec:
            spec.append(CacheSpec(teacher_sha256(), data_hash(train_set), padding,
                                  cache_dtype(speed)))
        return cache_dir / spec[0].filename

    choice = choose(setting, has_teacher=True, method=method, loader_kind=loader_kind,
                    epochs=epochs, padding=padding, exists=lambda: path().exists())
    if dist is not None:  # another worker may finish a build between two ranks' checks
        choice = dist.broadcast_object(choice)
    if not choice.use_cache:
        return LiveTeacher(teacher, speed, batch_size), {"teacher": "live",
                                                         "teacher_note": choice.note}
    p, dtype = path(), cache_dtype(speed)
    ensure(p, lambda tmp: build(teacher, loader, tmp, dtype, speed),
           {**(meta or {}), "teacher_sha256": spec[0].teacher_sha256,
            "images": len(train_set), "dtype": dtype, "padding": padding})
    src = CachedTeacher.open(p, speed.device, len(train_set), num_classes, padding)
    where = "gpu" if src.table.device.type == "cuda" else "host"
    return src, {"teacher": "cache", "teacher_note": f"{p.name} ({where})"}
