"""The package's migrations as a Python API: upgrade, downgrade, current, history, heads, SQL.

Each function takes the database URL (``None``: ``DATABASE_URL``, else
``sqlite:///ai_secretary.db``), parses it once with :class:`DatabaseURLParser` and raises a
typed error instead of exiting; the CLI turns those into messages and exit codes.

Connections are made by :class:`~ai_secretary_schema.connection.SmartConnectionManager` (strict:
no fallback), so an unreachable server, a refused login or a missing database comes out as
:class:`DatabaseConnectionError` with its ``kind`` and a redacted message. :func:`upgrade` and
:func:`downgrade` hold the migration lock (:mod:`ai_secretary_schema.lock`) for the whole run,
so any number of processes may call them at once.
"""

from __future__ import annotations

import io
import logging
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, MetaData
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from ai_secretary_schema.alembic_config import make_alembic_config, migrations_directory
from ai_secretary_schema.errors import MigrationError, MultipleHeadsError
from ai_secretary_schema.lock import migration_lock
from ai_secretary_schema.redaction import redact_text, redact_url, url_password
from ai_secretary_schema.settings import SchemaSettings
from ai_secretary_schema.url import DatabaseURLParser

if TYPE_CHECKING:
    from ai_secretary_schema.schema_report import SchemaReport

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RevisionState:
    """Where a database stands in the migration history."""

    url: str  #: redacted
    current: tuple[str, ...]
    heads: tuple[str, ...]

    @property
    def at_head(self) -> bool:
        return bool(self.current) and set(self.current) == set(self.heads)

    def describe(self) -> str:
        where = ", ".join(self.current) if self.current else "base (no revision applied)"
        status = "at head" if self.at_head else f"head is {', '.join(self.heads) or 'none'}"
        return f"{self.url}: revision {where} ({status})"


def resolve_url(url: str | URL | None, settings: SchemaSettings | None = None) -> URL:
    """Parse ``url`` (or the configured one) into a normalised URL, raising on bad input."""
    raw = url if url is not None else (settings or SchemaSettings.resolve()).database_url
    if isinstance(raw, URL):
        raw = raw.render_as_string(hide_password=False)
    return DatabaseURLParser().require(raw).url


def script_directory(script_location: str | Path | None = None) -> ScriptDirectory:
    return ScriptDirectory(str(script_location or migrations_directory()))


def heads(script_location: str | Path | None = None) -> tuple[str, ...]:
    """The head revision(s) of the migration history; more than one means it has diverged."""
    return tuple(script_directory(script_location).get_heads())


def single_head(script_location: str | Path | None = None) -> str:
    """The one head revision, or :class:`MultipleHeadsError` when the history has diverged."""
    found = heads(script_location)
    if len(found) != 1:
        raise MultipleHeadsError(
            f"the migration history has {len(found)} heads ({', '.join(found) or 'none'}); "
            "merge them with `alembic merge heads -m 'merge'` so there is exactly one",
            heads=found,
        )
    return found[0]


def history(script_location: str | Path | None = None) -> list[str]:
    """One line per revision, newest first: ``0001 -> 0002 (head), Add performance_alerts.``"""
    lines = []
    for script in script_directory(script_location).walk_revisions():
        marks = " (head)" if script.is_head else ""
        down = script.down_revision or "<base>"
        if not isinstance(down, str):
            down = ", ".join(down)
        lines.append(f"{down} -> {script.revision}{marks}, {script.doc}")
    return lines


def current_revisions(connection: Connection) -> tuple[str, ...]:
    """The revisions recorded in ``alembic_version`` (empty for an unversioned database)."""
    return tuple(MigrationContext.configure(connection).get_current_heads())


@contextmanager
def _connect(url: URL, settings: SchemaSettings | None = None) -> Iterator[Connection]:
    """A connection to ``url`` from the connection manager: classified, redacted errors."""
    # Imported here: the connection manager is only needed once a database is touched.
    from ai_secretary_schema.connection import SmartConnectionManager

    result = SmartConnectionManager(settings).connect_or_raise(url, strict=True)
    engine = result.engine
    assert engine is not None
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def current(
    url: str | URL | None = None, *, script_location: str | Path | None = None
) -> RevisionState:
    """Where the database at ``url`` stands."""
    parsed = resolve_url(url)
    with _connect(parsed) as connection:
        revisions = current_revisions(connection)
    return RevisionState(redact_url(parsed), revisions, heads(script_location))


def failed_step(
    action: str, reached: tuple[str, ...], target: str, script_location: str | Path | None
) -> str | None:
    """The revision that was being applied when an ``action`` towards ``target`` stopped at
    ``reached``: the next one after ``reached`` (upgrade), or ``reached`` itself (downgrade)."""
    if action != "upgrade":
        return reached[0] if len(reached) == 1 else None
    try:
        pending = list(
            script_directory(script_location).iterate_revisions(
                target, reached[0] if len(reached) == 1 else "base"
            )
        )
    except CommandError:
        return None
    return pending[-1].revision if pending else None


