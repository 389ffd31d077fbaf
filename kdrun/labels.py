"""One name for a job, used everywhere a person reads it: worker lines, `status`, run folders,
tracker run names, Slurm status.

A label shows the hyperparameters that tell a job apart from its neighbours:
`resnet14->resnet8 kd(T=2) s0`. Which ones is decided at enqueue, where the grid is known
(`assign`): the method hyperparameters the grid wrote out, plus any method or recipe key
that differs between jobs of the same pair, method and seed (a sweep). The label is stored
with the job (`Job.label`); `job_label(config)` without keys gives the bare form.
Everything else imports these functions and never formats a job name itself.
Must stay import-light (no torch): `status` and reports use it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from kdrun.spec import JobSpec, config_hash


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def values(config: dict[str, Any]) -> dict[str, Any]:
    """A job's method hyperparameters (`T`, `kd.T`) and recipe (`recipe.lr`) as flat keys."""
    return {**_flat(config["method"]["params"]), **_flat(config["recipe"], "recipe.")}


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def job_label(config: dict[str, Any], keys: Iterable[str] | None = None,
              flat: dict[str, Any] | None = None) -> str:
    """`resnet32x4->resnet8x4 kd(T=2) s0` (a teacher's own job: `resnet32x4 vanilla s0`);
    `keys` are the flat keys to show (see `values`), in that order; `flat`: `values(config)`
    when the caller has it already."""
    teacher = (config.get("teacher") or {}).get("name")
    pair = f"{teacher}->{config['student']}" if teacher else config["student"]
    method = config["method"]["name"]
    flat = values(config) if flat is None else flat
    shown = [f"{k}={_short(flat[k])}" for k in (keys or ()) if k in flat]
    if shown:
        method += f"({', '.join(shown)})"
    return f"{pair} {method} s{config['seed']}"


def assign(specs: Sequence[JobSpec], explicit: dict[str, Iterable[str]] | None = None) -> None:
    """Set `spec.label` for every job of a grid. `explicit`: spec hash -> the method keys the
    grid wrote out for it. Recipe and method keys that differ between jobs of one pair,
    method and seed are shown too, so two sweep points never share a label."""
    explicit = explicit or {}
    groups: dict[tuple, list[JobSpec]] = {}
    for sp in specs:
        c = sp.config  # JobSpec's properties, read directly (a grid has up to 100k jobs)
        t = c.get("teacher")
        key = (c["dataset"]["name"], t["name"] if t else None, c["student"],
               c["method"]["name"], c["seed"], sp.kind)
        groups.setdefault(key, []).append(sp)
    for group in groups.values():
        if len(group) == 1:  # most groups: nothing varies, the label shows the grid's keys
            sp = group[0]
            own = explicit.get(sp.hash, ())
            flat = _flat(sp.config["method"]["params"]) if own else {}
            sp.label = job_label(sp.config, [k for k in own if k in flat], flat)
            continue
        # One recipe object for the whole group (no recipe sweep): no recipe key can differ,
        # and the grid writes out method keys only, so the method's keys are all we need.
        shared = all(sp.config["recipe"] is group[0].config["recipe"] for sp in group)
        flats = [_flat(sp.config["method"]["params"]) if shared else values(sp.config)
                 for sp in group]
        varying = sorted(k for k in set().union(*flats)
                         if len({_same(f.get(k)) for f in flats}) > 1)
        for sp, flat in zip(group, flats, strict=True):
            own = [k for k in explicit.get(sp.hash, ()) if k in flat]
            keys = own + [k for k in varying if k not in own]
            sp.label = job_label(sp.config, keys, flat)


def _same(v: Any) -> Any:
    """A key equal for two values exactly when their JSON texts are (1 and 1.0 and True
    differ), without writing JSON for the common scalars: a 100k-job grid has millions."""
    t = type(v)
    if t is float:
        return repr(v)  # as JSON writes it (nan, inf: one text each)
    if t in (str, int, bool) or v is None:
        return (t, v)
    return json.dumps(v, default=str)


def run_dir_name(job_id: int, config: dict[str, Any]) -> str:
    """`000009-resnet56-resnet8-kd-s0-1a2b3c`: id, teacher, student, method, seed, short hash
    of the resolved config (so sweep points get different folders)."""
    teacher = (config.get("teacher") or {}).get("name")
    parts = [f"{job_id:06d}", *([teacher] if teacher else []), config["student"],
             config["method"]["name"], f"s{config['seed']}", config_hash(config)[:6]]
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", "-".join(parts))
