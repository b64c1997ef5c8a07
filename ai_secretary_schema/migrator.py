"""The one migration service: upgrade (adopting old databases), downgrade, stamp, current, SQL,
validate, check and the startup hook, for one database.

Every way into the package's migrations is a thin layer over :class:`Migrator`: the module
functions below (:func:`upgrade`, :func:`downgrade`, :func:`current`, :func:`check` …), the
design's :class:`~ai_secretary_schema.migration_manager.MigrationManager`, the CLI, and the Flask
extension, which hands over the engine it already built and verified (one engine, one pool, per
application). ``alembic`` and ``flask db`` enter through ``migrations/env.py`` and meet the same
lock there (:mod:`ai_secretary_schema.migration_env`).

Errors are typed and carry what a caller needs: :class:`MigrationError` names the revision that
failed and the one the database was left at; :class:`MigrationLockTimeout`,
:class:`AdoptionError`, :class:`SchemaValidationError`, :class:`DatabaseConnectionError`,
:class:`DatabaseConfigError`. Nothing here prints or exits.

Alembic and the ORM are imported inside the methods that need them, so that a worker whose
database is already at head (the warm start, :mod:`ai_secretary_schema.fingerprint`) pays for
neither.
"""

from __future__ import annotations

import io
import logging
import tempfile
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from sqlalchemy import Connection, MetaData
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError

from ai_secretary_schema.connection import SmartConnectionManager
from ai_secretary_schema.engine import create_engine
from ai_secretary_schema.errors import (
    MigrationBlockedError,
    MigrationError,
    SchemaValidationError,
)
from ai_secretary_schema.fingerprint import WarmStart, catalog_fingerprint, metadata_digest
from ai_secretary_schema.history import (
    PACKAGE_BRANCH,
    Histories,
    HostHistory,
    ScriptLocation,
    histories,
    script_path,
)
from ai_secretary_schema.lock import migration_lock
from ai_secretary_schema.redaction import redact_text, redact_url, url_password
from ai_secretary_schema.schema_report import SchemaReport
from ai_secretary_schema.settings import STARTUP_MODES, SchemaSettings, StartupMode

if TYPE_CHECKING:
    from alembic.config import Config

    from ai_secretary_schema.lint import LintReport

logger = logging.getLogger(__name__)

#: The tables the package owns, in dependency order: the models' ``REQUIRED_TABLES``, spelled
#: here so that a warm start need not import the ORM (tests/test_layout.py checks they agree).
PACKAGE_TABLES: tuple[str, ...] = ("tenants", "users", "performance_alerts")


@dataclass(frozen=True)
class RevisionState:
    """Where a database stands in the migration history."""

    url: str  #: redacted
    current: tuple[str, ...]
    heads: tuple[str, ...]
    #: Recorded revisions no known history has (another history's: the application's).
    unknown: tuple[str, ...] = ()

    @property
    def at_head(self) -> bool:
        return bool(self.current) and set(self.current) == set(self.heads)

    def describe(self) -> str:
        where = ", ".join(self.current) if self.current else "base (no revision applied)"
        status = "at head" if self.at_head else f"head is {', '.join(self.heads) or 'none'}"
        if self.unknown:
            status += (
                f"; {', '.join(self.unknown)} belongs to another history, the application's: "
                "pass its directory with --directory"
            )
        return f"{self.url}: revision {where} ({status})"


