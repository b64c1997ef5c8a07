"""Test-only: the migration lock as it was before it survived poolers, a *session* advisory lock.

``pg_advisory_lock`` on an autocommitted connection of its own, released with
``pg_advisory_unlock``: correct on a direct connection, but behind PgBouncer in transaction mode
each statement may run on another server connection, so the lock is taken on one, "released" on
another, and every client that lands on the first one holds it too (advisory locks are
re-entrant per session). tests/test_pgbouncer.py swaps it in (:func:`install`) to prove that its
fleet test sees that bug.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from ai_secretary_schema import lock
from ai_secretary_schema.engine import create_engine
from ai_secretary_schema.errors import MigrationLockTimeout
from ai_secretary_schema.settings import SchemaSettings


@contextmanager
def session_postgresql_lock(
    url: URL, settings: SchemaSettings, timeout: float, deadline: float
) -> Iterator[None]:
    key = lock.advisory_lock_key(url.database or "")
    engine = create_engine(url, settings, pooled=False)
    try:
        connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            connection.execute(sa.text(f"SET lock_timeout = {max(1, int(timeout * 1000))}"))
            try:
                connection.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            except DBAPIError:
                raise MigrationLockTimeout("session lock timed out", timeout=timeout) from None
            try:
                yield
            finally:
                connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        finally:
            connection.close()
    finally:
        engine.dispose()


def install() -> None:
    """Make this process's migration lock the session lock."""
    lock._postgresql_lock = session_postgresql_lock  # type: ignore[assignment]
