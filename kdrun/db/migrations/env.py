"""Alembic environment: run against kdrun's Database (given by kdrun.db.migrate)."""

from alembic import context

from kdrun.db.engine import Database, default_url
from kdrun.db.migrate import VERSION_TABLE
from kdrun.db.models import Base

config = context.config
db: Database = config.attributes.get("kdrun_db") or Database(
    config.get_main_option("sqlalchemy.url") or default_url(), create=True
)

with db.write() as session:
    context.configure(
        connection=session.connection(),
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=db.is_sqlite,
        compare_type=True,
    )
    context.run_migrations()
