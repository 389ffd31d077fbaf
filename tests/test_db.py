"""Migrations, schema gate, idempotent enqueue, URL handling."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select

from kdrun.db import migrate, queue
from kdrun.db.engine import Database, parse_url, redact
from kdrun.db.models import Base, Job
from kdrun.errors import UserError
from kdrun.grid import expand
from tests.helpers import tiny_grid


@pytest.fixture
def db(tmp_path):
    d = Database(f"sqlite:///{tmp_path / 'k.db'}", create=True)
    migrate.upgrade(d)
    yield d
    d.dispose()


def test_upgrade_empty_database_to_head(db):
    assert migrate.current(db) == migrate.head()
    tables = set(inspect(db.engine).get_table_names())
    assert {"kdrun_jobs", "kdrun_results", "kdrun_epoch_metrics", "kdrun_attempts",
            "kdrun_teachers", migrate.VERSION_TABLE} <= tables
    assert "alembic_version" not in tables  # kdrun keeps its own version table


def test_head_constant_is_alembics_head():
    """Commands check the schema without loading Alembic, against migrate.HEAD."""
    from alembic.script import ScriptDirectory

    assert migrate.head() == ScriptDirectory(str(migrate.MIGRATIONS)).get_current_head()


def test_autogenerate_finds_no_difference(db):
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True,
                                                     "version_table": migrate.VERSION_TABLE})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []


def test_sqlite_runs_in_wal_mode(db):
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_commands_refuse_a_database_behind_head(tmp_path):
    d = Database(f"sqlite:///{tmp_path / 'old.db'}", create=True)
    with pytest.raises(UserError, match="no kdrun schema; run `kdrun db upgrade`"):
        migrate.require_current(d)
    migrate.upgrade(d)
    with d.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE {migrate.VERSION_TABLE} SET version_num = 'ffff'")
    with pytest.raises(UserError, match="newer than this kdrun knows"):
        migrate.require_current(d)


def test_missing_sqlite_file_is_not_created_by_readers(tmp_path):
    with pytest.raises(UserError, match="no kdrun database at"):
        Database(f"sqlite:///{tmp_path / 'absent.db'}")
    assert not (tmp_path / "absent.db").exists()


def test_enqueue_is_idempotent_and_links_dependencies(db):
    name, specs = expand(tiny_grid())
    assert queue.enqueue(db, name, specs) == (len(specs), 0)
    assert queue.enqueue(db, name, specs) == (0, len(specs))
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == len(specs)
        teacher = s.execute(select(Job).where(Job.kind == "teacher")).scalar_one()
        kd = s.execute(select(Job).where(Job.method == "kd")).scalars().all()
        assert all(j.depends_on_id == teacher.id for j in kd)
    # a grown grid adds only the new jobs
    _, more = expand(tiny_grid(seeds=[0, 1, 2]))
    assert queue.enqueue(db, name, more) == (2, len(specs))


def test_students_wait_for_their_teacher(db):
    name, specs = expand(tiny_grid(methods=["kd"], seeds=[0]))
    queue.enqueue(db, name, specs)
    first = queue.claim(db, "w", 60)
    assert first.config["kind"] == "teacher"
    assert queue.claim(db, "w", 60) is None  # the KD student waits
    assert queue.has_runnable_or_running(db)


@pytest.mark.parametrize("url, message", [
    ("not a url", "invalid database URL"),
    ("mysql://u:secret@h/db", "unsupported database 'mysql"),
])
def test_bad_urls_are_refused_without_leaking_passwords(url, message):
    with pytest.raises(UserError, match=message) as e:
        Database(url)
    assert "secret" not in str(e.value)


def test_redaction_and_driver_mapping():
    url = parse_url("postgresql://kd:hunter2@db.example/kd")
    assert url.drivername == "postgresql+psycopg"
    assert "hunter2" not in redact(url) and "***" in redact(url)
    assert "hunter2" not in redact("postgresql+psycopg://kd:hunter2@h/x")
