"""The Flask layer: one engine per application, the startup hook, ``flask db``, health, cache.

Usage, in either form::

    schema = SchemaExtension(app)              # or, in an application factory:
    schema = SchemaExtension()
    def create_app():
        app = Flask(__name__)
        schema.init_app(app)
        return app

**Settings.** The keyword arguments of :class:`SchemaExtension` are the settings of
:class:`~ai_secretary_schema.settings.SchemaSettings`, named as its fields
(``SchemaExtension(app, database_url=…, schema_startup="validate", database_pool_size=10)``);
every key, its default and meaning are listed there and in the README ("Configuration"). They
are resolved once per application: an argument wins, then ``app.config[KEY]``, then the
environment variable ``KEY``, then the default. An unknown name is a :class:`TypeError` naming
the valid ones. ``health_path`` (default ``/health``; ``None``: no endpoint),
``migrate_command`` (default ``db``; ``None``: no Flask-Migrate), ``db`` (a Flask-SQLAlchemy
instance to share an engine with) and ``directory`` (the application's own migrations) belong to
the extension only.

**The application's own migrations.** With ``directory=`` (Flask-Migrate's argument:
``SchemaExtension(app, db=db, directory="migrations")`` or ``schema.init_app(app, db=db,
directory=…)``) the application's revisions (``directory/versions``) and the package's are two
branches of one history in one ``alembic_version``
(:class:`~ai_secretary_schema.history.HostHistory`): one ``flask db`` covers both
(:mod:`ai_secretary_schema.flask.migrate`), and the startup hook, the lock, the checks and the
warm start cover both, comparing the database with ``db``'s models as well as the package's.
``SCHEMA_HOST_MIGRATIONS=release`` leaves the application's history and tables to a release
step of its own: the hook then upgrades and checks the package's alone.

**One engine per application.** :meth:`SchemaExtension.init_app` connects once, through
:class:`~ai_secretary_schema.connection.SmartConnectionManager`, and everything of that
application uses the engine it verified: the startup hook
(:class:`~ai_secretary_schema.migrator.Migrator` is handed the engine), ``flask db`` (env.py is
handed it, and takes the migration lock itself), the session, the health checks.

**Flask-SQLAlchemy.** With ``db=`` (``SchemaExtension(app, db=db)`` or
``schema.init_app(app, db=db)``) the engine is Flask-SQLAlchemy's, so the application has one
pool: if ``db`` is not initialised on the application, the extension sets
``SQLALCHEMY_DATABASE_URI`` and ``SQLALCHEMY_ENGINE_OPTIONS`` (the package's per-dialect
defaults; the host's own options win) and calls ``db.init_app(app)``; if the host configured
``db`` itself, its database is adopted when ``DATABASE_URL`` is not set anywhere, and a
``DATABASE_URL`` naming another database is a
:class:`~ai_secretary_schema.errors.DatabaseConfigError`. On SQLite the package's connection
settings (foreign keys, WAL, real transactions) are applied to ``db.engine``. The extension's
:attr:`~SchemaExtension.session` is then ``db.session``, which queries the package's models as
well as the host's ``db.Model`` classes, in one transaction. Without ``db``, the session is a
``scoped_session`` of the extension's engine, scoped to the application context and removed
when it ends (``teardown_appcontext``: the end of each request, CLI command and
``with app.app_context()``).

**When the startup hook runs.** Once per application (its report is kept on the application's
:class:`SchemaExtensionState`; a second application on the same database runs it again, which
the warm start makes cheap). Where it runs depends on how the process was started:

* Served by a WSGI server, a test, a script, ``flask run``: in :meth:`~SchemaExtension.init_app`.
  A failure raises there (:class:`~ai_secretary_schema.errors.SchemaValidationError`,
  :class:`~ai_secretary_schema.errors.MigrationError`,
  :class:`~ai_secretary_schema.errors.DatabaseConnectionError` …), so the host decides whether
  to start, and nothing was registered on the application (except a ``db`` the extension was
  asked to initialise).
* Any other ``flask`` command (``flask db …``, ``flask shell``, the host's own commands):
  deferred to the first request, i.e. never for ``flask db``, which must work precisely when the
  database is behind. This is detected from the click context: Flask loads the application
  while resolving an application command, so the current click command is then the ``flask``
  group itself, not ``run``. A host command that needs the hook calls
  :meth:`~SchemaExtension.run_startup`.

``SCHEMA_STARTUP=off`` skips the hook; the schema health check then compares the live revision
with the head only. With ``off``, or inside a ``flask`` command, a database that does not answer
at start is not an error: the application starts, ``/health`` reports the outage.

**What else it sets up per application** (reachable through the extension inside an application
context, or with :meth:`~SchemaExtension.state`): Flask-Migrate on the package's migrations
(:mod:`ai_secretary_schema.flask.migrate`); an
:class:`~ai_secretary_schema.flask.context.ApplicationContextManager`; the
:class:`~ai_secretary_schema.flask.cache.FallbackCache`; a
:class:`~ai_secretary_schema.flask.health.ServiceHealthManager` with the database, Redis and
schema checks and its ``/health`` blueprint. A
:class:`~ai_secretary_schema.rate_limit.RateLimitingFilter` is attached once per process to the
logger of every module of the package, so an outage writes a handful of lines a minute.

**Servers that fork after loading the application** (``gunicorn --preload``, uWSGI without
``lazy-apps``): each forked worker gets a new, empty pool for the application's engine, new
locks, and the health monitor again if it ran in the parent; nothing of the parent's
connections is used, closed or rolled back by a child (:mod:`ai_secretary_schema.flask.fork`).
"""