class Migrator:
    """The package's migrations, applied to one database.

    ``settings`` say which database and how long to wait for the lock (default: resolved from
    the environment). ``engine`` is an engine the caller already built and verified (the Flask
    extension's); without one, the migrator connects through
    :class:`~ai_secretary_schema.connection.SmartConnectionManager` on first use, strictly (an
    invalid URL is an error, never a fallback), and disposes of that engine in :meth:`close`
    (or when it is garbage-collected). With a migration URL (``SCHEMA_MIGRATION_URL``,
    :meth:`SchemaSettings.for_migrations`) everything the migrator does (migrations, lock,
    validation, the startup hook) goes to that URL, and an ``engine`` handed over is not used.
    ``script_location`` replaces the shipped migrations (tests, or an application shipping its
    own); ``metadata`` replaces the models in the comparison. ``host`` is the host
    application's own history, kept beside the package's in the same version table
    (:class:`~ai_secretary_schema.history.HostHistory`): upgrading to ``head`` then brings both
    to their heads in dependency order (the package's alone when the host migrates its own,
    ``managed=False``), and validation compares the database with both models. Each revision
    a run applies is reported as it starts, with its duration: to ``progress`` (a command line
    passes ``sys.stdout``), else as INFO log lines.
    """

    def __init__(
        self,
        settings: SchemaSettings | None = None,
        engine: Engine | None = None,
        *,
        script_location: ScriptLocation = None,
        metadata: MetaData | None = None,
        connection_manager: SmartConnectionManager | None = None,
        progress: TextIO | None = None,
        host: HostHistory | None = None,
    ) -> None:
        resolved = settings if settings is not None else SchemaSettings.resolve()
        # SCHEMA_MIGRATION_URL: everything this service does goes there; an engine handed over
        # is the application's (DATABASE_URL), so it is not used.
        self.settings = resolved.for_migrations()
        self._migration_url = self.settings.database_url != resolved.database_url
        if self._migration_url:
            engine = None
        self.progress = progress
        self.script_location = script_path(script_location)
        #: The histories this migrator reads and runs: the package's, and the host's if any.
        self.histories = (
            histories(script_location) if host is None else Histories(self.script_location, host)
        )
        self.metadata = metadata
        self.connection_manager = connection_manager
        self._engine = engine
        self._owns_engine = engine is None
        self._dispose: weakref.finalize[Any, Any] | None = None

    # -- connection ------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The engine of the database (connects on first use; raises on failure)."""
        if self._engine is None:
            manager = self.connection_manager or SmartConnectionManager(self.settings)
            # A caller's connection manager has the application's URL; the migration URL is
            # passed to it.
            url = self.settings.database_url if self._migration_url else None
            result = manager.connect_or_raise(url, strict=True)
            assert result.engine is not None
            self._engine = result.engine
            # A caller that never closes this migrator (the Flask startup hook does not: it
            # normally hands over its own engine) still leaves no pooled connection behind.
            self._dispose = weakref.finalize(self, result.engine.dispose)
        return self._engine

    @property
    def where(self) -> str:
        """The database, for messages: its URL, redacted."""
        if self._engine is not None:
            return redact_url(self._engine.url)
        return self.settings.database.redacted

    def close(self) -> None:
        """Release the connections of an engine this migrator made itself."""
        if self._engine is not None and self._owns_engine:
            if self._dispose is not None:
                self._dispose()  # disposes of the engine, once
                self._dispose = None
            else:
                self._engine.dispose()
            self._engine = None

    def __enter__(self) -> Migrator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------

    def heads(self) -> tuple[str, ...]:
        from ai_secretary_schema.history import heads

        return heads(self.histories)

    def history(self) -> list[str]:
        from ai_secretary_schema.history import history

        return history(self.histories)

    def current(self) -> RevisionState:
        """Where the database stands (it is not changed)."""
        from ai_secretary_schema.history import current_revisions

        with self.engine.connect() as connection:
            revisions = current_revisions(connection)
        return self._state(revisions)

    def _state(self, recorded: tuple[str, ...]) -> RevisionState:
        """Where the database stands, from the revisions its version table records."""
        from ai_secretary_schema.history import foreign_revisions, managed_current, managed_heads

        unknown = foreign_revisions(recorded, self.histories)
        return RevisionState(
            self.where,
            managed_current(tuple(r for r in recorded if r not in unknown), self.histories),
            managed_heads(self.histories),
            unknown,
        )

    def missing_tables(self) -> list[str]:
        """The package's tables the database does not have, in dependency order."""
        import sqlalchemy as sa

        with self.engine.connect() as connection:
            present = set(sa.inspect(connection).get_table_names())
        return [name for name in PACKAGE_TABLES if name not in present]

    def sql(self, revision: str = "head") -> str:
        """The SQL that upgrades an empty database of the URL's dialect to ``revision``."""
        from alembic import command
        from alembic.util import CommandError

        output = io.StringIO()
        config = self._config(output=output)
        try:
            command.upgrade(config, revision, sql=True)
        except CommandError as exc:
            raise MigrationError(f"cannot emit SQL up to {revision!r}: {exc}") from None
        return output.getvalue()

    def lint(self, revision_range: str | None = None) -> LintReport:
        """Review the revisions of ``revision_range`` (default: all) for lock safety on a live
        PostgreSQL database (:mod:`ai_secretary_schema.lint`); never connects."""
        from ai_secretary_schema.lint import lint

        return lint(revision_range, self.script_location)

    def validate(self) -> SchemaReport:
        """Compare the database with the models and the head revision; changes nothing."""
        from ai_secretary_schema.schema_report import build_schema_report

        with self.engine.connect() as connection:
            return build_schema_report(connection, self.histories, metadata=self.metadata)

    # -- writing ---------------------------------------------------------------------------

    def upgrade(self, revision: str = "head") -> RevisionState:
        """Upgrade to ``revision`` under the migration lock; to head, a database made before
        migrations is adopted first (:mod:`ai_secretary_schema.adoption`). With a host history,
        ``head`` is every history's head (the package's alone when the host is not managed)."""
        state, _adopted = self._upgrade(revision)
        return state

    def downgrade(self, revision: str = "-1") -> RevisionState:
        """Downgrade to ``revision`` (``base`` removes every table) under the migration lock.

        With a host history a relative ``-N`` steps back the package's history
        (``ai_secretary_schema@-N``); name the host's as ``app@-1``."""
        if self.histories.host is not None and revision == "-1":
            from ai_secretary_schema.history import step_back

            revision = step_back(self.histories, host=False)
        elif self.histories.host is not None and revision.startswith("-"):
            revision = f"{PACKAGE_BRANCH}@{revision}"
        return self._run("downgrade", revision)

    def stamp(self, revision: str) -> RevisionState:
        """Record ``revision`` in the version table without running migrations, under the lock."""
        return self._run("stamp", self._target(revision))

    def _target(self, revision: str) -> str:
        """``head`` as Alembic must hear it when there are two histories."""
        host = self.histories.host
        if host is None or revision not in ("head", "heads"):
            return revision
        return "heads" if host.managed else f"{PACKAGE_BRANCH}@head"

    def _upgrade(self, revision: str) -> tuple[RevisionState, str | None]:
        adopted: list[str] = []
        to_head = revision in ("head", "heads")

        def adopt(connection: Connection) -> None:
            from ai_secretary_schema.adoption import adopt, needs_adoption

            unversioned = needs_adoption(connection, self.histories)
            connection.rollback()
            if unversioned:
                adopted.append(adopt(connection, self.histories))

        state = self._run("upgrade", self._target(revision), before=adopt if to_head else None)
        return state, adopted[0] if adopted else None

    def _run(self, action: str, revision: str, *, before: Any = None) -> RevisionState:
        """Run ``action`` to ``revision`` under the migration lock, over one connection."""
        from alembic import command
        from alembic.util import CommandError

        from ai_secretary_schema.history import (
            current_revisions,
            pending_revisions,
            refuse_foreign,
        )

        engine = self.engine
        secrets = [url_password(engine.url)]
        with migration_lock(engine, self.settings), engine.connect() as connection:
            start = current_revisions(connection)
            connection.rollback()
            refuse_foreign(start, self.histories, self.where)
            if before is not None:
                before(connection)
                start = current_revisions(connection)
            connection.commit()
            config = self._config(connection=connection)
            try:
                getattr(command, action)(config, revision)
            except MigrationBlockedError:
                # Raised by the DDL guard in env.py; it already names the blocked revision,
                # the blockers and the revision the database was left at.
                if connection.in_transaction():
                    connection.rollback()
                raise
            except Exception as exc:
                if connection.in_transaction():
                    connection.rollback()
                reached = current_revisions(connection)
                connection.rollback()
                message = redact_text(str(exc), secrets)
                if isinstance(exc, CommandError):
                    raise MigrationError(
                        f"cannot {action} {self.where} to {revision!r}: {message}",
                        revision=", ".join(reached) or None,
                    ) from None
                if action == "upgrade":
                    pending = pending_revisions(revision, reached, self.histories)
                    failed = pending[0] if pending else None
                else:
                    failed = reached[0] if len(reached) == 1 else None
                raise MigrationError(
                    f"{action} of {self.where} to {revision!r} failed in revision "
                    f"{failed or '?'} ({type(exc).__name__}: {message}); the database was "
                    f"left at revision {', '.join(reached) or 'base'} (it was at "
                    f"{', '.join(start) or 'base'})",
                    revision=", ".join(reached) or None,
                    failed_revision=failed,
                ) from exc
            after = current_revisions(connection)
            connection.rollback()
        return self._state(after)

    def _config(self, **kwargs: Any) -> Config:
        from ai_secretary_schema.alembic_config import make_alembic_config

        return make_alembic_config(
            self.settings, script_location=self.histories, progress=self.progress, **kwargs
        )

    # -- the startup hook ------------------------------------------------------------------

    def run_startup(self, mode: StartupMode | None = None) -> SchemaReport:
        """What an application runs at start.

        ``upgrade`` (default): unless the warm start proves the database unchanged since it
        last passed the full comparison, upgrade to head under the lock (adopting an old
        database), then compare with the models; raises :class:`SchemaValidationError` when
        they differ. ``validate``: never alters the database; raises when it is behind head or
        differs. ``off``: does nothing, not even connect.
        """
        mode = mode or self.settings.schema_startup
        if mode not in STARTUP_MODES:
            raise ValueError(
                f"unknown startup mode {mode!r}; use one of {', '.join(STARTUP_MODES)}"
            )
        if mode == "off":
            logger.info("SCHEMA_STARTUP=off: the database schema is not checked")
            return SchemaReport(dialect=self.settings.database.type.value, skipped=True)
        warm = self._warm_start()
        fast = self._warm_report(warm)
        if fast is not None:
            return fast
        adopted = None
        if mode == "upgrade":
            _state, adopted = self._upgrade("head")
        report = replace(self._validate_and_remember(warm), adopted_at=adopted)
        if report.ok:
            logger.info("%s", report.to_text())
            return report
        what = (
            "the database was upgraded to head but is not what the models describe"
            if mode == "upgrade"
            else "SCHEMA_STARTUP=validate: the database is not what this version of the "
            "application expects"
        )
        raise SchemaValidationError(f"{what}:\n{report.to_text()}", report=report)

    def _compared_host(self) -> HostHistory | None:
        host = self.histories.host
        return host if host is not None and host.managed else None

    def _warm_tables(self) -> tuple[str, ...]:
        """The tables the warm start fingerprints: the package's, and the managed host's."""
        host = self._compared_host()
        extra = () if host is None or host.metadata is None else tuple(host.metadata.tables)
        return PACKAGE_TABLES + tuple(sorted(set(extra) - set(PACKAGE_TABLES)))

    def _warm_start(self) -> WarmStart:
        host = self._compared_host()
        if host is None:
            return WarmStart(self.script_location, self._warm_tables())
        # The host's models live in its own modules: the key covers their DDL, so a changed
        # model is a miss even before a revision for it exists.
        return WarmStart(
            self.script_location,
            self._warm_tables(),
            extra_roots=(host.versions,),
            extra_key=metadata_digest(host.metadata, self.engine.dialect),
        )

    def _warm_report(self, warm: WarmStart) -> SchemaReport | None:
        if self.metadata is not None:
            return None  # the warm cache remembers comparisons with the package's models only
        with self.engine.connect() as connection:
            check = warm.check(connection)
            dialect = connection.dialect.name
        if not check.hit:
            logger.debug("warm start missed (%s): taking the full path", check.reason)
            return None
        logger.debug("warm start: the database is unchanged since it last matched the models")
        return SchemaReport(
            dialect=dialect, current=check.current, heads=check.heads, fast_path=True
        )

    def _validate_and_remember(self, warm: WarmStart) -> SchemaReport:
        """The full comparison; a database that passes it has its fingerprint remembered,
        provided nothing changed the catalog while it was being compared."""
        from ai_secretary_schema.history import current_revisions
        from ai_secretary_schema.schema_report import build_schema_report

        tables = self._warm_tables()
        with self.engine.connect() as connection:
            before = _fingerprint_or_none(connection, tables)
            report = build_schema_report(connection, self.histories, metadata=self.metadata)
            recorded = current_revisions(connection)
            connection.rollback()
            after = _fingerprint_or_none(connection, tables)
        if report.ok and self.metadata is None and before is not None and before == after:
            warm.remember(before, report.heads, report.current, recorded=recorded)
        return report

    # -- the drift check -------------------------------------------------------------------

    def check(self) -> SchemaReport:
        """Upgrade a scratch database to head and compare it with the models, and lint every
        revision (the CI gate: a failing lint finding makes the report not ``ok``).

        The scratch database is a SQLite file in a temporary directory when the settings' URL
        is SQLite, else a database ``ais_check_<random>`` created on the URL's PostgreSQL server
        (its role needs ``CREATEDB``; the URL's own database is never changed) and dropped
        afterwards. More than one head is reported as a difference without migrating.
        """
        from ai_secretary_schema.history import branch_heads

        findings = self.lint().findings
        diverged = [
            (name, found)
            for name, found, most in (
                (
                    "the" if self.histories.host is None else "the package's",
                    branch_heads(self.histories, host=False),
                    1,
                ),
                ("the application's", branch_heads(self.histories, host=True), 0),
            )
            if len(found) != 1 and not (most == 0 and not found)
        ]
        if diverged:
            return SchemaReport(
                dialect="none",
                heads=self.heads(),
                diffs=tuple(
                    f"multiple_heads: {name} migration history has {len(found)} heads "
                    f"({', '.join(found) or 'none'}); merge them with `alembic merge heads`"
                    for name, found in diverged
                ),
                lint=findings,
            )
        with self._scratch_engine() as engine:
            scratch = Migrator(
                self.settings,
                engine,
                script_location=self.histories,
                metadata=self.metadata,
            )
            scratch.upgrade()
            return replace(scratch.validate(), lint=findings)

    @contextmanager
    def _scratch_engine(self) -> Iterator[Engine]:
        url = self.settings.url
        if url.get_backend_name() == "sqlite":
            with tempfile.TemporaryDirectory(prefix="ais-check-") as directory:
                scratch = url.set(database=str(Path(directory) / "check.db"), query={})
                engine = create_engine(scratch, self.settings, pooled=False)
                try:
                    yield engine
                finally:
                    engine.dispose()
            return
        name = f"ais_check_{uuid.uuid4().hex[:12]}"
        with self.engine.connect() as admin:
            admin = admin.execution_options(isolation_level="AUTOCOMMIT")
            try:
                admin.exec_driver_sql(f'CREATE DATABASE "{name}"')
            except DBAPIError as exc:
                raise MigrationError(
                    f"check needs a scratch database on {redact_url(url)} but cannot create one "
                    f"({redact_text(str(exc.orig), [url_password(url)]).strip()}); grant the "
                    "role CREATEDB, or run `ai-secretary-schema check` without --url (SQLite)"
                ) from None
            logger.info("check: created the scratch database %s", name)
            engine = create_engine(url.set(database=name), self.settings, pooled=False)
            try:
                yield engine
            finally:
                engine.dispose()
                admin.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fingerprint_or_none(connection: Connection, tables: tuple[str, ...]) -> str | None:
    try:
        return catalog_fingerprint(connection, tables)
    except (DBAPIError, NotImplementedError):
        connection.rollback()
        return None
    finally:
        if connection.in_transaction():
            connection.rollback()


