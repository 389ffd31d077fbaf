"""How each finished job was computed, so a table can tell runs apart by it.

A job's result records the speed switches it resolved (device, bf16, channels_last, compile)
and where its teacher's logits came from (cache or live forward). Runs of one cell normally
share them; when they do not (a seed trained on a CPU, a grid resumed with other switches), the
table says which cells mix kinds of run.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from kdrun.report import pairs as P

UNRECORDED = "not recorded"  # results from before kdrun recorded switches


def compute_label(switches: object, gpus: int = 1) -> str:
    """Device and arithmetic in a few words: `cuda, bf16, channels_last, compile`, and
    `gpus=4 (DDP)` for a job trained on several devices (per-replica BatchNorm)."""
    if not isinstance(switches, dict) or "device" not in switches:
        return UNRECORDED
    parts = [str(switches["device"]), "bf16" if switches.get("amp") == "bf16" else "fp32"]
    parts += [name for name in ("channels_last", "compile") if switches.get(name)]
    if gpus > 1:
        parts.append(f"gpus={gpus} (DDP)")
    if switches.get("decode") == "cuda":
        parts.append("JPEGs decoded on the GPU")
    if switches.get("earlier"):
        parts.append("after epochs computed otherwise")
    return ", ".join(parts)


def _gpus(recipe: object) -> int:
    """A job's recipe.gpus (1 for jobs from before multi-GPU jobs)."""
    return int(recipe.get("gpus", 1)) if isinstance(recipe, dict) else 1


def teacher_label(switches: object) -> str:
    if not isinstance(switches, dict) or switches.get("teacher") not in ("cache", "live"):
        return UNRECORDED
    return "cached" if switches["teacher"] == "cache" else "live"


def cell_names(df: pd.DataFrame) -> pd.Series:
    """Each job's table cell in words, unique per cell: `kd resnet14->resnet8`,
    `student resnet8`, `teacher resnet14` (a teacher job named as its students name it)."""
    names = {h: t for h, t in zip(df["teacher_job"], df["teacher"], strict=True)
             if isinstance(h, str)}
    multi = df["dataset"].nunique() > 1
    uses = Counter(names.values())
    out = []
    cols = ("kind", "hash", "teacher", "student", "label", "dataset")
    for kind, hash_, teacher, student, label, dataset in zip(*(df[c] for c in cols),
                                                              strict=True):
        if kind == "teacher":  # (plain column tuples, not iterrows: 100k jobs)
            tname = names.get(hash_)
            name = f"{P.TEACHER_ROW} {tname or student}"
            if tname and uses[tname] > 1:
                name += f" ({hash_[:8]})"  # two teachers of one name
        elif pd.isna(teacher):
            name = f"{P.student_row(label)} {student}"
        else:
            name = f"{label} {P.name(teacher, student)}"
        out.append(f"{dataset}:{name}" if multi else name)
    return pd.Series(out, index=df.index, dtype=object)


def _counts(labels: pd.Series) -> str:
    return "; ".join(f"{label} ({n} job{'' if n == 1 else 's'})"
                     for label, n in labels.value_counts().items())


def note(finished: pd.DataFrame, limit: int = 3) -> list[str]:
    """One line on how the finished jobs were computed, naming the cells that mix kinds of
    run when they differ; nothing when no job recorded its switches."""
    if finished.empty or "switches" not in finished:
        return []
    recipes = finished["recipe"] if "recipe" in finished else [None] * len(finished)
    compute = pd.Series([compute_label(sw, _gpus(r))
                         for sw, r in zip(finished["switches"], recipes, strict=True)],
                        index=finished.index, dtype=object)
    if (compute == UNRECORDED).all():
        return []
    distilled = finished["teacher"].notna() & (finished["kind"] == "student")
    teacher = finished.loc[distilled, "switches"].map(teacher_label)
    what = f"computed as {_counts(compute)}"
    if len(teacher):
        what += f"; teacher logits {_counts(teacher)}"
    if compute.nunique() == 1 and teacher.nunique() <= 1:
        return [what]
    kind = compute + " | " + teacher.reindex(finished.index).fillna("")
    per_cell = kind.groupby(cell_names(finished)).nunique()
    mixed = sorted(per_cell[per_cell > 1].index)
    where = ""
    if mixed:
        more = f" and {len(mixed) - limit} more" if len(mixed) > limit else ""
        where = f"; cells mixing them: {', '.join(mixed[:limit])}{more}"
    return [f"runs differ: {what}{where} (`kdrun export` has each job's switches)"]