from __future__ import annotations

import logging
import os
import pkgutil
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click
from flask import Flask, current_app, g, has_app_context
from flask.cli import ScriptInfo
from flask.globals import app_ctx
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session, scoped_session, sessionmaker
from sqlalchemy.util import ThreadLocalRegistry

from ai_secretary_schema.connection import ConnectionResult, SmartConnectionManager
from ai_secretary_schema.engine import (
    configure_engine,
    create_engine,
    engine_options,
    ensure_sqlite_directory,
    is_sqlite_memory,
    sqlite_file_path,
)
from ai_secretary_schema.errors import (
    ConnectionErrorKind,
    DatabaseConfigError,
    ExtensionAlreadyRegisteredError,
    ExtensionNotRegisteredError,
)
from ai_secretary_schema.flask import fork
from ai_secretary_schema.flask.cache import FallbackCache
from ai_secretary_schema.flask.context import ApplicationContextManager
from ai_secretary_schema.flask.health import (
    CheckResult,
    HealthStatus,
    ServiceHealthManager,
    create_health_blueprint,
    probe_connection,
)
from ai_secretary_schema.history import Histories, HostHistory, migrations_directory
from ai_secretary_schema.migrator import Migrator
from ai_secretary_schema.rate_limit import RateLimitingFilter
from ai_secretary_schema.redaction import redact_url
from ai_secretary_schema.schema_report import SchemaReport
from ai_secretary_schema.settings import SchemaSettings
from ai_secretary_schema.tenancy import TENANT_RESOLVER, tenant_scope

if TYPE_CHECKING:
    from flask_migrate import Migrate  # type: ignore[import-untyped]
    from flask_sqlalchemy import SQLAlchemy

__all__ = [
    "EXTENSION_KEY",
    "SchemaExtension",
    "SchemaExtensionState",
    "install_log_filter",
    "package_loggers",
    "request_tenant",
    "uninstall_log_filter",
]

logger = logging.getLogger(__name__)

#: The key of the extension's per-application state in ``app.extensions``.
EXTENSION_KEY = "ai_secretary_schema"
#: Name of the schema health check (non-critical: a schema behind head degrades, never 503).
SCHEMA_CHECK = "schema"
#: Where a setting adopted from Flask-SQLAlchemy came from (``SchemaSettings.sources``).
FLASK_SQLALCHEMY_SOURCE = "SQLALCHEMY_DATABASE_URI"

# -- the log filter ------------------------------------------------------------------------------

_log_filter = RateLimitingFilter()
_log_filter_lock = threading.Lock()


