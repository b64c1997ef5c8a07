"""Settings: declared once, resolved argument → ``app.config`` → environment → default, the
database URL parsed once.

The resolution cases are a table; every declared setting is checked for its derived key, its
documentation and its row in :func:`settings_table`; the URL parses are counted through a real
CLI run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from ai_secretary_schema import cli
from ai_secretary_schema.errors import DatabaseConfigError
from ai_secretary_schema.lint.steps import POSTGRESQL_URL, SQLITE_URL
from ai_secretary_schema.settings import (
    DEFAULT_DATABASE_URL,
    SchemaSettings,
    Setting,
    declared_settings,
    settings_table,
)
from ai_secretary_schema.url import DatabaseConfig, DatabaseURLParser

ARG = "sqlite:///arg.db"
APP = "sqlite:///app.db"
ENV = "sqlite:///env.db"

# (explicit arguments, app.config, environment) → (database_url, its source, the URL used)
URL_CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, str], tuple[Any, ...]]] = [
    ("nothing: the default file", {}, {}, {}, (None, "default", DEFAULT_DATABASE_URL)),
    ("environment", {}, {}, {"DATABASE_URL": ENV}, (ENV, "environment", ENV)),
    ("app.config beats the environment", {}, {"DATABASE_URL": APP}, {"DATABASE_URL": ENV},
     (APP, "app.config", APP)),
    ("the argument beats both", {"database_url": ARG}, {"DATABASE_URL": APP},
     {"DATABASE_URL": ENV}, (ARG, "argument", ARG)),
    ("an argument of None is not given", {"database_url": None}, {"DATABASE_URL": APP}, {},
     (APP, "app.config", APP)),
    ("a URL object as the argument", {"database_url": make_url(ARG)}, {}, {},
     (ARG, "argument", ARG)),
    ("empty DATABASE_URL in the environment: the default", {}, {}, {"DATABASE_URL": ""},
     (None, "environment (empty)", DEFAULT_DATABASE_URL)),
    ("blank DATABASE_URL in the environment: the default", {}, {}, {"DATABASE_URL": "  "},
     (None, "environment (empty)", DEFAULT_DATABASE_URL)),
    ("empty DATABASE_URL in app.config: the default", {}, {"DATABASE_URL": ""}, {},
     (None, "app.config (empty)", DEFAULT_DATABASE_URL)),
    # Empty means unset at every level: an empty app.config key lets the environment speak.
    ("empty in app.config, set in the environment", {}, {"DATABASE_URL": ""},
     {"DATABASE_URL": ENV}, (ENV, "environment", ENV)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("explicit", "app_config", "environ", "expected"),
    [case[1:] for case in URL_CASES],
    ids=[case[0] for case in URL_CASES],
)
def test_the_database_url_is_resolved_in_order(
    explicit: dict[str, Any],
    app_config: dict[str, Any],
    environ: dict[str, str],
    expected: tuple[Any, ...],
) -> None:
    settings = SchemaSettings.resolve(app_config, environ, **explicit)
    observed = (
        settings.database_url,
        settings.sources["database_url"],
        settings.url.render_as_string(hide_password=False),
    )
    assert observed == expected


# (explicit, app.config, environment) → (schema_lock_timeout, its source)
TIMEOUT_CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, str], Any]] = [
    ("default", {}, {}, {}, (300.0, "default")),
    ("environment, converted", {}, {}, {"SCHEMA_LOCK_TIMEOUT": " 9 "}, (9.0, "environment")),
    ("app.config", {}, {"SCHEMA_LOCK_TIMEOUT": 7}, {"SCHEMA_LOCK_TIMEOUT": "9"},
     (7.0, "app.config")),
    ("argument", {"schema_lock_timeout": 5}, {"SCHEMA_LOCK_TIMEOUT": 7},
     {"SCHEMA_LOCK_TIMEOUT": "9"}, (5.0, "argument")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("explicit", "app_config", "environ", "expected"),
    [case[1:] for case in TIMEOUT_CASES],
    ids=[case[0] for case in TIMEOUT_CASES],
)
def test_every_other_setting_follows_the_same_order(
    explicit: dict[str, Any],
    app_config: dict[str, Any],
    environ: dict[str, str],
    expected: tuple[Any, ...],
) -> None:
    settings = SchemaSettings.resolve(app_config, environ, **explicit)
    assert (settings.schema_lock_timeout, settings.sources["schema_lock_timeout"]) == expected


ERROR_CASES: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    ("explicit empty URL", lambda: SchemaSettings.resolve(environ={}, database_url=""),
     DatabaseConfigError, "URL given is empty"),
    ("explicit blank URL", lambda: SchemaSettings.resolve(environ={}, database_url="  "),
     DatabaseConfigError, "URL given is empty"),
    ("explicit empty URL beats a set environment",
     lambda: SchemaSettings.resolve(environ={"DATABASE_URL": ENV}, database_url=""),
     DatabaseConfigError, "URL given is empty"),
    ("override with an empty URL", lambda: SchemaSettings().override(database_url=""),
     DatabaseConfigError, "URL given is empty"),
    ("unknown keyword", lambda: SchemaSettings.resolve(environ={}, databse_url=ARG),
     TypeError, "databse_url"),
    ("override with an unknown keyword", lambda: SchemaSettings().override(databse_url=ARG),
     TypeError, "databse_url"),
    ("not a number", lambda: SchemaSettings.resolve(environ={"SCHEMA_LOCK_TIMEOUT": "soon"}),
     DatabaseConfigError, "SCHEMA_LOCK_TIMEOUT='soon'.*for example SCHEMA_LOCK_TIMEOUT=1"),
    ("below the minimum",
     lambda: SchemaSettings.resolve(environ={"DATABASE_CONNECT_TIMEOUT": "0"}),
     DatabaseConfigError, "DATABASE_CONNECT_TIMEOUT='0'"),
    ("not a boolean", lambda: SchemaSettings.resolve({"DATABASE_STRICT": "maybe"}, {}),
     DatabaseConfigError, "DATABASE_STRICT='maybe' is not a boolean"),
    ("not a startup mode", lambda: SchemaSettings.resolve(environ={"SCHEMA_STARTUP": "migrate"}),
     DatabaseConfigError, "SCHEMA_STARTUP='migrate' is not a startup mode"),
    ("not a host migrations mode",
     lambda: SchemaSettings.resolve(environ={"SCHEMA_HOST_MIGRATIONS": "later"}),
     DatabaseConfigError,
     "SCHEMA_HOST_MIGRATIONS='later' is not a host migrations mode; use one of startup, release"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_a_bad_value_fails_when_the_settings_are_built(
    build: Callable[[], object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        build()


def test_the_empty_url_error_shows_a_correct_value() -> None:
    with pytest.raises(DatabaseConfigError) as caught:
        SchemaSettings.resolve(environ={}, database_url="")
    assert caught.value.example == "sqlite:///ai_secretary.db"
    assert "--url sqlite:///ai_secretary.db" in str(caught.value)


# -- every setting is declared once and the rest derived ----------------------------------------


def sample_value(setting: Setting) -> str:
    """A valid raw value of ``setting`` as an operator would write it."""
    return {"database_url": ENV, "redis_url": "redis://127.0.0.1:6379/0"}.get(
        setting.name, str(setting.default)
    )


def test_every_field_is_a_declared_setting() -> None:
    names = [f.name for f in fields(SchemaSettings) if f.name != "sources"]
    assert names == [s.name for s in declared_settings()]


@pytest.mark.parametrize("setting", declared_settings(), ids=lambda s: s.name)
def test_each_setting_has_its_key_its_doc_and_its_row(setting: Setting) -> None:
    row = f"| `{setting.key}` | `{setting.name}` | "
    rows = [line for line in settings_table().splitlines() if line.startswith(row)]
    assert (setting.key, bool(setting.doc.strip()), len(rows)) == (setting.name.upper(), True, 1)
    assert rows[0].endswith(f" | {setting.doc} |")


@pytest.mark.parametrize("setting", declared_settings(), ids=lambda s: s.name)
def test_each_setting_is_read_under_its_key_from_app_config_and_the_environment(
    setting: Setting,
) -> None:
    raw = sample_value(setting)
    from_app = SchemaSettings.resolve({setting.key: raw}, {})
    from_env = SchemaSettings.resolve({}, {setting.key: raw})
    from_argument = SchemaSettings.resolve({}, {}, **{setting.name: raw})
    assert (
        from_app.sources[setting.name],
        from_env.sources[setting.name],
        from_argument.sources[setting.name],
    ) == ("app.config", "environment", "argument")
    assert getattr(from_app, setting.name) == getattr(from_env, setting.name)


# -- the URL is parsed once ---------------------------------------------------------------


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every URL :meth:`DatabaseURLParser.parse_url` is asked to parse from now on."""
    seen: list[str] = []
    original = DatabaseURLParser.parse_url

    def counting(self: DatabaseURLParser, url: Any) -> DatabaseConfig:
        seen.append(str(url))
        return original(self, url)

    monkeypatch.setattr(DatabaseURLParser, "parse_url", counting)
    return seen


def test_settings_parse_their_url_once(parses: list[str]) -> None:
    settings = SchemaSettings.resolve(environ={}, database_url=ARG)
    assert settings.database is settings.database
    assert settings.url == settings.url
    assert parses == [ARG]


@pytest.fixture(params=["no-url", "sqlite-url", "postgresql-url"])
def check_url(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    if request.param == "no-url":
        return []
    if request.param == "sqlite-url":
        request.applymarker(pytest.mark.sqlite)
        return ["--url", f"sqlite:///{tmp_path / 'check.db'}"]
    request.applymarker(pytest.mark.postgresql)
    return ["--url", str(request.getfixturevalue("pg_url"))]


def test_a_check_run_parses_the_url_once(
    check_url: list[str],
    parses: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert cli.main(["check", *check_url]) == 0
    assert "no differences" in capsys.readouterr().out
    # check also lints, with a URL of its own for each dialect, parsed once each: a PostgreSQL
    # one whose dialect the offline SQL is emitted for (never connected to) and a private
    # in-memory SQLite database.
    checked = list(parses)
    for own in (POSTGRESQL_URL, SQLITE_URL):
        checked.remove(own)
    assert len(checked) == 1, parses
