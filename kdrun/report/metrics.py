"""Which number a table reports for each job: best epoch, last epoch, or mean of the last five.

The literature mixes these (RepDistiller reports the last epoch, mdistiller the best), so a
table always names the one it shows, and for best-epoch numbers also the split that picked
the epoch: selecting on the test set flatters every method a little.
"""

from __future__ import annotations

import pandas as pd

COLUMNS = {
    "top1": {"best": "best_top1", "last": "last_top1", "last5": "last5_top1"},
    "top5": {"best": "best_top5", "last": "last_top5"},  # last5 top-5 comes from the epochs
}
DESCRIBE = {"best": "best epoch", "last": "last epoch", "last5": "mean of the last five epochs"}
LAST_N = 5


def needs_epochs(acc: str, metric: str) -> bool:
    return metric not in COLUMNS[acc]


def values(df: pd.DataFrame, acc: str, metric: str,
           epochs: pd.DataFrame | None = None) -> pd.Series:
    """The chosen accuracy of every job in `df` (NaN where the job has none)."""
    col = COLUMNS[acc].get(metric)
    if col is not None:
        return pd.to_numeric(df[col], errors="coerce")
    if epochs is None:
        raise ValueError(f"{acc} {metric} needs the per-epoch metrics")
    # Same definition as the trainer's last5_top1: the mean of the last five epochs run.
    key = f"test_{acc}"
    tail = epochs.sort_values("epoch").groupby("job_id").tail(LAST_N)
    per_job = tail.groupby("job_id")[key].mean() if len(tail) else pd.Series(dtype=float)
    return df["job_id"].map(per_job).astype(float)


def selection_note(done: pd.DataFrame, metric: str) -> str:
    """Where the epoch was picked, counted over the finished jobs shown."""
    if metric != "best":
        return f"{DESCRIBE[metric]}: no model selection"
    splits = done["selection_split"].dropna().value_counts()
    if splits.empty:
        return "best epoch: no finished jobs to say which split selected it"
    names = {"test": "the test split", "val": "a held-out validation split"}
    parts = [f"{names.get(s, s)} ({n} jobs)" for s, n in splits.items()]
    return "best epoch selected on " + " and ".join(parts)
