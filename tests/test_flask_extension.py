"""SchemaExtension on a real SQLite file and a real PostgreSQL database.

Covers both initialisation forms, the double-registration error, the configuration precedence
(argument > app.config > environment), the session's lifetime (one per application context,
removed at teardown), the once-per-process startup hook and what each startup mode does on a
database that is behind.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import sqlalchemy as sa
from flask import Flask
from flask.cli import ScriptInfo
from helpers.db import table_names

from ai_secretary_schema import commands
from ai_secretary_schema.errors import (
    ConnectionErrorKind,
    DatabaseConnectionError,
    ExtensionAlreadyRegisteredError,
    SchemaValidationError,
)
from ai_secretary_schema.flask import (
    EXTENSION_KEY,
    PACKAGE_LOGGERS,
    SchemaExtension,
    SchemaExtensionState,
)
from ai_secretary_schema.models import Tenant

CONFIG_KEYS = (
    "DATABASE_URL",
    "SCHEMA_STARTUP",
    "REDIS_URL",
    "HEALTH_CHECK_INTERVAL",
    "HEALTH_CHECK_TIMEOUT",
    "HEALTH_MONITORING",
    "DATABASE_POOL_SIZE",
    "DATABASE_STRICT",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's shell must not leak a DATABASE_URL or REDIS_URL into these tests."""
    for key in CONFIG_KEYS:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def make_app() -> Iterator[Callable[..., tuple[Flask, SchemaExtension]]]:
    """Factory of (app, extension) pairs; every engine is disposed of afterwards."""
    made: list[tuple[Flask, SchemaExtension]] = []

    def make(
        config: dict[str, Any] | None = None, **arguments: Any
    ) -> tuple[Flask, SchemaExtension]:
        app = Flask(f"test_app_{len(made)}")
        app.config.update(config or {})
        extension = SchemaExtension(**arguments)
        extension.init_app(app)
        made.append((app, extension))
        return app, extension

    yield make
    for app, extension in made:
        extension.close(app)


# -- registration ----------------------------------------------------------------------------


@pytest.mark.sqlite
def test_both_init_forms_register_the_extension(sqlite_url: str, tmp_path: Path) -> None:
    direct_app = Flask("direct")
    direct = SchemaExtension(direct_app, database_url=sqlite_url)
    factory_app = Flask("factory")
    factory = SchemaExtension(database_url=f"sqlite:///{tmp_path / 'other.db'}")
    factory.init_app(factory_app)
    try:
        for app, extension in ((direct_app, direct), (factory_app, factory)):
            state = app.extensions[EXTENSION_KEY]
            assert isinstance(state, SchemaExtensionState)
            assert state.extension is extension
            assert extension.state(app) is state
            assert "migrate" in app.extensions
            assert "db" in app.cli.commands
            assert app.test_client().get("/health").status_code == 200
        assert direct.engine is direct_app.extensions[EXTENSION_KEY].engine  # the only app
    finally:
        direct.close(direct_app)
        factory.close(factory_app)


@pytest.mark.sqlite
def test_second_registration_raises_and_says_what_to_do(
    make_app: Callable[..., tuple[Flask, SchemaExtension]], sqlite_url: str
) -> None:
    app, extension = make_app(database_url=sqlite_url)
    with pytest.raises(ExtensionAlreadyRegisteredError, match=r"init_app\(app\) once"):
        extension.init_app(app)
    with pytest.raises(ExtensionAlreadyRegisteredError, match="already registered"):
        SchemaExtension(app, database_url=sqlite_url)
    # The first registration is intact.
    assert app.extensions[EXTENSION_KEY].extension is extension


@pytest.mark.sqlite
def test_existing_flask_migrate_is_not_silently_replaced(sqlite_url: str) -> None:
    from flask_migrate import Migrate  # type: ignore[import-untyped]

    app = Flask("own_migrate")
    Migrate(app, db=type("DB", (), {"metadata": sa.MetaData()})())
    with pytest.raises(ExtensionAlreadyRegisteredError, match="migrate_command=None"):
        SchemaExtension(app, database_url=sqlite_url)
    assert EXTENSION_KEY not in app.extensions
    extension = SchemaExtension(app, database_url=sqlite_url, migrate_command=None)
    extension.close(app)


