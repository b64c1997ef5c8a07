"""Health of the database, Redis and any service the host application registers.

The design's component 5, made so that no check can hang or crash its caller:

* Every check runs in a daemon thread of its own, inside an application context, and its caller
  waits at most the check's timeout (``HEALTH_CHECK_TIMEOUT``, default 3 s). A check that has not
  answered by then is ``unhealthy``; its thread is left to finish on its own, and until it does,
  callers of the same check share it instead of starting another (so a hung database costs one
  thread, not one per request). The database probe also runs under a PostgreSQL
  ``statement_timeout`` slightly below that timeout, so the server cancels a stuck query itself.
* A check that raises is ``unhealthy`` with the error as its message; nothing propagates. Every
  message is redacted (the database and Redis passwords, and any URL's userinfo).
* Failures are logged through an :class:`~ai_secretary_schema.rate_limit.ErrorRateLimiter`, so an
  outage writes a handful of lines a minute (at most 5 per service and status). One outage is
  logged under one key: a check registered with ``depends_on`` (the schema check depends on the
  database) that fails while the service it depends on is unhealthy reports its status with
  that said, and logs nothing; the lines the extension writes when it starts without a database
  count against the database check's lines (:meth:`ServiceHealthManager.log_outage`).
* The database check of an application whose ``DATABASE_URL`` was invalid, and which therefore
  runs on the SQLite fallback file, is ``fallback`` (overall ``degraded``, HTTP 200) with the
  configured URL (redacted) and the file in its message, however well the file answers.
* :meth:`ServiceHealthManager.start_background_monitoring` runs one daemon thread per
  application (kept in ``app.extensions``, so the application owns it);
  :meth:`ServiceHealthManager.stop` returns within a second. In a forked child (``gunicorn
  --preload``) the monitor is started again if it ran in the parent, and checks that were in
  flight at the fork are forgotten (:mod:`ai_secretary_schema.flask.fork`).

Overall status: ``unhealthy`` when a critical service (the database) is unhealthy; ``degraded``
when any other service is unhealthy, in fallback, degraded or unknown; else ``healthy``
(``disabled`` services, such as Redis without ``REDIS_URL``, do not degrade it).

``/health`` (:func:`create_health_blueprint`) serves the overall and per-service health as JSON,
503 when the database is unhealthy::

    {"status": "healthy" | "degraded" | "unhealthy",
     "checked_at": "2025-01-01T00:00:00+00:00",
     "services": {"database": {"status": "healthy", "critical": true,
                               "last_check": "...", "response_time_ms": 1.2, "error": null},
                  "redis": {...}, ...}}

Where the answer comes from: while the background monitor runs, the results of its latest round
are served as long as every service was checked within ``HEALTH_CHECK_INTERVAL`` +
``HEALTH_CHECK_TIMEOUT`` seconds (a load balancer polling every second then costs the database
nothing). Otherwise (no monitor, or stale results) every check runs on the request,
concurrently, each bounded by its timeout, so the endpoint answers within about
``HEALTH_CHECK_TIMEOUT`` even when PostgreSQL or Redis stops answering.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa
from flask import Blueprint, Flask, Response, jsonify
from sqlalchemy.engine import Connection, Engine

from ai_secretary_schema.errors import ExtensionNotRegisteredError, SchemaError
from ai_secretary_schema.flask import fork
from ai_secretary_schema.flask.cache import FallbackCache
from ai_secretary_schema.flask.context import ApplicationContextManager
from ai_secretary_schema.rate_limit import ErrorRateLimiter, log_limited
from ai_secretary_schema.redaction import redact_text, redact_url, url_password
from ai_secretary_schema.settings import SchemaSettings

if TYPE_CHECKING:
    from ai_secretary_schema.connection import ConnectionResult
    from ai_secretary_schema.flask import SchemaExtensionState

__all__ = [
    "CheckResult",
    "HealthCheck",
    "HealthMonitorAlreadyRunningError",
    "HealthReport",
    "HealthStatus",
    "ServiceHealth",
    "ServiceHealthManager",
    "create_health_blueprint",
    "overall_status",
    "probe_connection",
]

logger = logging.getLogger(__name__)

#: Longest error message a report carries (driver messages can quote whole statements).
MAX_ERROR_LENGTH = 500
#: The PostgreSQL statement_timeout of the database probe, as a fraction of the check's timeout:
#: the server cancels the query (and the connection goes back to the pool clean) just before the
#: caller gives up waiting.
STATEMENT_TIMEOUT_FRACTION = 0.9


@contextmanager
def probe_connection(engine: Engine, timeout: float) -> Iterator[Connection]:
    """A connection for a health probe: on PostgreSQL the server cancels any statement that
    runs past ``STATEMENT_TIMEOUT_FRACTION`` of ``timeout``."""
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # SET LOCAL: ends with this transaction, so the pooled connection keeps its own.
            timeout_ms = max(1, int(timeout * STATEMENT_TIMEOUT_FRACTION * 1000))
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = {timeout_ms}")
        yield connection


class HealthStatus(str, Enum):
    """Status of one service; ``HEALTHY``, ``DEGRADED`` and ``UNHEALTHY`` are also overall ones."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DISABLED = "disabled"
    FALLBACK = "fallback"
    UNKNOWN = "unknown"
    DEGRADED = "degraded"


