"""SchemaExtension on a real SQLite file and a real PostgreSQL database.

Covers both initialisation forms, the double-registration error, the settings (keyword arguments
named as the SchemaSettings fields; argument > app.config > environment), the one engine of an
application (the startup hook and the session run on it), the session's lifetime (one per
application context, removed at teardown), the startup hook (once per application, its report on
the application's state; what each mode does on a database that is behind), Flask-SQLAlchemy
sharing its engine and session, and the log filter on every module of the package.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import pytest
import sqlalchemy as sa
from flask import Flask
from flask.cli import ScriptInfo
from flask_sqlalchemy import SQLAlchemy
from helpers.db import table_names
from sqlalchemy.orm import Mapped, Session, mapped_column, scoped_session

import ai_secretary_schema
from ai_secretary_schema import migrator
from ai_secretary_schema.errors import (
    ConnectionErrorKind,
    DatabaseConfigError,
    DatabaseConnectionError,
    ExtensionAlreadyRegisteredError,
    SchemaValidationError,
)
from ai_secretary_schema.flask import (
    EXTENSION_KEY,
    SchemaExtension,
    SchemaExtensionState,
)
from ai_secretary_schema.models import Tenant
from ai_secretary_schema.rate_limit import RateLimitingFilter
from ai_secretary_schema.settings import Setting, declared_settings

if TYPE_CHECKING:
    from conftest import StatementLog

CONFIG_KEYS = (*(setting.key for setting in declared_settings()), "SQLALCHEMY_DATABASE_URI")

MakeApp = Callable[..., tuple[Flask, SchemaExtension]]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's shell must not leak a DATABASE_URL or REDIS_URL into these tests."""
    for key in CONFIG_KEYS:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def make_app() -> Iterator[MakeApp]:
    """Factory of (app, extension) pairs; every engine is disposed of afterwards."""
    made: list[tuple[Flask, SchemaExtension]] = []

    def make(
        config: dict[str, Any] | None = None, *, db: SQLAlchemy | None = None, **arguments: Any
    ) -> tuple[Flask, SchemaExtension]:
        app = Flask(f"test_app_{len(made)}")
        app.config.update(config or {})
        extension = SchemaExtension(**arguments)
        extension.init_app(app, db=db)
        made.append((app, extension))
        return app, extension

    yield make
    for app, extension in made:
        extension.close(app)
        state = app.extensions[EXTENSION_KEY]
        if state.db is not None:
            with app.app_context():
                state.db.engine.dispose()


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
def test_second_registration_raises_and_says_what_to_do(make_app: MakeApp, sqlite_url: str) -> None:
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
    extension = SchemaExtension(schema_startup="off")
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


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.sqlite
@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("database_strict", "1", True),
        ("schema_startup", "OFF", "off"),
        ("schema_lock_timeout", 12, 12.0),
        ("database_pool_size", "7", 7),
        ("database_max_overflow", 0, 0),
        ("database_pool_recycle", -1, -1),
        ("database_pool_timeout", 4.5, 4.5),
        ("database_pool_pre_ping", "no", False),
        ("database_connect_timeout", 2, 2.0),
        ("database_connect_deadline", 1, 1.0),
        ("redis_url", "redis://127.0.0.1:1/0", "redis://127.0.0.1:1/0"),
        ("health_check_interval", "11", 11.0),
        ("health_check_timeout", 0.5, 0.5),
        ("health_monitoring", False, False),
    ],
)
def test_settings_are_keyword_arguments_named_as_the_settings_fields(
    make_app: MakeApp, sqlite_url: str, name: str, value: Any, expected: Any
) -> None:
    arguments = {"schema_startup": "off", name: value}
    app, extension = make_app(database_url=sqlite_url, **arguments)
    settings = extension.state(app).settings
    assert getattr(settings, name) == expected
    assert settings.sources[name] == "argument"


#: A value for each setting whose default is unset.
SAMPLES: dict[str, Any] = {
    "redis_url": "redis://127.0.0.1:1/0",
    "schema_migration_url": "sqlite:///migrations.db",
}


