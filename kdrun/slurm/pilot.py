"""The hook a worker calls when it runs inside a Slurm job: record the pilot, and when it
leaves, say why and, after a time-limit warning with work left, requeue itself in Slurm.

A pilot warned by SIGUSR1 (`--signal=B:USR1@S`) hands its jobs back and exits; unless it was
drained (`kdrun slurm drain`), it asks Slurm to requeue it (`scontrol requeue`), so the array
keeps its places while the queue has work. Pre-emption and `scontrol requeue` requeue the
pilot by themselves; a time limit without the warning, or `scancel`, ends it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import InterfaceError, OperationalError

from kdrun.db import queue
from kdrun.db.engine import Database
from kdrun.errors import UserError
from kdrun.slurm import commands, pilots

DB_DOWN = (OperationalError, InterfaceError)


@dataclass
class Here:
    slurm_id: str  # "array_task" for an array task, else the job id
    array_id: str
    job_id: str  # the task's own Slurm job id (what scontrol requeue takes)


def here() -> Here | None:
    """This process's Slurm job, or None outside Slurm."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return Here(f"{array}_{task}", array, job)
    return Here(job, job, job)


def start(db: Database, worker: str, log: Callable[[str], None]) -> Here | None:
    pilot = here()
    if pilot is not None:
        try:
            pilots.started(db, pilot.slurm_id, pilot.array_id, worker)
        except DB_DOWN as e:  # the worker itself retries its database; this is only a record
            log(f"[yellow]could not record Slurm pilot {pilot.slurm_id}[/]: {e.orig or e}")
        log(f"Slurm pilot {pilot.slurm_id} (job {pilot.job_id})")
    return pilot


def finish(db: Database, pilot: Here | None, stopped_because: str | None,
           log: Callable[[str], None]) -> None:
    """Record why the pilot leaves; after a SIGUSR1 warning (not a drain) with work left,
    requeue this Slurm job so the pilot comes back for it."""
    if pilot is None:
        return
    note = stopped_because or "queue empty or idle"
    try:
        warned = (stopped_because or "").startswith("SIGUSR1")
        drained = pilots.state_of(db, pilot.slurm_id) == "draining"
        if warned and not drained and queue.has_runnable_or_running(db):
            try:
                commands.requeue(pilot.job_id)  # Slurm ends this job and queues it again
                note = "time-limit warning: jobs handed back, pilot requeued in Slurm"
                pilots.ended(db, pilot.slurm_id, note, state="submitted")
                log(f"Slurm pilot {pilot.slurm_id}: {note}")
                return
            except UserError as e:  # refused (the job is ending anyway): its jobs are safe
                note = f"{note}; not requeued in Slurm: {e}"
        pilots.ended(db, pilot.slurm_id, "drained" if drained else note)
        log(f"Slurm pilot {pilot.slurm_id}: {'drained' if drained else note}")
    except DB_DOWN as e:
        log(f"[yellow]could not record Slurm pilot {pilot.slurm_id}[/]: {e.orig or e}")