def test_state_outside_a_context_with_two_apps_is_an_error(tmp_path: Path) -> None:
    extension = SchemaExtension(startup="off")
    apps = []
    for name in ("one", "two"):
        app = Flask(name)
        app.config["DATABASE_URL"] = f"sqlite:///{tmp_path / name}.db"
        extension.init_app(app)
        apps.append(app)
    try:
        with pytest.raises(RuntimeError, match="app_context"):
            _ = extension.engine
        for app in apps:
            with app.app_context():
                assert extension.engine.url.database == str(tmp_path / f"{app.name}.db")
    finally:
        for app in apps:
            extension.close(app)


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.sqlite
def test_config_precedence_argument_then_app_config_then_environment(
    make_app: Callable[..., tuple[Flask, SchemaExtension]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env_db, config_db, argument_db = (tmp_path / f"{n}.db" for n in ("env", "config", "arg"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{env_db}")
    monkeypatch.setenv("HEALTH_CHECK_INTERVAL", "11")
    monkeypatch.setenv("SCHEMA_STARTUP", "off")
    monkeypatch.setenv("DATABASE_POOL_SIZE", "3")

    app, extension = make_app()
    state = extension.state(app)
    assert state.engine.url.database == str(env_db)
    assert state.settings.health_check_interval == 11
    assert state.settings.sources["database_url"] == "environment"

    app, extension = make_app({"DATABASE_URL": f"sqlite:///{config_db}", "SCHEMA_STARTUP": "off"})
    state = extension.state(app)
    assert state.engine.url.database == str(config_db)
    assert state.settings.sources["database_url"] == "app.config"
    assert state.settings.health_check_interval == 11  # not in app.config: environment

    app, extension = make_app(
        {"DATABASE_URL": f"sqlite:///{config_db}", "HEALTH_CHECK_INTERVAL": 22},
        database_url=f"sqlite:///{argument_db}",
        health_check_interval=33,
        startup="upgrade",
        pool_size=7,
    )
    state = extension.state(app)
    assert state.engine.url.database == str(argument_db)
    assert state.settings.sources["database_url"] == "argument"
    assert state.settings.health_check_interval == 33
    assert state.settings.schema_startup == "upgrade"
    assert state.settings.database_pool_size == 7
    assert "performance_alerts" in table_names(f"sqlite:///{argument_db}")
    # Environment SCHEMA_STARTUP=off was honoured by the first two: nothing was created there.
    assert not table_names(f"sqlite:///{env_db}")
    assert not table_names(f"sqlite:///{config_db}")


@pytest.mark.sqlite
def test_redis_url_and_monitoring_follow_the_same_precedence(
    make_app: Callable[..., tuple[Flask, SchemaExtension]],
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("HEALTH_MONITORING", "yes")
    app, extension = make_app(
        {"REDIS_URL": "redis://127.0.0.1:6379/0", "HEALTH_MONITORING": "0"},
        database_url=sqlite_url,
    )
    assert extension.state(app).cache.redis_url == "redis://127.0.0.1:6379/0"
    assert not extension.state(app).health.monitoring

    app, extension = make_app(
        database_url=sqlite_url, redis_url=" ", health_check_interval=0.05, startup="off"
    )
    assert extension.state(app).cache.redis_url is None  # blank argument: no Redis
    assert extension.state(app).health.monitoring  # HEALTH_MONITORING=yes from the environment


# -- session -----------------------------------------------------------------------------------


@pytest.mark.sqlite
def test_session_is_per_app_context_and_removed_at_teardown(
    make_app: Callable[..., tuple[Flask, SchemaExtension]], sqlite_url: str
) -> None:
    app, extension = make_app(database_url=sqlite_url)
    with app.app_context():
        first = extension.session()
        assert extension.session() is first
        assert first.get_bind() is extension.engine
        pending = Tenant(name="Pending", slug="pending")
        first.add(pending)
        with app.app_context():  # a nested context is a new scope
            assert extension.session() is not first
            assert not extension.session.registry().new
        assert extension.session() is first
    # Teardown removed (closed) it: the pending object is gone and the registry is empty.
    assert pending not in first
    with app.app_context():
        assert not extension.session.registry.has()
        second = extension.session()
        assert second is not first
        assert second.scalars(sa.select(Tenant)).all() == []


@pytest.mark.sqlite
def test_session_removed_after_each_request_and_separate_per_thread(
    make_app: Callable[..., tuple[Flask, SchemaExtension]], sqlite_url: str
) -> None:
    app, extension = make_app(database_url=sqlite_url)
    seen: list[int] = []

    @app.get("/session")
    def which_session() -> dict[str, int]:
        extension.session.add(Tenant(name="Never committed", slug=f"x{len(seen)}"))
        seen.append(id(extension.session()))
        return {"pending": len(extension.session.new)}

    client = app.test_client()
    assert client.get("/session").json == {"pending": 1}
    assert client.get("/session").json == {"pending": 1}  # nothing carried over
    with app.app_context():
        assert extension.session.scalar(sa.select(sa.func.count()).select_from(Tenant)) == 0

    sessions: dict[str, int] = {}
    barrier = threading.Barrier(2)

    def worker(name: str) -> None:
        with app.app_context():
            sessions[name] = id(extension.session())
            barrier.wait(timeout=5)  # both sessions alive at once

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert sessions["a"] != sessions["b"]


def test_session_outside_an_app_context_says_so(
    make_app: Callable[..., tuple[Flask, SchemaExtension]], sqlite_url: str
) -> None:
    _, extension = make_app(database_url=sqlite_url, startup="off")
    with pytest.raises(RuntimeError, match="application context"):
        extension.session()


# -- startup hook ------------------------------------------------------------------------------


@pytest.mark.postgresql
def test_startup_hook_runs_once_per_process_and_database(
    make_app: Callable[..., tuple[Flask, SchemaExtension]],
    make_pg_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ai_secretary_schema.migration_manager import MigrationManager

    calls: list[str] = []
    real_run_startup = MigrationManager.run_startup

    def counting_run_startup(self: MigrationManager, mode: Any = None) -> Any:
        calls.append(str(mode))
        return real_run_startup(self, mode)

    # A wiring check only: the real hook still runs against the real database.
    monkeypatch.setattr(MigrationManager, "run_startup", counting_run_startup)
    url = make_pg_database()
    first_app, first = make_app(database_url=url)
    second_app, second = make_app({"DATABASE_URL": url})
    assert calls == ["upgrade"]
    assert first.state(first_app).startup_performed
    assert not second.state(second_app).startup_performed
    assert second.state(second_app).startup_report is first.state(first_app).startup_report
    assert first.state(first_app).startup_report is not None
    assert first.state(first_app).startup_report.at_head

    other_app, other = make_app(database_url=make_pg_database())  # another database: runs
    assert calls == ["upgrade", "upgrade"]
    assert other.state(other_app).startup_performed


@pytest.mark.parametrize("revision", [None, "0001"], ids=["empty", "at_0001"])
def test_validate_on_a_database_behind_raises_a_typed_error(
    db_url: str, revision: str | None
) -> None:
    if revision is not None:
        commands.upgrade(db_url, revision)
    before = table_names(db_url)
    app = Flask("validate")
    app.config["SCHEMA_STARTUP"] = "validate"
    with pytest.raises(SchemaValidationError, match="SCHEMA_STARTUP=validate") as raised:
        SchemaExtension(app, database_url=db_url)
    assert not raised.value.report.at_head
    assert raised.value.report.current == (() if revision is None else ("0001",))
    # Nothing was changed, and nothing was registered on the app: the host decides.
    assert table_names(db_url) == before
    assert EXTENSION_KEY not in app.extensions
    assert "migrate" not in app.extensions
    assert not app.blueprints


def test_startup_off_skips_the_hook_and_health_reports_the_schema_behind(
    make_app: Callable[..., tuple[Flask, SchemaExtension]], db_url: str
) -> None:
    app, extension = make_app({"SCHEMA_STARTUP": "off", "DATABASE_URL": db_url})
    assert table_names(db_url) == set()
    state = extension.state(app)
    assert state.startup_report is None
    assert not state.startup_performed
    response = app.test_client().get("/health")
    assert response.status_code == 200
    body = response.json
    assert body["status"] == "degraded"
    assert body["services"]["database"]["status"] == "healthy"
    assert body["services"]["schema"]["status"] == "unhealthy"
    assert "behind" in body["services"]["schema"]["error"]

    commands.upgrade(db_url)
    body = app.test_client().get("/health").json
    assert body["services"]["schema"]["status"] == "healthy"
    assert body["status"] == "healthy"


def test_upgrade_mode_brings_the_database_to_head(
    make_app: Callable[..., tuple[Flask, SchemaExtension]], db_url: str
) -> None:
    app, extension = make_app(database_url=db_url)
    assert {"tenants", "users", "performance_alerts"} <= table_names(db_url)
    assert extension.state(app).startup_report is not None
    assert commands.current(db_url).at_head
    with app.app_context():
        extension.session.add(Tenant(name="Acme", slug="acme"))
        extension.session.commit()
        assert extension.session.scalars(sa.select(Tenant.slug)).all() == ["acme"]


@pytest.mark.postgresql
def test_unreachable_database_at_start(
    make_app: Callable[..., tuple[Flask, SchemaExtension]], pg_url: str
) -> None:
    missing = pg_url.rsplit("/", 1)[0] + "/ais_test_does_not_exist"
    with pytest.raises(DatabaseConnectionError) as raised:
        SchemaExtension(Flask("down"), database_url=missing)
    assert raised.value.kind is ConnectionErrorKind.DATABASE_MISSING

    # SCHEMA_STARTUP=off: the application starts anyway and /health reports the outage.
    app, _ = make_app(database_url=missing, startup="off", health_check_timeout=2)
    response = app.test_client().get("/health")
    assert response.status_code == 503
    assert response.json["services"]["database"]["status"] == "unhealthy"
    assert "does not exist" in response.json["services"]["database"]["error"]


# -- logging -----------------------------------------------------------------------------------


@pytest.mark.sqlite
def test_rate_limiting_filter_on_the_package_loggers(
    make_app: Callable[..., tuple[Flask, SchemaExtension]], sqlite_url: str
) -> None:
    from ai_secretary_schema.rate_limit import RateLimitingFilter

    make_app(database_url=sqlite_url)
    make_app(database_url=sqlite_url)
    for name in PACKAGE_LOGGERS:
        filters = [f for f in logging.getLogger(name).filters if isinstance(f, RateLimitingFilter)]
        assert len(filters) == 1, name  # installed once, however many apps


# -- where the startup hook runs ---------------------------------------------------------------


@pytest.mark.sqlite
def test_startup_deferred_to_the_first_request_inside_a_flask_command(
    make_app: Callable[..., tuple[Flask, SchemaExtension]], sqlite_url: str
) -> None:
    # What `flask db …` (or any application command) looks like when it loads the app: the
    # current click command is the `flask` group itself.
    with click.Context(click.Group("flask"), obj=ScriptInfo()):
        app, extension = make_app(database_url=sqlite_url, startup="upgrade")
    state = extension.state(app)
    assert state.startup_pending
    assert table_names(sqlite_url) == set()
    assert app.test_client().get("/health").status_code == 200
    assert not state.startup_pending
    assert state.startup_performed
    assert "performance_alerts" in table_names(sqlite_url)


@pytest.mark.sqlite
def test_startup_runs_at_init_under_flask_run(
    make_app: Callable[..., tuple[Flask, SchemaExtension]], sqlite_url: str
) -> None:
    with click.Context(click.Command("run"), obj=ScriptInfo()):
        app, extension = make_app(database_url=sqlite_url)
    assert extension.state(app).startup_performed
    assert "performance_alerts" in table_names(sqlite_url)
