"""The startup hook: bring the database to head under a lock, adopt old databases, validate.

:class:`MigrationManager` is the design document's component 4. Everything it creates, it creates
by running the migrations (never ``create_all`` behind Alembic's back), so the database always
says which revision it is at and the next migration applies cleanly.

``run_startup(mode)`` (``mode`` defaults to ``SCHEMA_STARTUP``):

``upgrade`` (default)
    Warm start first: :func:`ai_secretary_schema.warm_start.warm_check` (no Alembic import) says
    whether the database is already at head with the models' schema; if so, that is all. Else,
    under the migration lock (:mod:`ai_secretary_schema.lock`): adopt an unversioned database
    (:mod:`ai_secretary_schema.adoption`), upgrade to head, and compare the result with the models
    (:func:`~ai_secretary_schema.schema_report.build_schema_report`). Raises
    :class:`MigrationError` (naming the failed revision and the one the database was left at),
    :class:`MigrationLockTimeout`, :class:`AdoptionError` or :class:`SchemaValidationError`.
``validate``
    Never alters the database: raises :class:`SchemaValidationError` with the report when the
    database is behind head or differs from the models. For teams that migrate in a release step
    (and for deployments behind PgBouncer in transaction mode, see :mod:`ai_secretary_schema.lock`).
``off``
    Does nothing, not even connect; the report says it was skipped.

Alembic and the comparison machinery are imported inside the methods that need them, so a
worker that starts against a database already at head pays for neither.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.engine import URL, Engine

from ai_secretary_schema.connection import SmartConnectionManager
from ai_secretary_schema.errors import SchemaValidationError
from ai_secretary_schema.schema_report import SchemaReport
from ai_secretary_schema.settings import STARTUP_MODES, SchemaSettings, StartupMode

if TYPE_CHECKING:
    from ai_secretary_schema.commands import RevisionState

logger = logging.getLogger(__name__)


class MigrationManager:
    """Keeps one database at the head of the package's migrations.

    ``connection_manager`` makes the connection (default: a :class:`SmartConnectionManager` on
    ``settings``); ``url`` overrides ``DATABASE_URL``; ``settings`` supplies ``SCHEMA_STARTUP``
    and ``SCHEMA_LOCK_TIMEOUT`` (default: resolved by the connection manager);
    ``script_location`` replaces the package's migrations (tests, or an application shipping its
    own). The engine is created on first use and released by :meth:`close` (or ``with``). An
    invalid URL is an error here, never a fallback: an application that runs on the
    connection manager's SQLite fallback passes that engine's URL.
    """

    def __init__(
        self,
        connection_manager: SmartConnectionManager | None = None,
        *,
        url: str | URL | None = None,
        settings: SchemaSettings | None = None,
        script_location: str | Path | None = None,
    ) -> None:
        self.connection_manager = connection_manager or SmartConnectionManager(settings)
        self.url = url
        self.settings = settings or self.connection_manager.resolve_settings(url)
        self.script_location = script_location
        self._engine: Engine | None = None

    @property
    def required_tables(self) -> tuple[str, ...]:
        """The tables the application cannot run without, in dependency order."""
        # Imported here: the models pull in the ORM, which a warm start never needs.
        from ai_secretary_schema.models import REQUIRED_TABLES

        return REQUIRED_TABLES

    # -- connection ------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The engine of the managed database (connects on first use; raises on failure)."""
        if self._engine is None:
            # Strict: a migration must run on the database that was named, never on the SQLite
            # fallback an invalid URL would give (a caller running on the fallback passes its URL).
            result = self.connection_manager.connect_or_raise(self.url, strict=True)
            assert result.engine is not None
            self._engine = result.engine
        return self._engine

    def close(self) -> None:
        """Release the engine's connections."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> MigrationManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- the design's table API ------------------------------------------------------------

    def check_missing_tables(self) -> list[str]:
        """The required tables the database does not have, in dependency order."""
        with self.engine.connect() as connection:
            present = set(sa.inspect(connection).get_table_names())
        return [name for name in self.required_tables if name not in present]

    def ensure_tables_exist(self) -> bool:
        """Create the missing required tables (by migrating); True when all of them exist."""
        missing = self.check_missing_tables()
        if not missing:
            return True
        logger.info("Creating missing tables by migrating to head: %s", ", ".join(missing))
        return self.create_missing_tables(missing)

    def create_missing_tables(self, tables: list[str]) -> bool:
        """Create ``tables`` by upgrading to head, under the lock; True when they all exist.

        The migrations are the only way tables are made: running those that create ``tables``
        means running every revision up to head (a revision may depend on the ones before it).
        An unversioned database is adopted first. Raises :class:`ValueError` for a table that is
        not one of the package's, and the errors of :meth:`upgrade_to_head`.
        """
        unknown = sorted(set(tables) - set(self.required_tables))
        if unknown:
            raise ValueError(
                f"not tables of this package: {', '.join(unknown)} "
                f"(its tables are {', '.join(self.required_tables)})"
            )
        self.upgrade_to_head()
        missing = set(self.check_missing_tables())
        return not (missing & set(tables))

    def create_performance_alerts_table(self) -> bool:
        """Create ``performance_alerts`` by running its migration (and the earlier ones)."""
        return self.create_missing_tables(["performance_alerts"])

    # -- migrating and validating ----------------------------------------------------------

    def upgrade_to_head(self) -> RevisionState:
        """Under the migration lock: adopt an unversioned database, then upgrade to head."""
        state, _adopted = self._upgrade_to_head()
        return state

    def _upgrade_to_head(self) -> tuple[RevisionState, str | None]:
        from ai_secretary_schema.commands import RevisionState, run_on_connection, single_head
        from ai_secretary_schema.lock import migration_lock
        from ai_secretary_schema.redaction import redact_url

        head = single_head(self.script_location)
        adopted: str | None = None
        engine = self.engine
        with engine.connect() as connection, migration_lock(engine, self._lock_timeout):
            adopted = self._adopt_if_unversioned(connection)
            after = run_on_connection(
                connection,
                "upgrade",
                "head",
                script_location=self.script_location,
                url=engine.url,
            )
        return RevisionState(redact_url(engine.url), after, (head,)), adopted

    def _adopt_if_unversioned(self, connection: Connection) -> str | None:
        from ai_secretary_schema.adoption import adopt, needs_adoption

        unversioned = needs_adoption(connection)
        connection.rollback()
        return adopt(connection, self.script_location) if unversioned else None

    def validate_schema(self) -> SchemaReport:
        """Compare the database with the models and the head revision; changes nothing."""
        from ai_secretary_schema.schema_report import build_schema_report

        with self.engine.connect() as connection:
            return build_schema_report(connection, self.script_location)

    def run_startup(self, mode: StartupMode | None = None) -> SchemaReport:
        """What the application runs at start (see the module's documentation for the modes)."""
        mode = mode or self.settings.schema_startup
        if mode not in STARTUP_MODES:
            raise ValueError(
                f"unknown startup mode {mode!r}; use one of {', '.join(STARTUP_MODES)}"
            )
        if mode == "off":
            logger.info("SCHEMA_STARTUP=off: the database schema is not checked")
            return SchemaReport(dialect=self._configured_dialect(), skipped=True)
        fast = self._warm_report()
        if fast is not None:
            return fast
        if mode == "upgrade":
            _state, adopted = self._upgrade_to_head()
            report = replace(self.validate_schema(), adopted_at=adopted)
            if not report.ok:
                raise SchemaValidationError(
                    "the database was upgraded to head but still differs from the models "
                    "(a model changed without a migration?):\n" + report.to_text(),
                    report=report,
                )
            logger.info("%s", report.to_text())
            return report
        report = self.validate_schema()
        if not report.ok:
            raise SchemaValidationError(
                "SCHEMA_STARTUP=validate: the database is not what this version of the "
                "application expects; run `ai-secretary-schema upgrade` in your release step "
                "(or start with SCHEMA_STARTUP=upgrade):\n" + report.to_text(),
                report=report,
            )
        return report

    def _configured_dialect(self) -> str:
        """The database family of the configured URL, without connecting."""
        if self._engine is not None:
            return self._engine.dialect.name
        return self.connection_manager.parser.parse_url(self.settings.database_url).type.value

    def _warm_report(self) -> SchemaReport | None:
        from ai_secretary_schema.warm_start import warm_check

        with self.engine.connect() as connection:
            check = warm_check(connection, self.script_location)
            dialect = connection.dialect.name
        if not check.hit:
            logger.debug("warm start missed (%s): taking the full path", check.reason)
            return None
        logger.debug("warm start: database at head %s, schema matches", ", ".join(check.current))
        return SchemaReport(
            dialect=dialect, current=check.current, heads=check.heads, fast_path=True
        )

    @property
    def _lock_timeout(self) -> float:
        return self.settings.schema_lock_timeout
