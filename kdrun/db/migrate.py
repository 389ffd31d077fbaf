"""Alembic migrations shipped inside the package, with kdrun's own version table.

Every command checks the schema version, most of them only that: that check reads the
version table with one plain query, so Alembic (~0.2 s of imports) loads only to migrate or
to explain a mismatch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text

from kdrun.db.engine import Database
from kdrun.errors import UserError

if TYPE_CHECKING:
    from alembic.config import Config

VERSION_TABLE = "kdrun_alembic_version"
MIGRATIONS = Path(__file__).with_name("migrations")
HEAD = "0007"  # the newest revision in migrations/versions (tests/test_db.py checks it)


def alembic_config(db: Database) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["kdrun_db"] = db
    return cfg


def head() -> str:
    return HEAD


def current(db: Database) -> str | None:
    """The database's schema revision (None: no kdrun schema), as Alembic records it."""
    with db.engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def upgrade(db: Database, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(db), revision)


def require_current(db: Database) -> None:
    """Refuse to touch a database whose schema is not the one this kdrun expects."""
    have, want = current(db), head()
    if have == want:
        return
    if have is None:
        raise UserError(
            f"{db.display_url} has no kdrun schema; run `kdrun db upgrade` to create it"
        )
    from alembic.script import ScriptDirectory

    if have not in {r.revision for r in ScriptDirectory(str(MIGRATIONS)).walk_revisions()}:
        raise UserError(
            f"{db.display_url} is at schema {have}, newer than this kdrun knows ({want}); "
            "upgrade kdrun"
        )
    raise UserError(
        f"{db.display_url} is at schema {have}, behind {want}: run `kdrun db upgrade`"
    )
