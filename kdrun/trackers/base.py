"""What every tracker is given and does: start (or resume) a run, log an epoch, finish."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kdrun.params import flatten


@dataclass
class RunContext:
    """The job as a tracker sees it. `label` (kdrun.labels) is the run's name everywhere."""

    job_id: int
    label: str
    config: dict[str, Any]
    run_dir: Path  # the job's run directory; tracker files live under it
    runs_dir: Path  # run ids that are paths are stored relative to it
    grid: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def hyperparameters(self) -> dict[str, Any]:
        """The resolved config, flat (`recipe.lr`, `method.params.T`), plus the job's id."""
        return {"job_id": self.job_id, "label": self.label, **flatten(self.config)}


class Tracker(Protocol):
    name: str

    def start(self, ctx: RunContext, first_epoch: int, stored: dict[str, Any] | None
              ) -> dict[str, Any]:
        """Open the run (continue `stored` when resuming: first_epoch > 1); returns the record
        for the database: run_id, and optionally project, url, path."""
        ...

    def replay_from(self) -> int | None:
        """After resuming: the first epoch this run may lack (its earlier epochs are then
        logged again from the database), or None to log only the new epochs."""
        ...

    def log(self, epoch: int, scalars: dict[str, float]) -> None: ...

    def finish(self, summary: dict[str, Any] | None, ok: bool) -> None: ...


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """An epoch row (as stored in kdrun_epoch_metrics) as tracker scalars, one per metric and
    loss component, plus the lr and the throughput."""
    out = {"train/loss": row["train_loss"], "train/top1": row["train_top1"],
           "test/top1": row["test_top1"], "test/top5": row["test_top5"]}
    if row.get("val_top1") is not None:
        out["val/top1"] = row["val_top1"]
    out.update({f"loss/{k}": v for k, v in (row.get("components") or {}).items()})
    out.update({"lr": row["lr"], "speed/images_per_s": row["images_per_s"],
                "speed/epoch_time_s": row["epoch_time_s"]})
    return {k: float(v) for k, v in out.items()}
