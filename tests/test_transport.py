"""TLS where it matters: a remote PostgreSQL URL without sslmode=require is warned about once,
or refused with DATABASE_REQUIRE_TLS; loopback, sockets and SQLite stay quiet.

Building an engine does not connect, so remote hosts here are never contacted.
"""

from __future__ import annotations

import logging
import uuid

import pytest
from sqlalchemy.engine import make_url

from ai_secretary_schema.engine import create_engine
from ai_secretary_schema.errors import DatabaseConfigError
from ai_secretary_schema.settings import SchemaSettings

SECRET = "tls-sentinel-pw"

QUIET = {
    "loopback-ipv4": "postgresql+psycopg2://u:{pw}@127.0.0.1:5432/{db}",
    "loopback-name": "postgresql+psycopg2://u:{pw}@localhost/{db}",
    "loopback-ipv6": "postgresql+psycopg2://u:{pw}@[::1]:5432/{db}",
    "default-socket": "postgresql+psycopg2://u:{pw}@/{db}",
    "socket-directory": "postgresql+psycopg2://u:{pw}@/{db}?host=/var/run/postgresql",
    "remote-require": "postgresql+psycopg2://u:{pw}@db.example.com/{db}?sslmode=require",
    "remote-verify-ca": "postgresql+psycopg2://u:{pw}@db.example.com/{db}?sslmode=verify-ca",
    "remote-verify-full": "postgresql+psycopg2://u:{pw}@10.1.2.3/{db}?sslmode=verify-full",
    "sqlite-memory": "sqlite://",
}
INSECURE = {
    "remote-name-no-sslmode": "postgresql+psycopg2://u:{pw}@db.example.com/{db}",
    "private-address": "postgresql+psycopg2://u:{pw}@10.1.2.3:5432/{db}",
    "sslmode-prefer": "postgresql+psycopg2://u:{pw}@db.example.com/{db}?sslmode=prefer",
    "sslmode-allow": "postgresql+psycopg2://u:{pw}@db.example.com/{db}?sslmode=allow",
    "sslmode-disable": "postgresql+psycopg2://u:{pw}@db.example.com/{db}?sslmode=disable",
}


def _url(template: str) -> str:
    # A database name of its own: the warning is once per process and URL.
    return template.format(pw=SECRET, db=f"app_{uuid.uuid4().hex[:8]}")


def _build(url: str, **settings: object) -> None:
    parsed = make_url(url)
    create_engine(parsed, SchemaSettings.resolve(environ={}, **settings)).dispose()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "ai_secretary_schema.transport" and r.levelno == logging.WARNING
    ]


@pytest.mark.parametrize("template", QUIET.values(), ids=QUIET.keys())
def test_a_protected_or_local_url_is_quiet(template: str, caplog: pytest.LogCaptureFixture) -> None:
    _build(_url(template), database_require_tls=True)

    assert _warnings(caplog) == []


@pytest.mark.parametrize("template", INSECURE.values(), ids=INSECURE.keys())
def test_an_unprotected_remote_url_is_warned_about_with_the_host_and_the_fix(
    template: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = _url(template)
    _build(url)

    (warning,) = _warnings(caplog)
    assert make_url(url).host in warning
    assert "sslmode=verify-full" in warning
    assert SECRET not in warning


def test_the_warning_is_given_once_per_process_and_url(caplog: pytest.LogCaptureFixture) -> None:
    url = _url(INSECURE["remote-name-no-sslmode"])
    for _ in range(3):
        _build(url)

    assert len(_warnings(caplog)) == 1


@pytest.mark.parametrize("template", INSECURE.values(), ids=INSECURE.keys())
def test_require_tls_refuses_an_unprotected_remote_url(template: str) -> None:
    with pytest.raises(DatabaseConfigError) as caught:
        _build(_url(template), database_require_tls=True)

    assert "DATABASE_REQUIRE_TLS" in str(caught.value)
    assert "sslmode=verify-full" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_require_tls_comes_from_the_environment() -> None:
    settings = SchemaSettings.resolve(environ={"DATABASE_REQUIRE_TLS": "1"})

    assert settings.database_require_tls is True
