"""Shared fixtures: real PostgreSQL databases of their own, SQLite files in ``tmp_path``.

PostgreSQL is the server already running on 127.0.0.1:5432 (``pg_ctl`` refuses to run as root,
so pytest-postgresql's ``postgresql_noproc`` is used); each test that asks for one gets a new,
uniquely named database, dropped afterwards with its connections terminated.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from helpers.db import admin_connection
from helpers.pgbouncer import PGBOUNCER, PgBouncer
from pytest_postgresql import factories
from pytest_postgresql.executors.noop import NoopExecutor
from pytest_postgresql.janitor import DatabaseJanitor
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from ai_secretary_schema.flask import SchemaExtension, uninstall_log_filter
from ai_secretary_schema.tenancy import set_tenant

# The fixture makes a template database named after ``dbname``: a name per test run keeps two
# runs on one server (a developer's and CI's) out of each other's way.
postgresql_server = factories.postgresql_noproc(
    host="127.0.0.1", port=5432, user="postgres", dbname=f"ais_run_{os.getpid()}"
)

PG_DRIVER = "postgresql+psycopg2"


def pg_url_for(server: NoopExecutor, dbname: str, *, driver: str = PG_DRIVER) -> str:
    return f"{driver}://{server.user}@{server.host}:{server.port}/{dbname}"


@pytest.fixture(autouse=True)
def _fresh_log_filter() -> Iterator[None]:
    """The extension's rate-limiting log filter is process-wide; no test inherits another's."""
    yield
    uninstall_log_filter()


@pytest.fixture(autouse=True)
def _private_warm_start_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The warm start remembers fingerprints in a cache directory (default ~/.cache): each test
    gets its own, so no test is fast-pathed by another's database (or a developer's)."""
    monkeypatch.setenv("AI_SECRETARY_SCHEMA_CACHE_DIR", str(tmp_path_factory.mktemp("warm")))


class StatementLog:
    """Every SQL statement any engine of this process executed, with the engine that ran it."""

    #: What the migration lock runs on PostgreSQL, on a connection of its own (by design: its
    #: transaction must outlive the migration's): the server check (version, database name),
    #: the advisory lock and the look-up of its holder.
    LOCK_STATEMENT = re.compile(
        r"advisory|lock_timeout|SELECT version\(\), current_database\(\)", re.IGNORECASE
    )

    def __init__(self) -> None:
        self.entries: list[tuple[Engine, str]] = []

    def record(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.entries.append((conn.engine, statement))

    def on(self, engine: Engine) -> list[str]:
        """The statements ``engine`` ran."""
        return [statement for ran_on, statement in self.entries if ran_on is engine]

    def elsewhere(self, engine: Engine) -> list[str]:
        """The statements other engines ran, the migration lock's own connection excepted."""
        return [
            statement
            for ran_on, statement in self.entries
            if ran_on is not engine and not self.LOCK_STATEMENT.search(statement)
        ]


@pytest.fixture
def statement_log() -> Iterator[StatementLog]:
    """Records every statement of every engine (a class-level event) while the test runs."""
    log = StatementLog()
    event.listen(Engine, "before_cursor_execute", log.record)
    try:
        yield log
    finally:
        event.remove(Engine, "before_cursor_execute", log.record)


@pytest.fixture
def make_pg_database(postgresql_server: NoopExecutor) -> Iterator[Callable[[], str]]:
    """Factory of fresh PostgreSQL databases; returns each one's URL (psycopg2 driver)."""
    janitors: list[DatabaseJanitor] = []

    def make() -> str:
        janitor = DatabaseJanitor(
            user=postgresql_server.user,
            host=postgresql_server.host,
            port=postgresql_server.port,
            dbname=f"ais_test_{uuid.uuid4().hex[:12]}",
        )
        janitor.init()
        janitors.append(janitor)
        return pg_url_for(postgresql_server, janitor.dbname)

    yield make
    for janitor in janitors:
        janitor.drop()


@pytest.fixture
def pg_url(make_pg_database: Callable[[], str]) -> str:
    """URL of a fresh, empty PostgreSQL database of this test's own."""
    return make_pg_database()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts TCP connections (in the kernel backlog) and never
    answers: a hung server."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield server.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens: connections are refused at once (a server
    that is down)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    """Path of a SQLite database file (not yet created) in this test's ``tmp_path``."""
    return tmp_path / "ai_secretary.db"


@pytest.fixture
def sqlite_url(sqlite_path: Path) -> str:
    """URL of a fresh SQLite database file in ``tmp_path``."""
    return f"sqlite:///{sqlite_path}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh database URL on each dialect: the test runs once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        request.applymarker(pytest.mark.sqlite)
        return str(request.getfixturevalue("sqlite_url"))
    request.applymarker(pytest.mark.postgresql)
    return str(request.getfixturevalue("pg_url"))


