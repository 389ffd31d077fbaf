"""What a run folder holds besides checkpoints: `job.yaml` (the job's resolved configuration,
so the folder explains itself) and `train.log`, whose lines written by kdrun carry a
timestamp and which ends with each attempt's outcome -- the full error when it failed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

LOG = "train.log"  # the training process's output, appended per attempt
JOB = "job.yaml"


def stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def write_job(run_dir: Path, job_id: int, label: str, config: dict[str, Any]) -> None:
    """`job.yaml`: id, label and the resolved configuration (rewritten by every attempt)."""
    text = yaml.safe_dump({"job": job_id, "label": label, "config": config}, sort_keys=False)
    tmp = run_dir / (JOB + ".tmp")
    tmp.write_text(text)
    tmp.replace(run_dir / JOB)


def log(run_dir: Path, text: str) -> None:
    """Append `--- <time> <text>` to the job's log. Best effort: the database holds the
    outcome, so a full disk here must not turn into a worker crash (issue 15)."""
    try:
        with open(run_dir / LOG, "a") as f:
            f.write(f"--- {stamp()} {text.rstrip()}\n")
    except OSError:
        pass
