"""SmartConnectionManager against the real PostgreSQL on 127.0.0.1:5432 and real SQLite files.

No database or driver is mocked: failures are produced for real (a NOLOGIN role, a role that
does not exist, a missing database, a closed port, a listening socket that never answers, a role
whose connection limit is 0). A missing driver is simulated through the parser's injectable
``driver_available`` check only.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers.db import admin_connection
from pytest_postgresql.executors.noop import NoopExecutor
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from ai_secretary_schema import connection as connection_module
from ai_secretary_schema.connection import (
    ConnectionResult,
    RetryPolicy,
    SmartConnectionManager,
)
from ai_secretary_schema.engine import engine_options
from ai_secretary_schema.errors import (
    ConnectionErrorKind,
    DatabaseConfigError,
    DatabaseConnectionError,
    DriverMissingError,
)
from ai_secretary_schema.rate_limit import ErrorRateLimiter
from ai_secretary_schema.settings import SchemaSettings
from ai_secretary_schema.url import DatabaseType, DatabaseURLParser

Kind = ConnectionErrorKind
CLOSED_PORT_URL = "postgresql://postgres@127.0.0.1:1/postgres"
# Delays 0.1, 0.2, 0.4, 0.8 … without jitter: 4 attempts fit in 1 s (0.7 s of delays).
FAST_RETRY = RetryPolicy(initial_delay=0.1, multiplier=2.0, max_delay=1.0, jitter=0.0)


def settings(**values: object) -> SchemaSettings:
    """Settings from ``values`` alone: the test process's environment is not consulted."""
    return SchemaSettings.resolve(environ={}, **values)


def manager(
    retry: RetryPolicy = FAST_RETRY,
    parser: DatabaseURLParser | None = None,
    **values: object,
) -> SmartConnectionManager:
    return SmartConnectionManager(settings(**values), parser, retry=retry)


@pytest.fixture
def connected() -> Iterator[Callable[[ConnectionResult], ConnectionResult]]:
    """Register results whose engines the test leaves open; they are disposed afterwards."""
    results: list[ConnectionResult] = []

    def keep(result: ConnectionResult) -> ConnectionResult:
        results.append(result)
        return result

    yield keep
    for result in results:
        if result.engine is not None:
            result.engine.dispose()


@pytest.fixture
def admin() -> Iterator[Callable[[str], None]]:
    """Run one statement as the superuser, autocommitted."""
    connection = admin_connection()

    def run(sql: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql)

    yield run
    connection.close()


@pytest.fixture
def make_role(admin: Callable[[str], None]) -> Iterator[Callable[[str], str]]:
    """Create ``ais_test_…`` roles with the given attributes; dropped afterwards."""
    names: list[str] = []

    def make(attributes: str) -> str:
        name = f"ais_test_{uuid.uuid4().hex[:12]}"
        admin(f"CREATE ROLE {name} {attributes}")
        names.append(name)
        return name

    yield make
    for name in names:
        admin(f"DROP ROLE IF EXISTS {name}")


def with_scheme(url: str, scheme: str) -> str:
    return scheme + url.split("://", 1)[1]


def select_one(result: ConnectionResult) -> int:
    assert result.engine is not None
    with result.engine.connect() as connection:
        return int(connection.execute(sa.text("SELECT 1")).scalar_one())


# -- PostgreSQL: success --------------------------------------------------------------------


@pytest.mark.postgresql
@pytest.mark.parametrize(
    ("scheme", "driver"),
    [
        ("postgresql+psycopg2://", "psycopg2"),
        ("postgresql://", "psycopg2"),
        ("postgres://", "psycopg2"),
        ("postgresql+psycopg://", "psycopg"),
    ],
    ids=["explicit psycopg2", "plain scheme", "legacy postgres scheme", "explicit psycopg"],
)
def test_postgresql_url_connects_for_real(
    pg_url: str, scheme: str, driver: str, connected: Callable[..., ConnectionResult]
) -> None:
    result = connected(manager().connect(with_scheme(pg_url, scheme)))

    assert (result.success, result.database_type, result.driver) == (
        True,
        DatabaseType.POSTGRESQL,
        driver,
    )
    assert (result.attempts, result.fallback_used, result.error_kind) == (1, False, None)
    assert select_one(result) == 1


