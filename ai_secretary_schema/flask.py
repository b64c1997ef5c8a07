"""The Flask extension: engine, session, ``flask db``, startup hook, health and cache in one place.

Usage, in either form::

    schema = SchemaExtension(app)              # or, in an application factory:
    schema = SchemaExtension()
    def create_app():
        app = Flask(__name__)
        schema.init_app(app)
        return app

Configuration keys, read once per application by :meth:`SchemaSettings.resolve
<ai_secretary_schema.settings.SchemaSettings.resolve>`: an explicit argument of
:class:`SchemaExtension` wins, then ``app.config[KEY]``, then the environment variable ``KEY``,
then the default.

=============================  =====================  ==========================================
Key                            Argument               Meaning (default)
=============================  =====================  ==========================================
``DATABASE_URL``               ``database_url``       SQLAlchemy URL (``sqlite:///ai_secretary.db``)
``DATABASE_STRICT``            ``strict``             invalid URL is an error, not a fallback
``SCHEMA_STARTUP``             ``startup``            ``upgrade`` (default), ``validate``, ``off``
``SCHEMA_LOCK_TIMEOUT``        ``lock_timeout``       seconds to wait for the migration lock (300)
``DATABASE_POOL_SIZE``         ``pool_size``          PostgreSQL pool size (5)
``DATABASE_MAX_OVERFLOW``      ``max_overflow``       PostgreSQL pool overflow (10)
``DATABASE_POOL_RECYCLE``      ``pool_recycle``       seconds before a connection is replaced (1800)
``DATABASE_POOL_TIMEOUT``      ``pool_timeout``       seconds to wait for a pooled connection (30)
``DATABASE_POOL_PRE_PING``     ``pool_pre_ping``      test connections on checkout (true)
``DATABASE_CONNECT_TIMEOUT``   ``connect_timeout``    seconds per connection attempt (5)
``DATABASE_CONNECT_DEADLINE``  ``connect_deadline``   seconds for all retries at start (15)
``REDIS_URL``                  ``redis_url``          Redis of the cache; unset: in-process cache
``HEALTH_CHECK_INTERVAL``      ``health_check_interval``  seconds between monitor rounds (30)
``HEALTH_CHECK_TIMEOUT``       ``health_check_timeout``   seconds one health check may take (3)
``HEALTH_MONITORING``          ``start_monitoring``   start the background monitor (false)
=============================  =====================  ==========================================

``health_path`` (default ``/health``; ``None``: no endpoint) and ``migrate_command`` (default
``db``; ``None``: do not register Flask-Migrate) are arguments only.

**When the startup hook runs.** Once per process and database (a module-level guard keyed by
the process id and the redacted URL, so several application factories in one process, or one
test session, do not re-run it; a forked worker runs it again). Where it runs depends on how the
process was started:

* Served by a WSGI server, a test, a script (no ``flask`` command): in :meth:`init_app`. A
  failure raises there (:class:`~ai_secretary_schema.errors.SchemaValidationError`,
  :class:`~ai_secretary_schema.errors.MigrationError`,
  :class:`~ai_secretary_schema.errors.DatabaseConnectionError` …), so the host decides whether
  to start.
* ``flask run``: in :meth:`init_app` too (the ``flask`` command loads the application inside
  the ``run`` command).
* Any other ``flask`` command (``flask db …``, ``flask shell``, the host's own commands):
  deferred to the first request, i.e. never for ``flask db``. This is detected from the click
  context: Flask loads the application while resolving an application command, so the current
  click command is then the ``flask`` group itself, not ``run``. ``flask db upgrade`` must work
  precisely when the database is behind, so running ``SCHEMA_STARTUP=validate`` there would
  lock the operator out. A host command that needs the hook calls :meth:`run_startup`.

``SCHEMA_STARTUP=off`` skips the hook; the schema health check then compares the live revision
with the head only.

**What it sets up per application** (reachable through the extension inside an application
context, or with :meth:`state`): the engine, built by
:class:`~ai_secretary_schema.connection.SmartConnectionManager`; :attr:`session`, a
``scoped_session`` scoped to the application context and removed when it ends
(``teardown_appcontext``: the end of each request, CLI command and ``with app.app_context()``);
Flask-Migrate on the package's ``migrations/`` (``flask db upgrade|downgrade|current|history|
heads|check|stamp|migrate``, against the extension's URL); an
:class:`~ai_secretary_schema.context.ApplicationContextManager`; the
:class:`~ai_secretary_schema.cache.FallbackCache` (:attr:`cache`); a
:class:`~ai_secretary_schema.health.ServiceHealthManager` with the database, Redis and schema
checks (:attr:`health`) and its ``/health`` blueprint. A
:class:`~ai_secretary_schema.rate_limit.RateLimitingFilter` is attached once per process to the
package's loggers, so an outage writes a handful of lines a minute.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import click
from flask import Flask, current_app, has_app_context
from flask.cli import ScriptInfo
from flask.globals import app_ctx
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from ai_secretary_schema.cache import FallbackCache
from ai_secretary_schema.connection import ConnectionResult, SmartConnectionManager
from ai_secretary_schema.context import ApplicationContextManager
from ai_secretary_schema.engine import create_engine
from ai_secretary_schema.errors import ConnectionErrorKind, ExtensionAlreadyRegisteredError
from ai_secretary_schema.health import (
    CheckResult,
    HealthStatus,
    ServiceHealthManager,
    probe_connection,
)
from ai_secretary_schema.health_blueprint import create_health_blueprint
from ai_secretary_schema.rate_limit import RateLimitingFilter
from ai_secretary_schema.redaction import redact_url
from ai_secretary_schema.schema_report import SchemaReport
from ai_secretary_schema.settings import SchemaSettings
from ai_secretary_schema.url import DatabaseURLParser

__all__ = ["EXTENSION_KEY", "SchemaExtension", "SchemaExtensionState"]

logger = logging.getLogger(__name__)

#: The key of the extension's per-application state in ``app.extensions``.
EXTENSION_KEY = "ai_secretary_schema"
#: Name of the schema health check (non-critical: a schema behind head degrades, never 503).
SCHEMA_CHECK = "schema"

# Explicit keyword argument -> SchemaSettings field.
_ARGUMENTS: dict[str, str] = {
    "database_url": "database_url",
    "strict": "database_strict",
    "startup": "schema_startup",
    "lock_timeout": "schema_lock_timeout",
    "pool_size": "database_pool_size",
    "max_overflow": "database_max_overflow",
    "pool_recycle": "database_pool_recycle",
    "pool_timeout": "database_pool_timeout",
    "pool_pre_ping": "database_pool_pre_ping",
    "connect_timeout": "database_connect_timeout",
    "connect_deadline": "database_connect_deadline",
    "redis_url": "redis_url",
    "health_check_interval": "health_check_interval",
    "health_check_timeout": "health_check_timeout",
}

#: Loggers of the package the rate-limiting filter is attached to (a filter on a logger sees only
#: records logged on that very logger, so each module's logger gets it).
PACKAGE_LOGGERS: tuple[str, ...] = (
    "ai_secretary_schema",
    *(
        f"ai_secretary_schema.{module}"
        for module in (
            "adoption",
            "cache",
            "cli",
            "commands",
            "connection",
            "context",
            "engine",
            "flask",
            "health",
            "lock",
            "migration_env",
            "migration_manager",
            "settings",
            "url",
            "warm_start",
        )
    ),
)

_log_filter = RateLimitingFilter()
_log_filter_lock = threading.Lock()


def install_log_filter(names: Iterable[str] = PACKAGE_LOGGERS) -> RateLimitingFilter:
    """Attach the process-wide :class:`RateLimitingFilter` to the package's loggers (once)."""
    with _log_filter_lock:
        for name in names:
            target = logging.getLogger(name)
            if _log_filter not in target.filters:
                target.addFilter(_log_filter)
    return _log_filter


