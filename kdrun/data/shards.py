"""Which part of the data each rank of a multi-process (DDP) job sees.

Training: every rank draws the same global batch (same order, same augmentation stream from
the same seed) and keeps its contiguous 1/N slice of it, so the union over ranks is exactly
the single-process batch. Evaluation: the split's eval batches are divided into N contiguous
runs of whole batches, so every image is evaluated once (no DistributedSampler padding), in
the very batch it has in a single process, and the gathered logits are the single-process
ones bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    """This process's place in the job: rank `rank` of `world` (world 1: the whole data)."""

    rank: int = 0
    world: int = 1

    def batch(self, m: int) -> slice:
        """This rank's contiguous part of a global batch of `m` samples (sizes differ by at
        most one when N does not divide m)."""
        return slice(self.rank * m // self.world, (self.rank + 1) * m // self.world)

    def eval_range(self, n: int, batch_size: int) -> tuple[int, int]:
        """[lo, hi) of an n-sample split for this rank: whole eval batches, contiguous."""
        return eval_range(n, batch_size, self.rank, self.world)


def eval_range(n: int, batch_size: int, rank: int, world: int) -> tuple[int, int]:
    batches = -(-n // batch_size)
    lo, hi = rank * batches // world, (rank + 1) * batches // world
    return min(lo * batch_size, n), min(hi * batch_size, n)


def eval_counts(n: int, batch_size: int, world: int) -> list[int]:
    """How many samples of an n-sample split each rank evaluates."""
    return [hi - lo for lo, hi in (eval_range(n, batch_size, r, world) for r in range(world))]
