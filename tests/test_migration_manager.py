"""The startup hook and the design's table API, on both dialects.

Modes: ``upgrade`` migrates (under the lock) then validates; ``validate`` never alters the
database and refuses one that is behind head or differs from the models; ``off`` does nothing.
"""

from __future__ import annotations

import fcntl
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers.db import execute, table_names
from helpers.scripts import HEAD
from sqlalchemy.pool import NullPool

from ai_secretary_schema import migrator
from ai_secretary_schema.errors import (
    ConnectionErrorKind,
    DatabaseConnectionError,
    MigrationLockTimeout,
    SchemaValidationError,
)
from ai_secretary_schema.lock import advisory_lock_key, migration_lock, sqlite_lock_path
from ai_secretary_schema.migration_manager import MigrationManager
from ai_secretary_schema.models import REQUIRED_TABLES
from ai_secretary_schema.settings import SchemaSettings

UNREACHABLE = "postgresql+psycopg2://someone:s3cret-pw@127.0.0.1:1/nowhere"


@pytest.fixture
def manager(db_url: str) -> MigrationManager:
    with MigrationManager(url=db_url) as manager:
        yield manager


def test_upgrade_mode_migrates_a_fresh_database_to_head(
    manager: MigrationManager, db_url: str
) -> None:
    report = manager.run_startup("upgrade")
    assert report.ok
    assert report.at_head
    assert report.current == (HEAD,)
    assert set(REQUIRED_TABLES) <= table_names(db_url)


def test_the_second_start_takes_the_warm_path(manager: MigrationManager) -> None:
    manager.run_startup("upgrade")
    report = manager.run_startup("upgrade")
    assert report.fast_path
    assert report.ok
    assert report.current == (HEAD,)


def test_the_mode_defaults_to_schema_startup(db_url: str) -> None:
    settings = SchemaSettings.resolve(database_url=db_url, schema_startup="validate")
    with MigrationManager(settings=settings) as manager, pytest.raises(SchemaValidationError):
        manager.run_startup()


def test_validate_mode_refuses_a_fresh_database_and_creates_nothing(
    manager: MigrationManager, db_url: str
) -> None:
    with pytest.raises(SchemaValidationError, match="release step") as caught:
        manager.run_startup("validate")
    assert set(caught.value.report.missing_tables) == set(REQUIRED_TABLES)
    assert table_names(db_url) == set()


def test_validate_mode_refuses_a_database_behind_head(
    manager: MigrationManager, db_url: str
) -> None:
    migrator.upgrade(db_url, "0001")
    with pytest.raises(SchemaValidationError) as caught:
        manager.run_startup("validate")
    assert caught.value.report.current == ("0001",)
    assert caught.value.report.missing_tables == ("performance_alerts",)
    assert "performance_alerts" not in table_names(db_url)


def test_validate_mode_accepts_a_database_at_head(manager: MigrationManager, db_url: str) -> None:
    migrator.upgrade(db_url)
    assert manager.run_startup("validate").ok


def test_upgrade_mode_refuses_a_database_that_drifted_from_the_models(
    manager: MigrationManager, db_url: str
) -> None:
    migrator.upgrade(db_url)
    execute(db_url, "ALTER TABLE users ADD COLUMN nickname VARCHAR(50)")
    with pytest.raises(SchemaValidationError) as caught:
        manager.run_startup("upgrade")
    assert caught.value.report.unexpected_columns == ("users.nickname",)


def test_off_mode_does_not_even_connect() -> None:
    with MigrationManager(url=UNREACHABLE) as manager:
        report = manager.run_startup("off")
    assert report.skipped
    assert report.ok


def test_an_unreachable_database_is_a_classified_redacted_error() -> None:
    settings = SchemaSettings.resolve(database_url=UNREACHABLE, database_connect_deadline=0)
    with (
        MigrationManager(settings=settings) as manager,
        pytest.raises(DatabaseConnectionError) as caught,
    ):
        manager.run_startup("upgrade")
    assert caught.value.kind is ConnectionErrorKind.UNREACHABLE
    assert "s3cret-pw" not in str(caught.value)


def test_check_missing_tables_lists_them_in_dependency_order(manager: MigrationManager) -> None:
    assert manager.check_missing_tables() == list(REQUIRED_TABLES)


def test_ensure_tables_exist_creates_them_by_migrating(
    manager: MigrationManager, db_url: str
) -> None:
    assert manager.ensure_tables_exist() is True
    assert manager.validate_schema().current == (HEAD,)


def test_create_performance_alerts_table_runs_its_migration(
    manager: MigrationManager, db_url: str
) -> None:
    migrator.upgrade(db_url, "0001")
    assert manager.create_performance_alerts_table() is True
    assert manager.validate_schema().ok


def test_create_missing_tables_refuses_a_table_of_no_revision(manager: MigrationManager) -> None:
    with pytest.raises(ValueError, match="not tables of this package: sessions"):
        manager.create_missing_tables(["sessions"])


def test_validate_schema_reports_a_missing_column(manager: MigrationManager, db_url: str) -> None:
    migrator.upgrade(db_url)
    execute(db_url, "ALTER TABLE performance_alerts DROP COLUMN endpoint")
    report = manager.validate_schema()
    assert report.missing_columns == ("performance_alerts.endpoint",)
    assert "missing column performance_alerts.endpoint" in report.to_text()


def test_the_report_carries_no_credentials(manager: MigrationManager, db_url: str) -> None:
    text = manager.run_startup("upgrade").to_json() + manager.validate_schema().to_text()
    assert str(sa.make_url(db_url).database) not in text
    assert "postgres" not in text.replace('"postgresql"', "").replace("(postgresql)", "")


# -- the lock's timeout ----------------------------------------------------------------------


@pytest.mark.postgresql
def test_a_held_advisory_lock_times_out_naming_its_holder(pg_url: str) -> None:
    url = sa.make_url(pg_url)
    engine = sa.create_engine(url, poolclass=NullPool)
    with engine.connect() as holder:
        holder.execute(
            sa.text("SELECT pg_advisory_lock(:k)"), {"k": advisory_lock_key(url.database or "")}
        )
        pid = holder.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        with (
            pytest.raises(MigrationLockTimeout, match=rf"pid {pid}.*pg_locks") as caught,
            migration_lock(url, timeout=0.3),
        ):
            pass
        assert caught.value.timeout == 0.3
    engine.dispose()


@pytest.mark.sqlite
def test_a_held_sqlite_lock_times_out(sqlite_path: Path, sqlite_url: str) -> None:
    lock_file = sqlite_lock_path(sqlite_path)
    with lock_file.open("w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with (
            pytest.raises(MigrationLockTimeout, match="another process holds"),
            migration_lock(sa.make_url(sqlite_url), timeout=0.2),
        ):
            pass


def test_another_thread_holding_the_process_lock_times_out(db_url: str) -> None:
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with migration_lock(sa.make_url(db_url), timeout=5):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    holding.wait(10)
    try:
        with pytest.raises(MigrationLockTimeout), migration_lock(sa.make_url(db_url), timeout=0.1):
            pass
    finally:
        release.set()
        thread.join()