@pytest.mark.sqlite
@pytest.mark.parametrize("setting", declared_settings(), ids=lambda s: s.name)
def test_every_declared_setting_is_a_keyword_argument(
    make_app: MakeApp, sqlite_url: str, setting: Setting
) -> None:
    value = {"database_url": sqlite_url, **SAMPLES}.get(setting.name, setting.default)
    arguments = {"database_url": sqlite_url, "schema_startup": "off", setting.name: value}
    app, extension = make_app(**arguments)
    settings = extension.state(app).settings
    assert getattr(settings, setting.name) == value
    assert settings.sources[setting.name] == "argument"


@pytest.mark.parametrize(
    "name", ["startup", "strict", "pool_size", "start_monitoring", "lock_timeout", "databse_url"]
)
def test_an_unknown_setting_is_a_type_error_listing_the_valid_ones(name: str) -> None:
    with pytest.raises(TypeError, match=name) as raised:
        SchemaExtension(**{name: "1"})
    for setting in declared_settings():
        assert setting.name in str(raised.value)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"schema_startup": "sometimes"}, "SCHEMA_STARTUP='sometimes' is not a startup mode"),
        ({"database_pool_size": 0}, "DATABASE_POOL_SIZE=0 is not a valid int"),
        ({"database_url": " "}, "The database URL given is empty"),
    ],
    ids=["startup mode", "pool size", "empty url"],
)
def test_an_invalid_setting_fails_where_the_extension_is_created(
    arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(DatabaseConfigError, match=message):
        SchemaExtension(**arguments)


@pytest.mark.sqlite
def test_config_precedence_argument_then_app_config_then_environment(
    make_app: MakeApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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
        schema_startup="upgrade",
        database_pool_size=7,
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
    make_app: MakeApp, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
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
        database_url=sqlite_url, redis_url=" ", health_check_interval=0.05, schema_startup="off"
    )
    assert extension.state(app).cache.redis_url is None  # blank argument: no Redis
    assert extension.state(app).health.monitoring  # HEALTH_MONITORING=yes from the environment


# -- one engine per application ----------------------------------------------------------------


@pytest.mark.postgresql
def test_startup_hook_runs_on_the_engine_the_connection_check_verified(
    pg_url: str, statement_log: StatementLog
) -> None:
    app = Flask("one_engine")
    extension = SchemaExtension(app, database_url=pg_url)
    try:
        state = extension.state(app)
        assert state.connection.engine is state.engine
        ran = " ".join(statement_log.on(state.engine))
        assert "CREATE TABLE tenants" in ran  # the migrations
        assert "alembic_version" in ran
        # No second engine migrated, compared or reconnected; only the migration lock takes a
        # connection of its own (a session advisory lock must outlive the migration's
        # transactions).
        assert statement_log.elsewhere(state.engine) == []
    finally:
        extension.close(app)


@pytest.mark.sqlite
def test_session_is_a_scoped_session_of_the_application_engine(
    make_app: MakeApp, sqlite_url: str
) -> None:
    app, extension = make_app(database_url=sqlite_url)
    assert isinstance(extension.session, scoped_session)
    assert extension.session is extension.state(app).session
    with app.app_context():
        # SQLAlchemy's own Session (sessionmaker subclasses it once, with nothing added).
        assert type(extension.session()).__bases__ == (Session,)
        assert extension.session.get_bind() is extension.engine


# -- session -----------------------------------------------------------------------------------


@pytest.mark.sqlite
def test_session_is_per_app_context_and_removed_at_teardown(
    make_app: MakeApp, sqlite_url: str
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
    make_app: MakeApp, sqlite_url: str
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


def test_session_outside_an_app_context_says_so(make_app: MakeApp, sqlite_url: str) -> None:
    _, extension = make_app(database_url=sqlite_url, schema_startup="off")
    with pytest.raises(RuntimeError, match="application context"):
        extension.session()


# -- startup hook ------------------------------------------------------------------------------


@pytest.mark.postgresql
def test_startup_hook_runs_once_per_application_and_keeps_its_report_there(
    make_app: MakeApp, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_run_startup = migrator.Migrator.run_startup

    def counting_run_startup(self: migrator.Migrator, mode: Any = None) -> Any:
        calls.append(str(mode))
        return real_run_startup(self, mode)

    # A wiring check only: the real hook still runs against the real database.
    monkeypatch.setattr(migrator.Migrator, "run_startup", counting_run_startup)
    first_app, first = make_app(database_url=pg_url)
    report = first.state(first_app).startup_report
    assert report is not None
    assert report.at_head
    assert calls == ["upgrade"]
    assert first.run_startup(first_app) is report  # not again for the same application
    assert calls == ["upgrade"]

    # Another application on the same database runs its own hook (nothing is remembered
    # outside the application); the database is at head by now.
    second_app, second = make_app({"DATABASE_URL": pg_url})
    assert calls == ["upgrade", "upgrade"]
    second_report = second.state(second_app).startup_report
    assert second_report is not None
    assert second_report is not report
    assert second_report.at_head


@pytest.mark.parametrize("revision", [None, "0001"], ids=["empty", "at_0001"])
def test_validate_on_a_database_behind_raises_a_typed_error(
    db_url: str, revision: str | None
) -> None:
    if revision is not None:
        migrator.upgrade(db_url, revision)
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
    make_app: MakeApp, db_url: str
) -> None:
    app, extension = make_app({"SCHEMA_STARTUP": "off", "DATABASE_URL": db_url})
    assert table_names(db_url) == set()
    state = extension.state(app)
    assert state.startup_report is None
    response = app.test_client().get("/health")
    assert response.status_code == 200
    body = response.json
    assert body["status"] == "degraded"
    assert body["services"]["database"]["status"] == "healthy"
    assert body["services"]["schema"]["status"] == "unhealthy"
    assert "behind" in body["services"]["schema"]["error"]

    migrator.upgrade(db_url)
    body = app.test_client().get("/health").json
    assert body["services"]["schema"]["status"] == "healthy"
    assert body["status"] == "healthy"


def test_upgrade_mode_brings_the_database_to_head(make_app: MakeApp, db_url: str) -> None:
    app, extension = make_app(database_url=db_url)
    assert {"tenants", "users", "performance_alerts"} <= table_names(db_url)
    assert extension.state(app).startup_report is not None
    assert migrator.current(db_url).at_head
    with app.app_context():
        extension.session.add(Tenant(name="Acme", slug="acme"))
        extension.session.commit()
        assert extension.session.scalars(sa.select(Tenant.slug)).all() == ["acme"]


@pytest.mark.postgresql
def test_unreachable_database_at_start(make_app: MakeApp, pg_url: str) -> None:
    missing = pg_url.rsplit("/", 1)[0] + "/ais_test_does_not_exist"
    with pytest.raises(DatabaseConnectionError) as raised:
        SchemaExtension(Flask("down"), database_url=missing)
    assert raised.value.kind is ConnectionErrorKind.DATABASE_MISSING

    # SCHEMA_STARTUP=off: the application starts anyway and /health reports the outage.
    app, _ = make_app(database_url=missing, schema_startup="off", health_check_timeout=2)
    response = app.test_client().get("/health")
    assert response.status_code == 503
    assert response.json["services"]["database"]["status"] == "unhealthy"
    assert "does not exist" in response.json["services"]["database"]["error"]


# -- where the startup hook runs ---------------------------------------------------------------


@pytest.mark.sqlite
def test_startup_deferred_to_the_first_request_inside_a_flask_command(
    make_app: MakeApp, sqlite_url: str
) -> None:
    # What `flask db …` (or any application command) looks like when it loads the app: the
    # current click command is the `flask` group itself.
    with click.Context(click.Group("flask"), obj=ScriptInfo()):
        app, extension = make_app(database_url=sqlite_url, schema_startup="upgrade")
    state = extension.state(app)
    assert state.startup_pending
    assert table_names(sqlite_url) == set()
    assert app.test_client().get("/health").status_code == 200
    assert not state.startup_pending
    assert state.startup_report is not None
    assert "performance_alerts" in table_names(sqlite_url)


@pytest.mark.sqlite
def test_startup_runs_at_init_under_flask_run(make_app: MakeApp, sqlite_url: str) -> None:
    with click.Context(click.Command("run"), obj=ScriptInfo()):
        app, extension = make_app(database_url=sqlite_url)
    assert extension.state(app).startup_report is not None
    assert "performance_alerts" in table_names(sqlite_url)


# -- Flask-SQLAlchemy ----------------------------------------------------------------------------


def host_db() -> tuple[SQLAlchemy, Any]:
    """A host application's Flask-SQLAlchemy with a model of its own (a fresh registry)."""
    db = SQLAlchemy()

    class Note(db.Model):  # type: ignore[name-defined, misc]
        __tablename__ = "host_notes"
        id: Mapped[int] = mapped_column(primary_key=True)
        text: Mapped[str] = mapped_column(sa.String(100))

    return db, Note


def test_flask_sqlalchemy_shares_one_engine_and_session(
    make_app: MakeApp, db_url: str, statement_log: StatementLog
) -> None:
    db, _ = host_db()
    app, extension = make_app(database_url=db_url, db=db)
    with app.app_context():
        assert extension.engine is db.engine
        assert extension.session is db.session
        # The startup hook migrated over db's engine, and nothing else ran on another engine
        # after the connection check (which verifies the URL, then is disposed of).
        assert "alembic_version" in " ".join(statement_log.on(db.engine))
        assert not [s for s in statement_log.elsewhere(db.engine) if "alembic" in s]
        assert not [s for s in statement_log.elsewhere(db.engine) if "CREATE" in s]
    assert {"tenants", "users", "performance_alerts"} <= table_names(db_url)


def test_a_host_model_and_a_package_model_in_one_db_session_transaction(
    make_app: MakeApp, db_url: str
) -> None:
    db, Note = host_db()
    app, _ = make_app(database_url=db_url, db=db)
    with app.app_context():
        db.create_all()  # the host's own table, beside the package's
        db.session.add_all([Note(text="rolled back"), Tenant(name="Gone", slug="gone")])
        db.session.flush()
        db.session.rollback()
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Note)) == 0
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Tenant)) == 0

        tenant = Tenant(name="Acme", slug="acme")
        db.session.add_all([Note(text="kept"), tenant])
        db.session.commit()
        tenant_id = tenant.id
    with app.app_context():
        found = db.session.get(Tenant, tenant_id)
        assert found is not None
        assert found.slug == "acme"
        assert db.session.scalars(sa.select(Note.text)).all() == ["kept"]


