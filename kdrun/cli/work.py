"""`kdrun worker`: claim and train jobs on the CPU or on one or more GPUs."""

from __future__ import annotations

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from kdrun.cli.app import Settings, app, console
from kdrun.cli.present import log_printer, stranded
from kdrun.db.engine import scrub
from kdrun.db.queue import too_wide_text
from kdrun.errors import UserError
from kdrun.slurm import pilot as slurm_pilot
from kdrun.trackers import parse as parse_trackers
from kdrun.worker import WorkerOptions, work
from kdrun.worker.loop import make_slots, worker_name
from kdrun.worker.pool import Pool


def pick_devices(gpu: str | None, cpu: bool) -> list[str]:
    """`--gpu 0`, `--gpu 0,1,2,3`, `--gpu all` or `--cpu` as devices. Asking for a GPU where
    CUDA is unavailable is an error, never a silent CPU run."""
    if gpu is not None and cpu:
        raise UserError("give either --gpu or --cpu, not both")
    if cpu:
        return ["cpu"]  # no torch in the supervisor: it only lists GPUs
    import torch  # here, not at the top: `kdrun --help` and the other commands stay light

    if gpu is None:
        return ["cpu"] if not torch.cuda.is_available() else ["cuda:0"]
    if not torch.cuda.is_available():
        raise UserError(f"--gpu {gpu}: CUDA is not available on this machine "
                        f"(torch {torch.__version__}); use --cpu")
    count = torch.cuda.device_count()
    if gpu.strip().lower() == "all":
        return [f"cuda:{i}" for i in range(count)]
    try:
        indices = [int(x) for x in gpu.split(",")]
    except ValueError:
        raise UserError(f"--gpu {gpu}: expected an index, a list like 0,1,2,3, or 'all'") from None
    bad = [i for i in indices if not 0 <= i < count]
    if bad:
        raise UserError(f"--gpu {gpu}: no GPU {bad[0]}; valid indices are 0..{count - 1}")
    if len(set(indices)) != len(indices):
        raise UserError(f"--gpu {gpu}: a GPU is listed twice; use --slots to run several "
                        "jobs on one GPU")
    return [f"cuda:{i}" for i in indices]


