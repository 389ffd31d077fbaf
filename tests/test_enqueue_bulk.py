"""`queue.enqueue` writes students through the driver's executemany (kdrun.db.queue._insert_many):
the rows must be exactly what the ORM writes (defaults, JSON, ids in grid order)."""

from __future__ import annotations

from sqlalchemy import insert, select, text

from kdrun.db import migrate, queue
from kdrun.db.engine import Database
from kdrun.db.models import Job
from kdrun.grid import expand
from tests.helpers import tiny_grid


def _db(tmp_path, name: str) -> Database:
    db = Database(f"sqlite:///{tmp_path / name}", create=True)
    migrate.upgrade(db)
    return db


def _rows(db: Database) -> list[dict]:
    with db.read() as s:
        jobs = list(s.scalars(select(Job).order_by(Job.id)))
        cols = [c.name for c in Job.__table__.columns if c.name != "created_at"]
        return [{c: getattr(j, c) for c in cols} for j in jobs]


def test_bulk_rows_equal_orm_rows(tmp_path):
    _, specs = expand(tiny_grid(methods=["vanilla", "kd", {"kd+ls": {"kd": {"T": [2, 3]}}}],
                                seeds=[0, 1, 2]))
    db = _db(tmp_path, "bulk.db")
    assert queue.enqueue(db, "tiny", specs) == (len(specs), 0)
    assert queue.enqueue(db, "tiny", specs) == (0, len(specs))
    assert queue.enqueue(db, "other", specs) == (0, len(specs))  # same jobs, another grid name

    ref = _db(tmp_path, "orm.db")  # the same jobs inserted one by one through the ORM
    with ref.write() as s:
        ids: dict[str, int] = {}
        for sp in specs:
            row = {"hash": sp.hash, "grid": "tiny", "kind": sp.kind, "dataset": sp.dataset,
                   "teacher": sp.teacher, "student": sp.student, "method": sp.method,
                   "seed": sp.seed, "config": sp.config, "priority": sp.priority,
                   "depends_on_id": ids[sp.depends_on] if sp.depends_on else None,
                   "state": "queued", "created_at": 0.0, "label": sp.label}
            got = _rows_of(db, sp.hash)
            row.update({k: got[k] for k in ("gpus", "nodes") if k in got})  # scheduler's columns
            ids[sp.hash] = s.execute(insert(Job).values(**row).returning(Job.id)).scalar_one()
    bulk, orm = _rows(db), _rows(ref)
    assert len(bulk) == len(specs) and bulk == orm
    assert [r["hash"] for r in bulk] == [sp.hash for sp in specs]  # ids follow the grid
    raw = "SELECT config FROM kdrun_jobs ORDER BY id"
    with db.read() as a, ref.read() as b:  # the stored JSON text too, byte for byte
        assert list(a.execute(text(raw)).scalars()) == list(b.execute(text(raw)).scalars())


def _rows_of(db: Database, h: str) -> dict:
    return next(r for r in _rows(db) if r["hash"] == h)
