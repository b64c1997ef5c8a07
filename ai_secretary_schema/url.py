"""Parse, normalise and validate database URLs, without ever showing a password.

Everything is built on :func:`sqlalchemy.engine.make_url`; no regular expression parses a URL.
What the parser decides, and why:

* **Surrounding whitespace and one level of matching quotes** (``"…"`` or ``'…'``), as values come
  out of ``.env`` files and ``docker --env-file``, are *normalisation*: the value is accepted
  after stripping, so the application reaches the database its operator meant (rejecting it would
  mean a fallback to a local SQLite file and split data), and a warning naming what was stripped
  is logged and kept in :attr:`DatabaseConfig.warnings`.
* **``postgres://``** (Heroku-style, which SQLAlchemy cannot load) becomes ``postgresql://``.
* **Drivers**: an explicit ``+driver`` is kept as given, and must be one this package supports
  (``psycopg2``, ``psycopg``; ``pysqlite``) and be installed. A plain ``postgresql://`` gets
  ``psycopg2`` when it can be imported, else ``psycopg``: SQLAlchemy 2.1 would pick psycopg 3,
  which a production environment with only psycopg2-binary does not have. Whether a driver is
  installed is asked through an injectable ``driver_available`` function, so a test can simulate a
  missing driver without touching the real one.
* **A PostgreSQL URL needs a database name** (``postgresql://`` alone is rejected); a SQLite URL
  has no host (``sqlite://host/x.db`` is a two-slash mistake).

:meth:`DatabaseURLParser.parse_url` never raises for bad input: it returns a
:class:`DatabaseConfig` with ``is_valid=False`` and an ``error_message`` that says what is wrong
and shows a correct example of the family the input looks like. :meth:`DatabaseURLParser.require`
raises :class:`~ai_secretary_schema.errors.DatabaseConfigError` (or
:class:`~ai_secretary_schema.errors.DriverMissingError`) instead, for callers that must never
fall back (migrations, the CLI).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ai_secretary_schema.errors import ConnectionErrorKind, DatabaseConfigError, DriverMissingError
from ai_secretary_schema.redaction import MASK, redact_unparsable, redact_url

logger = logging.getLogger(__name__)

POSTGRESQL_EXAMPLE = "postgresql://user:password@localhost:5432/ai_secretary"
SQLITE_EXAMPLE = "sqlite:///ai_secretary.db"
ANY_EXAMPLE = f"{POSTGRESQL_EXAMPLE} or {SQLITE_EXAMPLE}"

#: Drivers this package supports, per backend, in order of preference for a plain URL.
SUPPORTED_DRIVERS: Mapping[str, tuple[str, ...]] = {
    "postgresql": ("psycopg2", "psycopg"),
    "sqlite": ("pysqlite",),
}
#: The module each supported driver imports, and how to install it.
DRIVER_MODULES: Mapping[str, str] = {
    "psycopg2": "psycopg2",
    "psycopg": "psycopg",
    "pysqlite": "sqlite3",
}
DRIVER_INSTALL_HINTS: Mapping[str, str] = {
    "psycopg2": "pip install psycopg2-binary",
    "psycopg": 'pip install "psycopg[binary]"',
    "pysqlite": "use a Python built with the sqlite3 module",
}
# Backends people put in DATABASE_URL that this package does not support; they look like a
# server URL, so the PostgreSQL example is the helpful one.
_SERVER_BACKENDS = frozenset({"mysql", "mariadb", "mssql", "oracle", "cockroachdb", "redshift"})
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_SECRET_OPTIONS = frozenset({"password", "passwd", "pwd"})
# What make_url raises: ArgumentError for no scheme, ValueError for a non-numeric port.
_PARSE_ERRORS = (ArgumentError, ValueError)


def driver_importable(driver: str) -> bool:
    """Whether the DBAPI module of ``driver`` (a SQLAlchemy driver name) is installed.

    Answered by the import system's finders without importing the module: a process that uses
    psycopg2 must not pay for importing psycopg 3 just to learn that it is there too.
    """
    module = DRIVER_MODULES.get(driver, driver)
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class DatabaseType(str, Enum):
    """The database family a URL names."""

    POSTGRESQL = "postgresql"
    SQLITE = "sqlite"
    UNKNOWN = "unknown"


def _redacted_options(options: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: MASK if key.lower() in _SECRET_OPTIONS else value for key, value in options.items()
    }


@dataclass(frozen=True)
class DatabaseConfig:
    """A parsed database URL: what to connect to and with which driver, or why not.

    ``connection_string`` of a valid config is the normalised URL *with* its password (it is what
    the engine connects with); :meth:`__repr__`, :meth:`__str__` and :attr:`redacted` show it as
    ``***``. Of an invalid config it is the input, redacted.
    """

    type: DatabaseType
    connection_string: str
    driver: str
    options: dict[str, Any] = field(hash=False)
    is_valid: bool
    error_message: str | None
    #: ``invalid_url`` or ``driver_missing`` when ``is_valid`` is false.
    error_kind: ConnectionErrorKind | None = None
    #: A correct URL of the family the input looked like, when it was invalid.
    example: str | None = None
    #: What normalisation changed that the operator should fix (quotes, padding).
    warnings: tuple[str, ...] = ()

    @cached_property
    def url(self) -> URL:
        """The normalised :class:`~sqlalchemy.engine.URL`; raises for an invalid config."""
        if not self.is_valid:
            raise DatabaseConfigError(
                self.error_message or "invalid database URL",
                url=self.connection_string,
                example=self.example,
            )
        return make_url(self.connection_string)

    @property
    def redacted(self) -> str:
        """The URL with its password shown as ``***``."""
        if not self.is_valid:
            return self.connection_string
        return redact_url(self.connection_string)

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return (
            f"DatabaseConfig(type={self.type!r}, connection_string={self.redacted!r}, "
            f"driver={self.driver!r}, options={_redacted_options(self.options)!r}, "
            f"is_valid={self.is_valid!r}, error_message={self.error_message!r}, "
            f"error_kind={self.error_kind!r}, example={self.example!r}, "
            f"warnings={self.warnings!r})"
        )


@dataclass(frozen=True)
class ValidationResult:
    """The verdict of :meth:`DatabaseURLParser.validate_url`."""

    is_valid: bool
    error_message: str | None
    database_type: DatabaseType
    example: str | None = None
    warnings: tuple[str, ...] = field(default=())


class DatabaseURLParser:
    """Turn a ``DATABASE_URL`` value into a :class:`DatabaseConfig`.

    ``driver_available`` answers "can this SQLAlchemy driver (``psycopg2``, ``psycopg``,
    ``pysqlite``) be imported?"; the default imports its module. Tests pass their own to simulate
    an environment without psycopg.
    """

    def __init__(self, driver_available: Callable[[str], bool] = driver_importable) -> None:
        self.driver_available = driver_available

    # -- public API --------------------------------------------------------------------------

    def parse_url(self, url: str | URL | None) -> DatabaseConfig:
        """Parse ``url``; never raises for bad input (``is_valid=False`` + ``error_message``)."""
        if isinstance(url, URL):
            url = url.render_as_string(hide_password=False)
        if url is None or not url.strip():
            return _invalid(
                DatabaseType.UNKNOWN,
                "",
                "No database URL was given (DATABASE_URL is unset or empty).",
                SQLITE_EXAMPLE,
            )
        text, warnings = _strip_wrapping(url)
        for warning in warnings:
            logger.warning("%s", warning)
        try:
            parsed = make_url(text)
        except _PARSE_ERRORS:  # its message may quote part of the password: never kept
            return self._unparsable(text, warnings)
        backend, _, driver = parsed.drivername.partition("+")
        if backend == "postgres":
            backend = "postgresql"
        if backend == "postgresql":
            return self._postgresql(parsed, text, driver, warnings)
        if backend == "sqlite":
            return self._sqlite(parsed, text, driver, warnings)
        family = POSTGRESQL_EXAMPLE if backend in _SERVER_BACKENDS else ANY_EXAMPLE
        return _invalid(
            DatabaseType.UNKNOWN,
            redact_url(text),
            f"Unsupported database URL {redact_url(text)!r}: the scheme {backend!r} is not "
            "PostgreSQL or SQLite, the only databases this package supports.",
            family,
            warnings,
        )

    def detect_database_type(self, url: str | URL | None) -> DatabaseType:
        """The family ``url``'s scheme names; ``UNKNOWN`` when it names none or cannot be parsed.

        Only the scheme is looked at: ``postgresql://`` (no database) is still ``POSTGRESQL``.
        """
        if isinstance(url, URL):
            url = url.render_as_string(hide_password=False)
        if url is None or not url.strip():
            return DatabaseType.UNKNOWN
        text, _ = _strip_wrapping(url)
        try:
            backend = make_url(text).drivername.partition("+")[0]
        except _PARSE_ERRORS:
            return DatabaseType.UNKNOWN
        if backend in ("postgresql", "postgres"):
            return DatabaseType.POSTGRESQL
        if backend == "sqlite":
            return DatabaseType.SQLITE
        return DatabaseType.UNKNOWN

    def validate_url(self, url: str | URL | None) -> ValidationResult:
        """Check format and driver availability (not reachability: that is a connection's job)."""
        config = self.parse_url(url)
        return ValidationResult(
            is_valid=config.is_valid,
            error_message=config.error_message,
            database_type=config.type,
            example=config.example,
            warnings=config.warnings,
        )

    def require(self, url: str | URL | None) -> DatabaseConfig:
        """Like :meth:`parse_url`, but raise instead of returning an invalid config.

        Raises :class:`DriverMissingError` when only the driver is missing, else
        :class:`DatabaseConfigError`; both carry the redacted URL, neither chains the parse error
        (whose text could quote the password).
        """
        config = self.parse_url(url)
        if config.is_valid:
            return config
        raise config_error(config)

    # -- per family ----------------------------------------------------------------------------

    def _unparsable(self, text: str, warnings: tuple[str, ...]) -> DatabaseConfig:
        shown = redact_unparsable(text)
        looks = _looks_like(text)
        if looks is DatabaseType.POSTGRESQL and "://" not in text:
            problem = (
                f"{shown!r} is not a database URL: it has no scheme; a PostgreSQL URL starts "
                "with postgresql://."
            )
        elif "://" in text and ":" in text.split("://", 1)[1].split("/", 1)[0]:
            problem = (
                f"{shown!r} could not be parsed as a database URL: check the port is a number "
                "and URL-encode special characters in the user name and password "
                "(@ as %40, : as %3A, / as %2F, % as %25)."
            )
        else:
            problem = f"{shown!r} could not be parsed as a database URL."
        example = {
            DatabaseType.POSTGRESQL: POSTGRESQL_EXAMPLE,
            DatabaseType.SQLITE: SQLITE_EXAMPLE,
        }.get(looks, ANY_EXAMPLE)
        # The type stays UNKNOWN (the value names no scheme we could read); the example follows
        # the family it looks like.
        return _invalid(DatabaseType.UNKNOWN, shown, problem, example, warnings)

    def _postgresql(
        self, parsed: URL, text: str, driver: str, warnings: tuple[str, ...]
    ) -> DatabaseConfig:
        kind = DatabaseType.POSTGRESQL
        shown = redact_url(text)
        if parsed.host and "@" in parsed.host:
            return _invalid(
                kind,
                shown,
                f"The PostgreSQL URL {shown!r} has an unencoded '@' in its user name or "
                "password: URL-encode special characters there (@ as %40, % as %25, : as %3A, "
                "/ as %2F; urllib.parse.quote(password, safe='')).",
                POSTGRESQL_EXAMPLE,
                warnings,
            )
        if parsed.port is not None and not 0 < parsed.port < 65536:
            return _invalid(
                kind,
                shown,
                f"The PostgreSQL URL {shown!r} has port {parsed.port}, outside 1-65535.",
                POSTGRESQL_EXAMPLE,
                warnings,
            )
        if not parsed.database:
            return _invalid(
                kind,
                shown,
                f"The PostgreSQL URL {shown!r} names no database: add /<database> after the "
                "host and port.",
                POSTGRESQL_EXAMPLE,
                warnings,
            )
        if driver:
            problem = self._driver_problem("postgresql", driver, shown)
            if problem is not None:
                return problem.with_warnings(warnings)
        else:
            available = [d for d in SUPPORTED_DRIVERS["postgresql"] if self.driver_available(d)]
            if not available:
                return _invalid(
                    kind,
                    shown,
                    f"No PostgreSQL driver is installed for {shown!r}: "
                    f"{DRIVER_INSTALL_HINTS['psycopg2']} (or "
                    f"{DRIVER_INSTALL_HINTS['psycopg']} for psycopg 3).",
                    POSTGRESQL_EXAMPLE,
                    warnings,
                    error_kind=ConnectionErrorKind.DRIVER_MISSING,
                    driver="psycopg2",
                )
            driver = available[0]
        normalised = parsed.set(drivername=f"postgresql+{driver}")
        return DatabaseConfig(
            type=kind,
            connection_string=normalised.render_as_string(hide_password=False),
            driver=driver,
            options=dict(parsed.query),
            is_valid=True,
            error_message=None,
            warnings=warnings,
        )

    def _sqlite(
        self, parsed: URL, text: str, driver: str, warnings: tuple[str, ...]
    ) -> DatabaseConfig:
        kind = DatabaseType.SQLITE
        shown = redact_url(text)
        if parsed.host or parsed.username or parsed.port:
            return _invalid(
                kind,
                shown,
                f"The SQLite URL {shown!r} has a user, host or port; SQLite URLs have none: use "
                "sqlite:///relative/path.db (three slashes) or sqlite:////absolute/path.db "
                "(four).",
                SQLITE_EXAMPLE,
                warnings,
            )
        if driver:
            problem = self._driver_problem("sqlite", driver, shown)
            if problem is not None:
                return problem.with_warnings(warnings)
        return DatabaseConfig(
            type=kind,
            connection_string=parsed.render_as_string(hide_password=False),
            driver=driver or "pysqlite",
            options=dict(parsed.query),
            is_valid=True,
            error_message=None,
            warnings=warnings,
        )

    def _driver_problem(self, backend: str, driver: str, shown: str) -> _Problem | None:
        kind = DatabaseType.POSTGRESQL if backend == "postgresql" else DatabaseType.SQLITE
        example = POSTGRESQL_EXAMPLE if kind is DatabaseType.POSTGRESQL else SQLITE_EXAMPLE
        supported = SUPPORTED_DRIVERS[backend]
        if driver not in supported:
            choices = ", ".join(f"{backend}+{d}://" for d in supported)
            return _Problem(
                kind,
                shown,
                f"The driver {driver!r} in {shown!r} is not supported; use one of {choices} "
                f"or a plain {backend}:// to let the package choose.",
                example,
                ConnectionErrorKind.INVALID_URL,
                driver,
            )
        if not self.driver_available(driver):
            alternatives = [d for d in supported if d != driver]
            instead = f", or use {backend}+{alternatives[0]}:// instead" if alternatives else ""
            return _Problem(
                kind,
                shown,
                f"The URL {shown!r} asks for the driver {driver!r}, which is not installed: "
                f"{DRIVER_INSTALL_HINTS[driver]}{instead}.",
                example,
                ConnectionErrorKind.DRIVER_MISSING,
                driver,
            )
        return None


@dataclass(frozen=True)
class _Problem:
    type: DatabaseType
    shown: str
    message: str
    example: str
    kind: ConnectionErrorKind
    driver: str

    def with_warnings(self, warnings: tuple[str, ...]) -> DatabaseConfig:
        return _invalid(
            self.type,
            self.shown,
            self.message,
            self.example,
            warnings,
            error_kind=self.kind,
            driver=self.driver,
        )


def config_error(config: DatabaseConfig) -> DatabaseConfigError:
    """The exception :meth:`DatabaseURLParser.require` raises for an invalid ``config``."""
    message = config.error_message or "invalid database URL"
    if config.error_kind is ConnectionErrorKind.DRIVER_MISSING:
        return DriverMissingError(message, driver=config.driver, url=config.connection_string)
    return DatabaseConfigError(message, url=config.connection_string, example=config.example)


def _invalid(
    type_: DatabaseType,
    shown: str,
    problem: str,
    example: str,
    warnings: tuple[str, ...] = (),
    *,
    error_kind: ConnectionErrorKind = ConnectionErrorKind.INVALID_URL,
    driver: str = "",
) -> DatabaseConfig:
    return DatabaseConfig(
        type=type_,
        connection_string=shown,
        driver=driver,
        options={},
        is_valid=False,
        error_message=f"{problem} Example: {example}",
        error_kind=error_kind,
        example=example,
        warnings=warnings,
    )


def _strip_wrapping(value: str) -> tuple[str, tuple[str, ...]]:
    """Strip surrounding whitespace and one level of matching quotes; say what was stripped."""
    warnings: list[str] = []
    text = value.strip()
    if text != value:
        warnings.append(
            "The database URL was padded with whitespace; it was stripped. Remove the spaces "
            "from DATABASE_URL."
        )
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        quote = text[0]
        text = text[1:-1].strip()
        warnings.append(
            f"The database URL was wrapped in {quote} quotes; they were "
            "stripped. Remove the quotes from DATABASE_URL (or the .env file)."
        )
    return text, tuple(warnings)


def _looks_like(text: str) -> DatabaseType:
    """Which family an unparsable value looks like, to pick the example shown with its error."""
    lowered = text.lower()
    if lowered.startswith(("postgres", "psql")) or "@" in text:
        return DatabaseType.POSTGRESQL
    if lowered.startswith("sqlite") or lowered.endswith(_SQLITE_SUFFIXES):
        return DatabaseType.SQLITE
    head = text.split("/", 1)[0]
    host, sep, port = head.rpartition(":")
    if sep and host and port.isdigit():
        return DatabaseType.POSTGRESQL
    return DatabaseType.UNKNOWN
