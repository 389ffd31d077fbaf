"""Jobs and their results as a pandas DataFrame: the one input every report table reads."""

from __future__ import annotations

import json

import pandas as pd
from sqlalchemy import select

from kdrun.db.engine import Database
from kdrun.db.models import Job, Result

RESULT_COLS = [c.name for c in Result.__table__.columns if c.name != "job_id"]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list) else v
    return out


def load_jobs(db: Database) -> pd.DataFrame:
    """One row per job (all states) with its result columns (NaN when not finished)."""
    with db.read() as s:
        rows = s.execute(select(Job, Result).outerjoin(Result, Result.job_id == Job.id)).all()
    recs = []
    for job, res in rows:
        rec = {"job_id": job.id, "grid": job.grid, "kind": job.kind, "dataset": job.dataset,
               "teacher": job.teacher, "teacher_arch": (job.config.get("teacher") or {}).get("arch"),
               "student": job.student, "method": job.method, "seed": job.seed, "state": job.state,
               "params": job.config["method"]["params"], "recipe": job.config["recipe"]}
        for c in RESULT_COLS:
            rec[c] = getattr(res, c) if res is not None else None
        recs.append(rec)
    df = pd.DataFrame(recs, columns=["job_id", "grid", "kind", "dataset", "teacher", "teacher_arch",
                                     "student", "method", "seed", "state", "params", "recipe",
                                     *RESULT_COLS])
    df["label"] = _labels(df)
    return df


def _labels(df: pd.DataFrame) -> pd.Series:
    """Method labels that tell sweep points apart (hyperparameters or recipe that vary)."""
    labels = pd.Series(df["method"], index=df.index, dtype=object)
    for name, grp in df[df["kind"] == "student"].groupby("method"):
        flats = [{**_flatten(p), **_flatten(r, "recipe.")} for p, r in zip(grp["params"], grp["recipe"])]
        keys = set().union(*flats)
        varying = {k for k in keys if len({str(f.get(k)) for f in flats}) > 1}
        # per-pair defaults (e.g. DKD's beta, lr for small students) vary by pair, not by sweep
        varying = {k for k in varying if _varies_within_pair(grp, flats, k)}
        for idx, f in zip(grp.index, flats):
            labels[idx] = name if not varying else f"{name}({', '.join(f'{k}={f.get(k)}' for k in sorted(varying))})"
    return labels


def _varies_within_pair(grp: pd.DataFrame, flats: list[dict], key: str) -> bool:
    seen: dict[tuple, set] = {}
    for (t, s), f in zip(zip(grp["teacher"], grp["student"]), flats):
        seen.setdefault((t, s), set()).add(str(f.get(key)))
    return any(len(v) > 1 for v in seen.values())
