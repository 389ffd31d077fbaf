"""The sbatch script of a pilot array: N array tasks, each exec'ing one `kdrun worker`.

The worker is exec'd, so it is the batch shell: `--signal=B:USR1@S` reaches it S seconds
before the time limit, and Slurm's SIGTERM (time limit, scancel, pre-emption, requeue)
reaches it too. The script holds no secret: the database URL comes from the environment
sbatch exports (KDRUN_DB), so other users reading the script or `ps` never see it.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kdrun.errors import UserError

TIME_FORMS = "MINUTES, MINUTES:SECONDS, HOURS:MINUTES:SECONDS, DAYS-HOURS[:MINUTES[:SECONDS]]"
_TIME = re.compile(r"^(\d+-)?\d+(:\d+){0,2}$")


@dataclass
class PilotSpec:
    """What `kdrun slurm submit` asks Slurm for, and how each pilot runs its worker."""

    workers: int = 1  # array tasks
    gpus_per_worker: int = 0  # 0: a CPU worker
    nodes_per_worker: int = 1
    cpus_per_worker: int | None = None
    time: str | None = None
    partition: str | None = None
    account: str | None = None
    max_running: int | None = None  # array throttle %K
    grace_s: int = 120  # SIGUSR1 this long before the time limit
    stop_within_s: float | None = 20.0  # after SIGTERM, cut an epoch not done (< KillWait)
    idle_exit_s: float = 300.0
    lease_s: float | None = None
    name: str = "kdrun"
    sbatch_args: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)

    def check(self) -> None:
        """One line per mistake, naming the valid choices."""
        if self.workers < 1:
            raise UserError(f"--workers {self.workers}: must be at least 1")
        if self.gpus_per_worker < 0:
            raise UserError(f"--gpus-per-worker {self.gpus_per_worker}: must be 0 (CPU) or more")
        if self.nodes_per_worker < 1:
            raise UserError(f"--nodes-per-worker {self.nodes_per_worker}: must be at least 1")
        if self.max_running is not None and self.max_running < 1:
            raise UserError(f"--max-running {self.max_running}: must be at least 1")
        if self.grace_s < 0 or (self.stop_within_s or 0) < 0 or self.idle_exit_s < 0:
            raise UserError("--grace, --stop-within and --idle-exit take seconds >= 0")
        if self.time is not None and not _TIME.match(self.time):
            raise UserError(f"--time {self.time!r}: expected one of {TIME_FORMS}")
        for arg in self.sbatch_args:
            if not arg.startswith("-"):
                raise UserError(f"--sbatch-arg {arg!r}: pass a whole sbatch option, "
                                "e.g. --sbatch-arg=--mem=16G")
            if "\n" in arg:
                raise UserError(f"--sbatch-arg {arg!r}: one option per --sbatch-arg")


def kdrun_command() -> str:
    """How the pilot starts this same kdrun: the entry point beside this interpreter."""
    beside = Path(sys.executable).with_name("kdrun")
    if beside.exists():
        return shlex.quote(str(beside))
    return f"{shlex.quote(sys.executable)} -c 'from kdrun.cli import main; main()'"


def render(spec: PilotSpec, runs_dir: Path, data_dir: Path, output: Path) -> str:
    """The sbatch script; `output`: the folder for the pilots' own logs."""
    array = f"0-{spec.workers - 1}" + (f"%{spec.max_running}" if spec.max_running else "")
    # Over several nodes the worker runs on the first and starts a multi-node job's ranks
    # with srun (kdrun.worker.ranks), one task per GPU of each node: the allocation must hold
    # that many tasks per node, and the GPUs of every node.
    multi = spec.nodes_per_worker > 1
    tasks = max(spec.gpus_per_worker, 1) if multi else 1
    directives = [f"--job-name={spec.name}", f"--array={array}",
                  f"--nodes={spec.nodes_per_worker}", f"--ntasks-per-node={tasks}",
                  f"--output={output / 'pilot-%A_%a.out'}", "--open-mode=append", "--requeue"]
    if spec.gpus_per_worker:
        directives.append(f"--gpus-per-node={spec.gpus_per_worker}" if multi
                          else f"--gres=gpu:{spec.gpus_per_worker}")
    if spec.cpus_per_worker:
        directives.append(f"--cpus-per-task={spec.cpus_per_worker}")
    if spec.time:
        directives.append(f"--time={spec.time}")
    if spec.grace_s:
        directives.append(f"--signal=B:USR1@{spec.grace_s}")
    for flag, value in (("--partition", spec.partition), ("--account", spec.account)):
        if value:
            directives.append(f"{flag}={value}")
    directives += spec.sbatch_args
    device = "--gpu all" if spec.gpus_per_worker else "--cpu"
    worker = (f"exec {kdrun_command()} --runs-dir {shlex.quote(str(runs_dir.resolve()))} "
              f"--data-dir {shlex.quote(str(data_dir.resolve()))} worker {device} "
              f"--until-empty --idle-exit {spec.idle_exit_s:g} "
              f"--stop-within {spec.stop_within_s or 0:g}"
              + (f" --lease-seconds {spec.lease_s:g}" if spec.lease_s else ""))
    lines = ["#!/bin/bash", *(f"#SBATCH {d}" for d in directives),
             "# A kdrun pilot (`kdrun slurm submit`): one worker per array task. The database",
             "# URL comes from the environment sbatch exports (KDRUN_DB), never from this file.",
             "set -e", *spec.setup, worker, ""]
    return "\n".join(lines)
