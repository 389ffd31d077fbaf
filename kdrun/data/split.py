"""Held-out validation splits, so model selection need not look at the test set."""

from __future__ import annotations

import numpy as np


def stratified_split(labels: np.ndarray, n_val: int, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices), both sorted, with n_val samples spread evenly over the
    classes (each gives floor(n_val / C) or one more). Fixed by `seed` alone, so every job of
    a study -- whatever its training seed -- selects on the same held-out images."""
    labels = np.asarray(labels)
    if not 0 <= n_val < len(labels):
        raise ValueError(f"val_split must be in 0..{len(labels) - 1}, got {n_val}")
    perm = np.random.default_rng(seed).permutation(len(labels))
    lab = labels[perm]
    by_class = np.argsort(lab, kind="stable")
    sorted_lab = lab[by_class]
    rank = np.empty(len(lab), dtype=np.int64)  # position of each sample within its class
    rank[by_class] = np.arange(len(lab)) - np.searchsorted(sorted_lab, sorted_lab, side="left")
    order = perm[np.argsort(rank, kind="stable")]  # rank 0 of every class, then rank 1, ...
    return np.sort(order[n_val:]), np.sort(order[:n_val])