def run_on_connection(
    connection: Connection,
    action: str,
    revision: str,
    *,
    script_location: str | Path | None = None,
    url: URL | None = None,
) -> tuple[str, ...]:
    """Run ``action`` (``upgrade``/``downgrade``) to ``revision`` over ``connection``.

    The caller holds the migration lock. Returns the revisions the database is at afterwards;
    a failure raises :class:`MigrationError` naming the revision that failed
    (``failed_revision``) and the one the database was left at (``revision``).
    """
    where = redact_url(url) if url is not None else f"the {connection.dialect.name} database"
    secrets = [url_password(url)] if url is not None else []
    config = make_alembic_config(connection=connection, script_location=script_location)
    before = current_revisions(connection)
    connection.commit()
    try:
        if action == "upgrade":
            command.upgrade(config, revision)
        else:
            command.downgrade(config, revision)
    except Exception as exc:
        if connection.in_transaction():
            connection.rollback()
        reached = current_revisions(connection)
        connection.rollback()
        message = redact_text(str(exc), secrets)
        if isinstance(exc, CommandError):
            raise MigrationError(
                f"cannot {action} {where} to {revision!r}: {message}",
                revision=", ".join(reached) or None,
            ) from None
        failed = failed_step(action, reached, revision, script_location)
        raise MigrationError(
            f"{action} of {where} to {revision!r} failed in revision {failed or '?'} "
            f"({type(exc).__name__}: {message}); the database was left at revision "
            f"{', '.join(reached) or 'base'} (it was at {', '.join(before) or 'base'})",
            revision=", ".join(reached) or None,
            failed_revision=failed,
        ) from exc
    after = current_revisions(connection)
    connection.rollback()
    return after


def _run(
    action: str,
    url: URL,
    revision: str,
    script_location: str | Path | None,
    lock_timeout: float | None,
) -> RevisionState:
    settings = SchemaSettings.resolve()
    timeout = settings.schema_lock_timeout if lock_timeout is None else lock_timeout
    with _connect(url, settings) as connection, migration_lock(url, timeout):
        after = run_on_connection(
            connection, action, revision, script_location=script_location, url=url
        )
    return RevisionState(redact_url(url), after, heads(script_location))


def upgrade(
    url: str | URL | None = None,
    revision: str = "head",
    *,
    script_location: str | Path | None = None,
    lock_timeout: float | None = None,
) -> RevisionState:
    """Upgrade the database at ``url`` to ``revision`` (default: head), under the migration lock.

    ``lock_timeout``: seconds to wait for another process's migration (default
    ``SCHEMA_LOCK_TIMEOUT``), then :class:`MigrationLockTimeout`.
    """
    return _run("upgrade", resolve_url(url), revision, script_location, lock_timeout)


def downgrade(
    url: str | URL | None = None,
    revision: str = "-1",
    *,
    script_location: str | Path | None = None,
    lock_timeout: float | None = None,
) -> RevisionState:
    """Downgrade the database at ``url`` to ``revision`` (``base`` removes every table)."""
    return _run("downgrade", resolve_url(url), revision, script_location, lock_timeout)


def offline_sql(
    url: str | URL | None = None,
    revision: str = "head",
    *,
    script_location: str | Path | None = None,
) -> str:
    """The SQL that upgrades an empty database of ``url``'s dialect to ``revision``."""
    parsed = resolve_url(url)
    output = io.StringIO()
    config = make_alembic_config(parsed, script_location=script_location, output=output)
    try:
        command.upgrade(config, revision, sql=True)
    except CommandError as exc:
        raise MigrationError(f"cannot emit SQL up to {revision!r}: {exc}") from None
    return output.getvalue()


def check(
    url: str | URL | None = None,
    *,
    script_location: str | Path | None = None,
    metadata: MetaData | None = None,
) -> SchemaReport:
    """Upgrade a scratch database to head and compare it with the models (the CI drift check).

    Without ``url`` (or with a SQLite one) the scratch database is a SQLite file in a temporary
    directory: no server needed. With a PostgreSQL ``url`` a scratch database named
    ``ais_check_<random>`` is created on that server (the URL's role needs ``CREATEDB``; the
    URL's own database is only used to issue ``CREATE DATABASE`` and is never changed) and
    dropped afterwards. More than one head is reported as a difference without migrating.
    ``metadata`` replaces the models. The report's ``ok`` says whether they agree.
    """
    from ai_secretary_schema.schema_report import SchemaReport, build_schema_report

    found = heads(script_location)
    if len(found) != 1:
        return SchemaReport(
            dialect="none",
            heads=found,
            diffs=(
                f"multiple_heads: the migration history has {len(found)} heads "
                f"({', '.join(found) or 'none'}); merge them with `alembic merge heads`",
            ),
        )
    with _scratch_database(None if url is None else resolve_url(url)) as scratch:
        upgrade(scratch, script_location=script_location)
        with _connect(scratch) as connection:
            return build_schema_report(connection, script_location, metadata=metadata)


@contextmanager
def _scratch_database(url: URL | None) -> Iterator[URL]:
    if url is None or url.get_backend_name() == "sqlite":
        with tempfile.TemporaryDirectory(prefix="ais-check-") as directory:
            yield resolve_url(f"sqlite:///{Path(directory) / 'check.db'}")
        return
    name = f"ais_check_{uuid.uuid4().hex[:12]}"
    with _connect(url) as admin:
        admin = admin.execution_options(isolation_level="AUTOCOMMIT")
        try:
            admin.exec_driver_sql(f'CREATE DATABASE "{name}"')
        except DBAPIError as exc:
            raise MigrationError(
                f"check needs a scratch database on {redact_url(url)} but cannot create one "
                f"({redact_text(str(exc.orig), [url_password(url)]).strip()}); grant the role "
                "CREATEDB, or run `ai-secretary-schema check` without --url (SQLite)"
            ) from None
        logger.info("check: created the scratch database %s", name)
        try:
            yield url.set(database=name)
        finally:
            admin.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
