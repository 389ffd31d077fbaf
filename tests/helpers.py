"""Small shared test helpers: tiny grids and a CLI runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from kdrun.cli import app

TINY_DATASET = {"name": "synthetic", "num_classes": 4, "train_size": 48, "test_size": 16}
TINY_RECIPE = {
    "epochs": 2,
    "batch_size": 16,
    "lr": 0.05,
    "lr_milestones": [1],
    "eval_batch_size": 16,
}


def tiny_grid(**overrides: Any) -> dict[str, Any]:
    g = {
        "name": "tiny",
        "dataset": dict(TINY_DATASET),
        "recipe": dict(TINY_RECIPE),
        "teachers": {"resnet14": {"train": True}},
        "pairs": [{"teacher": "resnet14", "student": "resnet8"}],
        "methods": ["vanilla", "kd"],
        "seeds": [0, 1],
    }
    g.update(overrides)
    return g


def write_grid(path: Path, grid: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def cli(tmp_path: Path, *args: str):
    """Run the kdrun CLI against a database and runs dir inside tmp_path."""
    base = ["--db", f"sqlite:///{tmp_path / 'kdrun.db'}", "--runs-dir", str(tmp_path / "runs")]
    return CliRunner().invoke(app, [*base, *args])
