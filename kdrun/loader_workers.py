"""How many DataLoader worker processes a job gets by default.

Datasets read from image files (ImageNet, Tiny-ImageNet) decode JPEGs on the CPU, which one
process does far slower than a GPU trains (see benchmarks/imagenet_loader.py), so by default
such a job uses every CPU available to it: the CPUs this process may run on
(os.sched_getaffinity: a cgroup, taskset or Slurm allocation) shared out among the jobs its
worker runs at once (slots x devices), one left for the training process itself. In-memory
datasets (cifar100, synthetic) gain nothing from worker processes and get none.
`kdrun worker --loader-workers N` overrides both.
"""

from __future__ import annotations

import os

FILE_DATASETS = ("imagenet", "tiny_imagenet")
MAX_WORKERS = 16  # beyond this, start-up and memory grow and throughput does not


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), not merely those the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def cpus_per_job(jobs_at_once: int) -> int:
    return max(1, available_cpus() // max(1, jobs_at_once))


def default_workers(dataset: str, cpus: int | None = None) -> int:
    """Loader workers for one job of `dataset` that may use `cpus` CPUs (default: all)."""
    if dataset not in FILE_DATASETS:
        return 0
    cpus = available_cpus() if cpus is None else cpus
    return min(MAX_WORKERS, max(0, cpus - 1))
