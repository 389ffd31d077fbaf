"""One name for a job, used everywhere a person reads it: worker lines, `status`, run folders,
tracker run names, Slurm status.

Owned by the daily-loop work (issue 14), which refines which hyperparameters the label
shows. Everything else imports these two functions and never formats a job name itself.
Must stay import-light (no torch): `status` and reports use it.
"""

from __future__ import annotations

import re
from typing import Any

from kdrun.spec import config_hash


def job_label(config: dict[str, Any]) -> str:
    """`resnet32x4->resnet8x4 kd s0` (a teacher's own job: `resnet32x4 vanilla s0`)."""
    teacher = (config.get("teacher") or {}).get("name")
    pair = f"{teacher}->{config['student']}" if teacher else config["student"]
    return f"{pair} {config['method']['name']} s{config['seed']}"


def run_dir_name(job_id: int, config: dict[str, Any]) -> str:
    """`000009-resnet56-resnet8-kd-s0-1a2b3c`: id, teacher, student, method, seed, short hash
    of the resolved config (so sweep points get different folders)."""
    teacher = (config.get("teacher") or {}).get("name")
    parts = [f"{job_id:06d}", *([teacher] if teacher else []), config["student"],
             config["method"]["name"], f"s{config['seed']}", config_hash(config)[:6]]
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", "-".join(parts))
