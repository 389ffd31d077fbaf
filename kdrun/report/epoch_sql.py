"""The SQL that reads the epochs table, without pandas: numbers as driver tuples, then arrays.

kdrun.report.load makes DataFrames of it, kdrun.report.export streams it into epochs.csv, and
kdrun.report.ahead reads the terminal curves' rows in a second process while pandas loads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Select, func, select, true

from kdrun.db.engine import Database
from kdrun.db.models import EpochMetric

EPOCH_COLS = [c.name for c in EpochMetric.__table__.columns if c.name not in ("id", "components")]
IDS_PER_QUERY = 500  # job ids per `IN (...)`: well under every backend's parameter limit


def id_chunks(job_ids: Iterable[int] | None) -> Iterator[list[int] | None]:
    """Sorted job ids a query's worth at a time (None, once: every job)."""
    if job_ids is None:
        yield None
        return
    ids = sorted({int(i) for i in job_ids})
    for i in range(0, len(ids), IDS_PER_QUERY):
        yield ids[i:i + IDS_PER_QUERY]


def _where(q: Select, ids: list[int] | None, epochs: Sequence[int] | None) -> Select:
    if ids is not None:
        q = q.where(EpochMetric.job_id.in_(ids))
    if epochs is not None:
        q = q.where(EpochMetric.epoch.in_(list(epochs)))
    return q


def component_names(db: Database, job_ids: Iterable[int] | None = None,
                    epochs: Sequence[int] | None = None) -> list[str]:
    """The loss components recorded for these jobs (sorted), found by the database's JSON
    functions without reading the rows into Python."""
    names: set[str] = set()
    with db.read() as s:
        conn = s.connection()
        if conn.dialect.name == "sqlite":
            keys = func.json_each(EpochMetric.components).table_valued("key").alias("k")
            base = select(keys.c.key).select_from(EpochMetric).join(keys, true()) \
                .where(keys.c.key.is_not(None)).distinct()
        else:  # PostgreSQL: only objects have keys (a JSON null has none)
            key = func.json_object_keys(EpochMetric.components)
            base = select(key).where(func.json_typeof(EpochMetric.components) == "object") \
                .distinct()
        for ids in id_chunks(job_ids):
            names.update(conn.execute(_where(base, ids, epochs)).scalars())
    return sorted(names)


def epoch_select(db: Database, job_ids: Iterable[int] | None = None,
                 epochs: Sequence[int] | None = None,
                 columns: Sequence[str] | None = None, missing: float | None = None,
                 components: list[str] | None = None) -> tuple[list[str], list[Select]]:
    """The epochs table's column names and the queries that read it, a chunk of jobs each:
    job_id, epoch, `columns` of EPOCH_COLS (default all), then each loss component as
    `loss.<name>` (sorted), extracted by the database's JSON functions. `missing`: the
    number a NULL is read as (default None). `components`: `component_names` of the same
    jobs and epochs, when the caller has them already."""
    comps = component_names(db, job_ids, epochs) if components is None else components
    names = ["job_id", "epoch", *[c for c in EPOCH_COLS[2:] if columns is None or c in columns]]
    table = [EpochMetric.__table__.c[c] for c in names]
    extracted = [EpochMetric.components[k].as_float() for k in comps]
    cols: list[Any] = [*table, *extracted]
    if missing is not None:
        cols = [func.coalesce(c, missing) if i >= len(table) or table[i].nullable else c
                for i, c in enumerate(cols)]
    q = select(*cols).order_by(EpochMetric.job_id, EpochMetric.epoch)
    return [*names, *(f"loss.{k}" for k in comps)], [_where(q, ids, epochs)
                                                      for ids in id_chunks(job_ids)]


def fetch_rows(db: Database, queries: list[Select],
               chunk: int = 100_000) -> Iterator[list[tuple]]:
    """The queries' rows `chunk` at a time as plain tuples from the driver's own cursor (no
    Row objects: millions of epoch rows)."""
    with db.read() as s:
        conn = s.connection()
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            for q in queries:
                cursor.execute(str(q.compile(dialect=conn.dialect,
                                             compile_kwargs={"literal_binds": True})))
                while rows := cursor.fetchmany(chunk):
                    yield rows
        finally:
            cursor.close()


def read_columns(db: Database, job_ids: Iterable[int] | None = None,
                 epochs: Sequence[int] | None = None, columns: Sequence[str] | None = None,
                 likely: Sequence[str] | None = None) -> tuple[list[str], list[np.ndarray]]:
    """Per-epoch metrics as named arrays, one entry per (job, epoch) in that order: job_id and
    epoch (int64), then `columns` of EPOCH_COLS (default all), then each loss component as
    `loss.<name>` (sorted by name), float with NaN where missing. No rows: empty arrays.

    Millions of rows: turned into arrays a chunk at a time. `likely`: component names found
    in some of these rows (e.g. of one job per curve): on SQLite the rows are then read in one
    pass that also says whether a row has other names (only then are they read again, with
    every name), not in a pass for the names and another for the rows: each pass visits the
    same scattered pages."""
    job_ids = None if job_ids is None else list(job_ids)
    if likely is not None and db.is_sqlite and all(map(_PLAIN_KEY.fullmatch, likely)):
        comps = sorted(set(likely))
        names, queries = epoch_select(db, job_ids, epochs, columns, components=comps)
        others = func.json_remove(EpochMetric.components, *[f"$.{k}" for k in comps]) != "{}"
        arrays = to_arrays(len(names) + 1,
                           fetch_rows(db, [q.add_columns(others) for q in queries]))
        if not arrays[-1].any():
            return names, arrays[:-1]
    names, queries = epoch_select(db, job_ids, epochs, columns)
    return names, to_arrays(len(names), fetch_rows(db, queries))


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # usable in a JSON path unquoted


def to_arrays(width: int, chunks: Iterable[list[tuple]]) -> list[np.ndarray]:
    """Rows of (job_id, epoch, numbers...) as columns: int64, int64, then float (NaN for
    NULL), a chunk of rows at a time."""
    parts = [[np.array(v, dtype=np.int64 if i < 2 else float)
              for i, v in enumerate(zip(*rows, strict=True))] for rows in chunks]
    if not parts:
        return [np.empty(0, dtype=np.int64 if i < 2 else float) for i in range(width)]
    return [np.concatenate([p[i] for p in parts]) for i in range(width)]