# -- the module functions: one call, one database ------------------------------------------


def _migrator(url: str | URL | None, script_location: ScriptLocation, **settings: Any) -> Migrator:
    return Migrator(
        SchemaSettings.resolve(database_url=url, **settings), script_location=script_location
    )


def upgrade(
    url: str | URL | None = None,
    revision: str = "head",
    *,
    script_location: ScriptLocation = None,
    lock_timeout: float | None = None,
) -> RevisionState:
    """Upgrade the database at ``url`` (default: ``DATABASE_URL``) to ``revision``, under the
    migration lock; to head, a database made before migrations is adopted first.

    ``lock_timeout``: seconds to wait for another process's migration (default
    ``SCHEMA_LOCK_TIMEOUT``), then :class:`MigrationLockTimeout`.
    """
    with _migrator(url, script_location, schema_lock_timeout=lock_timeout) as migrator:
        return migrator.upgrade(revision)


def downgrade(
    url: str | URL | None = None,
    revision: str = "-1",
    *,
    script_location: ScriptLocation = None,
    lock_timeout: float | None = None,
) -> RevisionState:
    """Downgrade the database at ``url`` to ``revision`` (``base`` removes every table)."""
    with _migrator(url, script_location, schema_lock_timeout=lock_timeout) as migrator:
        return migrator.downgrade(revision)


