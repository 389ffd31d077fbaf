"""Alembic migrations shipped inside the package, with kdrun's own version table."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from kdrun.db.engine import Database
from kdrun.errors import UserError

VERSION_TABLE = "kdrun_alembic_version"
MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(db: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["kdrun_db"] = db
    return cfg


def head() -> str:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def current(db: Database) -> str | None:
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


def upgrade(db: Database, revision: str = "head") -> None:
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
    if have not in {r.revision for r in ScriptDirectory(str(MIGRATIONS)).walk_revisions()}:
        raise UserError(
            f"{db.display_url} is at schema {have}, newer than this kdrun knows ({want}); "
            "upgrade kdrun"
        )
    raise UserError(
        f"{db.display_url} is at schema {have}, behind {want}: run `kdrun db upgrade`"
    )