def uninstall_log_filter(names: Iterable[str] = PACKAGE_LOGGERS) -> None:
    """Detach the filter and forget its counts (tests; a host that wants every line)."""
    with _log_filter_lock:
        for name in names:
            logging.getLogger(name).removeFilter(_log_filter)
        _log_filter.limiter.reset()


# The startup hook runs once per (process, database): several apps of one process share it.
_StartupKey = tuple[int, str]
_startup_reports: dict[_StartupKey, SchemaReport] = {}
_startup_locks: dict[_StartupKey, threading.Lock] = {}
_startup_guard = threading.Lock()


def _startup_lock(key: _StartupKey) -> threading.Lock:
    with _startup_guard:
        return _startup_locks.setdefault(key, threading.Lock())


def _startup_deferred() -> bool:
    """True in a ``flask`` command other than ``flask run`` (see the module docstring)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.find_object(ScriptInfo) is None:
        return False
    return ctx.command.name != "run"


class _AppSession(Session):
    """A session bound to the engine of the current application's extension state."""

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("bind") is None:
            state = current_app.extensions.get(EXTENSION_KEY)
            if not isinstance(state, SchemaExtensionState):
                raise RuntimeError(
                    f"SchemaExtension is not registered on application {current_app.name!r}; "
                    "call schema.init_app(app) in the application factory"
                )
            kwargs["bind"] = state.engine
        super().__init__(**kwargs)


