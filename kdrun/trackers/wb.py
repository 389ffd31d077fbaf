"""Weights & Biases: one W&B run per job, named by its label, steps = epochs.

The run id is stored in the database; a resumed job passes it back with `resume="allow"`,
so its epochs continue the same run. Online, W&B says where the run stopped (its step), and
epochs from there to the resume point are replayed from the database, so a crash between
storing an epoch and logging it leaves no gap; W&B ignores steps below the run's current
one, so nothing is logged twice. Offline, each attempt writes its own local run with the
same id (`wandb sync` joins them), from the epoch it resumed at. The project is
`$WANDB_PROJECT` (default `kdrun`), the group the grid's name; `WANDB_MODE=offline` and the
other W&B environment variables work as usual. W&B's own output goes to the job's log,
never to the terminal.
"""

from __future__ import annotations

import os
from typing import Any

from kdrun.trackers.base import RunContext


class Wandb:
    name = "wandb"

    def __init__(self) -> None:
        self.run: Any = None

    def start(self, ctx: RunContext, first_epoch: int, stored: dict[str, Any] | None
              ) -> dict[str, Any]:
        import wandb

        resume_id = (stored or {}).get("run_id") if first_epoch > 1 else None
        cfg = ctx.config
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "kdrun", id=resume_id or None,
            name=ctx.label, group=ctx.grid, job_type=cfg.get("kind"),
            tags=[t for t in (cfg["dataset"]["name"], cfg["method"]["name"]) if t],
            config={"job_id": ctx.job_id, "label": ctx.label, **cfg}, dir=str(ctx.run_dir),
            resume="allow", reinit="create_new",
            settings=wandb.Settings(console="off", silent=True, disable_git=True))
        url = None
        if self.run.settings.mode != "offline":
            try:
                url = self.run.url
            except Exception:  # a link is nice to have, never worth failing the tracker
                pass
        return {"run_id": self.run.id, "project": self.run.project, "url": url,
                "path": str(self.run.dir)}

    def replay_from(self) -> int | None:
        if self.run.settings.mode == "offline" or not self.run.step:
            return None
        return int(self.run.step)

    def log(self, epoch: int, scalars: dict[str, float]) -> None:
        self.run.log({"epoch": epoch, **scalars}, step=epoch)

    def finish(self, summary: dict[str, Any] | None, ok: bool) -> None:
        if self.run is None:
            return
        if summary:
            self.run.summary.update(summary)
        self.run.finish(exit_code=0 if ok else 1)