MakeSchemaApp = Callable[..., tuple[Flask, SchemaExtension]]


@pytest.fixture
def make_schema_app() -> Iterator[MakeSchemaApp]:
    """Factory of Flask applications with a ``SchemaExtension`` of their own, its settings
    given as keyword arguments (``database_url=…``); each is closed (monitor stopped, cache
    closed, engine disposed of) when the test ends. Ask for the database fixture first
    (``pg_url``, ``db_url`` …), so that the applications are closed before it is dropped."""
    made: list[tuple[Flask, SchemaExtension]] = []

    def make(**settings: Any) -> tuple[Flask, SchemaExtension]:
        app = Flask(f"schema_app_{len(made)}")
        extension = SchemaExtension(app, **settings)
        made.append((app, extension))
        return app, extension

    yield make
    for app, extension in made:
        extension.close(app)


@pytest.fixture(params=["sqlite", "postgresql"])
def make_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """Factory of fresh, empty databases of one dialect (each round of a test gets its own)."""
    if request.param == "sqlite":
        request.applymarker(pytest.mark.sqlite)
        made: list[int] = []

        def make_sqlite() -> str:
            made.append(1)
            return f"sqlite:///{tmp_path / f'round{len(made)}.db'}"

        return make_sqlite
    request.applymarker(pytest.mark.postgresql)
    factory: Callable[[], str] = request.getfixturevalue("make_pg_database")
    return factory


@pytest.fixture
def pgbouncer(tmp_path: Path) -> Iterator[PgBouncer]:
    """A real PgBouncer of this test's own in front of 127.0.0.1:5432: a free loopback port,
    ``pool_mode = transaction``, ``default_pool_size = 3``, trust auth; stopped afterwards (its
    log is kept in ``tmp_path``). See tests/helpers/pgbouncer.py."""
    if not Path(PGBOUNCER).exists():
        pytest.fail(
            "pgbouncer is not installed: apt-get install -y pgbouncer (.ci/run installs it)"
        )
    bouncer = PgBouncer(tmp_path).start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


@dataclass(frozen=True)
class TenantDatabase:
    """A database as deployed with tenant isolation: migrated by its owner (not a superuser),
    used by an application role made by ``grant-app-role``; tenants 1..4 with users."""

    dbname: str
    owner: str
    app_role: str
    owner_url: str
    app_url: str
    superuser_url: str
    users_per_tenant: int


TENANTS = (1, 2, 3, 4)


@pytest.fixture
def tenant_db(postgresql_server: NoopExecutor) -> Iterator[TenantDatabase]:
    """Roles are cluster-wide: unique names, dropped with the database afterwards."""
    from ai_secretary_schema.cli import main
    from ai_secretary_schema.migrator import upgrade

    suffix = uuid.uuid4().hex[:10]
    dbname, owner, app_role = f"ais_test_{suffix}", f"ais_owner_{suffix}", f"ais_app_{suffix}"
    admin = admin_connection()
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE ROLE {owner} LOGIN NOSUPERUSER NOBYPASSRLS")
            cursor.execute(f'CREATE DATABASE "{dbname}" OWNER {owner}')
        database = TenantDatabase(
            dbname=dbname,
            owner=owner,
            app_role=app_role,
            owner_url=pg_url_for(postgresql_server, dbname).replace("postgres@", f"{owner}@"),
            app_url=pg_url_for(postgresql_server, dbname).replace("postgres@", f"{app_role}@"),
            superuser_url=pg_url_for(postgresql_server, dbname),
            users_per_tenant=5,
        )
        upgrade(database.owner_url)
        assert main(["grant-app-role", app_role, "--url", database.superuser_url]) == 0
        seed = sa.create_engine(database.owner_url, poolclass=NullPool)
        with seed.begin() as connection:
            set_tenant(connection, None, cross=True)
            for tenant in TENANTS:
                connection.execute(
                    sa.text("INSERT INTO tenants (id, name, slug) VALUES (:t, :n, :n)"),
                    {"t": tenant, "n": f"t{tenant}"},
                )
                for n in range(database.users_per_tenant):
                    connection.execute(
                        sa.text(
                            "INSERT INTO users (tenant_id, email, password_hash) "
                            "VALUES (:t, :e, 'x')"
                        ),
                        {"t": tenant, "e": f"u{n}@t{tenant}"},
                    )
        seed.dispose()
        yield database
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            cursor.execute(f"DROP ROLE IF EXISTS {app_role}")
            cursor.execute(f"DROP ROLE IF EXISTS {owner}")
        admin.close()
