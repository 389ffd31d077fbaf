"""`kdrun worker`: claim and train jobs on one device."""

from __future__ import annotations

import torch
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from kdrun.cli.app import Settings, app, console
from kdrun.errors import UserError
from kdrun.worker import WorkerOptions, work


def pick_device(gpu: int | None, cpu: bool) -> str:
    if gpu is not None and cpu:
        raise UserError("give either --gpu N or --cpu, not both")
    if gpu is not None:
        if not torch.cuda.is_available():
            raise UserError(f"--gpu {gpu}: CUDA is not available on this machine; use --cpu")
        if not 0 <= gpu < torch.cuda.device_count():
            raise UserError(f"--gpu {gpu}: valid GPU indices are 0..{torch.cuda.device_count() - 1}")
        return f"cuda:{gpu}"
    if cpu or not torch.cuda.is_available():
        return "cpu"
    return "cuda:0"


@app.command()
def worker(
    ctx: typer.Context,
    gpu: int = typer.Option(None, "--gpu", help="GPU index to train on"),
    cpu: bool = typer.Option(False, "--cpu", help="Train on the CPU"),
    until_empty: bool = typer.Option(False, "--until-empty", help="Exit when nothing is runnable"),
    max_jobs: int = typer.Option(None, "--max-jobs", min=1, help="Exit after this many jobs"),
    lease_seconds: float = typer.Option(300.0, "--lease-seconds", min=1.0,
                                        help="Lease length; renewed several times per lease"),
    num_workers: int = typer.Option(0, "--loader-workers", min=0,
                                    help="DataLoader worker processes"),
) -> None:
    """Claim runnable jobs one at a time and train them."""
    settings: Settings = ctx.obj
    device = pick_device(gpu, cpu)
    db = settings.open()
    opts = WorkerOptions(runs_dir=settings.runs_dir, data_dir=settings.data_dir, device=device,
                         until_empty=until_empty, max_jobs=max_jobs, lease_seconds=lease_seconds,
                         num_workers=num_workers)
    console.print(f"worker on {device}, database {db.display_url}")
    with Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task("train", total=1, epoch=0)

        def on_step(epoch: int, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, epoch=epoch)

        n = work(db, opts, on_step=on_step, log=console.print)
    console.print(f"worker done: {n} job(s) run")