@pytest.mark.postgresql
def test_plain_scheme_uses_psycopg_when_psycopg2_is_missing(
    pg_url: str, connected: Callable[..., ConnectionResult]
) -> None:
    parser = DatabaseURLParser(driver_available=lambda driver: driver != "psycopg2")

    result = connected(manager(parser=parser).connect(with_scheme(pg_url, "postgresql://")))

    assert (result.success, result.driver) == (True, "psycopg")
    assert result.engine is not None
    assert result.engine.dialect.driver == "psycopg"


@pytest.mark.postgresql
def test_postgresql_engine_gets_the_pool_settings(
    pg_url: str, connected: Callable[..., ConnectionResult]
) -> None:
    result = connected(
        manager(database_pool_size=3, database_pool_timeout=7).connect(pg_url),
    )

    assert result.engine is not None
    pool = result.engine.pool
    assert isinstance(pool, sa.pool.QueuePool)
    assert (pool.size(), pool.timeout()) == (3, 7)


# -- PostgreSQL: failures that must not be retried ----------------------------------------------


@pytest.mark.postgresql
def test_nologin_role_fails_at_once_as_auth_failed(
    make_role: Callable[[str], str], postgresql_server: NoopExecutor
) -> None:
    role = make_role("NOLOGIN")

    result = manager().connect(f"postgresql://{role}@127.0.0.1:5432/postgres")

    assert (result.success, result.error_kind, result.attempts) == (False, Kind.AUTH_FAILED, 1)
    assert "may log in" in (result.error_message or "")
    assert result.elapsed < 1.0


@pytest.mark.postgresql
def test_unknown_role_fails_at_once_as_auth_failed(postgresql_server: NoopExecutor) -> None:
    result = manager().connect("postgresql://ais_test_no_such_role@127.0.0.1:5432/postgres")

    assert (result.success, result.error_kind, result.attempts) == (False, Kind.AUTH_FAILED, 1)
    assert 'role "ais_test_no_such_role" does not exist' in (result.error_message or "")
    assert result.elapsed < 1.0


@pytest.mark.postgresql
def test_missing_database_fails_at_once_as_database_missing(
    postgresql_server: NoopExecutor,
) -> None:
    result = manager().connect("postgresql://postgres@127.0.0.1:5432/ais_test_no_such_db")

    assert (result.success, result.error_kind, result.attempts) == (
        False,
        Kind.DATABASE_MISSING,
        1,
    )
    assert "createdb ais_test_no_such_db" in (result.error_message or "")
    assert result.elapsed < 1.0


# -- PostgreSQL: transient failures, retried inside the deadline --------------------------------


def test_closed_port_is_retried_with_the_promised_attempts_inside_the_deadline() -> None:
    deadline = 1.0

    result = manager(database_connect_deadline=deadline).connect(CLOSED_PORT_URL)

    assert (result.success, result.error_kind) == (False, Kind.UNREACHABLE)
    assert result.attempts == FAST_RETRY.planned_attempts(deadline) == 4
    assert 0.7 <= result.elapsed <= deadline


def test_closed_port_attempts_with_jitter_stay_within_the_policy_bounds() -> None:
    policy = RetryPolicy(initial_delay=0.1, multiplier=2.0, max_delay=1.0, jitter=0.5)
    deadline = 1.2

    result = manager(policy, database_connect_deadline=deadline).connect(CLOSED_PORT_URL)

    fewest = policy.planned_attempts(deadline)
    most = policy.planned_attempts(deadline, scale=1 - policy.jitter)
    assert fewest <= result.attempts <= most
    assert result.elapsed <= deadline + 0.1  # the last attempt's own (sub-millisecond) time


def test_zero_deadline_means_a_single_attempt() -> None:
    result = manager(database_connect_deadline=0).connect(CLOSED_PORT_URL)

    assert (result.error_kind, result.attempts) == (Kind.UNREACHABLE, 1)


