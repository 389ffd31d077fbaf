"""`db_now()`: seconds since the epoch by the database server's clock, as a SQL expression.

Leases must be judged by one clock; workers on different machines disagree about theirs.
"""

from __future__ import annotations

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import Float


class db_now(FunctionElement):  # noqa: N801  (reads like a SQL function)
    type = Float()
    inherit_cache = True


@compiles(db_now, "sqlite")
def _sqlite_now(element, compiler, **kw):
    return "((julianday('now') - 2440587.5) * 86400.0)"


@compiles(db_now, "postgresql")
def _pg_now(element, compiler, **kw):
    return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"
