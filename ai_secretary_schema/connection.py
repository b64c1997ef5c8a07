"""Connect to the configured database, retrying what is worth retrying and saying why not.

:class:`SmartConnectionManager` resolves the URL (argument → ``DATABASE_URL`` → the default
``sqlite:///ai_secretary.db``, through :meth:`SchemaSettings.resolve`), parses it with
:class:`~ai_secretary_schema.url.DatabaseURLParser` and hands it to the connector of its family.
Every connection is verified with a real round trip (``SELECT 1``).

What happens when something is wrong:

=============================================  ===========================================
Situation                                      Outcome
=============================================  ===========================================
Invalid or unsupported URL                     Logged (redacted, with an example); falls
                                               back to ``sqlite:///ai_secretary.db`` with
                                               ``fallback_used=True``. Strict mode
                                               (``strict=True``, ``DATABASE_STRICT=1``):
                                               :class:`DatabaseConfigError` is raised.
Valid URL, driver not installed                Not a fallback (the data would split):
                                               ``success=False``, ``driver_missing``;
                                               strict mode raises
                                               :class:`DriverMissingError`.
PostgreSQL refused, timed out, too many        Retried with exponential backoff and jitter
clients, starting up                           inside ``DATABASE_CONNECT_DEADLINE``; then
                                               ``success=False``, ``unreachable``/``timeout``.
Authentication failed (SQLSTATE class 28,      At once, no retry: ``success=False``,
unknown or NOLOGIN role), database missing     ``auth_failed``/``database_missing``.
SQLite directory cannot be created/opened      ``success=False``, ``unreachable``.
=============================================  ===========================================

:meth:`SmartConnectionManager.connect` returns the :class:`ConnectionResult` for connection
failures rather than raising, so a caller such as a health check can report it;
:meth:`ConnectionResult.raise_for_error` (or :meth:`SmartConnectionManager.connect_or_raise`)
turns a failure into :class:`DatabaseConnectionError`. No string this module produces (results,
log lines, exceptions) contains a password: URLs go through :func:`redact_url`, driver messages
through :func:`redact_text` with the URL's password as a secret.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError, NoSuchModuleError

from ai_secretary_schema.engine import create_engine, sqlite_file_path
from ai_secretary_schema.errors import ConnectionErrorKind, DatabaseConnectionError
from ai_secretary_schema.rate_limit import ErrorRateLimiter, log_limited
from ai_secretary_schema.redaction import redact_text, redact_url
from ai_secretary_schema.settings import DEFAULT_DATABASE_URL, SchemaSettings
from ai_secretary_schema.url import (
    DRIVER_INSTALL_HINTS,
    DatabaseConfig,
    DatabaseType,
    DatabaseURLParser,
    config_error,
)

logger = logging.getLogger(__name__)

#: Shared by every manager of the process: an outage that every worker thread runs into writes
#: a handful of lines a minute (per failure kind and database), then says how many it dropped.
LOG_LIMITER = ErrorRateLimiter(max_errors_per_minute=5)

Kind = ConnectionErrorKind


@dataclass(frozen=True)
class ConnectionResult:
    """The outcome of :meth:`SmartConnectionManager.connect`.

    ``connection_string`` is always redacted. On a fallback, ``success`` says whether the SQLite
    fallback worked while ``error_kind`` and ``error_message`` say why the configured URL was not
    used.
    """

    success: bool
    database_type: DatabaseType
    connection_string: str
    engine: Engine | None
    error_message: str | None
    fallback_used: bool = False
    error_kind: ConnectionErrorKind | None = None
    #: Connection attempts made (0 when the URL was never tried).
    attempts: int = 0
    driver: str | None = None
    #: Seconds spent connecting, retries included.
    elapsed: float = 0.0

    def __repr__(self) -> str:
        engine = "None" if self.engine is None else f"<Engine {self.engine.dialect.name}>"
        return (
            f"ConnectionResult(success={self.success!r}, database_type={self.database_type!r}, "
            f"connection_string={redact_url(self.connection_string)!r}, engine={engine}, "
            f"error_message={self.error_message!r}, fallback_used={self.fallback_used!r}, "
            f"error_kind={self.error_kind!r}, attempts={self.attempts!r}, "
            f"driver={self.driver!r}, elapsed={self.elapsed:.3f})"
        )

    def raise_for_error(self) -> ConnectionResult:
        """Return ``self`` when connected, else raise :class:`DatabaseConnectionError`."""
        if self.success:
            return self
        raise DatabaseConnectionError(
            self.error_message or "could not connect to the database",
            kind=self.error_kind or Kind.UNREACHABLE,
            url=self.connection_string,
            attempts=self.attempts,
        )


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for transient connection failures.

    The delay before retry ``n`` (1-based) is ``min(max_delay, initial_delay * multiplier **
    (n - 1))`` scaled by a random factor in ``[1 - jitter, 1]``. No retry starts once its delay
    would end past the deadline, so a run of instant failures stops within the deadline (a
    single attempt may add up to one connect timeout).
    """

    initial_delay: float = 0.25
    multiplier: float = 2.0
    max_delay: float = 4.0
    jitter: float = 0.5

    def base_delay(self, retry: int) -> float:
        """The delay before retry ``retry`` (1-based), without jitter."""
        return float(min(self.max_delay, self.initial_delay * self.multiplier ** (retry - 1)))

    def delay(self, retry: int, rng: random.Random) -> float:
        """The delay before retry ``retry`` (1-based), with jitter from ``rng``."""
        return self.base_delay(retry) * (1.0 - self.jitter * rng.random())

    def planned_attempts(self, deadline: float, *, scale: float = 1.0) -> int:
        """Attempts made within ``deadline`` if each failed instantly, delays scaled by ``scale``.

        ``scale=1`` (no jitter) gives the fewest attempts, ``scale=1 - jitter`` the most.
        """
        attempts, elapsed = 1, 0.0
        while elapsed + self.base_delay(attempts) * scale <= deadline:
            elapsed += self.base_delay(attempts) * scale
            attempts += 1
        return attempts


