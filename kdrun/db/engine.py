"""Connecting to the job database: URL checks, SQLite tuning, schema-version gate.

SQLite runs in WAL mode with a busy timeout on every connection; write transactions start
with BEGIN IMMEDIATE (take the write lock up front, so two claimers serialize instead of
deadlocking on lock upgrade) while reads stay DEFERRED and never block workers. When the lock
is still held after the busy timeout (or PostgreSQL reports a serialization failure or a
deadlock), `retrying` runs the whole transaction again after a randomized back-off.
"""

from __future__ import annotations

import functools
import os
import random
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ParamSpec, TypeVar
from urllib.parse import quote, quote_plus

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session

from kdrun.db import DEFAULT_DB, default_url  # noqa: F401 (re-exported: kdrun.db.engine.DEFAULT_DB)
from kdrun.errors import UserError

URL_FORMS = "sqlite:///PATH or postgresql+psycopg://USER[:PASSWORD]@HOST[:PORT]/DBNAME"


def parse_url(text: str) -> URL:
    if "://" not in text:  # a bare file name: say which URL means it
        if "@" in text:  # user:password@host/db without a scheme: never echo it
            raise UserError(f"invalid database URL (--db / KDRUN_DB): no scheme; expected "
                            f"{URL_FORMS}")
        raise UserError(f"invalid database URL {text!r} (--db / KDRUN_DB): for a SQLite "
                        f"file write sqlite:///{text}; expected {URL_FORMS}")
    try:
        url = make_url(text)
    except (ArgumentError, ValueError) as e:  # ValueError: a port that is not a number
        why = "bad port" if isinstance(e, ValueError) else "unparseable"
        raise UserError(f"invalid database URL {redact(text)!r} ({why}); expected "
                        f"{URL_FORMS}") from None
    if url.port is not None and not 0 < url.port < 65536:
        raise UserError(f"invalid database URL {redact(url)!r}: port {url.port} is out of range "
                        "(1-65535)")
    if url.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        url = url.set(drivername="postgresql+psycopg")  # kdrun ships the psycopg 3 driver
    if url.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise UserError(f"unsupported database {url.drivername!r}; expected {URL_FORMS}")
    return url


SECRET_PARAMS = ("password", "sslpassword", "passfile")  # query keys libpq reads secrets from
_USERINFO_RE = re.compile(r"(://[^/?#@:]*:)[^@/?#]*@")
_PARAM_RE = re.compile(r"(?i)\b(" + "|".join(SECRET_PARAMS) + r")=[^&;\s]*")


def redact(url: str | URL) -> str:
    """The URL with every password masked (user-info and `?password=`): safe for output and
    logs. A URL that does not parse is masked textually."""
    if not isinstance(url, URL):
        try:
            url = make_url(url)
        except (ArgumentError, ValueError):
            return _PARAM_RE.sub(r"\1=***", _USERINFO_RE.sub(r"\1***@", str(url)))
    query = {k: ("***" if k.lower() in SECRET_PARAMS else v) for k, v in url.query.items()}
    return url.set(query=query).render_as_string(hide_password=True).replace("%2A%2A%2A", "***")


def secrets_in(url: str | URL) -> list[str]:
    """The secret strings a URL (and PGPASSWORD, which libpq would use with it) carries."""
    found = []
    try:
        u = url if isinstance(url, URL) else make_url(url)
        found += [u.password] if u.password else []
        for k, v in u.query.items():
            if k.lower() in SECRET_PARAMS:
                found += [v] if isinstance(v, str) else list(v)
    except (ArgumentError, ValueError):
        text = str(url)
        found += [m.group(0).split(":", 2)[-1][:-1] for m in _USERINFO_RE.finditer(text)]
        found += [m.group(0).split("=", 1)[1] for m in _PARAM_RE.finditer(text)]
    if os.environ.get("PGPASSWORD"):
        found.append(os.environ["PGPASSWORD"])
    found = [f for f in found if f and f != "***"]
    return found + [v for f in found for v in {quote(f, safe=""), quote_plus(f)} if v != f]


