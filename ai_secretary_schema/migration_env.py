"""What ``migrations/env.py`` does, for every door into the migrations.

Every online run of the package's migrations passes through env.py's
``run_migrations_online()``: ``alembic upgrade``, ``flask db upgrade``, the CLI, the Python API
and the startup hook alike. That is why the migration lock is taken there
(:func:`lock_if_writing`): a run that changes the version table (upgrade, downgrade, stamp) holds
it from before it reads the database's revision until it has committed, so any number of
processes may run any mix of those commands at once. The lock is re-entrant
within a thread: the migrator, which also adopts old databases under it, takes it first. For
the same reason the DDL guard is applied there (:func:`run_migrations`): on PostgreSQL, each
revision of such a run waits at most ``SCHEMA_DDL_LOCK_TIMEOUT`` for a lock and is retried
whole when it runs out (:mod:`ai_secretary_schema.ddl_guard`).

Where the settings come from: an in-process caller hands its resolved
:class:`~ai_secretary_schema.settings.SchemaSettings` in ``config.attributes`` (see
:mod:`ai_secretary_schema.alembic_config`); the ``alembic`` command line resolves them here, once,
with ``-x url=…`` (else the ``sqlalchemy.url`` option) as the explicit URL, then
``DATABASE_URL``, then ``sqlite:///ai_secretary.db``. Either way ``SCHEMA_MIGRATION_URL``, when
set, takes the database URL's place (:meth:`SchemaSettings.for_migrations`), the URL went
through :class:`~ai_secretary_schema.url.DatabaseURLParser` and the engine gets the configured
connect timeout.
"""

from __future__ import annotations

import importlib
import logging
import logging.config
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.util import coerce_resource_to_filename
from sqlalchemy import Connection, Engine, MetaData
from sqlalchemy.types import TypeDecorator

from ai_secretary_schema import ddl_guard
from ai_secretary_schema.alembic_config import HISTORIES, ON_VERSION_APPLY, PROGRESS, SETTINGS
from ai_secretary_schema.engine import create_engine
from ai_secretary_schema.errors import MigrationError
from ai_secretary_schema.history import (
    Histories,
    HostHistory,
    current_revisions,
    migrations_directory,
    refuse_foreign,
)
from ai_secretary_schema.lock import migration_lock
from ai_secretary_schema.models import Base
from ai_secretary_schema.progress import MigrationProgress
from ai_secretary_schema.redaction import redact_url
from ai_secretary_schema.settings import SchemaSettings

logger = logging.getLogger(__name__)

_RUN_SETTINGS = "ai_secretary_schema.run_settings"
#: alembic.ini option naming the host's models for the ``alembic`` command line
#: (``module:attribute``, e.g. ``myapp.models:db.metadata``); ``flask db`` knows them already.
HOST_METADATA_OPTION = "ai_secretary_schema.host_metadata"


def configure_logging(config: Config) -> None:
    """Apply alembic.ini's logging only when run from the ``alembic`` command line."""
    if SETTINGS in config.attributes:
        return
    ini = config.config_file_name
    if ini and Path(ini).is_file() and config.file_config.has_section("loggers"):
        # disable_existing_loggers=False: never silence loggers the host already created.
        logging.config.fileConfig(ini, disable_existing_loggers=False)


def run_settings(config: Config, x_arguments: Mapping[str, str]) -> SchemaSettings:
    """The settings of this run, resolved once: the caller's, or from the command line.

    ``-x url=…`` wins over everything, the caller's engine included (``flask db -x url=…``
    migrates the database it names, not the application's). Otherwise a migration URL
    (``SCHEMA_MIGRATION_URL``) wins over the database URL
    (:meth:`~ai_secretary_schema.settings.SchemaSettings.for_migrations`), and a connection or
    engine the caller handed over (the application's, e.g. ``flask db``'s) is then not used:
    it reaches the application's database, not the migration URL.
    """
    memo = config.attributes.get(_RUN_SETTINGS)
    if isinstance(memo, SchemaSettings):
        return memo
    given = config.attributes.get(SETTINGS)
    explicit = x_arguments.get("url")
    if isinstance(given, SchemaSettings):
        migrating = given.for_migrations()
        if migrating.database_url != given.database_url:
            config.attributes.pop("connection", None)
        settings = migrating.override(database_url=explicit)
    else:
        fallback = config.get_main_option("sqlalchemy.url") or None
        settings = SchemaSettings.resolve(
            database_url=explicit if explicit is not None else fallback
        ).for_migrations()
    if explicit is not None:
        config.attributes.pop("connection", None)
    config.attributes[_RUN_SETTINGS] = settings
    return settings


