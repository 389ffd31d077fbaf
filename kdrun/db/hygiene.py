"""Removing jobs: `kdrun prune` (cancelled, optionally failed) and `kdrun delete` (by id/grid).

A job goes with every row that belongs to it (attempts, epochs, result, checkpoint records,
tracker runs: any table with a foreign key to the job), in one transaction. What would leave
the database inconsistent is refused, never half done: a running job (cancel it first), a job
another job still depends on (its teacher; delete the students too), a job whose model is a
registered teacher. `prune` skips such jobs and says so; `delete` refuses with one line.
Run folders are removed only on request and only inside the runs directory.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import and_, delete, select

from kdrun.db.engine import Database, retrying
from kdrun.db.models import Base, Job, Teacher
from kdrun.errors import UserError
from kdrun.labels import job_label


@dataclass
class Doomed:
    """The jobs a prune/delete would remove (id, label, state, run_dir) and those it keeps."""

    jobs: list[tuple[int, str, str, str | None]] = field(default_factory=list)
    kept: dict[int, str] = field(default_factory=dict)  # id -> why it stays

    @property
    def ids(self) -> list[int]:
        return [j[0] for j in self.jobs]


def _label(j: Job) -> str:
    return j.label or job_label(j.config)


def _why_kept(s, ids: set[int]) -> dict[int, str]:
    """Jobs among `ids` that cannot go: others depend on them, or they are registered."""
    why: dict[int, str] = {}
    deps = s.execute(select(Job.id, Job.depends_on_id).where(
        Job.depends_on_id.in_(ids), Job.id.notin_(ids))).all()
    for dep, on in deps:
        why.setdefault(on, f"job {dep} depends on it")
    for name, jid in s.execute(select(Teacher.name, Teacher.job_id).where(
            Teacher.job_id.in_(ids))).all():
        why.setdefault(jid, f"it is registered teacher {name!r}")
    return why


def plan_prune(db: Database, grid: str | None, failed: bool) -> Doomed:
    states = ("cancelled", "failed") if failed else ("cancelled",)
    with db.read() as s:
        q = select(Job).where(Job.state.in_(states)).order_by(Job.id)
        if grid:
            q = q.where(Job.grid == grid)
        jobs = list(s.execute(q).scalars())
        ids = {j.id for j in jobs}
        kept: dict[int, str] = {}
        while True:  # keeping a job can keep the teacher it depends on
            why = _why_kept(s, ids)
            if not why:
                break
            kept.update(why)
            ids -= set(why)
    return Doomed([(j.id, _label(j), j.state, j.run_dir) for j in jobs if j.id in ids], kept)


def plan_delete(db: Database, ids: list[int], grid: str | None) -> Doomed:
    with db.read() as s:
        conds = []
        if ids:
            conds.append(Job.id.in_(ids))
        if grid:
            conds.append(Job.grid == grid)
        jobs = list(s.execute(select(Job).where(and_(*conds)).order_by(Job.id)).scalars())
        found = {j.id for j in jobs}
        missing = sorted(set(ids) - found)
        if missing:
            raise UserError(f"no job {', '.join(map(str, missing))} in the database"
                            + (f" (grid {grid!r})" if grid else ""))
        if not jobs:
            known = sorted({g for (g,) in s.execute(select(Job.grid).distinct())})
            raise UserError(f"--grid {grid!r}: no jobs of that grid; grids in the database: "
                            f"{', '.join(known) or '(none)'}")
        running = [j for j in jobs if j.state == "running"]
        if running:
            ids_text = " ".join(str(j.id) for j in running[:10])
            raise UserError(f"{len(running)} of these jobs are running ({_label(running[0])}"
                            f"{', ...' if len(running) > 1 else ''}); cancel them first: "
                            f"kdrun cancel {ids_text}")
        why = _why_kept(s, found)
        if why:
            jid, reason = next(iter(sorted(why.items())))
            raise UserError(f"cannot delete job {jid}: {reason}; delete that too, or leave "
                            f"job {jid}" + (f" ({len(why)} such jobs)" if len(why) > 1 else ""))
    return Doomed([(j.id, _label(j), j.state, j.run_dir) for j in jobs])


@retrying
def remove(db: Database, ids: list[int]) -> int:
    """Delete these jobs and every row that refers to them, in one transaction."""
    if not ids:
        return 0
    children = [(t, col) for t in reversed(Base.metadata.sorted_tables)
                if t.name not in (Job.__tablename__, Teacher.__tablename__)
                for col in t.columns for fk in col.foreign_keys
                if fk.column.table.name == Job.__tablename__]
    n = 0
    with db.write() as s:
        running = s.execute(select(Job.id).where(Job.id.in_(ids), Job.state == "running")).first()
        if running or _why_kept(s, set(ids)):  # changed since the plan: do nothing
            raise UserError("the jobs changed meanwhile (one started running, or gained a "
                            "dependent); run the command again")
        ordered = sorted(ids, reverse=True)  # a dependent job has a larger id than its teacher
        for i in range(0, len(ordered), 500):
            chunk = ordered[i:i + 500]
            for table, col in children:
                s.execute(delete(table).where(col.in_(chunk)))
            n += s.execute(delete(Job).where(Job.id.in_(chunk))).rowcount
    return n


def remove_run_dirs(runs_dir: Path, run_dirs: list[str | None]) -> tuple[int, list[str]]:
    """Delete the jobs' run folders that lie inside `runs_dir`; (removed, skipped)."""
    root = runs_dir.resolve()
    removed, skipped = 0, []
    for rd in run_dirs:
        if not rd:
            continue
        path = (runs_dir / rd).resolve()
        if root not in path.parents:
            skipped.append(str(path))
            continue
        if path.is_dir():
            shutil.rmtree(path)
            removed += 1
    return removed, skipped
