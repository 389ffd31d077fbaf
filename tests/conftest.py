"""Shared fixtures: a fresh PostgreSQL database per test (skipped when no server answers),
and `db_url`, which runs a test once on SQLite and once on PostgreSQL."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
import torch
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from kdrun.db.engine import redact

# The server tests use; override with KDRUN_TEST_PG (any database there: we create our own).
PG_ADMIN_URL = os.environ.get("KDRUN_TEST_PG",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def pg_admin():
    """An AUTOCOMMIT engine on the test server's maintenance database, or a skip."""
    try:
        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT",
                               connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as e:  # no driver, no server, no permission: all mean "cannot test"
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()
        pytest.skip(f"PostgreSQL not reachable at {redact(PG_ADMIN_URL)}: "
                    f"{reason[0] if reason else type(e).__name__}")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin) -> str:
    """URL of a new, empty database, dropped (with any connections left) after the test."""
    name = f"kdrun_test_{secrets.token_hex(6)}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with pg_admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    """An empty database on each backend: a SQLite file in tmp_path, or a `pg_url`."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kdrun.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Small CPU tensors: one intra-op thread avoids oversubscription on a busy 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