def test_hung_server_times_out_after_the_connect_timeout(silent_port: int) -> None:
    url = f"postgresql://postgres@127.0.0.1:{silent_port}/postgres"

    result = manager(database_connect_timeout=1, database_connect_deadline=0).connect(url)

    assert (result.error_kind, result.attempts) == (Kind.TIMEOUT, 1)
    # libpq counts whole seconds; one attempt may outlast the deadline by one connect timeout.
    assert 0.9 <= result.elapsed < 3.0


@pytest.mark.postgresql
def test_too_many_connections_is_retried(
    make_role: Callable[[str], str], postgresql_server: NoopExecutor
) -> None:
    role = make_role("LOGIN CONNECTION LIMIT 0")

    result = manager(database_connect_deadline=0.5).connect(
        f"postgresql://{role}@127.0.0.1:5432/postgres"
    )

    assert (result.error_kind, result.attempts) == (Kind.UNREACHABLE, 3)
    assert "too many connections" in (result.error_message or "")


# -- PostgreSQL: errors are results, raised on request ----------------------------------------


def test_raise_for_error_raises_the_classified_connection_error() -> None:
    result = manager(database_connect_deadline=0).connect(CLOSED_PORT_URL)

    with pytest.raises(DatabaseConnectionError) as raised:
        result.raise_for_error()

    assert (raised.value.kind, raised.value.attempts) == (Kind.UNREACHABLE, 1)
    assert raised.value.url == "postgresql+psycopg2://postgres@127.0.0.1:1/postgres"


@pytest.mark.postgresql
def test_connect_or_raise_returns_the_result_when_connected(
    pg_url: str, connected: Callable[..., ConnectionResult]
) -> None:
    result = connected(manager().connect_or_raise(pg_url))

    assert result.success


def test_server_down_is_not_a_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    result = manager(database_connect_deadline=0).connect(CLOSED_PORT_URL)

    assert (result.success, result.fallback_used, result.engine) == (False, False, None)
    assert list(tmp_path.iterdir()) == []


def test_missing_driver_is_an_error_not_a_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    parser = DatabaseURLParser(driver_available=lambda driver: driver != "psycopg")

    result = manager(parser=parser).connect("postgresql+psycopg://u@127.0.0.1/app")

    assert (result.success, result.fallback_used, result.error_kind, result.attempts) == (
        False,
        False,
        Kind.DRIVER_MISSING,
        0,
    )
    assert 'pip install "psycopg[binary]"' in (result.error_message or "")
    assert list(tmp_path.iterdir()) == []


# -- SQLite ---------------------------------------------------------------------------------------


@pytest.mark.sqlite
def test_sqlite_creates_the_parent_directory_and_the_file(
    tmp_path: Path, connected: Callable[..., ConnectionResult]
) -> None:
    path = tmp_path / "nested" / "deeper" / "app.db"

    result = connected(manager().connect(f"sqlite:///{path}"))

    assert (result.success, result.database_type, result.driver) == (
        True,
        DatabaseType.SQLITE,
        "pysqlite",
    )
    assert path.is_file()


@pytest.mark.sqlite
def test_sqlite_relative_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, connected: Callable[..., ConnectionResult]
) -> None:
    monkeypatch.chdir(tmp_path)

    result = connected(manager().connect("sqlite:///data/relative.db"))

    assert result.success
    assert (tmp_path / "data" / "relative.db").is_file()


@pytest.mark.sqlite
def test_sqlite_connections_get_foreign_keys_wal_and_busy_timeout(
    sqlite_url: str, connected: Callable[..., ConnectionResult]
) -> None:
    result = connected(manager().connect(sqlite_url))
    assert result.engine is not None

    with result.engine.connect() as connection:
        pragmas = [
            connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("foreign_keys", "journal_mode", "busy_timeout")
        ]

    assert pragmas == [1, "wal", 30000]


