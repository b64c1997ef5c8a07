"""Databases made before migrations existed are adopted: stamped at their revision, then upgraded.

Each case builds an unversioned database the way the application used to (``create_all`` of the
models of the time, or the design document's raw ``CREATE TABLE IF NOT EXISTS
performance_alerts`` DDL) with rows in it, runs the startup hook, and checks where it ended and
that every row survived. A database that matches no revision is refused and left untouched.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa
from helpers.db import DESIGN_DDL, ID_COLUMN
from helpers.scripts import HEAD
from sqlalchemy import Connection
from sqlalchemy.pool import NullPool

from ai_secretary_schema.errors import AdoptionError
from ai_secretary_schema.migration_manager import MigrationManager
from ai_secretary_schema.models import Base


def create_tables(*names: str) -> Callable[[Connection], None]:
    def build(connection: Connection) -> None:
        Base.metadata.create_all(connection, tables=[Base.metadata.tables[n] for n in names])

    return build


def design_ddl(connection: Connection) -> None:
    create_tables("tenants", "users")(connection)
    connection.exec_driver_sql(DESIGN_DDL.format(id=ID_COLUMN[connection.dialect.name]))
    connection.exec_driver_sql(
        "INSERT INTO performance_alerts (alert_type, severity, title) VALUES ('cpu', 'high', 'CPU')"
    )


def users_with_a_legacy_column(connection: Connection) -> None:
    create_tables("tenants", "users")(connection)
    connection.exec_driver_sql("ALTER TABLE users ADD COLUMN legacy_flag INTEGER")


def add_rows(connection: Connection) -> None:
    connection.exec_driver_sql("INSERT INTO tenants (name, slug) VALUES ('Acme', 'acme')")
    connection.exec_driver_sql(
        "INSERT INTO users (tenant_id, email, password_hash) VALUES (1, 'a@acme.test', 'x')"
    )


def build_database(url: str, build: Callable[[Connection], None]) -> None:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            build(connection)
            add_rows(connection)
    finally:
        engine.dispose()


def snapshot(url: str) -> dict[str, object]:
    """Tables, their columns and every row: what "nothing changed" compares."""
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            inspector = sa.inspect(connection)
            return {
                name: (
                    [c["name"] for c in inspector.get_columns(name)],
                    sorted(i["name"] or "" for i in inspector.get_indexes(name)),
                    [
                        tuple(r)
                        for r in connection.execute(sa.text(f"SELECT * FROM {name} ORDER BY 1"))
                    ],
                )
                for name in sorted(inspector.get_table_names())
            }
    finally:
        engine.dispose()


def row_counts(url: str) -> dict[str, int]:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return {
                name: int(connection.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one())
                for name in ("tenants", "users", "performance_alerts")
            }
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("build", "adopted_at", "alerts"),
    [
        pytest.param(create_tables("tenants", "users"), "0001", 0, id="tenants-users-no-alerts"),
        pytest.param(
            create_tables("tenants", "users", "performance_alerts"), "0002", 0, id="create-all"
        ),
        pytest.param(design_ddl, "0002", 1, id="design-raw-ddl"),
    ],
)
def test_an_unversioned_database_is_adopted_and_ends_at_head_with_its_rows(
    db_url: str, build: Callable[[Connection], None], adopted_at: str, alerts: int
) -> None:
    build_database(db_url, build)
    with MigrationManager(url=db_url) as manager:
        report = manager.run_startup("upgrade")
    assert report.adopted_at == adopted_at
    assert report.ok, report.to_text()
    assert row_counts(db_url) == {"tenants": 1, "users": 1, "performance_alerts": alerts}


def test_the_design_case_creates_performance_alerts_by_migrating(db_url: str) -> None:
    build_database(db_url, create_tables("tenants", "users"))
    with MigrationManager(url=db_url) as manager:
        assert manager.check_missing_tables() == ["performance_alerts"]
        assert manager.ensure_tables_exist() is True
        assert manager.check_missing_tables() == []
        assert manager.validate_schema().current == (HEAD,)


def test_the_design_ddl_gets_the_indexes_of_its_revision(db_url: str) -> None:
    build_database(db_url, design_ddl)
    with MigrationManager(url=db_url) as manager:
        manager.run_startup("upgrade")
        assert manager.validate_schema().missing_indexes == ()


def test_a_fresh_database_is_migrated_not_adopted(db_url: str) -> None:
    with MigrationManager(url=db_url) as manager:
        assert manager.run_startup("upgrade").adopted_at is None


@pytest.mark.parametrize(
    ("build", "difference"),
    [
        pytest.param(
            users_with_a_legacy_column, "unexpected column users.legacy_flag", id="extra-column"
        ),
        pytest.param(create_tables("tenants"), "missing table users", id="users-missing"),
    ],
)
def test_a_database_matching_no_revision_is_refused_and_left_unchanged(
    db_url: str, build: Callable[[Connection], None], difference: str
) -> None:
    engine = sa.create_engine(db_url, poolclass=NullPool)
    with engine.begin() as connection:
        build(connection)
        connection.exec_driver_sql("INSERT INTO tenants (name, slug) VALUES ('Acme', 'acme')")
    engine.dispose()
    before = snapshot(db_url)
    with MigrationManager(url=db_url) as manager, pytest.raises(AdoptionError) as caught:
        manager.run_startup("upgrade")
    assert difference in str(caught.value)
    assert not caught.value.report.ok
    assert snapshot(db_url) == before