@dataclass(frozen=True)
class FailureClass:
    """What a driver exception means: its kind, whether to retry, the SQLSTATE if known."""

    kind: ConnectionErrorKind
    transient: bool
    sqlstate: str | None = None


# libpq reports connection-time failures without a SQLSTATE (psycopg2 ``pgcode`` and psycopg
# ``sqlstate`` are None), so the server's message text is matched; each rule names the SQLSTATE
# the server used. Every substring of a rule must occur (lower-cased) in the message.
_MESSAGE_RULES: tuple[tuple[tuple[str, ...], FailureClass], ...] = (
    (("password authentication failed",), FailureClass(Kind.AUTH_FAILED, False, "28P01")),
    (("is not permitted to log in",), FailureClass(Kind.AUTH_FAILED, False, "28000")),
    (("no pg_hba.conf entry",), FailureClass(Kind.AUTH_FAILED, False, "28000")),
    (('role "', '" does not exist'), FailureClass(Kind.AUTH_FAILED, False, "28000")),
    (('database "', '" does not exist'), FailureClass(Kind.DATABASE_MISSING, False, "3D000")),
    (("too many clients",), FailureClass(Kind.UNREACHABLE, True, "53300")),
    (("too many connections",), FailureClass(Kind.UNREACHABLE, True, "53300")),
    (("remaining connection slots are reserved",), FailureClass(Kind.UNREACHABLE, True, "53300")),
    (("the database system is starting up",), FailureClass(Kind.UNREACHABLE, True, "57P03")),
    (("the database system is shutting down",), FailureClass(Kind.UNREACHABLE, True, "57P03")),
    (("the database system is in recovery mode",), FailureClass(Kind.UNREACHABLE, True, "57P03")),
    (("timeout expired",), FailureClass(Kind.TIMEOUT, True)),
    (("timed out",), FailureClass(Kind.TIMEOUT, True)),
    (("connection refused",), FailureClass(Kind.UNREACHABLE, True)),
    (("could not translate host name",), FailureClass(Kind.UNREACHABLE, True)),
    (("failed to resolve host",), FailureClass(Kind.UNREACHABLE, True)),
    (("no route to host",), FailureClass(Kind.UNREACHABLE, True)),
    (("network is unreachable",), FailureClass(Kind.UNREACHABLE, True)),
    (("server closed the connection unexpectedly",), FailureClass(Kind.UNREACHABLE, True)),
    # A unix socket that is not there (yet): the server is down or still starting.
    (("no such file or directory",), FailureClass(Kind.UNREACHABLE, True)),
)
_TRANSIENT_SQLSTATES = frozenset({"53300", "57P03"})


