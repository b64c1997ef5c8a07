"""The package's exception hierarchy.

Every error the package raises on purpose derives from :class:`SchemaError`, carries the data
a caller needs to react (``kind``, ``revision``, ``report`` …) and has a message written for the
person who must fix the problem. No message ever contains a password: URLs are redacted with
:func:`ai_secretary_schema.redaction.redact_url` before they are put in one.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ai_secretary_schema.ddl_guard import Blocker
    from ai_secretary_schema.schema_report import SchemaReport


class SchemaError(Exception):
    """Base class of every error raised by ai-secretary-schema."""


class DatabaseConfigError(SchemaError, ValueError):
    """A database URL or setting is malformed or unsupported.

    ``url`` is the offending value with its password redacted; ``example`` is a correct value of
    the family the input looked like.
    """

    def __init__(self, message: str, *, url: str | None = None, example: str | None = None):
        super().__init__(message)
        self.url = url
        self.example = example


class DriverMissingError(DatabaseConfigError):
    """The URL asks for a database driver that is not installed."""

    def __init__(self, message: str, *, driver: str, url: str | None = None):
        super().__init__(message, url=url)
        self.driver = driver


class ConnectionErrorKind(str, Enum):
    """Why a connection could not be made; the value is what reports and JSON carry."""

    INVALID_URL = "invalid_url"
    AUTH_FAILED = "auth_failed"
    DATABASE_MISSING = "database_missing"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    DRIVER_MISSING = "driver_missing"


class DatabaseConnectionError(SchemaError):
    """The database could not be reached, or refused us; ``kind`` says which."""

    def __init__(self, message: str, *, kind: ConnectionErrorKind, url: str, attempts: int = 1):
        super().__init__(message)
        self.kind = kind
        self.url = url
        self.attempts = attempts


class MigrationError(SchemaError):
    """A migration failed; the database was left at ``revision`` (the last one that succeeded)."""

    def __init__(
        self, message: str, *, revision: str | None = None, failed_revision: str | None = None
    ):
        super().__init__(message)
        self.revision = revision
        self.failed_revision = failed_revision


class MigrationLockTimeout(MigrationError):
    """Another process held the migration lock for longer than ``timeout`` seconds."""

    def __init__(self, message: str, *, timeout: float):
        super().__init__(message)
        self.timeout = timeout


class MigrationBlockedError(MigrationError):
    """A revision could not get its locks within ``lock_timeout``, every retry included.

    ``failed_revision`` is the revision that was blocked, ``revision`` the one the database was
    left at (its transaction was rolled back whole); ``blockers`` the sessions seen holding the
    locks it waited for (:class:`~ai_secretary_schema.ddl_guard.Blocker`: pid, application,
    state, age, the query with its literals left out); ``attempts`` how many times it ran.
    """

    def __init__(
        self,
        message: str,
        *,
        revision: str | None,
        failed_revision: str,
        blockers: Sequence[Blocker] = (),
        attempts: int = 1,
    ):
        super().__init__(message, revision=revision, failed_revision=failed_revision)
        self.blockers = tuple(blockers)
        self.attempts = attempts


class UnsafeServerError(MigrationError):
    """The server speaks PostgreSQL's protocol, but its advisory locks or its transactional DDL
    cannot be trusted (``server``: CockroachDB, YugabyteDB …), so migrating it is refused.

    ``version`` is its ``version()`` banner. ``SCHEMA_ACCEPT_UNSAFE_SERVER=1`` accepts the risk.
    """

    def __init__(self, message: str, *, server: str, version: str):
        super().__init__(message)
        self.server = server
        self.version = version


class MultipleHeadsError(MigrationError):
    """The migration history has diverged: more than one head revision."""

    def __init__(self, message: str, *, heads: Sequence[str]):
        super().__init__(message)
        self.heads = tuple(heads)


class RevisionRangeError(SchemaError, ValueError):
    """A revision range names a revision the history does not have (a usage error).

    ``revision_range`` is the range as given; ``known`` every revision id, oldest first.
    """

    def __init__(self, message: str, *, revision_range: str, known: Sequence[str]):
        super().__init__(message)
        self.revision_range = revision_range
        self.known = tuple(known)


class SchemaValidationError(SchemaError):
    """The live database is not what the models and the head revision say it should be."""

    def __init__(self, message: str, *, report: SchemaReport):
        super().__init__(message)
        self.report = report


class SchemaDriftError(SchemaValidationError):
    """The models and the migrations disagree (a model changed without a migration)."""


class AdoptionError(SchemaValidationError):
    """An unversioned database matches no revision, so it cannot be adopted; nothing was changed."""


class ExtensionAlreadyRegisteredError(SchemaError, RuntimeError):
    """The Flask extension was initialised twice on the same application."""


class ExtensionNotRegisteredError(SchemaError, RuntimeError):
    """Something needs the Flask extension of an application on which it is not registered."""


class TenantRequiredError(SchemaError, RuntimeError):
    """A tenant-scoped entity was queried or written with no tenant in scope.

    ``entities`` names the tenant-scoped models involved. Set the tenant with
    ``tenant_scope(tenant_id)`` (Flask: ``flask.g.tenant_id``), or work across tenants on
    purpose inside ``cross_tenant()``.
    """

    def __init__(self, message: str, *, entities: Sequence[str]):
        super().__init__(message)
        self.entities = tuple(entities)


class CrossTenantWriteError(SchemaError, ValueError):
    """A row of tenant ``row_tenant_id`` was written inside the scope of tenant ``tenant_id``."""

    def __init__(self, message: str, *, tenant_id: int, row_tenant_id: object):
        super().__init__(message)
        self.tenant_id = tenant_id
        self.row_tenant_id = row_tenant_id


class AppRoleError(SchemaError, ValueError):
    """The application role cannot be created or granted as asked (``role`` names it)."""

    def __init__(self, message: str, *, role: str):
        super().__init__(message)
        self.role = role