@pytest.mark.sqlite
@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:ais_test?mode=memory&uri=true"]
)
def test_sqlite_memory_database_shares_one_connection(
    url: str, connected: Callable[..., ConnectionResult]
) -> None:
    result = connected(manager().connect(url))
    assert result.engine is not None

    with result.engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE shared (id INTEGER)")
    with result.engine.connect() as connection:
        tables = connection.exec_driver_sql("SELECT name FROM sqlite_master").scalars().all()

    assert isinstance(result.engine.pool, StaticPool)
    assert tables == ["shared"]


@pytest.mark.sqlite
@pytest.mark.parametrize("url", ["sqlite:///app.db", "sqlite://"])
def test_postgresql_pool_arguments_never_reach_sqlite(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, connected: Callable[..., object]
) -> None:
    monkeypatch.chdir(tmp_path)
    custom = settings(database_pool_size=17, database_pool_timeout=42)

    result = connected(SmartConnectionManager(custom).connect(url))
    assert result.engine is not None

    options = engine_options(make_url(url), custom)
    assert not {key for key in options if key.startswith("pool_") or key == "max_overflow"}
    pool = result.engine.pool
    assert not (isinstance(pool, sa.pool.QueuePool) and pool.size() == 17)


@pytest.mark.sqlite
def test_sqlite_directory_that_cannot_be_created_is_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    result = manager().connect(f"sqlite:///{blocker}/sub/app.db")

    assert (result.success, result.error_kind, result.fallback_used) == (
        False,
        Kind.UNREACHABLE,
        False,
    )
    assert "Cannot create the directory" in (result.error_message or "")


# -- resolution, fallback and strict mode ---------------------------------------------------------


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in ``tmp_path`` with DATABASE_URL and DATABASE_STRICT unset."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_STRICT", raising=False)
    return tmp_path