def classify_connection_error(error: BaseException) -> FailureClass:
    """Classify a connection failure from psycopg2/psycopg (raw or wrapped by SQLAlchemy)."""
    original = error.orig if isinstance(error, DBAPIError) else error
    code = getattr(original, "pgcode", None) or getattr(original, "sqlstate", None)
    if isinstance(code, str) and code:
        if code.startswith("28"):
            return FailureClass(Kind.AUTH_FAILED, False, code)
        if code == "3D000":
            return FailureClass(Kind.DATABASE_MISSING, False, code)
        if code in _TRANSIENT_SQLSTATES or code.startswith("08"):
            return FailureClass(Kind.UNREACHABLE, True, code)
    message = str(original).lower()
    for needles, failure in _MESSAGE_RULES:
        if all(needle in message for needle in needles):
            return failure
    # Anything else (SSL required but refused, a protocol error …) will not cure itself.
    return FailureClass(Kind.UNREACHABLE, False, code if isinstance(code, str) else None)


def _detail(error: BaseException, url: URL) -> str:
    """The driver's message on one line, with the URL's password scrubbed."""
    original = error.orig if isinstance(error, DBAPIError) else error
    text = " ".join(str(original).split())
    return redact_text(text, secrets=[] if url.password is None else [str(url.password)])


def _where(url: URL) -> str:
    socket = url.query.get("host")
    if url.host:
        host = f"[{url.host}]" if ":" in url.host else url.host
        return f"{host}:{url.port or 5432}"
    if socket:
        return f"socket directory {socket}"
    return "the default unix socket"


class Connector(Protocol):
    """Connects one database family; returns a result, never raises for a connection failure."""

    def connect(self, config: DatabaseConfig, settings: SchemaSettings) -> ConnectionResult: ...


class PostgreSQLConnector:
    """A pooled PostgreSQL engine, verified with ``SELECT 1``, retried inside a deadline."""

    def __init__(self, retry: RetryPolicy | None = None, *, rng: random.Random | None = None):
        self.retry = retry or RetryPolicy()
        self.rng = rng or random.Random()

    def connect(self, config: DatabaseConfig, settings: SchemaSettings) -> ConnectionResult:
        url = config.url
        shown = config.redacted
        start = time.monotonic()

        def result(
            *, engine: Engine | None, kind: ConnectionErrorKind | None, message: str | None, n: int
        ) -> ConnectionResult:
            return ConnectionResult(
                success=engine is not None,
                database_type=DatabaseType.POSTGRESQL,
                connection_string=shown,
                engine=engine,
                error_message=message,
                error_kind=kind,
                attempts=n,
                driver=config.driver,
                elapsed=time.monotonic() - start,
            )

        try:
            engine = create_engine(url, settings, pooled=True)
        except (ImportError, NoSuchModuleError):
            hint = DRIVER_INSTALL_HINTS.get(config.driver, f"install {config.driver}")
            message = f"The PostgreSQL driver {config.driver!r} cannot be imported: {hint}."
            return result(engine=None, kind=Kind.DRIVER_MISSING, message=message, n=0)
        deadline = settings.database_connect_deadline
        attempt = 0
        while True:
            attempt += 1
            try:
                with engine.connect() as connection:
                    connection.execute(sa.text("SELECT 1"))
            except DBAPIError as error:
                failure = classify_connection_error(error)
                detail = _detail(error, url)
                elapsed = time.monotonic() - start
                delay = self.retry.delay(attempt, self.rng)
                if failure.transient and elapsed + delay <= deadline:
                    log_limited(
                        logger,
                        LOG_LIMITER,
                        _outage_key(shown),
                        logging.WARNING,
                        "PostgreSQL at %s: attempt %d failed (%s: %s); retrying in %.2f s",
                        _where(url),
                        attempt,
                        failure.kind.value,
                        detail,
                        delay,
                    )
                    time.sleep(delay)
                    continue
                engine.dispose()
                message = _failure_message(failure, url, detail, attempt, elapsed, deadline)
                return result(engine=None, kind=failure.kind, message=message, n=attempt)
            return result(engine=engine, kind=None, message=None, n=attempt)


