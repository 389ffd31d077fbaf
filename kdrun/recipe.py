"""The training recipe: optimizer, schedule and batch size of one job.

Defaults are the standard CIFAR-100 KD recipe of RepDistiller / mdistiller: 240 epochs,
batch 64, SGD momentum 0.9, lr 0.05 decayed x0.1 at epochs 150/180/210, weight decay 5e-4.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs, batch_size and eval_batch_size must be positive")
        if self.lr <= 0:
            raise ValueError("lr must be positive")
        if sorted(self.lr_milestones) != list(self.lr_milestones):
            raise ValueError(f"lr_milestones must increase, got {self.lr_milestones}")
        if any(m < 1 or m > self.epochs for m in self.lr_milestones):
            raise ValueError(f"lr_milestones must lie in 1..epochs={self.epochs}")