def scripts_of(config: Config) -> Histories:
    """The histories this run reads: the package's and, with one, the host application's.

    An in-process caller says so (:func:`~ai_secretary_schema.alembic_config.point_at`). The
    ``alembic`` command line run from a host's directory made by ``flask db init`` is
    recognised by its alembic.ini: its ``version_locations`` list the package's revisions
    beside its own, and its models are named by the ``ai_secretary_schema.host_metadata``
    option.
    """
    given = config.attributes.get(HISTORIES)
    if isinstance(given, Histories):
        return given
    package = migrations_directory()
    location = Path(config.get_main_option("script_location") or package).resolve()
    listed = {
        coerce_resource_to_filename(entry).resolve()
        for entry in config.get_version_locations_list() or []
    }
    if location == package:
        found = Histories(package)
    elif package / "versions" in listed:
        found = Histories(package, HostHistory(location, ini_host_metadata(config)))
    else:
        found = Histories(location)  # a copy of the package's migrations (tests)
    config.attributes[HISTORIES] = found
    return found


def ini_host_metadata(config: Config) -> MetaData | None:
    """The application's models named in its alembic.ini (``ai_secretary_schema.host_metadata
    = module:attribute``), imported with the working directory on the path, as ``alembic``
    does with ``prepend_sys_path = .``; ``None`` when the option is not set."""
    spec = config.get_main_option(HOST_METADATA_OPTION)
    if not spec:
        return None
    module_name, _, attribute = spec.partition(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        found: Any = importlib.import_module(module_name.strip())
        for part in attribute.strip().split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise MigrationError(
            f"{HOST_METADATA_OPTION} = {spec} in alembic.ini cannot be loaded ({exc}); it names "
            "the application's models as module:attribute, e.g. myapp.models:db.metadata"
        ) from None
    if not isinstance(found, MetaData):
        found = getattr(found, "metadata", found)
    if not isinstance(found, MetaData):
        raise MigrationError(
            f"{HOST_METADATA_OPTION} = {spec} in alembic.ini is not a MetaData (nor has one); "
            "name the application's models, e.g. myapp.models:db.metadata"
        )
    return found


def run_migrations(env: EnvironmentContext, progress: MigrationProgress | None = None) -> None:
    """Run the migrations of this run (env.py's ``context.run_migrations()``).

    A run that writes the version table over a PostgreSQL connection runs them under the DDL
    guard: each revision with ``SET LOCAL lock_timeout``, retried whole when a lock wait runs
    out (:mod:`ai_secretary_schema.ddl_guard`). Offline ``--sql`` and read-only runs (current,
    check, autogenerate) run as Alembic runs them, with nothing set or watched.
    """
    context = env.get_context()
    if context.as_sql or not changes_versions(context):
        env.run_migrations()
        return
    settings = run_settings(env.config, env.get_x_argument(as_dictionary=True))
    ddl_guard.run_migrations(env, settings, None if progress is None else progress.stream)


def changes_versions(context: MigrationContext) -> bool:
    """Whether this run writes the version table: upgrade, downgrade and stamp name a
    destination revision; current, check, history and autogenerate do not, and only read."""
    return context.opts.get("destination_rev") is not None


NameType = Literal[
    "schema", "table", "column", "index", "unique_constraint", "foreign_key_constraint"
]


def include_name(name: str | None, type_: NameType, parent_names: Mapping[str, str | None]) -> bool:
    """Compare only the package's own tables: the host application may keep others beside them."""
    if type_ == "table":
        return name in Base.metadata.tables
    return True


def target_metadata(host: HostHistory | None) -> list[MetaData]:
    """What the database is compared with: the package's models, and the host's when known."""
    found = [Base.metadata]
    if host is not None and host.metadata is not None:
        found.append(host.metadata)
    return found


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Autogenerate renders the models' type decorators as the plain types they store as, so a
    revision never imports the package (it must run on any later version of it)."""
    if type_ == "type" and isinstance(obj, TypeDecorator):
        autogen_context.imports.add("import sqlalchemy as sa")
        return f"sa.{obj.impl!r}"
    return False


def _common_options(dialect_name: str, host: HostHistory | None = None) -> dict[str, Any]:
    compared = target_metadata(host)
    options: dict[str, Any] = {
        # With the host's models, the whole database is compared (the host owns every table
        # that is not the package's, as Flask-Migrate assumes); without, only the package's.
        "target_metadata": compared if len(compared) > 1 else compared[0],
        "render_item": render_item,
        "compare_type": True,
        "compare_server_default": True,
        # Each revision commits on its own: a failure leaves the database at the revision
        # before it, never half-way through one (SQLite included, see engine.py).
        "transaction_per_migration": True,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        "render_as_batch": dialect_name == "sqlite",
    }
    if len(compared) == 1:
        options["include_name"] = include_name
    if host is not None:
        from ai_secretary_schema.host_revisions import process_revision_directives

        options["process_revision_directives"] = process_revision_directives
    return options


def online_options(
    connection: Connection,
    config: Config | None = None,
    progress: MigrationProgress | None = None,
    *,
    host: HostHistory | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``context.configure`` when migrating over ``connection``
    (``host``: the host application's history, when there is no ``config`` to say it)."""
    if config is not None:
        host = scripts_of(config).host
    options = _common_options(connection.dialect.name, host)
    callbacks = [
        callback
        for callback in (
            None if config is None else config.attributes.get(ON_VERSION_APPLY),
            None if progress is None else progress.finished,
        )
        if callback is not None
    ]
    if callbacks:
        options["on_version_apply"] = callbacks
    return options


def progress_for(config: Config) -> MigrationProgress:
    """How this run reports its revisions: as its in-process caller asked, else (the ``alembic``
    command line) on standard output."""
    if PROGRESS in config.attributes:
        return MigrationProgress(config.attributes[PROGRESS])
    return MigrationProgress(None if SETTINGS in config.attributes else sys.stdout)


def offline_options(settings: SchemaSettings, config: Config | None = None) -> dict[str, Any]:
    """Keyword arguments for ``context.configure`` when emitting SQL for the URL's dialect.

    The caller's ``on_version_apply`` callback runs here too (Alembic calls it after each
    step's SQL in offline mode as well): the lint splits one offline run into its steps with it.
    """
    url = settings.url
    host = None if config is None else scripts_of(config).host
    options = {
        "url": url,
        **_common_options(url.get_backend_name(), host),
        "literal_binds": True,
        "dialect_opts": {"paramstyle": "named"},
    }
    callback = None if config is None else config.attributes.get(ON_VERSION_APPLY)
    if callback is not None:
        options["on_version_apply"] = [callback]
    return options


@contextmanager
def migration_connection(env: EnvironmentContext) -> Iterator[Connection]:
    """The connection to migrate over: the caller's connection or engine
    (``config.attributes["connection"]``; pytest-alembic passes an engine), else one opened on
    the run's URL with the configured timeouts."""
    config = env.config
    settings = run_settings(config, env.get_x_argument(as_dictionary=True))
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        with _sqlite_foreign_keys_off(given):
            yield given
        return
    engine = (
        given if isinstance(given, Engine) else create_engine(settings.url, settings, pooled=False)
    )
    try:
        with engine.connect() as connection, _sqlite_foreign_keys_off(connection):
            yield connection
    finally:
        if engine is not given:
            engine.dispose()


@contextmanager
def lock_if_writing(env: EnvironmentContext) -> Iterator[None]:
    """The migration lock of the run's database, held while a run that writes the version
    table reads the revision, migrates and commits (called after ``context.configure``)."""
    context = env.get_context()
    if not changes_versions(context):
        yield
        return
    settings = run_settings(env.config, env.get_x_argument(as_dictionary=True))
    connection = context.connection
    assert connection is not None
    with migration_lock(connection.engine.url, settings):
        # Under the lock, before Alembic reads the version table: a revision of a history it
        # was not given is refused with what to do, not "Can't locate revision".
        current = current_revisions(connection)
        if connection.in_transaction():
            connection.rollback()
        refuse_foreign(current, scripts_of(env.config), redact_url(connection.engine.url))
        yield


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
