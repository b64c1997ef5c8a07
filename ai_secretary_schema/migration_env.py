"""What ``migrations/env.py`` does, kept in the package where it can be typed and tested.

The URL of a migration run is resolved in this order: a live connection in
``config.attributes["connection"]``, ``-x url=…``, the ``sqlalchemy.url`` option (set by the
package's API and the Flask extension, escaped for ConfigParser), then :class:`SchemaSettings`
(``DATABASE_URL``, else ``sqlite:///ai_secretary.db``). Whatever the source, the URL goes
through :class:`DatabaseURLParser`, so ``postgres://`` and a plain ``postgresql://`` reach the
installed driver, and a malformed URL stops the run before anything is touched.
"""

from __future__ import annotations

import logging
import logging.config
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from alembic.config import Config
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL

from ai_secretary_schema.engine import create_engine
from ai_secretary_schema.models import Base
from ai_secretary_schema.settings import SchemaSettings
from ai_secretary_schema.url import DatabaseURLParser

logger = logging.getLogger(__name__)

#: Set by in-process callers (the package's API, the Flask extension): env.py then leaves the
#: host application's logging alone instead of applying alembic.ini's (alembic issue 714).
IN_PROCESS = "ai_secretary_schema.in_process"


def configure_logging(config: Config) -> None:
    """Apply alembic.ini's logging only when run from the ``alembic`` command line."""
    if config.attributes.get(IN_PROCESS):
        return
    ini = config.config_file_name
    if ini and Path(ini).is_file() and config.file_config.has_section("loggers"):
        # disable_existing_loggers=False: never silence loggers the host already created.
        logging.config.fileConfig(ini, disable_existing_loggers=False)


def resolve_migration_url(config: Config, x_arguments: Mapping[str, str]) -> URL:
    """The URL a migration run uses, normalised and checked by :class:`DatabaseURLParser`."""
    raw = x_arguments.get("url") or config.get_main_option("sqlalchemy.url") or None
    if not raw:
        raw = SchemaSettings.resolve().database_url
    return DatabaseURLParser().require(raw).url


def include_name(
    name: str | None,
    type_: Literal[
        "schema", "table", "column", "index", "unique_constraint", "foreign_key_constraint"
    ],
    parent_names: Mapping[str, str | None],
) -> bool:
    """Compare only the package's own tables: the host application may keep others beside them."""
    if type_ == "table":
        return name in Base.metadata.tables
    return True


def _common_options(dialect_name: str) -> dict[str, Any]:
    return {
        "target_metadata": Base.metadata,
        "compare_type": True,
        "compare_server_default": True,
        "include_name": include_name,
        # Each revision commits on its own: a failure leaves the database at the revision
        # before it, never half-way through one (SQLite included, see engine.py).
        "transaction_per_migration": True,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        "render_as_batch": dialect_name == "sqlite",
    }


def online_options(connection: Connection) -> dict[str, Any]:
    """Keyword arguments for ``context.configure`` when migrating over ``connection``."""
    return _common_options(connection.dialect.name)


def offline_options(url: URL) -> dict[str, Any]:
    """Keyword arguments for ``context.configure`` when emitting SQL for ``url``'s dialect."""
    return {
        **_common_options(url.get_backend_name()),
        "literal_binds": True,
        "dialect_opts": {"paramstyle": "named"},
    }


@contextmanager
def migration_connection(config: Config, x_arguments: Mapping[str, str]) -> Iterator[Connection]:
    """The connection to migrate over: the caller's, or a new one on the resolved URL.

    A caller may pass a Connection or, as pytest-alembic does, an Engine.
    """
    given = config.attributes.get("connection")
    if isinstance(given, Engine):
        with given.connect() as connection, _sqlite_foreign_keys_off(connection):
            yield connection
        return
    if given is not None:
        with _sqlite_foreign_keys_off(given):
            yield given
        return
    url = resolve_migration_url(config, x_arguments)
    engine = create_engine(url, pooled=False)
    try:
        with engine.connect() as connection, _sqlite_foreign_keys_off(connection):
            yield connection
    finally:
        engine.dispose()


@contextmanager
def _sqlite_foreign_keys_off(connection: Connection) -> Iterator[None]:
    """Switch SQLite's foreign keys off while batch mode rebuilds tables.

    Batch mode drops and recreates a table; with foreign keys on, dropping ``tenants`` would
    cascade into ``users`` and delete its rows (SQLite's own ALTER TABLE procedure turns them
    off the same way). The PRAGMA is a no-op inside a transaction, so it is sent on the DBAPI
    connection before one begins; afterwards the keys are checked and switched back on.
    """
    if connection.dialect.name != "sqlite" or connection.in_transaction():
        yield
        return
    dbapi = connection.connection.driver_connection
    assert dbapi is not None
    was_on = dbapi.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    dbapi.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        if connection.in_transaction():
            connection.rollback()
        if was_on:
            dbapi.execute("PRAGMA foreign_keys=ON")
    violations = dbapi.execute("PRAGMA foreign_key_check").fetchall()
    if violations:
        logger.error(
            "after migrating, %d row(s) violate a foreign key (first: table %s, rowid %s)",
            len(violations),
            violations[0][0],
            violations[0][1],
        )
