"""The pilots' rows: written at submission, updated by the worker inside each pilot.

States: `submitted` (waiting in Slurm), `running` (its worker is up), `draining` (asked to
finish its epoch and leave), `exited` (its worker is gone; `note` says why). A pilot that
Slurm requeues (pre-emption, `scontrol requeue`, its own requeue at a time limit) goes back
to `running` when its worker starts again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update

from kdrun.db.clock import db_now
from kdrun.db.engine import Database, retrying
from kdrun.db.models import Job, Pilot

LIVE = ("submitted", "running", "draining")


@dataclass
class PilotRow:
    slurm_id: str
    array_id: str
    state: str
    worker: str | None
    note: str | None
    submitted_at: float
    started_at: float | None
    ended_at: float | None
    jobs: list[dict[str, Any]]  # the kdrun jobs its worker holds: id, label, epoch


@retrying
def submitted(db: Database, array_id: str, tasks: int, script: str) -> None:
    with db.write() as s:
        for i in range(tasks):
            s.execute(insert(Pilot).values(slurm_id=f"{array_id}_{i}", array_id=array_id,
                                           state="submitted", script=script,
                                           submitted_at=db_now()))


@retrying
def started(db: Database, slurm_id: str, array_id: str, worker: str) -> None:
    """The worker in this Slurm job is up (a pilot submitted elsewhere gets a row now)."""
    with db.write() as s:
        n = s.execute(update(Pilot).where(Pilot.slurm_id == slurm_id).values(
            state="running", worker=worker, started_at=db_now(), ended_at=None,
            note=None)).rowcount
        if n == 0:
            s.execute(insert(Pilot).values(slurm_id=slurm_id, array_id=array_id,
                                           state="running", worker=worker,
                                           submitted_at=db_now(), started_at=db_now()))


@retrying
def ended(db: Database, slurm_id: str, note: str, state: str = "exited") -> None:
    with db.write() as s:
        s.execute(update(Pilot).where(Pilot.slurm_id == slurm_id).values(
            state=state, note=note, ended_at=db_now()))


def state_of(db: Database, slurm_id: str) -> str | None:
    with db.read() as s:
        return s.execute(select(Pilot.state).where(Pilot.slurm_id == slurm_id)).scalar()


@retrying
def mark(db: Database, slurm_ids: list[str], state: str, note: str | None = None) -> None:
    with db.write() as s:
        values: dict[str, Any] = {"state": state}
        if note is not None:
            values.update(note=note, ended_at=db_now())
        s.execute(update(Pilot).where(Pilot.slurm_id.in_(slurm_ids)).values(**values))


def listing(db: Database, live_only: bool = False) -> list[PilotRow]:
    """Every pilot (or the live ones), oldest first, with the jobs its worker holds."""
    from kdrun.labels import job_label

    with db.read() as s:
        q = select(Pilot).order_by(Pilot.id)
        if live_only:
            q = q.where(Pilot.state.in_(LIVE))
        pilots = list(s.scalars(q))
        running = s.execute(select(Job.id, Job.worker, Job.label, Job.config, Job.epoch)
                            .where(Job.state == "running")).all()
    rows = []
    for p in pilots:
        held = [{"id": j.id, "label": j.label or job_label(j.config), "epoch": j.epoch,
                 "epochs": j.config["recipe"]["epochs"]}
                for j in running
                if p.worker and p.state != "exited" and (j.worker or "").startswith(p.worker + ":")]
        rows.append(PilotRow(p.slurm_id, p.array_id, p.state, p.worker, p.note,
                             p.submitted_at, p.started_at, p.ended_at, held))
    return rows