def scrub(text: str, url: str | URL | None = None) -> str:
    """`text` with the secrets of `url` (default KDRUN_DB) and PGPASSWORD replaced by ***."""
    for secret in sorted(set(secrets_in(url if url is not None else default_url())),
                         key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def sqlite_path(url: URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def _tune_sqlite(engine: Engine, busy_timeout_s: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


CONNECT_TIMEOUT_S = 10  # a PostgreSQL server (or pooler) that does not answer: an error


def postgres_options(name: str | None) -> dict:
    """Engine options for PostgreSQL at cluster scale (README "Running on a cluster").

    One connection stays open per process; every other one closes when its transaction ends,
    so a worker holds at most one connection plus one per slot that is writing right now.
    Statements are never prepared server-side (psycopg would after 5 runs), which PgBouncer
    in transaction mode cannot follow from one server connection to the next. The server
    sees each process by name (`application_name`, as in pg_stat_activity)."""
    app = (name or f"kdrun {socket.gethostname()}:{os.getpid()}")[:63]  # NAMEDATALEN - 1
    # max_overflow=-1: no cap here; each thread holds at most one connection at a time, so
    # the slots bound it (a cap would make a busy slot time out waiting for a connection).
    return {"pool_pre_ping": True, "pool_size": 1, "max_overflow": -1,
            "connect_args": {"prepare_threshold": None, "connect_timeout": CONNECT_TIMEOUT_S,
                             "application_name": app}}


class Database:
    """One job database. `write()` and `read()` give short-lived sessions."""

    def __init__(self, url: str, *, create: bool = False, busy_timeout_s: float = 30.0,
                 name: str | None = None) -> None:
        self.url = parse_url(url)
        self.display_url = redact(self.url)
        path = sqlite_path(self.url)
        if path is not None:
            if not path.exists() and not create:
                raise UserError(
                    f"no kdrun database at {path}; create one with `kdrun enqueue` or "
                    "`kdrun db upgrade`, or point --db / KDRUN_DB at an existing one"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            kwargs = postgres_options(name) if path is None else {}
            self.engine = create_engine(self.url, **kwargs)
        except (NoSuchModuleError, ModuleNotFoundError):
            raise UserError(
                "PostgreSQL support needs the psycopg driver: pip install 'kdrun[postgres]'"
            ) from None
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            _tune_sqlite(self.engine, busy_timeout_s)
        self._write_engine = self.engine.execution_options(sqlite_begin="IMMEDIATE")

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: committed on success, rolled back on error."""
        with Session(self._write_engine, expire_on_commit=False) as s, s.begin():
            yield s

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            yield s

    def dispose(self) -> None:
        self.engine.dispose()


# SQLite: the write lock was still taken after the busy timeout. PostgreSQL (SQLSTATE):
# serialization failure, deadlock detected, lock not available. Nothing was committed.
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "database is busy")
_PG_TRANSIENT = {"40001", "40P01", "55P03"}
RETRIES = 8

P = ParamSpec("P")
T = TypeVar("T")


def is_transient(e: DBAPIError) -> bool:
    """Whether the database refused the transaction only because of contention."""
    if getattr(e.orig, "sqlstate", None) in _PG_TRANSIENT:
        return True
    return any(m in str(e.orig).lower() for m in _SQLITE_TRANSIENT)


def retrying(fn: Callable[P, T]) -> Callable[P, T]:
    """Rerun `fn` -- one complete transaction -- when the database was merely too busy to take
    it, with jittered exponential back-off (50 ms doubling to 2 s, 8 tries)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        delay = 0.05
        for attempt in range(1, RETRIES + 1):
            try:
                return fn(*args, **kwargs)
            except DBAPIError as e:
                if attempt == RETRIES or not is_transient(e):
                    raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(2 * delay, 2.0)
        raise AssertionError("unreachable")

    return wrapper

