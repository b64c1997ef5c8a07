"""Small look-ups the tests make on a database of their own, and the design document's DDL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.errors
import sqlalchemy as sa
from psycopg2 import sql
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

#: The design document's ``performance_alerts`` DDL; ``{id}`` is the dialect's key column
#: (:data:`ID_COLUMN`), since PostgreSQL spells the auto-incrementing key SERIAL.
DESIGN_DDL = """
CREATE TABLE IF NOT EXISTS performance_alerts (
    {id},
    alert_type VARCHAR(50) NOT NULL,
    severity VARCHAR(20) NOT NULL,
    title VARCHAR(200) NOT NULL,
    description TEXT,
    endpoint VARCHAR(200),
    service_name VARCHAR(100),
    metric_value FLOAT,
    threshold_value FLOAT,
    status VARCHAR(20) DEFAULT 'active',
    acknowledged_by VARCHAR(100),
    acknowledged_at TIMESTAMP,
    resolved_at TIMESTAMP,
    first_occurrence TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    last_occurrence TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    occurrence_count INTEGER DEFAULT 1,
    alert_metadata TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
)
"""
ID_COLUMN = {
    "sqlite": "id INTEGER PRIMARY KEY AUTOINCREMENT",
    "postgresql": "id SERIAL PRIMARY KEY",
}


def execute(url: str, *statements: str) -> None:
    """Run ``statements`` on the database at ``url``, in one transaction."""
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    """The tables of the database at ``url``."""
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return set(sa.inspect(connection).get_table_names())
    finally:
        engine.dispose()


def versions(url: str) -> list[str]:
    """The rows of ``alembic_version`` of the database at ``url``."""
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return list(
                connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()
            )
    finally:
        engine.dispose()


def admin_connection() -> Any:
    """An autocommitted superuser connection to the ``postgres`` maintenance database."""
    connection = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    connection.autocommit = True
    return connection


def terminate_backends(dbname: str) -> None:
    """End every session on ``dbname`` (as a server restart or a failover would)."""
    connection = admin_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            )
    finally:
        connection.close()


def rename_database(old: str, new: str) -> None:
    """Terminate ``old``'s backends and rename it (retrying if a client reconnected between)."""
    deadline = time.monotonic() + 10
    connection = admin_connection()
    try:
        while True:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (old,),
                )
                try:
                    cursor.execute(
                        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                            sql.Identifier(old), sql.Identifier(new)
                        )
                    )
                    return
                except psycopg2.errors.ObjectInUse:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
    finally:
        connection.close()


@contextmanager
def database_renamed(url: str) -> Iterator[None]:
    """PostgreSQL stops serving ``url``'s database (backends ended, database renamed) until
    the block ends, when it comes back under its name."""
    dbname = str(make_url(url).database)
    hidden = f"{dbname}_away"
    rename_database(dbname, hidden)
    try:
        yield
    finally:
        rename_database(hidden, dbname)