@pytest.mark.sqlite
@pytest.mark.parametrize("configured_by", ["extension", "host"])
def test_flask_sqlalchemy_engine_gets_the_package_sqlite_settings(
    make_app: MakeApp, sqlite_url: str, configured_by: str
) -> None:
    db, _ = host_db()
    config: dict[str, Any] = {}
    arguments: dict[str, Any] = {"database_url": sqlite_url}
    if configured_by == "host":
        config, arguments = {"SQLALCHEMY_DATABASE_URI": sqlite_url}, {}
    app, _ = make_app(config, db=db, **arguments)
    with app.app_context(), db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        # pysqlite's own transaction handling is off: SQLAlchemy's BEGIN is the real one.
        assert connection.connection.driver_connection.isolation_level is None  # type: ignore[union-attr]


@pytest.mark.sqlite
def test_flask_sqlalchemy_gets_an_absolute_sqlite_path(
    make_app: MakeApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Flask-SQLAlchemy reads a relative SQLite path against app.instance_path; the package
    # against the working directory. The extension hands db the file it verified.
    monkeypatch.chdir(tmp_path)
    db, _ = host_db()
    app, extension = make_app(database_url="sqlite:///relative.db", db=db)
    assert extension.state(app).engine.url.database == str(tmp_path / "relative.db")
    assert "tenants" in table_names(f"sqlite:///{tmp_path / 'relative.db'}")


@pytest.mark.sqlite
def test_a_host_configured_flask_sqlalchemy_database_is_adopted(
    make_app: MakeApp, sqlite_url: str
) -> None:
    db, _ = host_db()
    host = Flask("host_configured")
    host.config["SQLALCHEMY_DATABASE_URI"] = sqlite_url
    db.init_app(host)
    extension = SchemaExtension(host, db=db)
    try:
        state = extension.state(host)
        assert state.settings.database_url == sqlite_url
        assert state.settings.sources["database_url"] == "SQLALCHEMY_DATABASE_URI"
        with host.app_context():
            assert state.engine is db.engine
        assert "performance_alerts" in table_names(sqlite_url)
    finally:
        extension.close(host)
        with host.app_context():
            db.engine.dispose()


@pytest.mark.parametrize(
    ("database_url", "host_uri", "conflict"),
    [
        (
            "postgresql://app:pw-one@127.0.0.1:5432/one",
            "postgresql+psycopg2://app:pw-two@127.0.0.1:5432/two",
            True,
        ),
        (
            "postgresql://app:pw-one@127.0.0.1:5432/one",
            "postgresql+psycopg2://app:pw-two@127.0.0.1:5433/one",
            True,
        ),
        ("sqlite:///{tmp}/a.db", "sqlite:///{tmp}/b.db", True),
        (
            "postgres://app:pw-one@127.0.0.1:5432/one",
            "postgresql+psycopg2://app:pw-one@127.0.0.1:5432/one",
            False,
        ),
        ("sqlite:///{tmp}/a.db", "sqlite:///{tmp}/./a.db", False),
    ],
    ids=["other database", "other port", "other file", "same, spelt otherwise", "same file"],
)
def test_database_url_and_flask_sqlalchemy_naming_different_databases_is_an_error(
    tmp_path: Path, database_url: str, host_uri: str, conflict: bool
) -> None:
    db, _ = host_db()
    app = Flask("conflict")
    app.config["SQLALCHEMY_DATABASE_URI"] = host_uri.format(tmp=tmp_path)
    app.config["DATABASE_URL"] = database_url.format(tmp=tmp_path)
    app.config["SCHEMA_STARTUP"] = "off"  # nothing to migrate: only the URLs are compared
    app.config["DATABASE_CONNECT_DEADLINE"] = 0
    if conflict:
        with pytest.raises(DatabaseConfigError, match="both must name") as raised:
            SchemaExtension(app, db=db)
        message = str(raised.value)
        assert "pw-one" not in message
        assert "pw-two" not in message
        assert "DATABASE_URL" in message
        assert "SQLALCHEMY_DATABASE_URI" in message
        assert EXTENSION_KEY not in app.extensions
    else:
        extension = SchemaExtension(app, db=db)
        with app.app_context():
            assert extension.engine is db.engine
        extension.close(app)
    with app.app_context():
        db.engine.dispose()


# -- logging -----------------------------------------------------------------------------------


def package_modules() -> list[str]:
    """Every module of the package, from its files (not from the code under test)."""
    root = Path(ai_secretary_schema.__file__).parent
    names = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.mark.sqlite
@pytest.mark.parametrize("module", package_modules())
def test_rate_limiting_filter_on_the_logger_of_every_package_module(
    make_app: MakeApp, sqlite_url: str, module: str
) -> None:
    make_app(database_url=sqlite_url, schema_startup="off")
    make_app(database_url=sqlite_url, schema_startup="off")
    filters = [f for f in logging.getLogger(module).filters if isinstance(f, RateLimitingFilter)]
    assert len(filters) == 1  # installed once, however many apps


#: A worker's start in a process of its own, logging everything at INFO on stderr.
WARM_WORKER = """
import logging, sys
from flask import Flask
from ai_secretary_schema import SchemaExtension
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
app = Flask("warm_worker")
SchemaExtension(app, database_url=sys.argv[1])
assert app.extensions["ai_secretary_schema"].startup_report.fast_path
"""


def test_a_warm_start_in_a_new_process_writes_no_alembic_line(
    make_app: MakeApp, db_url: str
) -> None:
    make_app(database_url=db_url)  # the cold start: migrates, compares, remembers
    worker = subprocess.run(
        [sys.executable, "-c", WARM_WORKER, db_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = worker.stderr.splitlines()
    assert [line for line in lines if line.startswith("alembic")] == []
    assert [line.split(": ")[0] for line in lines] == ["ai_secretary_schema.connection"]


def test_connected_is_logged_once_per_application_start_never_by_its_checks(
    make_app: MakeApp, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ai_secretary_schema")
    app, extension = make_app(
        database_url=db_url, health_monitoring=True, health_check_interval=0.02
    )
    health = extension.state(app).health
    client = app.test_client()
    for _ in range(20):
        assert client.get("/health").status_code == 200
    rounds, deadline = health.rounds_completed, time.monotonic() + 10
    while health.rounds_completed < rounds + 5:  # background rounds check the database too
        assert time.monotonic() < deadline
        time.sleep(0.02)
    connected = [r for r in caplog.records if r.getMessage().startswith("Connected to")]
    assert len(connected) == 1