#: Statuses in which a service may be used (see :meth:`ServiceHealthManager.is_available`).
AVAILABLE = frozenset({HealthStatus.HEALTHY, HealthStatus.DEGRADED})
_DEGRADING = frozenset(
    {HealthStatus.UNHEALTHY, HealthStatus.FALLBACK, HealthStatus.DEGRADED, HealthStatus.UNKNOWN}
)
_FAILING = frozenset({HealthStatus.UNHEALTHY, HealthStatus.FALLBACK})


class HealthMonitorAlreadyRunningError(SchemaError, RuntimeError):
    """Another :class:`ServiceHealthManager` already monitors this application."""


class CheckResult(NamedTuple):
    """What a check may return when a bare status is not enough: a status and a message."""

    status: HealthStatus
    message: str | None = None


#: A health check: returns a status, a :class:`CheckResult`, a bool (True = healthy) or None
#: (= healthy), or raises (= unhealthy).
CheckOutcome = HealthStatus | CheckResult | bool | None
HealthCheck = Callable[[], CheckOutcome]


@dataclass(frozen=True)
class ServiceHealth:
    """The result of one check of one service."""

    service_name: str
    status: HealthStatus
    last_check: datetime
    #: Why the service is not healthy; passwords redacted.
    error_message: str | None = None
    #: Seconds the check took; ``None`` when it did not answer within its timeout.
    response_time: float | None = None
    critical: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "critical": self.critical,
            "last_check": self.last_check.isoformat(),
            "response_time_ms": (
                None if self.response_time is None else round(self.response_time * 1000, 3)
            ),
            "error": self.error_message,
        }


def overall_status(services: Iterable[ServiceHealth]) -> HealthStatus:
    """``UNHEALTHY`` if a critical service is unhealthy, ``DEGRADED`` if any service is failing or
    unknown, else ``HEALTHY``."""
    overall = HealthStatus.HEALTHY
    for health in services:
        if health.critical and health.status is HealthStatus.UNHEALTHY:
            return HealthStatus.UNHEALTHY
        if health.status in _DEGRADING:
            overall = HealthStatus.DEGRADED
    return overall


@dataclass(frozen=True)
class HealthReport:
    """Every service's latest health and the overall status derived from them."""

    status: HealthStatus
    services: Mapping[str, ServiceHealth]
    checked_at: datetime

    @classmethod
    def from_services(cls, services: Iterable[ServiceHealth]) -> HealthReport:
        by_name = {health.service_name: health for health in services}
        return cls(
            status=overall_status(by_name.values()),
            services=by_name,
            checked_at=datetime.now(timezone.utc),
        )

    @property
    def http_status(self) -> int:
        """503 when a critical service is unhealthy, else 200."""
        return 503 if self.status is HealthStatus.UNHEALTHY else 200

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "checked_at": self.checked_at.isoformat(),
            "services": {name: health.to_dict() for name, health in self.services.items()},
        }


@dataclass(frozen=True)
class _Check:
    name: str
    func: HealthCheck
    critical: bool
    timeout: float
    #: The check whose service this one needs (the schema check needs the database).
    depends_on: str | None = None


@dataclass(eq=False)
class _Run:
    """One execution of a check in its own thread, shared by every caller that waits for it."""

    started: float
    done: bool = False
    outcome: CheckOutcome = None
    error: BaseException | None = None
    duration: float | None = None