def _new_log_filter_lock_after_fork() -> None:
    # The parent's may have been held, at the fork, by a thread the child does not have.
    global _log_filter_lock
    _log_filter_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_new_log_filter_lock_after_fork)


def package_loggers() -> tuple[str, ...]:
    """The logger of every module of the package (each module logs on ``getLogger(__name__)``).

    Found by walking the installed package, so a module added later gets the filter without a
    list to keep. The modules are not imported (only subpackages are, to find what they hold).
    """
    import ai_secretary_schema

    root = ai_secretary_schema.__name__
    found = pkgutil.walk_packages(ai_secretary_schema.__path__, f"{root}.", onerror=lambda _: None)
    return (root, *sorted(module.name for module in found))


def install_log_filter(names: Iterable[str] | None = None) -> RateLimitingFilter:
    """Attach the process-wide :class:`RateLimitingFilter` to the package's loggers (once).

    A filter on a logger sees only the records logged on that very logger, not its children's,
    so each module's logger gets it (``names``; default :func:`package_loggers`).
    """
    with _log_filter_lock:
        for name in package_loggers() if names is None else names:
            target = logging.getLogger(name)
            if _log_filter not in target.filters:
                target.addFilter(_log_filter)
    return _log_filter


def uninstall_log_filter(names: Iterable[str] | None = None) -> None:
    """Detach the filter and forget its counts (tests; a host that wants every line)."""
    with _log_filter_lock:
        for name in package_loggers() if names is None else names:
            logging.getLogger(name).removeFilter(_log_filter)
        _log_filter.limiter.reset()


# -- the tenant of the request -------------------------------------------------------------------


def request_tenant() -> int | None:
    """The tenant of the current request or application context: ``flask.g.tenant_id``.

    The one place the application puts it (after authenticating, in a ``before_request``); the
    extension's session reads it when each transaction begins.
    """
    if not has_app_context():
        return None
    tenant: int | None = g.get("tenant_id")
    return tenant


def _resolve_tenant_from_g(session: scoped_session[Session]) -> None:
    """Make Flask-SQLAlchemy's sessions read the tenant from ``flask.g`` too."""
    factory = session.session_factory
    info = dict(factory.kw.get("info") or {})
    info[TENANT_RESOLVER] = request_tenant
    factory.configure(info=info)


# -- helpers -------------------------------------------------------------------------------------