def _app_context_id() -> int:
    # Outside an application context this raises Flask's "Working outside of application
    # context" RuntimeError, which says what to do.
    return id(cast(Any, app_ctx)._get_current_object())


@dataclass(eq=False)
class SchemaExtensionState:
    """What :class:`SchemaExtension` set up for one application (``app.extensions[KEY]``)."""

    extension: SchemaExtension
    app: Flask
    settings: SchemaSettings
    connection_manager: SmartConnectionManager
    connection: ConnectionResult
    engine: Engine
    context: ApplicationContextManager
    cache: FallbackCache
    health: ServiceHealthManager
    migrate: Any = None
    #: The report of the startup hook (this process's, possibly from another app's run).
    startup_report: SchemaReport | None = None
    #: True if the hook ran for this application, False if skipped, deferred or reused.
    startup_performed: bool = False
    #: True until the deferred startup hook has run (``flask`` commands other than ``run``).
    startup_pending: bool = False
    start_monitoring: bool = False
    _revisions: tuple[tuple[str, ...], frozenset[str]] | None = field(default=None, repr=False)

    @property
    def startup_key(self) -> _StartupKey:
        return (os.getpid(), redact_url(self.engine.url))

    def revisions(self) -> tuple[tuple[str, ...], frozenset[str]]:
        """The head revision(s) and every revision id of the package's migrations (cached:
        the scripts of a running process do not change)."""
        if self._revisions is None:
            from ai_secretary_schema.commands import script_directory

            scripts = script_directory()
            self._revisions = (
                tuple(scripts.get_heads()),
                frozenset(script.revision for script in scripts.walk_revisions()),
            )
        return self._revisions