def _failure_message(
    failure: FailureClass, url: URL, detail: str, attempts: int, elapsed: float, deadline: float
) -> str:
    where = _where(url)
    tried = f"after {attempts} attempt(s) in {elapsed:.1f} s (deadline {deadline:g} s)"
    if failure.kind is Kind.AUTH_FAILED:
        problem = (
            f"PostgreSQL at {where} refused the login of role {url.username!r}. Check the user "
            "name and password in DATABASE_URL, that the role exists and may log in (CREATE "
            "ROLE … LOGIN or ALTER ROLE … LOGIN), and the server's pg_hba.conf."
        )
    elif failure.kind is Kind.DATABASE_MISSING:
        problem = (
            f"The database {url.database!r} does not exist on PostgreSQL at {where}. Create it "
            f"(createdb {url.database}) or fix the database name in DATABASE_URL."
        )
    elif failure.kind is Kind.TIMEOUT:
        problem = (
            f"Connecting to PostgreSQL at {where} timed out {tried}. Check that the server is "
            "up and that no firewall drops the connection; raise DATABASE_CONNECT_TIMEOUT or "
            "DATABASE_CONNECT_DEADLINE for a slow network."
        )
    elif failure.transient:
        problem = (
            f"Could not reach PostgreSQL at {where} {tried}. Check that the server is running "
            "and accepts connections there, and the host and port in DATABASE_URL."
        )
    else:
        problem = (
            f"Could not connect to PostgreSQL at {where}. Check the connection options "
            "(sslmode, host, port) in DATABASE_URL and the server's configuration."
        )
    return f"{problem} The driver said: {detail}"


class SQLiteConnector:
    """A SQLite engine: parent directory and file created, pragmas set, ``SELECT 1`` verified."""

    def connect(self, config: DatabaseConfig, settings: SchemaSettings) -> ConnectionResult:
        url = config.url
        start = time.monotonic()
        engine: Engine | None = None
        message: str | None = None
        try:
            engine = create_engine(url, settings, pooled=True)
            with engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except OSError as error:
            message = (
                f"Cannot create the directory of the SQLite database {config.redacted!r}: "
                f"{error.strerror or error}. Check the path in DATABASE_URL and its permissions."
            )
        except DBAPIError as error:
            message = (
                f"Cannot open the SQLite database {config.redacted!r}. Check the path in "
                f"DATABASE_URL and that the directory is writable. The driver said: "
                f"{_detail(error, url)}"
            )
        if message is not None and engine is not None:
            engine.dispose()
            engine = None
        return ConnectionResult(
            success=message is None,
            database_type=DatabaseType.SQLITE,
            connection_string=config.redacted,
            engine=engine,
            error_message=message,
            error_kind=None if message is None else Kind.UNREACHABLE,
            attempts=1,
            driver=config.driver,
            elapsed=time.monotonic() - start,
        )


def _default_file() -> Path:
    path = sqlite_file_path(make_url(DEFAULT_DATABASE_URL))
    assert path is not None
    return path.resolve()


def _outage_key(redacted_url: str) -> str:
    # Retries and the final failure of one database are one outage: one rate-limit key, so a
    # process starting during it writes a handful of lines, not a handful per kind.
    return f"outage:{redacted_url}"


_connected: set[tuple[int, str]] = set()
_connected_lock = threading.Lock()


def _first_connect(redacted_url: str) -> bool:
    """True the first time this process connects to this database: "Connected to" is news
    once; every later engine of the same process (a second app, a CLI step) says it at DEBUG."""
    key = (os.getpid(), redacted_url)
    with _connected_lock:
        if key in _connected:
            return False
        _connected.add(key)
        return True


def _log_default_file(settings: SchemaSettings) -> None:
    """Say which file a connection without a configured URL uses: a blank secret (an empty
    ``DATABASE_URL``) must not go unnoticed, an unset one is worth one line."""
    source = settings.sources.get("database_url", "default")
    if source.endswith("(empty)"):
        where = "app.config" if source.startswith("app.config") else "the environment"
        logger.warning(
            "DATABASE_URL is set but empty in %s; using the default SQLite file %s. Set it to "
            "the database's URL (or unset it to use that file on purpose).",
            where,
            _default_file(),
        )
    else:
        logger.info("DATABASE_URL is not set; using the default SQLite file %s", _default_file())


