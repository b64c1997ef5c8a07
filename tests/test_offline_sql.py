"""Offline mode (``sql``): the upgrade as SQL for each dialect, without a database."""

from __future__ import annotations

import re

import pytest

from ai_secretary_schema import migrator

DIALECT_URLS = {
    "sqlite": "sqlite:///offline.db",
    "postgresql": "postgresql+psycopg2://user@db.invalid:5432/ai_secretary",
}


@pytest.fixture(params=sorted(DIALECT_URLS))
def offline_script(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param, migrator.offline_sql(DIALECT_URLS[request.param])


def _created_tables(sql: str) -> list[str]:
    return re.findall(r"^CREATE TABLE (\w+)", sql, flags=re.MULTILINE)


def test_offline_sql_creates_every_table_in_revision_order(
    offline_script: tuple[str, str],
) -> None:
    _, sql = offline_script
    assert _created_tables(sql) == ["alembic_version", "tenants", "users", "performance_alerts"]


@pytest.mark.parametrize(
    ("dialect", "fragment"),
    [
        ("postgresql", "id SERIAL NOT NULL"),
        ("postgresql", "is_active BOOLEAN DEFAULT true NOT NULL"),
        ("postgresql", "first_occurrence TIMESTAMP WITHOUT TIME ZONE DEFAULT CURRENT_TIMESTAMP"),
        ("postgresql", "ON DELETE CASCADE"),
        ("sqlite", "id INTEGER NOT NULL"),
        ("sqlite", "is_active BOOLEAN DEFAULT 1 NOT NULL"),
        ("sqlite", "first_occurrence TIMESTAMP DEFAULT CURRENT_TIMESTAMP"),
        ("sqlite", "status VARCHAR(20) DEFAULT 'active'"),
        ("sqlite", "ON DELETE CASCADE"),
    ],
)
def test_offline_sql_uses_each_dialects_spelling(dialect: str, fragment: str) -> None:
    assert fragment in migrator.offline_sql(DIALECT_URLS[dialect])


def test_offline_sql_stamps_the_head_revision(offline_script: tuple[str, str]) -> None:
    _, sql = offline_script
    assert (
        "UPDATE alembic_version SET version_num='0002' WHERE alembic_version.version_num = '0001'"
        in sql
    )


def test_offline_sql_up_to_a_revision_stops_there(offline_script: tuple[str, str]) -> None:
    dialect, _ = offline_script
    sql = migrator.offline_sql(DIALECT_URLS[dialect], "0001")
    assert _created_tables(sql) == ["alembic_version", "tenants", "users"]


def test_a_password_with_percent_signs_survives_alembics_configparser() -> None:
    # The URL reaches env.py through Alembic's ConfigParser, where an unescaped "%" is an
    # interpolation error; the password must also stay out of the emitted SQL.
    sql = migrator.offline_sql("postgresql+psycopg2://u:50%25%25off%40@db.invalid/app")
    assert ("CREATE TABLE tenants" in sql, "50%" in sql) == (True, False)
