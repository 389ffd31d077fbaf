"""TensorBoard: one log directory per job, `<run dir>/tensorboard`, steps = epochs.

A resumed job writes into the same directory with `purge_step` = 1 and logs its earlier
epochs again from the database before going on, so TensorBoard drops every point an earlier
attempt logged (an epoch trained twice around a crash, or one stored but never logged) and
shows exactly the database's epochs: one point per epoch and metric. The config goes in
once, as hyperparameters (HParams tab) and as text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdrun.trackers.base import RunContext

DIR = "tensorboard"
METRICS = ("test/top1", "test/top5", "train/loss")  # what the HParams tab compares runs by


class TensorBoard:
    name = "tensorboard"

    def __init__(self) -> None:
        self.writer: Any = None

    def start(self, ctx: RunContext, first_epoch: int, stored: dict[str, Any] | None
              ) -> dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter

        logdir = ctx.run_dir / DIR
        self.writer = SummaryWriter(str(logdir), purge_step=1)
        if first_epoch == 1:
            from torch.utils.tensorboard.summary import hparams

            hp = {k: _hparam(v) for k, v in ctx.hyperparameters().items()}
            for summary in hparams(hp, {m: 0.0 for m in METRICS}):
                self.writer.file_writer.add_summary(summary)
            self.writer.add_text("job", ctx.label, 0)
            self.writer.add_text("config", "```\n" + json.dumps(ctx.config, indent=2) + "\n```",
                                 0)
        return {"run_id": _relative(logdir, ctx.runs_dir), "path": str(logdir)}

    def replay_from(self) -> int | None:
        return 1  # everything before was purged

    def log(self, epoch: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, epoch)
        self.writer.flush()  # an epoch logged is on disk, whatever happens next

    def finish(self, summary: dict[str, Any] | None, ok: bool) -> None:
        if self.writer is not None:
            self.writer.close()


def _hparam(v: Any) -> Any:
    """HParams take numbers, strings and booleans; anything else as its text."""
    return v if isinstance(v, (bool, int, float, str)) else json.dumps(v, default=str)


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)
