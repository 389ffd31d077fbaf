"""One optimizer step of a distillation job, shared by the trainer and the throughput benchmark.

Where the teacher's logits come from is a `TeacherLogits`: none (vanilla), the live frozen
teacher, or the exact logit cache (kdrun.train.teacher_cache), which looks each sampled view
up instead of running the teacher and so needs the loader to say which views it sampled.
Nothing here reads a value back to the host: metrics stay on the device until the epoch ends.
Under DDP (kdrun.train.ddp) the student is the DistributedDataParallel wrapper, each batch is
this rank's shard and `batch_size` the shard's size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from kdrun.data.device_loader import Views
from kdrun.methods.base import Components, Method
from kdrun.train import ddp
from kdrun.train.fast import Speed


class TeacherLogits(Protocol):
    kind: str  # "none", "live" or "cache" (recorded with the job)
    needs_views: bool

    def __call__(self, x: Tensor, views: Views | None) -> Tensor | None: ...


class NoTeacher:
    kind, needs_views = "none", False

    def __call__(self, x: Tensor, views: Views | None) -> None:
        return None


class LiveTeacher:
    """The frozen teacher's forward on every batch: inference mode, the job's autocast and
    memory format, compiled for full batches when the job compiles; logits in float32."""

    kind, needs_views = "live", False

    def __init__(self, model: nn.Module, speed: Speed, batch_size: int) -> None:
        self.model, self.speed, self.batch_size = model, speed, batch_size
        self.fast = speed.compiled(model)

    def __call__(self, x: Tensor, views: Views | None) -> Tensor:
        fwd = self.fast if x.shape[0] == self.batch_size else self.model
        with torch.inference_mode(), self.speed.autocast():
            t = fwd(x)
        return t.to(torch.float32, copy=True)  # a normal tensor again, usable by autograd


class Step:
    """Forward the student, get the teacher's logits, apply the method's loss, take an SGD
    step. Returns the loss, its components and the student's logits, all still on the device.
    With `dist` (DDP), the method's own parameters' gradients are averaged over the ranks
    (the student's are, by its DDP wrapper) and full shards run compiled without CUDA graphs."""

    def __init__(self, student: nn.Module, teacher: TeacherLogits, method: Method,
                 opt: torch.optim.Optimizer, speed: Speed, batch_size: int,
                 dist: ddp.Dist | None = None) -> None:
        self.student, self.teacher, self.method, self.opt = student, teacher, method, opt
        self.speed, self.batch_size = speed, batch_size
        self.dist = dist if dist is not None and dist.enabled else None
        self.fast = speed.compiled(student, graphs=self.dist is None)

    def batches(self, loader: Iterable[Any]) -> Iterator[tuple[Tensor, Tensor, Views | None]]:
        """(images, labels, views) per batch; the views (which crop and flip of which image)
        only when the teacher's logits are looked up by them (a DeviceLoader then)."""
        if self.teacher.needs_views:
            yield from loader.batches(with_views=True)  # type: ignore[attr-defined]
        else:
            for x, y in loader:
                yield x, y, None

    def __call__(self, x: Tensor | list[Tensor], y: Tensor, views: Views | None,
                 epoch: int, weight: float = 1.0) -> tuple[Tensor, Components, Tensor]:
        """`x` is a batch, or one batch per augmented view for a method with several
        (Method.views): student and teacher then run on each view separately (batch-norm
        statistics per view, as the authors' code) and the loss sees the views stacked.
        The returned logits are the first view's. `weight` scales the loss that is
        backpropagated (DDP: this shard's share of the global batch times the world size)."""
        xs = [self.speed.inputs(v) for v in x] if isinstance(x, (list, tuple)) else [
            self.speed.inputs(x)]
        self.speed.step_begin()
        outs = []
        for v in xs:  # several views: eager (a CUDA graph would reuse the first's output)
            fwd = self.fast if v.shape[0] == self.batch_size and len(xs) == 1 else self.student
            with self.speed.autocast():
                outs.append(fwd(v).float())  # the loss runs in float32
        t_outs = [self.teacher(v, views) for v in xs]
        logits = outs[0] if len(xs) == 1 else torch.cat(outs)
        t_logits = t_outs[0] if len(xs) == 1 or t_outs[0] is None else torch.cat(t_outs)
        targets = y if len(xs) == 1 else y.repeat(len(xs))
        loss, comps = self.method(logits, t_logits, targets, epoch=epoch)
        self.opt.zero_grad(set_to_none=True)
        (loss * weight if weight != 1.0 else loss).backward()
        if self.dist is not None:
            self.dist.average_grads(self.method.parameters())
        self.opt.step()
        return loss.detach(), comps, outs[0].detach()
