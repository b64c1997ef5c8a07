"""The table of database URL cases: what the parser accepts, how it normalises, what it rejects.

Every case of the issue is one row of ``CASES``; the tests below each check one behaviour over
the whole table. Which drivers are "installed" is simulated through the parser's injectable
``driver_available`` check, never by touching the real modules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from ai_secretary_schema.errors import (
    ConnectionErrorKind,
    DatabaseConfigError,
    DriverMissingError,
)
from ai_secretary_schema.url import (
    ANY_EXAMPLE,
    POSTGRESQL_EXAMPLE,
    SQLITE_EXAMPLE,
    DatabaseConfig,
    DatabaseType,
    DatabaseURLParser,
    ValidationResult,
    driver_importable,
)

PG = DatabaseType.POSTGRESQL
LITE = DatabaseType.SQLITE
UNKNOWN = DatabaseType.UNKNOWN
INVALID = ConnectionErrorKind.INVALID_URL
MISSING = ConnectionErrorKind.DRIVER_MISSING


def every_driver(driver: str) -> bool:
    return True


def without_psycopg(driver: str) -> bool:
    return driver != "psycopg"


def without_psycopg2(driver: str) -> bool:
    return driver != "psycopg2"


def without_postgresql_drivers(driver: str) -> bool:
    return driver not in ("psycopg", "psycopg2")


@dataclass(frozen=True)
class Case:
    url: str | None
    type: DatabaseType
    #: The normalised connection string of a valid URL; None for an invalid one.
    normalised: str | None = None
    driver: str = ""
    available: Callable[[str], bool] = every_driver
    #: For an invalid URL: its error kind, the example shown and a phrase of the message.
    kind: ConnectionErrorKind | None = None
    example: str | None = None
    says: str = ""
    #: Whether normalisation stripped quotes or padding (and warned about it).
    warned: bool = False

    @property
    def valid(self) -> bool:
        return self.normalised is not None


def ok(
    url: str,
    type_: DatabaseType,
    normalised: str,
    driver: str,
    *,
    available: Callable[[str], bool] = every_driver,
    warned: bool = False,
) -> Case:
    return Case(url, type_, normalised, driver, available=available, warned=warned)


def bad(
    url: str | None,
    type_: DatabaseType,
    kind: ConnectionErrorKind,
    example: str,
    says: str,
    *,
    available: Callable[[str], bool] = every_driver,
) -> Case:
    return Case(url, type_, None, kind=kind, example=example, says=says, available=available)


P2 = "postgresql+psycopg2://"
CASES = {
    # -- PostgreSQL ---------------------------------------------------------------------------
    "plain scheme picks psycopg2": ok(
        "postgresql://user:secret@localhost:5432/ai_secretary",
        PG, f"{P2}user:secret@localhost:5432/ai_secretary", "psycopg2"),
    "plain scheme picks psycopg when psycopg2 is missing": ok(
        "postgresql://user:secret@localhost/app",
        PG, "postgresql+psycopg://user:secret@localhost/app", "psycopg",
        available=without_psycopg2),
    "legacy postgres scheme": ok(
        "postgres://user:secret@db.example.com:6543/app",
        PG, f"{P2}user:secret@db.example.com:6543/app", "psycopg2"),
    "legacy postgres scheme with a driver": ok(
        "postgres+psycopg://user@localhost/app",
        PG, "postgresql+psycopg://user@localhost/app", "psycopg"),
    "explicit psycopg2 kept": ok(
        "postgresql+psycopg2://user:secret@localhost/app",
        PG, f"{P2}user:secret@localhost/app", "psycopg2"),
    "explicit psycopg kept": ok(
        "postgresql+psycopg://user:secret@localhost/app",
        PG, "postgresql+psycopg://user:secret@localhost/app", "psycopg",
        available=without_psycopg2),
    "password with encoded @ % : /": ok(
        "postgresql://user:p%40ss%25w%3Ard%2F@localhost/app",
        PG, f"{P2}user:p%40ss%25w%3Ard%2F@localhost/app", "psycopg2"),
    "IPv6 host": ok(
        "postgresql://user:secret@[::1]:5432/app",
        PG, f"{P2}user:secret@[::1]:5432/app", "psycopg2"),
    "unix socket host": ok(
        "postgresql://user@/app?host=/var/run/postgresql",
        PG, f"{P2}user@/app?host=%2Fvar%2Frun%2Fpostgresql", "psycopg2"),
    "query options": ok(
        "postgresql://user@localhost/app?sslmode=require&connect_timeout=10"
        "&application_name=ai-secretary&options=-c%20statement_timeout%3D5000",
        PG, f"{P2}user@localhost/app?application_name=ai-secretary&connect_timeout=10"
        "&options=-c+statement_timeout%3D5000&sslmode=require", "psycopg2"),
    "explicit psycopg missing": bad(
        "postgresql+psycopg://user:secret@localhost/app",
        PG, MISSING, POSTGRESQL_EXAMPLE, 'pip install "psycopg[binary]"',
        available=without_psycopg),
    "explicit psycopg2 missing": bad(
        "postgresql+psycopg2://user@localhost/app",
        PG, MISSING, POSTGRESQL_EXAMPLE, "pip install psycopg2-binary",
        available=without_psycopg2),
    "plain scheme with no driver installed": bad(
        "postgresql://user@localhost/app",
        PG, MISSING, POSTGRESQL_EXAMPLE, "pip install psycopg2-binary",
        available=without_postgresql_drivers),
    # -- SQLite -------------------------------------------------------------------------------
    "sqlite relative path": ok(
        "sqlite:///relative.db", LITE, "sqlite:///relative.db", "pysqlite"),
    "sqlite absolute path": ok(
        "sqlite:////absolute/path.db", LITE, "sqlite:////absolute/path.db", "pysqlite"),
    "sqlite in memory, short form": ok("sqlite://", LITE, "sqlite://", "pysqlite"),
    "sqlite in memory": ok(
        "sqlite:///:memory:", LITE, "sqlite:///%3Amemory%3A", "pysqlite"),
    "sqlite shared memory URI": ok(
        "sqlite:///file:name?mode=memory&uri=true",
        LITE, "sqlite:///file%3Aname?mode=memory&uri=true", "pysqlite"),
    "sqlite explicit pysqlite": ok(
        "sqlite+pysqlite:///relative.db", LITE, "sqlite+pysqlite:///relative.db", "pysqlite"),
    # -- nothing ------------------------------------------------------------------------------
    "None": bad(None, UNKNOWN, INVALID, SQLITE_EXAMPLE, "No database URL was given"),
    "empty": bad("", UNKNOWN, INVALID, SQLITE_EXAMPLE, "No database URL was given"),
    "whitespace": bad(" \t\n", UNKNOWN, INVALID, SQLITE_EXAMPLE, "No database URL was given"),
    # -- wrong --------------------------------------------------------------------------------
    "not a url": bad("not a url", UNKNOWN, INVALID, ANY_EXAMPLE, "could not be parsed"),
    "host and port without scheme": bad(
        "localhost:5432/db", UNKNOWN, INVALID, POSTGRESQL_EXAMPLE, "it has no scheme"),
    "postgresql without database": bad(
        "postgresql://", PG, INVALID, POSTGRESQL_EXAMPLE, "names no database"),
    "postgresql host without database": bad(
        "postgresql://user:secret@localhost:5432", PG, INVALID, POSTGRESQL_EXAMPLE,
        "names no database"),
    "mysql": bad(
        "mysql://u:p@h/db", UNKNOWN, INVALID, POSTGRESQL_EXAMPLE,
        "'mysql' is not PostgreSQL or SQLite"),
    "http": bad(
        "http://example.com", UNKNOWN, INVALID, ANY_EXAMPLE, "'http' is not PostgreSQL"),
    "unsupported postgresql driver": bad(
        "postgresql+asyncpg://user@localhost/app", PG, INVALID, POSTGRESQL_EXAMPLE,
        "'asyncpg' in"),
    "unencoded @ in password": bad(
        "postgresql://user:p@ss@localhost/app", PG, INVALID, POSTGRESQL_EXAMPLE,
        "unencoded '@'"),
    "port out of range": bad(
        "postgresql://user@localhost:70000/app", PG, INVALID, POSTGRESQL_EXAMPLE,
        "outside 1-65535"),
    "non-numeric port": bad(
        "postgresql://user@localhost:pg/app", UNKNOWN, INVALID, POSTGRESQL_EXAMPLE,
        "check the port is a number"),
    "sqlite with a host (two slashes)": bad(
        "sqlite://data/app.db", LITE, INVALID, SQLITE_EXAMPLE, "three slashes"),
    "unbalanced quote": bad(
        "'postgresql://user@localhost/app", UNKNOWN, INVALID, POSTGRESQL_EXAMPLE,
        "could not be parsed"),
    # -- .env leftovers: normalised, with a warning -----------------------------------------
    "double-quoted": ok(
        '"postgresql://user:secret@localhost/app"',
        PG, f"{P2}user:secret@localhost/app", "psycopg2", warned=True),
    "single-quoted": ok(
        "'sqlite:///relative.db'", LITE, "sqlite:///relative.db", "pysqlite", warned=True),
    "padded with spaces": ok(
        "  sqlite:///relative.db \n", LITE, "sqlite:///relative.db", "pysqlite", warned=True),
    "quoted and padded": ok(
        ' " postgres://user@localhost/app " ', PG, f"{P2}user@localhost/app", "psycopg2",
        warned=True),
}  # fmt: skip

VALID = {name: case for name, case in CASES.items() if case.valid}
INVALID_CASES = {name: case for name, case in CASES.items() if not case.valid}


def parser_for(case: Case) -> DatabaseURLParser:
    return DatabaseURLParser(driver_available=case.available)


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


@pytest.fixture(params=list(VALID), ids=list(VALID))
def valid_case(request: pytest.FixtureRequest) -> Case:
    return VALID[request.param]


@pytest.fixture(params=list(INVALID_CASES), ids=list(INVALID_CASES))
def invalid_case(request: pytest.FixtureRequest) -> Case:
    return INVALID_CASES[request.param]


def test_parse_url_gives_validity_type_and_error_kind(case: Case) -> None:
    config = parser_for(case).parse_url(case.url)

    assert (config.is_valid, config.type, config.error_kind) == (case.valid, case.type, case.kind)


def test_valid_url_is_normalised_with_the_chosen_driver(valid_case: Case) -> None:
    config = parser_for(valid_case).parse_url(valid_case.url)

    assert config.connection_string == valid_case.normalised
    assert config.driver == valid_case.driver
    assert config.error_message is None


def test_invalid_url_message_says_what_is_wrong_and_shows_an_example(invalid_case: Case) -> None:
    config = parser_for(invalid_case).parse_url(invalid_case.url)

    assert invalid_case.says in (config.error_message or "")
    assert (config.error_message or "").endswith(f"Example: {invalid_case.example}")
    assert config.example == invalid_case.example


def test_detect_database_type_reads_the_scheme(case: Case) -> None:
    assert parser_for(case).detect_database_type(case.url) is case.type


def test_validate_url_agrees_with_parse_url(case: Case) -> None:
    parser = parser_for(case)
    config = parser.parse_url(case.url)

    assert parser.validate_url(case.url) == ValidationResult(
        is_valid=config.is_valid,
        error_message=config.error_message,
        database_type=config.type,
        example=config.example,
        warnings=config.warnings,
    )


def test_require_returns_a_valid_config(valid_case: Case) -> None:
    config = parser_for(valid_case).require(valid_case.url)

    assert config.url.render_as_string(hide_password=False) == valid_case.normalised


def test_require_raises_for_an_invalid_url(invalid_case: Case) -> None:
    expected = DriverMissingError if invalid_case.kind is MISSING else DatabaseConfigError

    with pytest.raises(expected) as raised:
        parser_for(invalid_case).require(invalid_case.url)

    assert type(raised.value) is expected
    assert invalid_case.says in str(raised.value)
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None


def test_only_quoted_or_padded_values_warn(case: Case, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ai_secretary_schema.url"):
        config = parser_for(case).parse_url(case.url)

    assert bool(config.warnings) is case.warned
    assert [r.getMessage() for r in caplog.records] == list(config.warnings)


def test_driver_missing_names_the_missing_driver() -> None:
    with pytest.raises(DriverMissingError) as raised:
        DatabaseURLParser(without_psycopg).require("postgresql+psycopg://u@localhost/app")

    assert raised.value.driver == "psycopg"


def test_encoded_password_is_decoded_exactly() -> None:
    config = DatabaseURLParser().parse_url("postgresql://user:p%40ss%25w%3Ard%2F@localhost/app")

    assert config.url.password == "p@ss%w:rd/"


def test_ipv6_host_is_the_bare_address() -> None:
    config = DatabaseURLParser().parse_url("postgresql://user@[::1]:5432/app")

    assert (config.url.host, config.url.port) == ("::1", 5432)


def test_query_options_are_kept_in_options() -> None:
    config = DatabaseURLParser().parse_url(CASES["query options"].url)

    assert config.options == {
        "sslmode": "require",
        "connect_timeout": "10",
        "application_name": "ai-secretary",
        "options": "-c statement_timeout=5000",
    }


def test_unix_socket_directory_is_an_option() -> None:
    config = DatabaseURLParser().parse_url(CASES["unix socket host"].url)

    assert (config.url.host, config.options) == (None, {"host": "/var/run/postgresql"})


def test_repr_and_str_show_the_password_as_stars() -> None:
    config = DatabaseURLParser().parse_url("postgresql://user:secret@localhost/app?password=x2")

    for text in (repr(config), str(config), config.redacted):
        assert "secret" not in text
        assert "x2" not in text
        assert "***" in text


def test_url_of_an_invalid_config_raises() -> None:
    config = DatabaseURLParser().parse_url("mysql://u:p@h/db")

    with pytest.raises(DatabaseConfigError, match="mysql"):
        _ = config.url


def test_parse_url_accepts_a_sqlalchemy_url_object() -> None:
    parser = DatabaseURLParser()
    url = parser.parse_url("postgres://user:p%40ss@localhost/app").url

    assert parser.parse_url(url).url == url


def test_invalid_config_is_a_database_config_with_the_design_fields() -> None:
    config = DatabaseURLParser().parse_url("not a url")

    assert isinstance(config, DatabaseConfig)
    assert (config.driver, config.options, config.is_valid) == ("", {}, False)


@pytest.mark.parametrize(
    ("driver", "importable"),
    [("psycopg2", True), ("pysqlite", True), ("ais_test_no_such_driver", False)],
)
def test_default_driver_check_imports_the_module(driver: str, importable: bool) -> None:
    assert driver_importable(driver) is importable