def stamp(
    url: str | URL | None = None,
    revision: str = "head",
    *,
    script_location: ScriptLocation = None,
) -> RevisionState:
    """Record ``revision`` in the database at ``url`` without running migrations."""
    with _migrator(url, script_location) as migrator:
        return migrator.stamp(revision)


def current(
    url: str | URL | None = None, *, script_location: ScriptLocation = None
) -> RevisionState:
    """Where the database at ``url`` stands."""
    with _migrator(url, script_location) as migrator:
        return migrator.current()


def validate(
    url: str | URL | None = None, *, script_location: ScriptLocation = None
) -> SchemaReport:
    """Compare the database at ``url`` with the models and the head revision; read-only."""
    with _migrator(url, script_location) as migrator:
        return migrator.validate()


def offline_sql(
    url: str | URL | None = None,
    revision: str = "head",
    *,
    script_location: ScriptLocation = None,
) -> str:
    """The SQL that upgrades an empty database of ``url``'s dialect to ``revision``."""
    with _migrator(url, script_location) as migrator:
        return migrator.sql(revision)


def check(
    url: str | URL | None = None,
    *,
    script_location: ScriptLocation = None,
    metadata: MetaData | None = None,
    host: HostHistory | None = None,
) -> SchemaReport:
    """Upgrade a scratch database to head and compare it with the models (the CI drift check).

    Without ``url`` the scratch database is a temporary SQLite file (no server needed, and
    ``DATABASE_URL`` is not read); with a PostgreSQL ``url``, a scratch database on that server
    (see :meth:`Migrator.check`). ``metadata`` replaces the models; ``host`` adds the host
    application's history (and models). ``ok`` says whether they agree.
    """
    settings = SchemaSettings.resolve(database_url=url if url is not None else "sqlite://")
    with Migrator(
        settings, script_location=script_location, metadata=metadata, host=host
    ) as migrator:
        return migrator.check()
