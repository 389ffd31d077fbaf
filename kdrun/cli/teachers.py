"""`kdrun teacher import|list`: the registry of teacher checkpoints grids can name."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import typer
from rich.table import Table

from kdrun import teachers
from kdrun.cli.app import Settings, app, console
from kdrun.db import migrate
from kdrun.errors import UserError

teacher_app = typer.Typer(help="Teacher checkpoints: import published ones, list the registry.")
app.add_typer(teacher_app, name="teacher")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _short(path: str) -> str:
    """A path as the shorter of absolute and relative to the working directory."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive
        return path
    return rel if len(rel) < len(path) else path


def _device(spec: str | None) -> torch.device:
    if spec is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise UserError(f"--device {spec!r}: expected cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {spec}: CUDA is not available on this machine; use cpu")
    return dev


@teacher_app.command("import")
def import_(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="A checkpoint file, or a directory / .tar in the "
                                "cifar_teachers layout (<arch>_vanilla/ckpt_epoch_240.pth)"),
    arch: str = typer.Option(None, "--arch", help="Architecture (default: from the folder name, "
                             "else the zoo model the weights fit)"),
    dataset: str = typer.Option("cifar100", "--dataset", help="cifar100 | imagenet | synthetic"),
    name: str = typer.Option(None, "--name", help="Registry name, what grids' `registered:` "
                             "refers to (default: the architecture)"),
    evaluate: bool = typer.Option(True, "--eval/--no-eval",
                                  help="Measure test top-1/top-5 when the dataset is present"),
    download: bool = typer.Option(False, "--download", help="Fetch a missing dataset to evaluate"),
    device: str = typer.Option(None, "--device", help="Evaluate on cpu | cuda | cuda:N "
                               "(default: cuda when available)"),
) -> None:
    """Verify checkpoints strictly against their architecture and register them."""
    settings: Settings = ctx.obj
    dev = _device(device)
    db = settings.open(create=True, check=False)
    if migrate.current(db) is None:  # a new database: create the schema
        migrate.upgrade(db)
    migrate.require_current(db)
    rows, note = teachers.import_teachers(
        db, path, runs_dir=settings.runs_dir, data_dir=settings.data_dir, dataset=dataset,
        arch=arch, name=name, evaluate=evaluate, device=dev, download=download)
    for r in rows:
        console.print(f"{r.status} [bold]{r.name}[/] ({r.arch}, {r.dataset}): top-1 "
                      f"{_pct(r.top1)}, top-5 {_pct(r.top5)}, sha256 {r.sha256[:12]}, "
                      f"{_short(r.path)}", soft_wrap=True, highlight=False)
    if note:
        console.print(f"accuracy not measured: {note}", soft_wrap=True, highlight=False)


@teacher_app.command("list")
def list_(ctx: typer.Context) -> None:
    """Registered teachers: imported checkpoints and teachers kdrun trained."""
    rows = teachers.list_teachers(ctx.obj.open())
    if not rows:
        console.print("no teachers registered (see `kdrun teacher import`)")
        return
    t = Table(title=f"{len(rows)} registered teachers")
    for col in ("name", "arch", "dataset", "top-1", "top-5", "source", "sha256", "path"):
        t.add_column(col, overflow="fold", ratio=1 if col == "path" else None)
    for r in rows:
        source = r.source + (f" (job {r.job_id})" if r.job_id else "")
        t.add_row(r.name, r.arch, f"{r.dataset} ({r.num_classes})", _pct(r.top1), _pct(r.top5),
                  source, r.sha256[:8], _short(r.path))
    console.print(t)
