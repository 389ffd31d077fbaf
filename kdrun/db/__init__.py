"""The job database. The default URL lives here, not in kdrun.db.engine: `kdrun --help` shows
it without importing SQLAlchemy."""

import os

DEFAULT_DB = "sqlite:///kdrun.db"


def default_url() -> str:
    return os.environ.get("KDRUN_DB") or DEFAULT_DB
