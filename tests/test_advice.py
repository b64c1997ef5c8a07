"""Advice that fits the problem: behind head means upgrade; a difference at head (which an
upgrade cannot fix) means a model changed without a migration, or a change by hand."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from ai_secretary_schema.errors import SchemaValidationError
from ai_secretary_schema.migration_manager import MigrationManager
from ai_secretary_schema.migrator import upgrade
from ai_secretary_schema.schema_report import SchemaReport

AT_HEAD_BUT_DIFFERENT = "a model changed without a migration, or the database was changed by hand"
UPGRADE = "run `ai-secretary-schema upgrade`"

REPORTS = {
    "ok": (SchemaReport("sqlite", current=("0002",), heads=("0002",)), None),
    "behind": (SchemaReport("sqlite", current=("0001",), heads=("0002",)), UPGRADE),
    "unversioned": (SchemaReport("sqlite", heads=("0002",)), UPGRADE),
    "two-heads": (
        SchemaReport("sqlite", current=("0002",), heads=("0002", "0003")),
        "alembic merge heads",
    ),
    "different-at-head": (
        SchemaReport(
            "sqlite",
            current=("0002",),
            heads=("0002",),
            unexpected_columns=("users.nickname",),
            diffs=("remove_column users.nickname VARCHAR(20)",),
        ),
        AT_HEAD_BUT_DIFFERENT,
    ),
}


@pytest.mark.parametrize(("report", "expected"), REPORTS.values(), ids=REPORTS.keys())
def test_the_advice_fits_what_the_report_found(report: SchemaReport, expected: str | None) -> None:
    advice = report.advice()

    assert advice is None if expected is None else expected in (advice or "")


def test_the_text_report_ends_with_the_advice() -> None:
    report, _ = REPORTS["different-at-head"]

    assert report.to_text().splitlines()[-1].startswith("  What to do: the database is at head")


def _add_unexpected_column(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE users ADD COLUMN nickname VARCHAR(20)"))
    engine.dispose()


@pytest.mark.parametrize("mode", ["validate", "upgrade"])
def test_an_unexpected_column_at_head_is_not_advised_an_upgrade(db_url: str, mode: str) -> None:
    upgrade(db_url)
    _add_unexpected_column(db_url)

    with pytest.raises(SchemaValidationError) as caught, MigrationManager(url=db_url) as manager:
        manager.run_startup(mode)  # type: ignore[arg-type]

    assert AT_HEAD_BUT_DIFFERENT in str(caught.value)
    assert UPGRADE not in str(caught.value)
    assert "ai-secretary-schema validate" in str(caught.value)


def test_a_database_behind_head_is_advised_an_upgrade(db_url: str) -> None:
    upgrade(db_url, "0001")

    with pytest.raises(SchemaValidationError) as caught, MigrationManager(url=db_url) as manager:
        manager.run_startup("validate")

    assert UPGRADE in str(caught.value)