class SchemaExtension:
    """Flask extension of ai-secretary-schema; see the module docstring for every config key.

    Explicit arguments override ``app.config`` and the environment; ``None`` means "not given".
    One instance may be initialised on several applications; its properties (:attr:`engine`,
    :attr:`cache`, :attr:`health` …) then refer to the current application's state.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        database_url: str | None = None,
        startup: str | None = None,
        redis_url: str | None = None,
        health_check_interval: float | None = None,
        health_check_timeout: float | None = None,
        health_path: str | None = "/health",
        start_monitoring: bool | None = None,
        migrate_command: str | None = "db",
        strict: bool | None = None,
        lock_timeout: float | None = None,
        pool_size: int | None = None,
        max_overflow: int | None = None,
        pool_recycle: int | None = None,
        pool_timeout: float | None = None,
        pool_pre_ping: bool | None = None,
        connect_timeout: float | None = None,
        connect_deadline: float | None = None,
    ) -> None:
        given = {
            "database_url": database_url,
            "startup": startup,
            "redis_url": redis_url,
            "health_check_interval": health_check_interval,
            "health_check_timeout": health_check_timeout,
            "strict": strict,
            "lock_timeout": lock_timeout,
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            "pool_recycle": pool_recycle,
            "pool_timeout": pool_timeout,
            "pool_pre_ping": pool_pre_ping,
            "connect_timeout": connect_timeout,
            "connect_deadline": connect_deadline,
        }
        self._explicit: dict[str, Any] = {
            _ARGUMENTS[name]: value for name, value in given.items() if value is not None
        }
        if start_monitoring is not None:
            self._explicit["health_monitoring"] = start_monitoring
        self.health_path = health_path
        self.migrate_command = migrate_command
        #: The session of the current application context; removed when the context ends.
        self.session: scoped_session[Session] = scoped_session(
            sessionmaker(class_=_AppSession), scopefunc=_app_context_id
        )
        self._apps: list[weakref.ref[Flask]] = []
        if app is not None:
            self.init_app(app)

    # -- registration ------------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Set everything up on ``app``; raises if the startup hook fails (see module doc)."""
        if EXTENSION_KEY in app.extensions:
            raise ExtensionAlreadyRegisteredError(
                f"SchemaExtension is already registered on application {app.name!r}. Create "
                "the extension once and call init_app(app) once per application (in the "
                "application factory); elsewhere, import that instance or use "
                f"app.extensions[{EXTENSION_KEY!r}]."
            )
        settings = SchemaSettings.resolve(app.config, os.environ, **self._explicit)
        deferred = _startup_deferred()
        manager = SmartConnectionManager(settings)
        connection = manager.connect()
        engine = self._engine_from(connection, settings, lenient=deferred)
        cache = FallbackCache(settings.redis_url, timeout=settings.health_check_timeout / 2)
        context = ApplicationContextManager(app)
        health = ServiceHealthManager(
            app, context, engine_provider=lambda: engine, settings=settings, cache=cache
        )
        state = SchemaExtensionState(
            extension=self,
            app=app,
            settings=settings,
            connection_manager=manager,
            connection=connection,
            engine=engine,
            context=context,
            cache=cache,
            health=health,
            start_monitoring=settings.health_monitoring,
        )
        install_log_filter()
        if settings.schema_startup != "off":
            if deferred:
                state.startup_pending = True
            else:
                try:
                    self._run_startup(state)
                except BaseException:
                    engine.dispose()
                    cache.close()
                    raise
        # Only now is anything registered on the app: a failed start leaves it untouched.
        health.register_check(SCHEMA_CHECK, lambda: self._check_schema(state))
        if self.migrate_command is not None:
            from ai_secretary_schema.flask_migrate_support import register_migrate

            state.migrate = register_migrate(app, lambda: state.engine, self.migrate_command)
        if self.health_path is not None:
            app.register_blueprint(create_health_blueprint(health, self.health_path))
        app.teardown_appcontext(self._remove_session)
        if state.startup_pending:
            app.before_request(self._deferred_startup)
        app.extensions[EXTENSION_KEY] = state
        self._apps = [ref for ref in self._apps if ref() is not None] + [weakref.ref(app)]
        if state.start_monitoring and not deferred:
            health.start_background_monitoring()

    @staticmethod
    def _engine_from(
        connection: ConnectionResult, settings: SchemaSettings, *, lenient: bool
    ) -> Engine:
        """The verified engine, or, where the process must start anyway, an unverified one.

        A database that does not answer at start is an error for a server (the startup hook
        cannot run) but not with ``SCHEMA_STARTUP=off`` or for a ``flask`` command: the app
        starts, /health reports the outage, and ``flask db`` reports its own error. A URL that
        can never work (driver missing, invalid in strict mode) is always an error.
        """
        if connection.engine is not None:
            return connection.engine
        hopeless = connection.error_kind in (
            ConnectionErrorKind.DRIVER_MISSING,
            ConnectionErrorKind.INVALID_URL,
        )
        if hopeless or not (lenient or settings.schema_startup == "off"):
            connection.raise_for_error()
        url = DatabaseURLParser().require(settings.database_url).url
        logger.warning(
            "Starting without a database connection (%s); the engine for %s connects on first "
            "use and /health reports the database until it answers",
            connection.error_kind.value if connection.error_kind else "unknown",
            redact_url(url),
        )
        return create_engine(url, settings)

    # -- startup hook ------------------------------------------------------------------------

    def _run_startup(self, state: SchemaExtensionState) -> SchemaReport:
        key = state.startup_key
        with _startup_lock(key):
            report = _startup_reports.get(key)
            if report is not None:
                logger.debug("startup hook already ran in this process for %s", key[1])
                state.startup_report = report
                state.startup_pending = False
                return report
            from ai_secretary_schema.migration_manager import MigrationManager

            with MigrationManager(
                state.connection_manager, url=state.engine.url, settings=state.settings
            ) as manager:
                report = manager.run_startup(state.settings.schema_startup)
            _startup_reports[key] = report
            state.startup_report = report
            state.startup_performed = True
            state.startup_pending = False
            return report

    def run_startup(self, app: Flask | None = None) -> SchemaReport | None:
        """Run the startup hook now if it has not run in this process (``None`` when off).

        For host ``flask`` commands that need the schema ready: the hook is deferred there.
        """
        state = self.state(app)
        if state.settings.schema_startup == "off":
            return None
        return self._run_startup(state)

    def _deferred_startup(self) -> None:
        state = self.state()
        if state.startup_pending:
            self._run_startup(state)
            if state.start_monitoring:
                state.health.start_background_monitoring()

    # -- session -----------------------------------------------------------------------------

    def _remove_session(self, exc: BaseException | None) -> None:
        self.session.remove()

    # -- per-application state ---------------------------------------------------------------

    def state(self, app: Flask | None = None) -> SchemaExtensionState:
        """The state of ``app``; by default the current application's, else the only one's."""
        if app is None:
            if has_app_context():
                app = cast(Any, current_app)._get_current_object()
            else:
                apps = [a for a in (ref() for ref in self._apps) if a is not None]
                if len(apps) != 1:
                    raise RuntimeError(
                        "SchemaExtension is used outside an application context and is "
                        f"registered on {len(apps)} applications; use `with app.app_context():` "
                        "(or ApplicationContextManager.ensure_context) or pass app="
                    )
                app = apps[0]
        assert app is not None
        state = app.extensions.get(EXTENSION_KEY)
        if not isinstance(state, SchemaExtensionState) or state.extension is not self:
            raise RuntimeError(
                f"this SchemaExtension is not registered on application {app.name!r}; call "
                "init_app(app) in the application factory"
            )
        return state

    @property
    def settings(self) -> SchemaSettings:
        return self.state().settings

    @property
    def engine(self) -> Engine:
        return self.state().engine

    @property
    def cache(self) -> FallbackCache:
        """The Redis cache with its in-process fallback."""
        return self.state().cache

    @property
    def health(self) -> ServiceHealthManager:
        return self.state().health

    @property
    def context(self) -> ApplicationContextManager:
        return self.state().context

    @property
    def schema_report(self) -> SchemaReport | None:
        """The startup hook's report (``None`` when off or not run yet)."""
        return self.state().startup_report

    def ensure_context(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """:meth:`ApplicationContextManager.ensure_context` of the (only) application."""
        return self.state().context.ensure_context(func)

    def register_check(self, name: str, check: Callable[[], Any], critical: bool = False) -> None:
        """:meth:`ServiceHealthManager.register_check` of the current application."""
        self.state().health.register_check(name, check, critical=critical)

    def is_available(self, name: str) -> bool:
        """:meth:`ServiceHealthManager.is_available` of the current application."""
        return self.state().health.is_available(name)

    def start_background_monitoring(self, app: Flask | None = None) -> threading.Thread:
        return self.state(app).health.start_background_monitoring()

    def close(self, app: Flask | None = None) -> None:
        """Stop the monitor, close the cache and dispose of the engine of ``app``."""
        state = self.state(app)
        state.health.stop()
        state.cache.close()
        state.engine.dispose()

    # -- the schema health check -------------------------------------------------------------

    def _check_schema(self, state: SchemaExtensionState) -> CheckResult:
        """At head / behind / drifted: the live revision against the head, plus the drift the
        startup hook's report found (a structural comparison is too slow for every check)."""
        from alembic.runtime.migration import MigrationContext

        heads, known = state.revisions()
        with probe_connection(state.engine, state.settings.health_check_timeout) as connection:
            current = tuple(MigrationContext.configure(connection).get_current_heads())
        if set(current) != set(heads):
            where = ", ".join(current) or "base (no revision applied)"
            if not set(current) <= known:
                return CheckResult(
                    HealthStatus.UNHEALTHY,
                    f"unknown revision {where} (head is {', '.join(heads)}): the database was "
                    "migrated by newer code or another branch",
                )
            return CheckResult(
                HealthStatus.UNHEALTHY,
                f"behind: revision {where}, head is {', '.join(heads)}; run `flask db upgrade`",
            )
        report = state.startup_report
        if report is not None and not report.skipped and not report.matches_models:
            found = report.differences()
            return CheckResult(
                HealthStatus.DEGRADED,
                f"drifted: at head but {len(found)} difference(s) from the models at start: "
                + "; ".join(found[:5]),
            )
        return CheckResult(HealthStatus.HEALTHY)
