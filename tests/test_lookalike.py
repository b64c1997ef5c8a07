"""A server that speaks PostgreSQL but keeps neither its advisory locks nor its transactional DDL
(CockroachDB, YugabyteDB) is refused for migrations, unless SCHEMA_ACCEPT_UNSAFE_SERVER=1.

The look-alike is faked on the real PostgreSQL: a function ``fake.version()`` returning the
look-alike's banner, placed before ``pg_catalog`` in the search path by the URL
(``options=-c search_path=public,fake,pg_catalog``), so that an unqualified ``SELECT version()``,
as the package asks it, answers with the banner (the first test proves the fake works).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.pool import NullPool

from ai_secretary_schema import migrator
from ai_secretary_schema.alembic_config import make_alembic_config
from ai_secretary_schema.errors import MigrationError, UnsafeServerError
from ai_secretary_schema.migrator import Migrator
from ai_secretary_schema.server import recognise
from ai_secretary_schema.settings import SchemaSettings

pytestmark = pytest.mark.postgresql

BANNERS = {
    "CockroachDB": (
        "CockroachDB CCL v23.1.11 (x86_64-pc-linux-gnu, built 2023/09/27 01:53:43, go1.19.13)"
    ),
    "YugabyteDB": (
        "PostgreSQL 11.2-YB-2.18.0.0-b0 on x86_64-pc-linux-gnu, compiled by clang version "
        "15.0.3 (https://github.com/yugabyte/llvm-project.git), 64-bit"
    ),
}
POSTGRESQL = (
    "PostgreSQL 15.20 (Debian 15.20-0+deb12u1) on x86_64-pc-linux-gnu, compiled by gcc "
    "(Debian 12.2.0-14+deb12u1) 12.2.0, 64-bit"
)


def scalar(url: str, sql: str) -> object:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(sql)).scalar()
    finally:
        engine.dispose()


@pytest.fixture
def faked(pg_url: str) -> Callable[[str], str]:
    """``faked(banner)``: the URL of the test's database as a server whose ``version()`` is
    ``banner``."""

    def fake(banner: str) -> str:
        engine = sa.create_engine(pg_url, poolclass=NullPool)
        try:
            with engine.begin() as connection:
                connection.execute(sa.text("CREATE SCHEMA IF NOT EXISTS fake"))
                connection.execute(
                    sa.text(
                        "CREATE OR REPLACE FUNCTION fake.version() RETURNS text "
                        f"LANGUAGE sql AS $fake$ SELECT '{banner}'::text $fake$"
                    )
                )
        finally:
            engine.dispose()
        return f"{pg_url}?options={quote('-c search_path=public,fake,pg_catalog')}"

    return fake


@pytest.mark.parametrize("server", sorted(BANNERS))
def test_the_fake_answers_an_unqualified_version_with_the_banner(
    server: str, faked: Callable[[str], str]
) -> None:
    url = faked(BANNERS[server])
    assert scalar(url, "SELECT version()") == BANNERS[server]
    assert scalar(url, "SELECT pg_catalog.version()") != BANNERS[server]


@pytest.mark.parametrize("server", sorted(BANNERS))
def test_a_look_alike_is_refused_with_why_and_how_to_migrate_it(
    server: str, faked: Callable[[str], str]
) -> None:
    url = faked(BANNERS[server])
    with pytest.raises(UnsafeServerError) as caught:
        migrator.upgrade(url)

    error = caught.value
    assert isinstance(error, MigrationError)
    assert error.server == server
    message = str(error)
    assert f"it is {server} (" in message
    assert "not PostgreSQL" in message
    assert "serialises no one" in message  # why: the lock
    assert "not rolled back whole" in message  # why: the DDL
    assert "from exactly one process, in a release step" in message  # how
    assert "SCHEMA_STARTUP=validate" in message
    assert "SCHEMA_ACCEPT_UNSAFE_SERVER=1" in message
    assert scalar(url, "SELECT to_regclass('alembic_version') IS NULL") is True


@pytest.mark.parametrize("server", sorted(BANNERS))
def test_every_door_through_env_py_refuses_it(server: str, faked: Callable[[str], str]) -> None:
    # alembic and flask db enter through env.py, which takes the same lock.
    url = faked(BANNERS[server])
    config = make_alembic_config(SchemaSettings.resolve(database_url=url))
    with pytest.raises(UnsafeServerError, match=f"it is {server}"):
        command.upgrade(config, "head")


@pytest.mark.parametrize("server", sorted(BANNERS))
def test_a_look_alike_is_migrated_when_the_risk_is_accepted(
    server: str, faked: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ai_secretary_schema.server")
    url = faked(BANNERS[server])
    settings = SchemaSettings.resolve({}, {"DATABASE_URL": url, "SCHEMA_ACCEPT_UNSAFE_SERVER": "1"})
    with Migrator(settings) as m:
        assert m.upgrade().at_head
    assert f"a {server} server" in caplog.text
    assert "SCHEMA_ACCEPT_UNSAFE_SERVER is set" in caplog.text


@pytest.mark.parametrize("server", sorted(BANNERS))
def test_reading_a_look_alike_is_not_refused(server: str, faked: Callable[[str], str]) -> None:
    url = faked(BANNERS[server])
    assert migrator.current(url).current == ()


@pytest.mark.parametrize(
    ("banner", "server"),
    [
        (BANNERS["CockroachDB"], "CockroachDB"),
        (BANNERS["YugabyteDB"], "YugabyteDB"),
        (POSTGRESQL, None),
    ],
)
def test_banners_are_recognised(banner: str, server: str | None) -> None:
    found = recognise(banner)
    assert (found.name if found else None) == server
