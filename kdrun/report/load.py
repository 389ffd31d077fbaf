"""Jobs, results and per-epoch metrics as pandas DataFrames: the input every report reads.

Built for 100k jobs and millions of epoch rows: plain columns (no ORM objects); of a job's
config only its teacher, `method.params` and `recipe`, extracted by the database's JSON
functions, each distinct text parsed once (a few per grid), not once per job; epoch rows as
driver tuples turned into arrays a chunk at a time, loss components extracted in SQL
(kdrun.report.epoch_sql).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Text, cast, func, select

from kdrun.db.engine import Database
from kdrun.db.models import Job, Result
from kdrun.params import flatten
from kdrun.report import cells
from kdrun.report.epoch_sql import read_columns

# the result columns the reports read (`kdrun export` has them all)
RESULT_COLS = ["best_top1", "best_top5", "last_top1", "last_top5", "last5_top1",
               "selection_split", "teacher_top1", "agree_top1", "spearman", "kendall", "kl",
               "switches"]
JOB_COLS = ["job_id", "hash", "grid", "kind", "dataset", "teacher", "teacher_arch", "teacher_job",
            "teacher_published", "student", "method", "seed", "state", "params", "recipe",
            "epochs_done"]
TEXT_RESULTS = ("selection_split", "switches")


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


def load_epochs(db: Database, job_ids: Iterable[int] | None = None,
                epochs: Sequence[int] | None = None,
                columns: Sequence[str] | None = None,
                likely: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-epoch metrics, one row per (job, epoch) in that order; loss components as
    `loss.<name>` columns (sorted by name). `epochs`: only these epoch numbers; `columns`:
    only these of EPOCH_COLS (with job_id, epoch and the components). Missing values NaN.
    `likely`: component names some of these rows have (kdrun.report.epoch_sql.read_columns)."""
    return epoch_frame(*read_columns(db, job_ids, epochs, columns, likely))


def epoch_frame(names: list[str], arrays: list[np.ndarray]) -> pd.DataFrame:
    if not len(arrays[0]):
        return pd.DataFrame(columns=names)
    return pd.DataFrame(dict(zip(names, arrays, strict=True)))


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