@dataclass(eq=False)
class _Monitor:
    manager: ServiceHealthManager
    thread: threading.Thread
    stop: threading.Event = field(default_factory=threading.Event)


#: ``app.extensions`` key of the application's background monitor (one per application,
#: whichever manager started it): the application owns it, so it ends with the application.
MONITOR_KEY = "ai_secretary_schema.health_monitor"
# Guards the check-then-start of a monitor; it holds no state of its own.
_monitors_lock = threading.Lock()


def _new_monitors_lock_after_fork() -> None:
    # The parent's may have been held, at the fork, by a thread the child does not have.
    global _monitors_lock
    _monitors_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_new_monitors_lock_after_fork)


def _extension_state(app: Flask) -> SchemaExtensionState | None:
    """The extension's state of ``app``, or ``None`` when the extension is not registered."""
    # Imported here: the extension's module imports this one (it builds a manager per app).
    from ai_secretary_schema.flask import EXTENSION_KEY, SchemaExtensionState

    state = app.extensions.get(EXTENSION_KEY)
    return state if isinstance(state, SchemaExtensionState) else None


class ServiceHealthManager:
    """Runs and remembers the health checks of one application.

    The database (critical) and Redis checks are registered under :attr:`DATABASE` and
    :attr:`REDIS`; :meth:`register_check` adds others.

    By default everything comes from the application's
    :class:`~ai_secretary_schema.flask.SchemaExtension`, so the design's
    ``ServiceHealthManager(app, ApplicationContextManager(app))`` works once the extension is
    registered: the engine (looked up on each database check), the settings and the cache.
    Without the extension, pass ``engine_provider`` (called on each database check, so an engine
    replaced at runtime is the one checked); ``settings`` then default to
    ``SchemaSettings.resolve(app.config, os.environ)`` and a
    :class:`~ai_secretary_schema.flask.cache.FallbackCache` is built from ``settings.redis_url``.
    ``database_probe`` is the query of the round trip. ``connection`` is the outcome of the
    connection check at start (default: the extension's): when it fell back to SQLite for an
    invalid URL, the database is reported as ``fallback``.
    """

    DATABASE = "database"
    REDIS = "redis"

    def __init__(
        self,
        app: Flask,
        context_manager: ApplicationContextManager | None = None,
        *,
        engine_provider: Callable[[], Engine] | None = None,
        settings: SchemaSettings | None = None,
        cache: FallbackCache | None = None,
        database_probe: str = "SELECT 1",
        limiter: ErrorRateLimiter | None = None,
        connection: ConnectionResult | None = None,
    ) -> None:
        self.app = app
        self.context_manager = context_manager or ApplicationContextManager(app)
        state = _extension_state(app)
        if engine_provider is None:
            if state is None:
                raise ExtensionNotRegisteredError(
                    f"ServiceHealthManager has no database engine for application {app.name!r}: "
                    "register the extension first (SchemaExtension(app), or schema.init_app(app) "
                    "in the application factory), or pass engine_provider=lambda: engine"
                )
            engine_provider = self._extension_engine
        if settings is None:
            settings = (
                state.settings
                if state is not None
                else SchemaSettings.resolve(app.config, os.environ)
            )
        if cache is None and state is not None:
            cache = state.cache  # one Redis pool per application; the extension closes it
        if connection is None and state is not None:
            connection = state.connection
        self.connection = connection
        self.settings = settings
        self.interval = settings.health_check_interval
        self.timeout = settings.health_check_timeout
        self.cache = (
            cache
            if cache is not None
            else FallbackCache(settings.redis_url, timeout=self.timeout / 2)
        )
        self._owns_cache = cache is None
        self.database_probe = database_probe
        self.limiter = limiter if limiter is not None else ErrorRateLimiter()
        self._engine_provider = engine_provider
        self._cond = threading.Condition()
        self._checks: dict[str, _Check] = {}
        self._results: dict[str, ServiceHealth] = {}
        self._checked_at: dict[str, float] = {}
        self._inflight: dict[str, _Run] = {}
        #: Checks failing now whose failure was not logged (their dependency's was).
        self._unlogged: set[str] = set()
        self._rounds = 0
        self._secrets: set[str] = {
            secret
            for secret in (url_password(settings.database_url), url_password(settings.redis_url))
            if secret
        }
        self.register_check(self.DATABASE, self._probe_database, critical=True)
        self.register_check(self.REDIS, self._probe_redis)
        fork.register(self)

    def _extension_engine(self) -> Engine:
        state = _extension_state(self.app)
        if state is None:
            raise ExtensionNotRegisteredError(
                f"SchemaExtension is no longer registered on application {self.app.name!r}"
            )
        return state.engine

    # -- registration and queries ------------------------------------------------------------

    def register_check(
        self,
        name: str,
        check: HealthCheck,
        critical: bool = False,
        timeout: float | None = None,
        *,
        depends_on: str | None = None,
    ) -> None:
        """Add a check. ``critical`` services make the overall status (and /health) unhealthy;
        the others only degrade it. ``timeout`` defaults to ``HEALTH_CHECK_TIMEOUT``.

        ``depends_on`` names an already registered check whose service this one needs (a
        check that reads the database: ``"database"``). When this check fails while that one
        is unhealthy, its message says so and nothing is logged for it: the outage is logged
        once, by the check of the service that is down. Its result then waits for that
        check's (within that check's timeout).
        """
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        with self._cond:
            if name in self._checks:
                raise ValueError(f"a health check named {name!r} is already registered")
            if depends_on is not None and depends_on not in self._checks:
                known = ", ".join(sorted(self._checks))
                raise ValueError(
                    f"health check {name!r} depends on {depends_on!r}, which is not registered "
                    f"(registered: {known}); register {depends_on!r} first"
                )
            self._checks[name] = _Check(name, check, critical, timeout or self.timeout, depends_on)

    @property
    def service_names(self) -> list[str]:
        with self._cond:
            return list(self._checks)

    def _check_named(self, name: str) -> _Check:
        with self._cond:
            try:
                return self._checks[name]
            except KeyError:
                known = ", ".join(sorted(self._checks))
                raise KeyError(f"no health check named {name!r}; registered: {known}") from None

    def last_result(self, name: str) -> ServiceHealth | None:
        """The latest result of ``name``, or None if it was never checked."""
        self._check_named(name)
        with self._cond:
            return self._results.get(name)

    def is_available(self, name: str) -> bool:
        """True if the latest check of ``name`` found it usable (healthy or degraded).

        A feature asks this to switch itself off while its service is down. Cheap: uses the
        latest result (the background monitor keeps it fresh) and checks only if there is none.
        ``fallback`` and ``disabled`` are not available: the service itself is not in use.
        """
        health = self.last_result(name)
        if health is None:
            health = self.check(name)
        return health.status in AVAILABLE

    def report(self) -> HealthReport:
        """The latest results without checking anything (never-checked services: unknown)."""
        with self._cond:
            checks = list(self._checks.values())
            results = dict(self._results)
        now = datetime.now(timezone.utc)
        return HealthReport.from_services(
            results.get(c.name)
            or ServiceHealth(c.name, HealthStatus.UNKNOWN, now, "not checked yet", None, c.critical)
            for c in checks
        )

    def latest_report(self, max_age: float) -> HealthReport | None:
        """:meth:`report` if every service was checked within ``max_age`` seconds, else None."""
        now = time.monotonic()
        with self._cond:
            fresh = all(
                now - self._checked_at.get(name, -float("inf")) <= max_age for name in self._checks
            )
        return self.report() if fresh else None

    # -- running checks ----------------------------------------------------------------------

    def check(self, name: str) -> ServiceHealth:
        """Run the check ``name`` now (or join its run in progress); at most its timeout."""
        check = self._check_named(name)
        health = self._wait(check, self._start(check), cancel=None)
        assert health is not None  # only a cancelled wait returns None
        return health

    def check_database_health(self) -> ServiceHealth:
        """A real round trip to the database under a statement timeout; critical."""
        return self.check(self.DATABASE)

    def check_redis_health(self) -> ServiceHealth:
        """``disabled`` without REDIS_URL; ``fallback`` (in-process cache) if Redis does not
        answer; ``healthy`` if it answers PING."""
        return self.check(self.REDIS)

    def check_all(self, cancel: threading.Event | None = None) -> HealthReport:
        """Run every check concurrently; returns within about the longest check timeout.

        ``cancel`` (the monitor's stop event) ends the wait early; the services not yet answered
        are then left out of the report.
        """
        with self._cond:
            checks = list(self._checks.values())
        runs = [(check, self._start(check)) for check in checks]
        results = [self._wait(check, run, cancel) for check, run in runs]
        return HealthReport.from_services(health for health in results if health is not None)

    def _start(self, check: _Check) -> _Run:
        with self._cond:
            run = self._inflight.get(check.name)
            if run is not None:
                return run
            run = _Run(started=time.monotonic())
            self._inflight[check.name] = run
        thread = threading.Thread(
            target=self._execute,
            args=(check, run),
            name=f"health-check-{check.name}",
            daemon=True,
        )
        thread.start()
        return run

    def _execute(self, check: _Check, run: _Run) -> None:
        # A new thread has no application context: run_with_context pushes one and pops it.
        try:
            run.outcome = self.context_manager.run_with_context(check.func)
        except BaseException as exc:  # a check must never take its thread down unreported
            run.error = exc
        finally:
            with self._cond:
                run.duration = time.monotonic() - run.started
                run.done = True
                if self._inflight.get(check.name) is run:
                    del self._inflight[check.name]
                self._cond.notify_all()

    def _wait(
        self, check: _Check, run: _Run, cancel: threading.Event | None
    ) -> ServiceHealth | None:
        deadline = run.started + check.timeout
        with self._cond:
            while not run.done:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (cancel is not None and cancel.is_set()):
                    break
                self._cond.wait(remaining)
            done = run.done
        if not done and cancel is not None and cancel.is_set():
            return None
        if done:
            status, message = self._interpret(run)
            response_time = run.duration
        else:
            running_for = time.monotonic() - run.started
            status = HealthStatus.UNHEALTHY
            message = f"no answer within {check.timeout:g} s"
            if running_for > check.timeout + 0.5:
                message += f" (the check has been running for {running_for:.1f} s)"
            response_time = None
        health = ServiceHealth(
            service_name=check.name,
            status=status,
            last_check=datetime.now(timezone.utc),
            error_message=None if message is None else self._redact(message),
            response_time=response_time,
            critical=check.critical,
        )
        down = self._dependency_down(check, run, cancel) if status in _FAILING else None
        if down is not None:
            health = replace(
                health,
                error_message=f"{health.error_message} (the {down.service_name} it depends on "
                f"is {down.status.value})",
            )
        self._record(health, logged_elsewhere=down is not None)
        return health

    def _dependency_down(
        self, check: _Check, run: _Run, cancel: threading.Event | None
    ) -> ServiceHealth | None:
        """The result of the check ``check`` depends on, if that one is unhealthy.

        Its result of the same round when there is one (checked since ``run`` started, or
        still running: joined), else it is checked now.
        """
        if check.depends_on is None:
            return None
        dependency = self._check_named(check.depends_on)
        with self._cond:
            fresh = self._checked_at.get(dependency.name, -float("inf")) >= run.started
            latest = self._results.get(dependency.name) if fresh else None
        if latest is None:
            latest = self._wait(dependency, self._start(dependency), cancel)
        if latest is None or latest.status is not HealthStatus.UNHEALTHY:
            return None
        return latest

    def _interpret(self, run: _Run) -> tuple[HealthStatus, str | None]:
        if run.error is not None:
            return HealthStatus.UNHEALTHY, self.describe_error(run.error)
        outcome = run.outcome
        if outcome is None or outcome is True:
            return HealthStatus.HEALTHY, None
        if outcome is False:
            return HealthStatus.UNHEALTHY, "the check returned False"
        if isinstance(outcome, CheckResult):
            return outcome.status, outcome.message
        if isinstance(outcome, HealthStatus):
            return outcome, None
        return HealthStatus.UNHEALTHY, f"the check returned {type(outcome).__name__}, not a status"

    def _record(self, health: ServiceHealth, *, logged_elsewhere: bool = False) -> None:
        """Keep ``health`` as the latest result and log a failure or a recovery (rate limited).

        ``logged_elsewhere``: the failure is another check's outage, logged there; neither it
        nor the recovery from it is logged here.
        """
        name, status = health.service_name, health.status
        with self._cond:
            previous = self._results.get(name)
            self._results[name] = health
            self._checked_at[name] = time.monotonic()
            was_unlogged = name in self._unlogged
            if status in _FAILING and logged_elsewhere:
                self._unlogged.add(name)
            else:
                self._unlogged.discard(name)
        if status in _FAILING:
            if logged_elsewhere:
                return
            # A fallback still serves: an error is for a critical service that does not.
            critical_down = health.critical and status is HealthStatus.UNHEALTHY
            log_limited(
                logger,
                self.limiter,
                self._failure_key(name, status),
                logging.ERROR if critical_down else logging.WARNING,
                "health check %r: %s: %s",
                name,
                status.value,
                health.error_message,
            )
        elif previous is not None and previous.status in _FAILING and not was_unlogged:
            log_limited(
                logger,
                self.limiter,
                f"health:{name}:recovered",
                logging.INFO,
                "health check %r: %s again (was %s)",
                name,
                status.value,
                previous.status.value,
            )

    @staticmethod
    def _failure_key(name: str, status: HealthStatus) -> str:
        return f"health:{name}:{status.value}"

    def log_outage(
        self, name: str, msg: str, *args: object, logged_elsewhere: int = 0, **kwargs: Any
    ) -> bool:
        """Log ``msg % args`` (a WARNING) about an outage of the service checked by ``name``,
        under the key its failed checks log with: one outage, one budget of lines.

        ``logged_elsewhere``: lines about the same outage that others already wrote (the
        connection manager's, at start), counted against that budget. Returns True if the
        message was logged.
        """
        self._check_named(name)
        key = self._failure_key(name, HealthStatus.UNHEALTHY)
        for _ in range(logged_elsewhere):
            self.limiter.should_log_error(key)
        kwargs.setdefault("stacklevel", 3)
        return log_limited(logger, self.limiter, key, logging.WARNING, msg, *args, **kwargs)

    def _redact(self, text: str) -> str:
        with self._cond:
            secrets = list(self._secrets)
        return redact_text(text, secrets)

    def describe_error(self, exc: BaseException) -> str:
        """``exc`` as one short, redacted line: the driver's own message when there is one."""
        error: BaseException = exc
        if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
            error = exc.orig
        text = " ".join(f"{type(error).__name__}: {error}".split())
        if len(text) > MAX_ERROR_LENGTH:
            text = text[: MAX_ERROR_LENGTH - 1] + "…"
        return self._redact(text)

    # -- the built-in checks -----------------------------------------------------------------

    def _probe_database(self) -> CheckResult:
        engine = self._engine_provider()
        password = engine.url.password
        if password:
            with self._cond:
                self._secrets.add(str(password))
        with probe_connection(engine, self.timeout) as connection:
            connection.execute(sa.text(self.database_probe)).all()
        fallback = self._database_fallback(engine)
        if fallback is not None:
            return CheckResult(HealthStatus.FALLBACK, fallback)
        return CheckResult(HealthStatus.HEALTHY)

    def _database_fallback(self, engine: Engine) -> str | None:
        """Why ``engine`` is the SQLite fallback of an invalid ``DATABASE_URL``, if it is."""
        connection = self.connection
        if connection is None or not connection.fallback_used:
            return None
        from ai_secretary_schema.engine import sqlite_file_path

        path = sqlite_file_path(engine.url)
        where = str(path.resolve()) if path is not None else redact_url(engine.url)
        why = f" ({connection.error_message})" if connection.error_message else ""
        return (
            f"the configured DATABASE_URL {self.settings.database.redacted} is invalid, so the "
            f"SQLite file {where} is in use instead{why}; fix DATABASE_URL, or set "
            "DATABASE_STRICT=1 to refuse an invalid URL at start"
        )

    def _probe_redis(self) -> CheckResult:
        if not self.cache.enabled:
            return CheckResult(
                HealthStatus.DISABLED, "REDIS_URL is not set; using the in-process cache"
            )
        try:
            self.cache.ping()
        except Exception as exc:
            return CheckResult(
                HealthStatus.FALLBACK,
                f"Redis unreachable, using the in-process cache: {self.cache.describe_error(exc)}",
            )
        return CheckResult(HealthStatus.HEALTHY)

    # -- background monitoring ---------------------------------------------------------------

    def _monitor(self) -> _Monitor | None:
        monitor = self.app.extensions.get(MONITOR_KEY)
        return monitor if isinstance(monitor, _Monitor) else None

    @property
    def monitoring(self) -> bool:
        """True while this manager's background monitor runs."""
        with _monitors_lock:
            monitor = self._monitor()
        return (
            monitor is not None
            and monitor.manager is self
            and monitor.thread.is_alive()
            and not monitor.stop.is_set()
        )

    @property
    def rounds_completed(self) -> int:
        """Background rounds finished since this manager was built."""
        with self._cond:
            return self._rounds

    def start_background_monitoring(self) -> threading.Thread:
        """Start the daemon thread that runs :meth:`check_all` every ``HEALTH_CHECK_INTERVAL``.

        One thread per application: calling it again returns the running thread. Raises
        :class:`HealthMonitorAlreadyRunningError` if another manager monitors the same app.
        """
        with _monitors_lock:
            existing = self._monitor()
            if existing is not None and existing.thread.is_alive() and not existing.stop.is_set():
                if existing.manager is not self:
                    raise HealthMonitorAlreadyRunningError(
                        f"another ServiceHealthManager already monitors application "
                        f"{self.app.name!r}; stop() it first or use that manager"
                    )
                return existing.thread
            return self._start_monitor()

    def _start_monitor(self) -> threading.Thread:
        # The caller holds _monitors_lock, or is a forked child that has a single thread.
        stop = threading.Event()
        thread = threading.Thread(
            target=self._monitor_loop,
            args=(stop,),
            name=f"health-monitor-{self.app.name}",
            daemon=True,
        )
        self.app.extensions[MONITOR_KEY] = _Monitor(self, thread, stop)
        thread.start()
        return thread

    # -- in a forked child ----------------------------------------------------------------------

    def reset_after_fork(self) -> None:
        """In a forked child (:mod:`~ai_secretary_schema.flask.fork`): a new condition (the
        parent's lock may have been held at the fork), and no check in flight (their threads
        stayed in the parent; waiting for them would time out on every check)."""
        self._cond = threading.Condition()
        self._inflight.clear()

    def resume_after_fork(self) -> None:
        """In a forked child: start the background monitor again if it ran in the parent."""
        monitor = self._monitor()
        if monitor is not None and monitor.manager is self and not monitor.stop.is_set():
            self._start_monitor()

    def _monitor_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                with self.context_manager.create_background_context():
                    self.check_all(cancel=stop)
                with self._cond:
                    self._rounds += 1
            except Exception as exc:  # the loop outlives any failure of one round
                log_limited(
                    logger,
                    self.limiter,
                    "health:monitor",
                    logging.ERROR,
                    "health monitor round failed: %s",
                    self.describe_error(exc),
                )
            stop.wait(self.interval)

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the background monitor; returns within ``timeout`` seconds (default 1).

        True if the thread has ended (or none was running). Checks still in flight finish on
        their own daemon threads; their results are dropped.
        """
        with _monitors_lock:
            monitor = self._monitor()
            if monitor is None or monitor.manager is not self:
                return True
            monitor.stop.set()
        with self._cond:
            self._cond.notify_all()  # wake a round waiting for its checks
        monitor.thread.join(timeout)
        stopped = not monitor.thread.is_alive()
        with _monitors_lock:
            if stopped and self._monitor() is monitor:
                del self.app.extensions[MONITOR_KEY]
        return stopped

    def close(self) -> bool:
        """:meth:`stop`, then close the cache if this manager built it; returns what stop did."""
        stopped = self.stop()
        if self._owns_cache:
            self.cache.close()
        return stopped


# -- the /health endpoint ------------------------------------------------------------------------


def create_health_blueprint(
    manager: ServiceHealthManager,
    url_prefix_or_path: str = "/health",
    *,
    name: str = "ai_secretary_health",
    max_age: float | None = None,
) -> Blueprint:
    """A blueprint serving ``manager``'s health at ``url_prefix_or_path`` (GET and HEAD).

    Register it with ``app.register_blueprint(create_health_blueprint(manager))``. ``name`` must
    differ if the blueprint is registered more than once on an application. ``max_age``
    overrides the freshness bound of the monitor's results (``0``: always check on request; see
    the module's documentation).
    """
    path = "/" + url_prefix_or_path.strip("/") if url_prefix_or_path.strip("/") else "/"
    blueprint = Blueprint(name, __name__)

    @blueprint.get(path)
    def health() -> Response:
        report = None
        if max_age is None:
            if manager.monitoring:
                report = manager.latest_report(manager.interval + manager.timeout)
        elif max_age > 0:
            report = manager.latest_report(max_age)
        if report is None:
            report = manager.check_all()
        response = jsonify(report.to_dict())
        response.status_code = report.http_status
        response.headers["Cache-Control"] = "no-store"
        return response

    return blueprint