def _import_alembic_quietly() -> None:
    """Import Alembic with the INFO lines it logs on import held back.

    ``import alembic`` registers its autogenerate plugins, each with a "setup plugin …" INFO
    line on ``alembic.runtime.plugins`` (seven lines, Alembic 1.17 and later): nothing to act
    on, written once by every worker of a fleet. The extension imports Alembic here first
    (Flask-Migrate, the schema check's heads), so later imports find it in ``sys.modules``.
    """
    if "alembic" in sys.modules:
        return
    plugins = logging.getLogger("alembic.runtime.plugins")

    def hold_back(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING

    plugins.addFilter(hold_back)
    try:
        import alembic  # noqa: F401
    finally:
        plugins.removeFilter(hold_back)


def _startup_deferred() -> bool:
    """True in a ``flask`` command other than ``flask run`` (see the module docstring)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.find_object(ScriptInfo) is None:
        return False
    return ctx.command.name != "run"


def _app_context_id() -> int:
    # Outside an application context this raises Flask's "Working outside of application
    # context" RuntimeError, which says what to do.
    return id(cast(Any, app_ctx)._get_current_object())


def _absolute_sqlite_url(url: URL) -> URL:
    """A SQLite file URL with an absolute path (relative to the working directory, as the
    package's own engines read it); Flask-SQLAlchemy would read a relative one against
    ``app.instance_path``, and the two would name different files."""
    path = sqlite_file_path(url)
    if path is None or path.is_absolute():
        return url
    absolute = str(Path.cwd() / path)
    if url.query.get("uri") == "true":
        absolute = f"file:{absolute}"
    return url.set(database=absolute)


def _database_identity(url: URL) -> tuple[Any, ...]:
    """What names a database, whatever the driver or the spelling of a SQLite path."""
    if url.get_backend_name() == "sqlite":
        path = sqlite_file_path(url)
        return ("sqlite", None if path is None else str(path.resolve()))
    return (url.get_backend_name(), url.username, url.host, url.port or None, url.database)


def _flask_sqlalchemy_engine(app: Flask, db: SQLAlchemy) -> Engine:
    # db.engine is per application and reads current_app.
    with app.app_context():
        return db.engine


@dataclass(eq=False)
class SchemaExtensionState:
    """What :class:`SchemaExtension` set up for one application (``app.extensions[KEY]``)."""

    extension: SchemaExtension
    app: Flask
    settings: SchemaSettings
    connection_manager: SmartConnectionManager
    #: The outcome of the connection check at start (``fallback_used``, ``error_kind`` …).
    connection: ConnectionResult
    #: The one engine of the application (Flask-SQLAlchemy's when ``db`` is shared).
    engine: Engine
    #: The application's session: ``db.session``, or a scoped session of :attr:`engine`.
    session: scoped_session[Session]
    context: ApplicationContextManager
    cache: FallbackCache
    health: ServiceHealthManager
    #: The Flask-SQLAlchemy instance whose engine and session are shared, if any.
    db: SQLAlchemy | None = None
    #: The application's own migration history beside the package's (``directory=``), if any.
    host: HostHistory | None = None
    migrate: Migrate | None = None
    #: The report of this application's startup hook (``None``: off, deferred or not run yet).
    startup_report: SchemaReport | None = None
    #: True until the deferred startup hook has run (``flask`` commands other than ``run``).
    startup_pending: bool = False
    #: Serialises this application's startup hook (first requests of several threads).
    startup_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _revisions: tuple[tuple[str, ...], frozenset[str]] | None = field(default=None, repr=False)
    #: What a forked child inherited and must neither use nor let be finalised (see
    #: reset_after_fork).
    _inherited: list[object] = field(default_factory=list, repr=False)

    def reset_after_fork(self) -> None:
        """In a forked child: a new pool for the engine, no session of the parent's, a new lock.

        ``engine.dispose(close=False)`` (SQLAlchemy's recipe for pools across a fork) gives the
        engine a new, empty pool without touching the parent's connections. The old pool and
        the sessions of the parent's scopes stay referenced here, unused: finalised by the
        garbage collector, a checked-out connection would be rolled back, and a SQLite one
        closed, over what the parent still uses. An in-memory SQLite database lives in its one
        connection, of which the child has its own copy: a new pool would be a new, empty
        database, so that engine is left as it is.
        """
        self.startup_lock = threading.Lock()
        if not is_sqlite_memory(self.engine.url):
            self._inherited.append(self.engine.pool)
            self.engine.dispose(close=False)
        registry = self.session.registry
        if isinstance(registry, ThreadLocalRegistry):
            if registry.has():
                self._inherited.append(registry())
                registry.clear()
        else:  # scoped by application context: the extension's and Flask-SQLAlchemy's
            self._inherited.extend(registry.registry.values())
            registry.registry.clear()

    def resume_after_fork(self) -> None:
        """Nothing to restart here (the health manager restarts its own monitor)."""

    @property
    def owns_engine(self) -> bool:
        """False when the engine is Flask-SQLAlchemy's (``db`` disposes of it, not us)."""
        return self.db is None

    @property
    def histories(self) -> Histories:
        """The package's history and the application's, if it has one."""
        return Histories(migrations_directory(), self.host)

    def revisions(self) -> tuple[tuple[str, ...], frozenset[str]]:
        """The head revision(s) the database must be at and every revision id of the
        histories (cached: the scripts of a running process do not change)."""
        if self._revisions is None:
            _import_alembic_quietly()
            from ai_secretary_schema.history import managed_heads, revisions

            self._revisions = (managed_heads(self.histories), revisions(self.histories))
        return self._revisions


class SchemaExtension:
    """Flask extension of ai-secretary-schema (see the module's documentation).

    ``settings`` are :class:`~ai_secretary_schema.settings.SchemaSettings` fields given as
    keyword arguments (``database_url=…``, ``schema_startup=…``); they override ``app.config``
    and the environment, and ``None`` means "not given". They are checked here, so a typo fails
    where it was written. One instance may be initialised on several applications; its
    properties (:attr:`engine`, :attr:`session`, :attr:`cache` …) then refer to the current
    application's state.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        health_path: str | None = "/health",
        migrate_command: str | None = "db",
        db: SQLAlchemy | None = None,
        directory: str | os.PathLike[str] | None = None,
        **settings: Any,
    ) -> None:
        # Unknown names raise TypeError listing the valid ones; bad values DatabaseConfigError.
        SchemaSettings.resolve({}, {}, **settings)
        self._settings = {name: value for name, value in settings.items() if value is not None}
        self.health_path = health_path
        self.migrate_command = migrate_command
        self.db = db
        self.directory = directory
        self._apps: list[weakref.ref[Flask]] = []
        if app is not None:
            self.init_app(app)

    # -- registration ------------------------------------------------------------------------

    def init_app(
        self,
        app: Flask,
        db: SQLAlchemy | None = None,
        directory: str | os.PathLike[str] | None = None,
    ) -> None:
        """Set everything up on ``app``; raises if the startup hook fails (see module doc).

        ``db``: a Flask-SQLAlchemy instance to share the engine and session with (default: the
        one given to the constructor). ``directory``: the application's own migrations
        directory, beside the package's (default: the constructor's; relative to the working
        directory, as Flask-Migrate takes it).
        """
        if EXTENSION_KEY in app.extensions:
            raise ExtensionAlreadyRegisteredError(
                f"SchemaExtension is already registered on application {app.name!r}. Create "
                "the extension once and call init_app(app) once per application (in the "
                "application factory); elsewhere, import that instance or use "
                f"app.extensions[{EXTENSION_KEY!r}]."
            )
        db = db if db is not None else self.db
        directory = directory if directory is not None else self.directory
        settings = SchemaSettings.resolve(app.config, os.environ, **self._settings)
        if db is not None:
            settings = _adopt_flask_sqlalchemy_database(app, db, settings)
        deferred = _startup_deferred()
        manager = SmartConnectionManager(settings)
        connection = manager.connect()
        url = self._usable_url(
            connection, settings, lenient=deferred or settings.schema_startup == "off"
        )
        session: scoped_session[Session]
        if db is None:
            engine = connection.engine or create_engine(url, settings)
            session = scoped_session(
                sessionmaker(bind=engine, info={TENANT_RESOLVER: request_tenant}),
                scopefunc=_app_context_id,
            )
        else:
            if connection.engine is not None:
                # It verified the database; Flask-SQLAlchemy's engine is the one that stays.
                connection.engine.dispose()
            engine = _share_flask_sqlalchemy_engine(app, db, url, settings)
            session = cast("scoped_session[Session]", db.session)
            _resolve_tenant_from_g(session)
        cache = FallbackCache(settings.redis_url, timeout=settings.health_check_timeout / 2)
        context = ApplicationContextManager(app)
        health = ServiceHealthManager(
            app,
            context,
            engine_provider=lambda: engine,
            settings=settings,
            cache=cache,
            connection=connection,
        )
        state = SchemaExtensionState(
            extension=self,
            app=app,
            settings=settings,
            connection_manager=manager,
            connection=connection,
            engine=engine,
            session=session,
            context=context,
            cache=cache,
            health=health,
            db=db,
            host=_host_history(directory, db, settings),
        )
        install_log_filter()
        if connection.engine is None:
            # The connection manager has just logged why, in one line: with this one and the
            # database check's, one outage has one budget of lines (health.log_outage).
            health.log_outage(
                ServiceHealthManager.DATABASE,
                "Starting without a database connection (%s); the engine for %s connects on "
                "first use and /health reports the database until it answers",
                connection.error_kind.value if connection.error_kind else "unknown",
                redact_url(url),
                logged_elsewhere=1,
            )
        if settings.schema_startup != "off":
            if deferred:
                state.startup_pending = True
            else:
                try:
                    self._run_startup(state)
                except BaseException:
                    if state.owns_engine:
                        engine.dispose()
                    cache.close()
                    raise
        # Only now is anything registered on the app: a failed start leaves it untouched.
        health.register_check(
            SCHEMA_CHECK, lambda: self._check_schema(state), depends_on=health.DATABASE
        )
        if self.migrate_command is not None:
            _import_alembic_quietly()  # Flask-Migrate imports Alembic
            from ai_secretary_schema.flask.migrate import init_migrate

            state.migrate = init_migrate(app, state, self.migrate_command)
        if self.health_path is not None:
            app.register_blueprint(create_health_blueprint(health, self.health_path))
        if db is None:
            app.teardown_appcontext(self._remove_session)  # db.session: Flask-SQLAlchemy's own
        if state.startup_pending:
            app.before_request(self._deferred_startup)
        app.extensions[EXTENSION_KEY] = state
        fork.register(state)
        self._apps = [ref for ref in self._apps if ref() is not None] + [weakref.ref(app)]
        if settings.health_monitoring and not deferred:
            health.start_background_monitoring()

    @staticmethod
    def _usable_url(
        connection: ConnectionResult, settings: SchemaSettings, *, lenient: bool
    ) -> URL:
        """The URL of the verified engine, or, where the process must start anyway, the
        configured one (its engine then connects on first use).

        A database that does not answer at start is an error for a server (the startup hook
        cannot run) but not with ``SCHEMA_STARTUP=off`` or for a ``flask`` command: the app
        starts, /health reports the outage, and ``flask db`` reports its own error. A URL that
        can never work (driver missing, invalid in strict mode) is always an error.
        """
        if connection.engine is not None:
            return connection.engine.url
        hopeless = connection.error_kind in (
            ConnectionErrorKind.DRIVER_MISSING,
            ConnectionErrorKind.INVALID_URL,
        )
        if hopeless or not lenient:
            connection.raise_for_error()
        return settings.url  # init_app says so, once the health manager can count the lines

    # -- startup hook ------------------------------------------------------------------------

    def _run_startup(self, state: SchemaExtensionState) -> SchemaReport:
        with state.startup_lock:
            if state.startup_report is not None:
                return state.startup_report
            # The application's own engine: the migrator neither reconnects nor disposes it.
            migrator = Migrator(state.settings, engine=state.engine, host=state.host)
            report = migrator.run_startup(state.settings.schema_startup)
            state.startup_report = report
            state.startup_pending = False
            return report

    def run_startup(self, app: Flask | None = None) -> SchemaReport | None:
        """Run the startup hook now if it has not run for the application (``None`` when off).

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
            if state.settings.health_monitoring:
                state.health.start_background_monitoring()

    # -- session -----------------------------------------------------------------------------

    def _remove_session(self, exc: BaseException | None) -> None:
        self.state().session.remove()

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
            raise ExtensionNotRegisteredError(
                f"this SchemaExtension is not registered on application {app.name!r}; call "
                "schema.init_app(app) in the application factory"
            )
        return state

    @property
    def settings(self) -> SchemaSettings:
        return self.state().settings

    @property
    def engine(self) -> Engine:
        return self.state().engine

    @property
    def session(self) -> scoped_session[Session]:
        """The current application's session (``db.session`` when Flask-SQLAlchemy is shared);
        ``schema.session()`` is the current application context's session."""
        return self.state().session

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

    @staticmethod
    def tenant_scope(tenant_id: int | None) -> AbstractContextManager[int | None]:
        """:func:`ai_secretary_schema.tenancy.tenant_scope`: every transaction of the sessions
        used inside the block works for ``tenant_id`` only (it wins over ``g.tenant_id``)."""
        return tenant_scope(tenant_id)

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
        """Stop the monitor, close the cache and dispose of the engine of ``app`` unless it is
        Flask-SQLAlchemy's (sessions are removed when their application context ends)."""
        state = self.state(app)
        fork.unregister(state)
        state.health.stop()
        state.cache.close()
        if state.owns_engine:
            state.engine.dispose()

    # -- the schema health check -------------------------------------------------------------

    def _check_schema(self, state: SchemaExtensionState) -> CheckResult:
        """At head / behind / drifted: the live revision against the head, plus the drift the
        startup hook's report found (a structural comparison is too slow for every check)."""
        from ai_secretary_schema.history import current_revisions, managed_current

        heads, known = state.revisions()
        with probe_connection(state.engine, state.settings.health_check_timeout) as connection:
            current = current_revisions(connection)
        if state.host is not None:
            # A package revision a host revision depends on is recorded only through it.
            current = managed_current(current, state.histories)
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


def _host_history(
    directory: str | os.PathLike[str] | None, db: SQLAlchemy | None, settings: SchemaSettings
) -> HostHistory | None:
    if directory is None:
        return None
    return HostHistory(
        Path(directory).resolve(),
        metadata=None if db is None else db.metadata,
        managed=settings.schema_host_migrations == "startup",
    )


# -- Flask-SQLAlchemy ----------------------------------------------------------------------------


def _flask_sqlalchemy_initialised(app: Flask, db: SQLAlchemy) -> bool:
    registered = app.extensions.get("sqlalchemy")
    if registered is not None and registered is not db:
        raise ExtensionAlreadyRegisteredError(
            f"another Flask-SQLAlchemy instance is registered on application {app.name!r}; "
            "pass that one to SchemaExtension (db=…), so that the application has one engine"
        )
    return registered is db


def _adopt_flask_sqlalchemy_database(
    app: Flask, db: SQLAlchemy, settings: SchemaSettings
) -> SchemaSettings:
    """``settings`` naming the database of a Flask-SQLAlchemy the host configured itself.

    The host configured it when ``db`` is initialised on ``app`` or ``SQLALCHEMY_DATABASE_URI``
    is set (``db`` is then initialised here, with the host's own configuration). Its database
    is adopted when ``DATABASE_URL`` is set nowhere; a ``DATABASE_URL`` naming another database
    is an error, since the two would share one engine.
    """
    if not _flask_sqlalchemy_initialised(app, db):
        if app.config.get("SQLALCHEMY_DATABASE_URI") is None:
            return settings  # the extension configures db (see _share_flask_sqlalchemy_engine)
        db.init_app(app)
    host_url = _flask_sqlalchemy_engine(app, db).url
    source = settings.sources.get("database_url", "default")
    if source in ("argument", "app.config", "environment"):
        if _database_identity(settings.url) != _database_identity(host_url):
            raise DatabaseConfigError(
                f"DATABASE_URL ({source}) names {settings.database.redacted} but the "
                f"Flask-SQLAlchemy instance passed as db= uses {redact_url(host_url)} "
                "(SQLALCHEMY_DATABASE_URI); the extension shares db's engine, so both must name "
                "one database: leave DATABASE_URL unset to use db's, or set "
                "SQLALCHEMY_DATABASE_URI to the same database (or leave it unset and let the "
                "extension configure db)",
                url=settings.database.redacted,
            )
        return settings
    adopted = settings.override(database_url=host_url)
    return replace(adopted, sources={**adopted.sources, "database_url": FLASK_SQLALCHEMY_SOURCE})


def _share_flask_sqlalchemy_engine(
    app: Flask, db: SQLAlchemy, url: URL, settings: SchemaSettings
) -> Engine:
    """Flask-SQLAlchemy's engine of ``app``, configured by the extension if the host did not."""
    configured_by_host = _flask_sqlalchemy_initialised(app, db)
    if not configured_by_host:
        url = _absolute_sqlite_url(url)
        if url.get_backend_name() == "sqlite":
            ensure_sqlite_directory(url)  # as the package's own create_engine does
        app.config["SQLALCHEMY_DATABASE_URI"] = url.render_as_string(hide_password=False)
        # The package's per-dialect defaults; options the host set itself win.
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
            **engine_options(url, settings),
            **app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {}),
        }
        db.init_app(app)
    engine = _flask_sqlalchemy_engine(app, db)
    # The package's migrations and models rely on what engine.create_engine sets up on SQLite
    # (foreign keys, WAL, real BEGIN for transactional DDL), applied to every connection as it
    # is made. Connections the host's engine pooled before lack it, so they are dropped (an
    # in-memory database lives in its one connection: kept).
    if configured_by_host and not is_sqlite_memory(engine.url):
        engine.dispose()
    return configure_engine(engine, settings)
