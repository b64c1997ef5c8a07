"""Engine creation with every per-dialect default in one function.

SQLite gets what a server-less, file-based database needs to behave (foreign keys enforced, WAL,
a busy timeout, real transactions around DDL) and never a PostgreSQL pool argument; PostgreSQL
gets a bounded, pre-pinged, recycled pool and a connect timeout, and with psycopg 3 no
server-side prepared statements (they break behind a pooler in transaction mode).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import NullPool, StaticPool

from ai_secretary_schema.settings import SchemaSettings
from ai_secretary_schema.transport import check_transport

#: Milliseconds a SQLite connection waits for another writer before "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 30_000


def is_sqlite_memory(url: URL) -> bool:
    """True for the in-memory SQLite forms: ``sqlite://``, ``:memory:``, ``mode=memory``."""
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def sqlite_file_path(url: URL) -> Path | None:
    """The file a SQLite ``url`` opens, or ``None`` for an in-memory database.

    ``sqlite:///file:path?uri=true`` names its file in a ``file:`` URI; only the local-path form
    of such a URI (no ``//authority``) is resolved.
    """
    if url.get_backend_name() != "sqlite" or is_sqlite_memory(url):
        return None
    database = url.database or ""
    if url.query.get("uri") == "true" and database.startswith("file:"):
        database = database[len("file:") :]
        if database.startswith("//"):
            return None
    return Path(database)


def ensure_sqlite_directory(url: URL) -> Path | None:
    """Create the parent directory of a SQLite file ``url`` (SQLite creates the file itself).

    Returns the file's path, ``None`` for in-memory databases. Raises :class:`OSError` when the
    directory cannot be created.
    """
    path = sqlite_file_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


def engine_options(url: URL, settings: SchemaSettings | None = None) -> dict[str, Any]:
    """The keyword arguments :func:`sqlalchemy.create_engine` gets for ``url``."""
    settings = settings or SchemaSettings()
    backend = url.get_backend_name()
    if backend == "sqlite":
        if is_sqlite_memory(url):
            # One shared connection, or every checkout would see a new, empty database.
            return {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}
    if backend == "postgresql":
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in url.query:
            # libpq takes whole seconds; 0 would mean "wait forever".
            connect_args["connect_timeout"] = max(1, round(settings.database_connect_timeout))
        if url.get_driver_name() == "psycopg":
            # psycopg 3 turns a query into a server-side prepared statement after 5 executions.
            # Behind a pooler in transaction mode (PgBouncer) the next transaction may run on
            # another server connection, where "prepared statement … does not exist". Nothing
            # tells a client that a pooler sits in between, and the failure comes late and
            # looks unrelated, so preparing is always off (as with psycopg2, which never
            # prepares): what it saves is one parse per query, small beside a round trip.
            connect_args["prepare_threshold"] = None
        return {
            "pool_size": settings.database_pool_size,
            "max_overflow": settings.database_max_overflow,
            "pool_recycle": settings.database_pool_recycle,
            "pool_timeout": settings.database_pool_timeout,
            "pool_pre_ping": settings.database_pool_pre_ping,
            "connect_args": connect_args,
        }
    return {}


def create_engine(
    url: URL, settings: SchemaSettings | None = None, *, pooled: bool = True
) -> Engine:
    """Create an engine for ``url`` with the package's per-dialect defaults.

    ``pooled=False`` gives a :class:`~sqlalchemy.pool.NullPool` engine for one-off work such as
    a migration run (in-memory SQLite keeps its single shared connection regardless). The parent
    directory of a SQLite file is created (:class:`OSError` when it cannot be). A remote
    PostgreSQL URL without TLS is warned about, or refused (:mod:`ai_secretary_schema.transport`).
    """
    options = engine_options(url, settings)
    if url.get_backend_name() == "sqlite":
        # SQLite creates a missing file but not a missing directory ("unable to open database
        # file"); creating it here serves the connection manager and migrations alike.
        ensure_sqlite_directory(url)
    if not pooled and "poolclass" not in options:
        options = {
            key: value
            for key, value in options.items()
            if key not in ("pool_size", "max_overflow", "pool_recycle", "pool_timeout")
        }
        options["poolclass"] = NullPool
    return configure_engine(sa.create_engine(url, **options), settings)


def configure_engine(engine: Engine, settings: SchemaSettings | None = None) -> Engine:
    """Give an engine built elsewhere (Flask-SQLAlchemy's) what :func:`create_engine` gives its
    own: the transport check and, on SQLite, foreign keys, WAL, a busy timeout and real
    transactions, applied to each connection as it is made."""
    check_transport(engine.url, settings or SchemaSettings())
    if engine.url.get_backend_name() == "sqlite":
        _configure_sqlite(engine, memory=is_sqlite_memory(engine.url))
    return engine


def _configure_sqlite(engine: Engine, *, memory: bool) -> None:
    # pysqlite's own transaction handling neither begins a transaction before DDL nor lets
    # PRAGMAs run outside one; taking BEGIN into our hands gives SQLite its real transactional
    # DDL, so a failed migration rolls back whole (SQLAlchemy's documented pysqlite recipe).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN")
