"""Per-sample seeds: a DataLoader stream that depends on the job's seed alone.

Each epoch the sampler draws the order and one seed per sample from the job's checkpointed
generator; the dataset wrapper seeds the random augmentation of that sample with it. What a
sample looks like therefore no longer depends on which worker process made it, how many
there are, or what they made before. So loader workers can be persistent (no process
start-up per epoch) and a job resumed from a checkpoint still draws exactly what the
uninterrupted job drew, with any number of workers, 0 included.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import BatchSampler, Dataset, Sampler, get_worker_info

from kdrun.data.shards import Shard

SEED_HIGH = 2**62


class SeededSampler(Sampler[tuple[int, int]]):
    """Shuffled (index, seed) pairs, drawn when an epoch's iteration starts."""

    def __init__(self, n: int, generator: torch.Generator, shuffle: bool = True) -> None:
        self.n, self.generator, self.shuffle = n, generator, shuffle

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # Drawn eagerly: the generator advances as the epoch starts, not as batches go by.
        g = self.generator
        order = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
        seeds = torch.randint(0, SEED_HIGH, (self.n,), generator=g)
        return iter(list(zip(order.tolist(), seeds.tolist(), strict=True)))


def seeded_call(seed: int, fn: Any, *args: Any) -> Any:
    """fn(*args) with torch's global RNG seeded (on the CPU; in the main process the caller's
    RNG state is restored afterwards, a worker process's own state is simply reset)."""
    if get_worker_info() is not None:
        torch.manual_seed(seed)
        return fn(*args)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn(*args)


class Seeded(Dataset):
    """`ds[index]` for a key (index, seed), its random transforms seeded by `seed`."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        return seeded_call(seed, self.ds.__getitem__, index)


class ShardBatches(Sampler[list[tuple[int, int]]]):
    """Batches of a SeededSampler's (index, seed) keys, each cut to this rank's contiguous
    part (kdrun.data.shards): every rank draws the same global batches, keeps its slice."""

    def __init__(self, sampler: SeededSampler, batch_size: int, shard: Shard) -> None:
        self.batches, self.shard = BatchSampler(sampler, batch_size, drop_last=False), shard

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.batches:
            yield batch[self.shard.batch(len(batch))]


def batches(sampler: SeededSampler, batch_size: int,
            shard: Shard | None = None) -> Sampler[list[tuple[int, int]]]:
    """A DataLoader's `batch_sampler`: the keys `batch_size` at a time (the last batch may be
    short), with a `shard` this rank's part of each."""
    if shard is None:
        return BatchSampler(sampler, batch_size, drop_last=False)
    return ShardBatches(sampler, batch_size, shard)