@app.command()
def worker(
    ctx: typer.Context,
    gpu: str = typer.Option(None, "--gpu", help="GPU index, list (0,1,2,3) or 'all'"),
    cpu: bool = typer.Option(False, "--cpu", help="Train on the CPU"),
    slots: int = typer.Option(1, "--slots", min=1, help="Jobs at once on each GPU (or the CPU, "
                              "where a `gpus: N` job takes N slots as its ranks)"),
    until_empty: bool = typer.Option(False, "--until-empty", help="Exit when nothing is runnable"),
    max_jobs: int = typer.Option(None, "--max-jobs", min=1, help="Exit after this many jobs"),
    lease_seconds: float = typer.Option(300.0, "--lease-seconds", min=1.0,
                                        help="Lease length; renewed 4 times per lease"),
    backoff_seconds: float = typer.Option(30.0, "--backoff-seconds", min=0.0,
                                          help="Delay before a failed job runs again "
                                               "(doubles per attempt)"),
    poll_seconds: float = typer.Option(5.0, "--poll-seconds", min=0.05,
                                       help="How often an idle worker looks for work"),
    max_failures: int = typer.Option(5, "--max-failures", min=1,
                                     help="Stop after this many jobs fail in a row (10 min)"),
    loader_workers: int = typer.Option(None, "--loader-workers", min=0,
                                       help="DataLoader worker processes per job (default: "
                                       "for datasets read from image files, the CPUs this "
                                       "worker may use, shared by its slots, minus one; else 0)"),
    download: bool = typer.Option(False, "--download", help="Fetch missing datasets and "
                                  "torchvision teacher weights"),
    idle_exit: float = typer.Option(None, "--idle-exit", min=0.0,
                                    help="Leave after this many seconds with nothing runnable "
                                         "(a Slurm pilot does not hold its allocation idle)"),
    stop_within: float = typer.Option(None, "--stop-within", min=0.0,
                                      help="After SIGTERM, cut a job whose epoch has not ended "
                                           "within this many seconds (below Slurm's KillWait)"),
    tracker: str = typer.Option(None, "--tracker",
                                help="Log every job to these trackers too: tensorboard, wandb "
                                     "(comma-separated; needs the extra of that name)"),
    prestart: bool = typer.Option(True, "--prestart/--no-prestart",
                                  help="Start each slot's next training process (its imports) "
                                       "while the current job trains"),
) -> None:
    """Claim runnable jobs and train each in a supervised child process."""
    settings: Settings = ctx.obj
    devices = pick_devices(gpu, cpu)
    trackers = parse_trackers(tracker, "--tracker")
    for flag, path in (("--runs-dir", settings.runs_dir), ("--data-dir", settings.data_dir)):
        if path.exists() and not path.is_dir():
            raise UserError(f"{flag} {path}: is a file, not a folder; point it at a folder "
                            "(it is created when missing)")
    db = settings.open(name=f"kdrun worker {worker_name()}")
    opts = WorkerOptions(runs_dir=settings.runs_dir, data_dir=settings.data_dir,
                         devices=devices, slots=slots, lease_seconds=lease_seconds,
                         backoff_seconds=backoff_seconds, until_empty=until_empty,
                         max_jobs=max_jobs, poll_seconds=poll_seconds,
                         max_failures=max_failures, loader_workers=loader_workers,
                         download=download, trackers=tuple(trackers), idle_exit=idle_exit,
                         stop_within=stop_within, prestart=prestart)
    printer = log_printer(console)

    def log(message: str) -> None:  # a password never reaches the worker's output
        printer(scrub(message, settings.db_url))

    wide = Pool(make_slots(opts)).capacity  # units: GPUs, or CPU slots
    log(f"worker on {', '.join(devices)} x {slots} slot(s) (jobs up to gpus: {wide}), "
        f"database {db.display_url}, runs in {settings.runs_dir}")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(slot: str, desc: str | None, done: int, total: int) -> None:
            if slot not in tasks:
                tasks[slot] = bar.add_task("", total=1, visible=False)
            bar.update(tasks[slot], description=desc or "", completed=done, total=total or 1,
                       visible=desc is not None)

        pilot = slurm_pilot.start(db, worker_name(), log)  # None outside Slurm
        summary = work(db, opts, log=log, progress=progress)
    if summary.stopped_because:
        log(f"worker stopped: {summary.stopped_because}")
    slurm_pilot.finish(db, pilot, summary.stopped_because, log)
    if summary.stranded:
        log(f"[red]worker stopped[/]: {stranded(summary.stranded)}")
    if summary.too_wide:
        log(f"[red]worker stopped[/]: {len(summary.too_wide)} queued job(s) can never run here: "
            f"{too_wide_text(summary.too_wide, summary.capacity, 'this worker')}; run them on a "
            "worker with more (`--gpu`, or `--cpu --slots N`), or lower their recipe.gpus")
    if summary.too_many_nodes:
        job, nodes = summary.too_many_nodes[0]
        log(f"[red]worker stopped[/]: {len(summary.too_many_nodes)} queued job(s) need more "
            f"machines than this worker's Slurm allocation spans (job {job} needs {nodes}, "
            f"recipe.nodes); run them from `kdrun slurm submit --nodes-per-worker {nodes}`")
    states = ", ".join(f"{n} {state}" for state, n in sorted(summary.outcomes.items()))
    log(f"worker done: {summary.jobs} job(s) run" + (f" ({states})" if states else "")
        + (f"; {len(summary.too_wide)} job(s) too wide for it left queued"
           if summary.too_wide else ""))
    if summary.failed_over or summary.stranded or summary.too_wide or summary.too_many_nodes:
        raise typer.Exit(1)
