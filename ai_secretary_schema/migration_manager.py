"""The design's ``MigrationManager``: its table API and startup hook, as a face of the Migrator.

Everything it creates, it creates by running the migrations (never ``create_all`` behind
Alembic's back), so the database always says which revision it is at and the next migration
applies cleanly. The work itself is done by :class:`~ai_secretary_schema.migrator.Migrator`;
see :meth:`~ai_secretary_schema.migrator.Migrator.run_startup` for the startup modes.
"""

from __future__ import annotations

import logging

from sqlalchemy.engine import URL, Engine

from ai_secretary_schema.connection import SmartConnectionManager
from ai_secretary_schema.history import ScriptLocation
from ai_secretary_schema.migrator import PACKAGE_TABLES, Migrator, RevisionState
from ai_secretary_schema.schema_report import SchemaReport
from ai_secretary_schema.settings import SchemaSettings, StartupMode

logger = logging.getLogger(__name__)


class MigrationManager(Migrator):
    """Keeps one database at the head of the package's migrations.

    ``connection_manager`` makes the connection (default: a :class:`SmartConnectionManager` on
    the settings); ``url`` overrides ``DATABASE_URL``; ``settings`` supplies it and
    ``SCHEMA_STARTUP``/``SCHEMA_LOCK_TIMEOUT`` (default: resolved from the environment);
    ``engine`` is an engine the caller already verified. An invalid URL is an error here, never
    a fallback.
    """

    def __init__(
        self,
        connection_manager: SmartConnectionManager | None = None,
        *,
        url: str | URL | None = None,
        settings: SchemaSettings | None = None,
        engine: Engine | None = None,
        script_location: ScriptLocation = None,
    ) -> None:
        base = settings
        if base is None and connection_manager is not None:
            base = connection_manager.settings
        resolved = (
            base.override(database_url=url)
            if base is not None
            else SchemaSettings.resolve(database_url=url)
        )
        super().__init__(
            resolved,
            engine,
            script_location=script_location,
            connection_manager=connection_manager,
        )

    @property
    def required_tables(self) -> tuple[str, ...]:
        """The tables the application cannot run without, in dependency order."""
        return PACKAGE_TABLES

    def check_missing_tables(self) -> list[str]:
        """The required tables the database does not have, in dependency order."""
        return self.missing_tables()

    def ensure_tables_exist(self) -> bool:
        """Create the missing required tables (by migrating); True when all of them exist."""
        missing = self.check_missing_tables()
        if not missing:
            return True
        logger.info("Creating missing tables by migrating to head: %s", ", ".join(missing))
        return self.create_missing_tables(missing)

    def create_missing_tables(self, tables: list[str]) -> bool:
        """Create ``tables`` by upgrading to head, under the lock; True when they all exist.

        Running the migrations that create ``tables`` means running every revision up to head
        (a revision may depend on the ones before it). Raises :class:`ValueError` for a table
        that is not one of the package's, and the errors of :meth:`upgrade_to_head`.
        """
        unknown = sorted(set(tables) - set(self.required_tables))
        if unknown:
            raise ValueError(
                f"not tables of this package: {', '.join(unknown)} "
                f"(its tables are {', '.join(self.required_tables)})"
            )
        self.upgrade_to_head()
        return not (set(self.check_missing_tables()) & set(tables))

    def create_performance_alerts_table(self) -> bool:
        """Create ``performance_alerts`` by running its migration (and the earlier ones)."""
        return self.create_missing_tables(["performance_alerts"])

    def upgrade_to_head(self) -> RevisionState:
        """Under the migration lock: adopt an unversioned database, then upgrade to head."""
        return self.upgrade("head")

    def validate_schema(self) -> SchemaReport:
        """Compare the database with the models and the head revision; changes nothing."""
        return self.validate()

    def run_startup(self, mode: StartupMode | None = None) -> SchemaReport:
        """See :meth:`Migrator.run_startup`."""
        return super().run_startup(mode)
