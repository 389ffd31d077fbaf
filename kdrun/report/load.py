"""Jobs, results and per-epoch metrics as pandas DataFrames: the input every report reads.

Built for 100k jobs and millions of epoch rows: plain columns (no ORM objects); of a job's
config only its teacher, `method.params` and `recipe`, extracted by the database's JSON
functions, each distinct text parsed once (a few per grid), not once per job; epoch rows as
driver tuples turned into arrays a chunk at a time, loss components extracted in SQL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Select, Text, cast, func, select, true

from kdrun.db.engine import Database
from kdrun.db.models import EpochMetric, Job, Result
from kdrun.params import flatten
from kdrun.report import cells

# the result columns the reports read (`kdrun export` has them all)
RESULT_COLS = ["best_top1", "best_top5", "last_top1", "last_top5", "last5_top1",
               "selection_split", "teacher_top1", "agree_top1", "spearman", "kendall", "kl",
               "switches"]
EPOCH_COLS = [c.name for c in EpochMetric.__table__.columns if c.name not in ("id", "components")]
JOB_COLS = ["job_id", "hash", "grid", "kind", "dataset", "teacher", "teacher_arch", "teacher_job",
            "teacher_published", "student", "method", "seed", "state", "params", "recipe",
            "epochs_done"]
TEXT_RESULTS = ("selection_split", "switches")
IDS_PER_QUERY = 500  # job ids per `IN (...)`: well under every backend's parameter limit


def load_jobs(db: Database) -> pd.DataFrame:
    """One row per job (all states) with its result columns (NaN when not finished).

    `teacher_job` is the hash of the job that trained the student's teacher (None for a
    teacher given as a checkpoint), so a teacher row is found by identity, not by name.
    `params` and `recipe` are dicts shared by the rows with equal values: read, don't modify.
    `epochs_done` is the last epoch recorded: a job's epoch rows are 1..epochs_done
    (kdrun.db.queue.record_epoch replaces every later row when it records one).
    """
    c = Job.config
    # teacher, method.params and recipe in one JSON array text: the database parses each
    # config once, Python each distinct array once (a few per grid), not 100k configs
    parts = (func.json_extract(c, "$.teacher", "$.method.params", "$.recipe") if db.is_sqlite
             else cast(func.json_build_array(c["teacher"], c[("method", "params")],
                                             c["recipe"]), Text))
    job_cols = [Job.id.label("job_id"), Job.hash, Job.grid, Job.kind, Job.dataset, Job.teacher,
                Job.student, Job.method, Job.seed, Job.state, Job.epoch.label("epochs_done"),
                parts.label("parts")]
    res_cols = [cast(Result.switches, Text).label("switches") if n == "switches"
                else Result.__table__.c[n].label(n) for n in RESULT_COLS]
    q = select(*job_cols, *res_cols).outerjoin(Result, Result.job_id == Job.id).order_by(Job.id)
    with db.read() as s:
        rows = s.connection().execute(q).all()
    names = [col.key for col in (*job_cols, *res_cols)]
    data: dict[str, Any] = dict(zip(names, zip(*rows, strict=True), strict=True)) if rows \
        else {n: () for n in names}
    parsed: dict[str, Any] = {}  # each distinct JSON text parsed once
    data["switches"] = [_parse(t, parsed) for t in data["switches"]]
    teacher, data["params"], data["recipe"] = zip(*[_parse(t, parsed) for t in data["parts"]],
                                                  strict=True) if rows else ((), (), ())
    teacher = [t or {} for t in teacher]
    data["teacher_arch"] = [t.get("arch") for t in teacher]
    data["teacher_job"] = [t.get("job") for t in teacher]
    data["teacher_published"] = [t.get("published_top1") for t in teacher]
    # Text as plain object columns: the reports walk them row by row (zip over 100k jobs),
    # ten times faster than over pandas' string arrays; missing text stays None.
    df = pd.DataFrame({n: pd.Series(data[n], dtype=object) for n in (*JOB_COLS, *RESULT_COLS)},
                      columns=[*JOB_COLS, *RESULT_COLS])
    for col in ("job_id", "seed", "epochs_done"):
        df[col] = df[col].astype(np.int64)
    df["teacher_published"] = pd.to_numeric(df["teacher_published"], errors="coerce")
    for col in RESULT_COLS:  # all-None columns would be object dtype; numbers must stay numbers
        if col not in TEXT_RESULTS:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    df["label"] = _labels(df)
    df["state"] = cells.with_blocked(df)
    return df


def _parse(text: str | None, parsed: dict[str, Any]) -> Any:
    if text is None:
        return None
    if text not in parsed:
        parsed[text] = json.loads(text)
    return parsed[text]


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


def load_epochs(db: Database, job_ids: Iterable[int] | None = None,
                epochs: Sequence[int] | None = None,
                columns: Sequence[str] | None = None,
                likely: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-epoch metrics, one row per (job, epoch) in that order; loss components as
    `loss.<name>` columns (sorted by name). `epochs`: only these epoch numbers; `columns`:
    only these of EPOCH_COLS (with job_id, epoch and the components). Missing values NaN.

    Millions of rows: turned into arrays a chunk at a time (kdrun.report.export streams the
    same rows into epochs.csv). `likely`: component names found in some of these rows (e.g.
    of one job per curve): on SQLite the rows are then read in one pass that also says
    whether a row has other names (only then are they read again, with every name), not in a
    pass for the names and another for the rows: each pass visits the same scattered pages."""
    if likely is not None and db.is_sqlite and all(map(_PLAIN_KEY.fullmatch, likely)):
        comps = sorted(set(likely))
        names, queries = epoch_select(db, job_ids, epochs, columns, components=comps)
        others = func.json_remove(EpochMetric.components, *[f"$.{k}" for k in comps]) != "{}"
        frame = _frame([*names, "_others"], [q.add_columns(others) for q in queries], db)
        if not frame["_others"].any():
            return frame.drop(columns="_others")
    names, queries = epoch_select(db, job_ids, epochs, columns)
    return _frame(names, queries, db)


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # usable in a JSON path unquoted