class SmartConnectionManager:
    """Connect to the configured database; fall back to SQLite only for an invalid URL, and
    say so.

    ``settings`` defaults to :meth:`SchemaSettings.resolve` at each :meth:`connect` (so the
    environment is read then); the ``url`` and ``strict`` arguments of :meth:`connect` override
    it. The URL is parsed once, by the settings (:attr:`SchemaSettings.database`). ``parser``
    (for the fallback's URL and the design's ``manager.parser``) and ``retry`` are there for
    tests and special deployments.
    """

    def __init__(
        self,
        settings: SchemaSettings | None = None,
        parser: DatabaseURLParser | None = None,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.parser = parser or DatabaseURLParser()
        self._own_parser = parser is not None
        self.connectors: dict[DatabaseType, Connector] = {
            DatabaseType.POSTGRESQL: PostgreSQLConnector(retry),
            DatabaseType.SQLITE: SQLiteConnector(),
        }

    def connect(
        self, url: str | URL | None = None, *, strict: bool | None = None
    ) -> ConnectionResult:
        """Connect to ``url`` (else ``DATABASE_URL``, else ``sqlite:///ai_secretary.db``).

        Raises :class:`DatabaseConfigError` only in strict mode, for an invalid URL; connection
        failures come back as a result with ``success=False`` (see the module's table).
        """
        if isinstance(url, str) and not url.strip():
            url = None  # the design: an empty URL means the default file, as an unset one does
        base = self.settings if self.settings is not None else SchemaSettings.resolve()
        settings = base.override(database_url=url, database_strict=strict)
        if settings.database_url is None:
            _log_default_file(settings)
        # A parser of the caller's (a test simulating a missing driver) reads the URL itself.
        config = (
            self.parser.parse_url(settings.database_url or DEFAULT_DATABASE_URL)
            if self._own_parser
            else settings.database
        )
        if not config.is_valid:
            if settings.database_strict:
                raise config_error(config)
            if config.error_kind is Kind.DRIVER_MISSING:
                logger.error("Database driver missing, not connecting: %s", config.error_message)
                return ConnectionResult(
                    success=False,
                    database_type=config.type,
                    connection_string=config.redacted,
                    engine=None,
                    error_message=config.error_message,
                    error_kind=Kind.DRIVER_MISSING,
                    driver=config.driver or None,
                )
            return self._fallback(config, settings)
        result = self.connectors[config.type].connect(config, settings)
        self._log(result)
        return result

    def connect_or_raise(
        self, url: str | URL | None = None, *, strict: bool | None = None
    ) -> ConnectionResult:
        """:meth:`connect`, raising :class:`DatabaseConnectionError` when it did not succeed."""
        return self.connect(url, strict=strict).raise_for_error()

    def _fallback(self, invalid: DatabaseConfig, settings: SchemaSettings) -> ConnectionResult:
        log_limited(
            logger,
            LOG_LIMITER,
            f"fallback:{invalid.connection_string}",
            logging.WARNING,
            "The configured database URL %s is invalid; falling back to the SQLite file %s "
            "(set DATABASE_STRICT=1 to make this an error): %s",
            invalid.connection_string or "''",
            _default_file(),
            invalid.error_message,
        )
        fallback = self.parser.parse_url(DEFAULT_DATABASE_URL)
        result = self.connectors[DatabaseType.SQLITE].connect(fallback, settings)
        self._log(result)
        return replace(
            result,
            fallback_used=True,
            error_kind=result.error_kind or invalid.error_kind,
            error_message=result.error_message or invalid.error_message,
        )

    @staticmethod
    def _log(result: ConnectionResult) -> None:
        if result.success:
            first = _first_connect(result.connection_string)
            logger.log(
                logging.INFO if first else logging.DEBUG,
                "Connected to %s (driver %s, %d attempt(s), %.2f s)",
                result.connection_string,
                result.driver,
                result.attempts,
                result.elapsed,
            )
        else:
            log_limited(
                logger,
                LOG_LIMITER,
                _outage_key(result.connection_string),
                logging.ERROR,
                "Database connection failed (%s): %s",
                result.error_kind.value if result.error_kind else "unknown",
                result.error_message,
            )
