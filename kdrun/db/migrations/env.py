"""Alembic environment: run against kdrun's Database (given by kdrun.db.migrate)."""

from alembic import context
from sqlalchemy import text

from kdrun.db.engine import Database, default_url
from kdrun.db.migrate import VERSION_TABLE
from kdrun.db.models import Base

config = context.config
db: Database = config.attributes.get("kdrun_db") or Database(
    config.get_main_option("sqlalchemy.url") or default_url(), create=True
)

# Concurrent upgrades (say, three `kdrun enqueue` on a new database) take turns: the loser
# waits here, then finds the schema at head and does nothing. SQLite: BEGIN IMMEDIATE already
# made this transaction the only writer.
MIGRATION_LOCK = 0x6B6472756E  # "kdrun"

with db.write() as session:
    if not db.is_sqlite:
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    context.configure(
        connection=session.connection(),
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=db.is_sqlite,
        compare_type=True,
    )
    context.run_migrations()