def _frame(names: list[str], queries: list[Select], db: Database) -> pd.DataFrame:
    parts = [[np.array(v, dtype=np.int64 if i < 2 else float)
              for i, v in enumerate(zip(*rows, strict=True))] for rows in fetch_rows(db, queries)]
    if not parts:
        return pd.DataFrame(columns=names)
    return pd.DataFrame({n: np.concatenate([p[i] for p in parts]) for i, n in enumerate(names)})


def _labels(df: pd.DataFrame) -> pd.Series:
    """Method labels that tell sweep points apart (hyperparameters or recipe that vary)."""
    labels = pd.Series(df["method"], index=df.index, dtype=object)
    flat_of: dict[tuple[int, int], dict[str, Any]] = {}  # rows share their params/recipe dicts
    for name, grp in df[df["kind"] == "student"].groupby("method"):
        keys = []
        for p, r in zip(grp["params"], grp["recipe"], strict=True):
            key = (id(p), id(r))
            if key not in flat_of:
                flat_of[key] = {**flatten(p), **flatten(r, "recipe.")}
            keys.append(key)
        distinct = [flat_of[k] for k in dict.fromkeys(keys)]
        names = set().union(*distinct)
        varying = {k for k in names if len({str(f.get(k)) for f in distinct}) > 1}
        # per-pair defaults (e.g. DKD's beta, lr for small students) vary by pair, not by sweep
        if varying:
            pairs = zip(grp["dataset"], grp["teacher"], grp["student"], strict=True)
            per_pair = set(zip(pairs, keys, strict=True))
            varying = {k for k in varying if _varies_within_pair(per_pair, flat_of, k)}
        if not varying:
            labels[grp.index] = name
            continue
        text = {key: f"{name}({', '.join(f'{k}={flat_of[key].get(k)}' for k in sorted(varying))})"
                for key in dict.fromkeys(keys)}
        labels[grp.index] = [text[k] for k in keys]
    return labels


method_labels = _labels  # public: recomputed after dropping jobs (kdrun.report.filters)


def _varies_within_pair(per_pair: set[tuple[tuple, tuple[int, int]]],
                        flat_of: dict[tuple[int, int], dict[str, Any]], key: str) -> bool:
    seen: dict[tuple, set] = {}
    for pair, k in per_pair:
        seen.setdefault(pair, set()).add(str(flat_of[k].get(key)))
    return any(len(v) > 1 for v in seen.values())
