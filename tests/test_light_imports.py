"""Light commands import only what they use: `kdrun --help`, `status`, `report` and `export`
never import torch or torchvision (seconds and most of a gigabyte per command; the worker's
supervisor imports torch only to list GPUs). See kdrun.lazy."""

from __future__ import annotations

import json
import subprocess
import sys

from kdrun.db import migrate, queue
from kdrun.db.engine import Database
from kdrun.grid import expand
from tests.helpers import tiny_grid

HEAVY = ("torch", "torchvision", "torch._dynamo")

# Runs the CLI in-process, then reports which heavy modules got imported.
PROBE = """
import json, sys
from kdrun.cli import app
try:
    app(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in HEAVY if m in sys.modules)))
""".replace("HEAVY", repr(HEAVY))


def heavy_after(*args: str) -> list[str]:
    r = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                       timeout=120)
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_light_commands_never_import_torch(tmp_path):
    url = f"sqlite:///{tmp_path / 'kdrun.db'}"
    db = Database(url, create=True)
    migrate.upgrade(db)
    queue.enqueue(db, "tiny", expand(tiny_grid())[1])
    base = ["--db", url, "--runs-dir", str(tmp_path / "runs")]
    assert heavy_after("--help") == []
    for args in (["status"], ["status", "--json"], ["report", "--table", "top1"],
                 ["report", "--table", "curves"], ["export", "--format", "json"]):
        assert heavy_after(*base, *args) == [], args