def test_argument_wins_over_database_url(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, connected: Callable[..., ConnectionResult]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite:///from-env.db")

    result = connected(SmartConnectionManager().connect("sqlite:///from-argument.db"))

    assert result.connection_string == "sqlite:///from-argument.db"
    assert [p.name for p in workdir.glob("*.db")] == ["from-argument.db"]


def test_database_url_is_used_without_an_argument(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, connected: Callable[..., ConnectionResult]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite:///from-env.db")

    result = connected(SmartConnectionManager().connect())

    assert (result.connection_string, result.fallback_used) == ("sqlite:///from-env.db", False)


@pytest.mark.parametrize("url", [None, "", "   "], ids=["None", "empty", "whitespace"])
def test_nothing_given_means_the_default_sqlite_file(
    url: str | None, workdir: Path, connected: Callable[..., ConnectionResult]
) -> None:
    result = connected(SmartConnectionManager().connect(url))

    assert (result.success, result.fallback_used, result.error_kind) == (True, False, None)
    assert result.connection_string == "sqlite:///ai_secretary.db"
    assert (workdir / "ai_secretary.db").is_file()


def test_settings_given_to_the_manager_are_used(
    sqlite_url: str, connected: Callable[..., ConnectionResult]
) -> None:
    result = connected(SmartConnectionManager(settings(database_url=sqlite_url)).connect())

    assert result.connection_string == sqlite_url


INVALID_URLS = [
    "not a url",
    "localhost:5432/db",
    "postgresql://",
    "mysql://u:p@h/db",
    "http://example.com",
]


@pytest.mark.parametrize("url", INVALID_URLS)
def test_invalid_url_falls_back_to_sqlite_and_says_why(
    url: str,
    workdir: Path,
    caplog: pytest.LogCaptureFixture,
    connected: Callable[..., ConnectionResult],
) -> None:
    result = connected(SmartConnectionManager().connect(url))

    assert (result.success, result.fallback_used, result.error_kind) == (
        True,
        True,
        Kind.INVALID_URL,
    )
    assert result.connection_string == "sqlite:///ai_secretary.db"
    assert (workdir / "ai_secretary.db").is_file()
    assert "Example: " in (result.error_message or "")
    fallback_logs = [
        r for r in caplog.records if "falling back to the SQLite file" in r.getMessage()
    ]
    assert [r.levelname for r in fallback_logs] == ["WARNING"]
    assert "Example: " in fallback_logs[0].getMessage()
    assert str(workdir / "ai_secretary.db") in fallback_logs[0].getMessage()


DEFAULT_FILE_LINES = {
    "unset": ({}, "INFO", "DATABASE_URL is not set"),
    "empty-environment": ({"DATABASE_URL": ""}, "WARNING", "set but empty in the environment"),
    "blank-environment": ({"DATABASE_URL": "  "}, "WARNING", "set but empty in the environment"),
}


@pytest.mark.parametrize(
    ("environ", "level", "says"), DEFAULT_FILE_LINES.values(), ids=DEFAULT_FILE_LINES.keys()
)
def test_the_default_file_is_announced_with_why(
    environ: dict[str, str],
    level: str,
    says: str,
    workdir: Path,
    caplog: pytest.LogCaptureFixture,
    connected: Callable[..., ConnectionResult],
) -> None:
    caplog.set_level(logging.INFO, logger="ai_secretary_schema.connection")
    manager = SmartConnectionManager(SchemaSettings.resolve(environ=environ))

    connected(manager.connect())

    (line,) = [r for r in caplog.records if "default SQLite file" in r.getMessage()]
    assert (line.levelname, says in line.getMessage()) == (level, True)
    assert str(workdir / "ai_secretary.db") in line.getMessage()


def test_an_empty_database_url_in_app_config_is_announced(
    workdir: Path, caplog: pytest.LogCaptureFixture, connected: Callable[..., ConnectionResult]
) -> None:
    settings = SchemaSettings.resolve({"DATABASE_URL": ""}, environ={})

    connected(SmartConnectionManager(settings).connect())

    assert any("set but empty in app.config" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("url", INVALID_URLS)
def test_strict_argument_makes_an_invalid_url_an_error(url: str, workdir: Path) -> None:
    with pytest.raises(DatabaseConfigError) as raised:
        SmartConnectionManager().connect(url, strict=True)

    assert raised.value.example
    assert list(workdir.iterdir()) == []


def test_database_strict_environment_makes_an_invalid_url_an_error(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_STRICT", "1")
    monkeypatch.setenv("DATABASE_URL", "mysql://u:p@h/db")

    with pytest.raises(DatabaseConfigError, match="mysql"):
        SmartConnectionManager().connect()

    assert list(workdir.iterdir()) == []


def test_strict_mode_raises_driver_missing_error_for_a_missing_driver(workdir: Path) -> None:
    parser = DatabaseURLParser(driver_available=lambda driver: driver != "psycopg")

    with pytest.raises(DriverMissingError):
        SmartConnectionManager(parser=parser).connect("postgresql+psycopg://u@h/app", strict=True)


@pytest.mark.postgresql
def test_strict_mode_connects_a_valid_url_normally(
    pg_url: str, workdir: Path, connected: Callable[..., ConnectionResult]
) -> None:
    result = connected(SmartConnectionManager().connect(pg_url, strict=True))

    assert (result.success, result.fallback_used) == (True, False)


def test_quoted_url_connects_to_the_intended_database(
    workdir: Path, connected: Callable[..., ConnectionResult]
) -> None:
    result = connected(SmartConnectionManager().connect('"sqlite:///quoted.db"', strict=True))

    assert (result.success, result.fallback_used) == (True, False)
    assert (workdir / "quoted.db").is_file()


def test_connect_measures_elapsed_time() -> None:
    start = time.monotonic()

    result = manager(database_connect_deadline=0).connect(CLOSED_PORT_URL)

    assert 0 <= result.elapsed <= time.monotonic() - start


def test_an_outage_writes_a_handful_of_lines_not_one_per_attempt(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(connection_module, "LOG_LIMITER", ErrorRateLimiter(max_errors_per_minute=5))
    caplog.set_level(logging.WARNING, logger="ai_secretary_schema.connection")
    for _ in range(50):
        manager(database_connect_deadline=0).connect(CLOSED_PORT_URL)
    assert len(caplog.records) == 5
