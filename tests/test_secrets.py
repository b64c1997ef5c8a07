"""No password leaves the package: fail in every way we can with a sentinel password.

Each scenario puts the sentinel in a database URL (raw, URL-encoded, or as a ``password=``
option) and goes through everything that can show it: the parsed config and its validation,
``require``'s exception, the settings' repr, a connection (fallback included), the result, its
``raise_for_error`` exception, strict mode's exception, and every log record at DEBUG, the
driver's and SQLAlchemy's included. The sentinel must appear nowhere, in any spelling.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from helpers.db import admin_connection

from ai_secretary_schema.connection import ConnectionResult, RetryPolicy, SmartConnectionManager
from ai_secretary_schema.errors import ConnectionErrorKind, SchemaError
from ai_secretary_schema.settings import SchemaSettings
from ai_secretary_schema.url import DatabaseURLParser

SENTINEL = "S3ntinel-p@ss%w0rd"
ENCODED = quote(SENTINEL, safe="")
#: Every spelling of the sentinel, and pieces of it that survive a partial redaction.
FORBIDDEN = (SENTINEL, ENCODED, quote_plus(SENTINEL), "S3ntinel", "w0rd", "ss%w0", "ss%25w0")

Kind = ConnectionErrorKind
MISSING_DB = Kind.DATABASE_MISSING

# (scenario, URL template, the error kind connect() reports: invalid_url for a fallback, None
# when it connects). {raw} is the sentinel as is, {enc} URL-encoded; {nologin}, {login} and
# {db} are filled with a NOLOGIN role, a LOGIN role and a fresh database of the test's own;
# {silent} with a port that accepts and never answers.
SCENARIOS: list[tuple[str, str, Kind | None]] = [
    ("unencoded password", "postgresql://app:{raw}@127.0.0.1:5432/app", Kind.INVALID_URL),
    ("no scheme", "app:{raw}@localhost:5432/app", Kind.INVALID_URL),
    ("missing colon after scheme", "postgresql//app:{enc}@localhost/app", Kind.INVALID_URL),
    ("non-numeric port", "postgresql://app:{enc}@127.0.0.1:pg/app", Kind.INVALID_URL),
    ("unsupported scheme", "mysql://app:{enc}@localhost/app", Kind.INVALID_URL),
    ("http scheme", "http://app:{enc}@example.com", Kind.INVALID_URL),
    ("no database name", "postgresql://app:{enc}@127.0.0.1:5432", Kind.INVALID_URL),
    ("sqlite with credentials", "sqlite://app:{enc}@/app.db", Kind.INVALID_URL),
    ("driver missing", "postgresql+psycopg://app:{enc}@127.0.0.1/app", Kind.DRIVER_MISSING),
    ("unreachable host", "postgresql://app:{enc}@127.0.0.1:1/app", Kind.UNREACHABLE),
    ("quoted and unreachable", ' "postgresql://app:{enc}@127.0.0.1:1/app" ', Kind.UNREACHABLE),
    ("password option", "postgresql://app@127.0.0.1:1/app?password={enc}", Kind.UNREACHABLE),
    ("hung server", "postgresql://app:{enc}@127.0.0.1:{silent}/app", Kind.TIMEOUT),
    ("unknown role", "postgresql://ais_test_nobody:{enc}@127.0.0.1/postgres", Kind.AUTH_FAILED),
    ("NOLOGIN role", "postgresql://{nologin}:{enc}@127.0.0.1:5432/postgres", Kind.AUTH_FAILED),
    ("missing database", "postgresql://postgres:{enc}@127.0.0.1/ais_test_nodb", MISSING_DB),
    ("connected", "postgresql://{login}:{enc}@127.0.0.1:5432/{db}", None),
]  # fmt: skip


@pytest.fixture
def roles() -> Iterator[dict[str, str]]:
    """A NOLOGIN and a LOGIN role, both with the sentinel as password; dropped afterwards."""
    admin = admin_connection()
    names = {kind: f"ais_test_{uuid.uuid4().hex[:12]}" for kind in ("nologin", "login")}
    with admin.cursor() as cursor:
        for kind, name in names.items():
            # psycopg2 binds client-side, so the password may be a parameter of CREATE ROLE.
            cursor.execute(f"CREATE ROLE {name} {kind.upper()} PASSWORD %s", (SENTINEL,))
    yield names
    with admin.cursor() as cursor:
        for name in names.values():
            cursor.execute(f"DROP ROLE IF EXISTS {name}")
    admin.close()


@pytest.fixture
def scenario_url(
    request: pytest.FixtureRequest,
    roles: dict[str, str],
    silent_port: int,
    make_pg_database: Callable[[], str],
) -> str:
    template: str = request.param
    database = make_pg_database().rsplit("/", 1)[1] if "{db}" in template else ""
    return template.format(raw=SENTINEL, enc=ENCODED, silent=silent_port, db=database, **roles)


def exception_texts(error: BaseException) -> list[str]:
    return [
        str(error),
        repr(error),
        repr(vars(error)),
        "".join(traceback.format_exception(error)),
    ]


def result_texts(result: ConnectionResult) -> list[str]:
    texts = [repr(result), str(result), result.connection_string, result.error_message or ""]
    if result.engine is not None:
        texts += [repr(result.engine), repr(result.engine.url)]
    try:
        result.raise_for_error()
    except SchemaError as error:
        texts += exception_texts(error)
    return texts


def leaks(texts: list[str]) -> list[str]:
    return [text for text in texts if any(bad in text for bad in FORBIDDEN)]


@pytest.mark.postgresql
@pytest.mark.parametrize(
    ("scenario_url", "kind"),
    [(template, kind) for _, template, kind in SCENARIOS],
    ids=[name for name, _, _ in SCENARIOS],
    indirect=["scenario_url"],
)
def test_sentinel_password_appears_nowhere(
    scenario_url: str,
    kind: Kind | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)  # a fallback's SQLite file lands here
    # SQLAlchemy pins its own logger at WARNING; open it and the drivers' loggers fully.
    for name in (None, "sqlalchemy", "psycopg"):
        caplog.set_level(logging.DEBUG, logger=name)
    parser = DatabaseURLParser(driver_available=lambda driver: driver != "psycopg")
    settings = SchemaSettings.resolve(
        environ={}, database_connect_deadline=0.3, database_connect_timeout=1
    )
    manager = SmartConnectionManager(settings, parser, retry=RetryPolicy(initial_delay=0.1))
    texts: list[str] = []

    config = parser.parse_url(scenario_url)
    texts += [repr(config), str(config), config.redacted, config.error_message or ""]
    texts.append(repr(parser.validate_url(scenario_url)))
    try:
        parser.require(scenario_url)
    except SchemaError as error:
        texts += exception_texts(error)
    result = manager.connect(scenario_url)
    texts += result_texts(result)
    try:
        strict = manager.connect(scenario_url, strict=True)
    except SchemaError as error:
        texts += exception_texts(error)
    else:
        texts += result_texts(strict)
        if strict.engine is not None:
            strict.engine.dispose()
    if result.engine is not None:
        result.engine.dispose()
    texts += [caplog.text, *(record.getMessage() for record in caplog.records)]

    assert result.error_kind is kind
    assert caplog.records
    assert leaks(texts) == []


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(
            template.format(raw=SENTINEL, enc=ENCODED),
            id=name,
        )
        for name, template, _ in SCENARIOS
        if not any(slot in template for slot in ("{silent}", "{nologin}", "{login}", "{db}"))
    ],
)
def test_settings_repr_hides_the_sentinel(url: str) -> None:
    assert leaks([repr(SchemaSettings.resolve(environ={}, database_url=url))]) == []
