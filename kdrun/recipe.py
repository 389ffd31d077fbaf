"""The training recipe: optimizer, schedule and batch size of one job.

Defaults are the standard CIFAR-100 KD recipe of RepDistiller / mdistiller: 240 epochs,
batch 64, SGD momentum 0.9, lr 0.05 decayed x0.1 at epochs 150/180/210, weight decay 5e-4.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# The standard schedule's decay points as fractions of its 240 epochs: 150/180/210 of 240.
MILESTONE_FRACTIONS = (150 / 240, 180 / 240, 210 / 240)


def default_milestones(epochs: int) -> list[int]:
    """lr decay epochs for `epochs` when a recipe sets epochs but not lr_milestones: the same
    fractions as 150/180/210 of 240 (rounded, at least 1, duplicates dropped)."""
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        return [150, 180, 210]  # left for Recipe's own check to refuse the epochs
    return sorted({min(epochs, max(1, int(epochs * f + 0.5))) for f in MILESTONE_FRACTIONS})


@dataclass
class Recipe:
    epochs: int = 240
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    lr_milestones: list[int] = field(default_factory=lambda: [150, 180, 210])
    lr_gamma: float = 0.1
    eval_batch_size: int = 256
    # How batches are made (kdrun.data.loaders): "device" = GPU-resident uint8 data augmented
    # on the device (also runs on CPU, same stream from a seed on both); "torch" = torchvision
    # DataLoader; "auto" = device on CUDA for cifar100/synthetic, torch otherwise.
    loader: Literal["auto", "torch", "device"] = "auto"
    # Speed switches (kdrun.train.fast). "auto" = on on CUDA, off on CPU. Each is part of the
    # job's config; the value a job actually ran with is in its result's `switches`.
    # amp: bf16 autocast for the student's forward and the live teacher's (logits in float32).
    amp: Literal["auto", "bf16", "off"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"  # NHWC activations for convolutions
    # torch.compile of the student's (and live teacher's) full-batch step; CUDA graphs on CUDA.
    compile: Literal["auto", "on", "off"] = "auto"
    # Exact teacher-logit cache (kdrun.train.teacher_cache): the teacher's logits for every
    # crop+flip view of the training set, computed once per teacher and dataset and shared by
    # all jobs. Used only when exact (loader: device, a teacher, a method that needs only its
    # logits), else the live teacher. "on": whenever exact; "auto": whenever exact and either
    # the cache exists or this job alone pays for it (epochs >= 162, the views per image).
    teacher_cache: Literal["auto", "on", "off"] = "auto"
    # Decode JPEG files (imagenet, tiny_imagenet) on the GPU with nvJPEG instead of in the
    # loader workers (kdrun.data.gpu_decode). "on": where the job runs on CUDA; "auto": off
    # (the CPU decode is the reference pipeline; turn it on where CPUs are short).
    gpu_decode: Literal["auto", "on", "off"] = "auto"
    # Multi-GPU (DDP) training: `gpus` ranks in all (the job's world size), spread evenly over
    # `nodes` machines. batch_size stays the global batch, each rank trains on batch_size/gpus
    # of it, with per-replica BatchNorm: gpus is part of the job's identity (kdrun.spec).
    gpus: int = 1
    nodes: int = 1

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs, batch_size and eval_batch_size must be positive")
        if self.gpus < 1 or self.nodes < 1:
            raise ValueError(f"gpus and nodes must be at least 1, got gpus={self.gpus}, "
                             f"nodes={self.nodes}")
        if self.gpus % self.nodes:
            raise ValueError(f"gpus={self.gpus} does not split evenly over nodes={self.nodes} "
                             "(each node runs gpus/nodes ranks); use a multiple of "
                             f"{self.nodes} for gpus, or nodes among {_divisors(self.gpus)}")
        if self.batch_size % self.gpus:
            below = self.batch_size - self.batch_size % self.gpus
            near = [b for b in (below, below + self.gpus) if b > 0]
            raise ValueError(f"batch_size={self.batch_size} (the global batch) does not divide "
                             f"by gpus={self.gpus} (each GPU takes an equal share); use "
                             f"batch_size {' or '.join(map(str, near))}, or gpus among "
                             f"{_divisors(self.batch_size, max(self.gpus, 8))}")
        if self.lr <= 0:
            raise ValueError("lr must be positive")
        if sorted(self.lr_milestones) != list(self.lr_milestones):
            raise ValueError(f"lr_milestones must increase, got {self.lr_milestones}")
        if any(m < 1 or m > self.epochs for m in self.lr_milestones):
            raise ValueError(f"lr_milestones must lie in 1..epochs={self.epochs}")


def _divisors(n: int, limit: int | None = None) -> str:
    """`1, 2, 4, 8`: the values that divide n (up to `limit`, when given), for error messages."""
    top = min(n, limit) if limit else n
    return ", ".join(str(d) for d in range(1, top + 1) if n % d == 0)
