"""``ai-secretary-schema check`` (the CI drift check) and ``validate``, through the CLI.

``check`` upgrades a scratch database to head and compares it with the models: exit 0 when they
agree; 1 listing every difference when a model changed without a migration (simulated with a
script directory whose head drops a column the models have, or with models that gained a
column), or when the history has two heads. ``validate`` reports a live database the same way and
never changes it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers.scripts import DROP_ENDPOINT, HEAD, NOOP, make_script_dir
from sqlalchemy.pool import NullPool

from ai_secretary_schema import migrator
from ai_secretary_schema.cli import main
from ai_secretary_schema.models import Base


@pytest.fixture
def drifted_scripts(tmp_path: Path) -> Path:
    """A head (``0101``) that drops ``performance_alerts.endpoint``, which the models still have."""
    return make_script_dir(tmp_path, {"0101": (HEAD, DROP_ENDPOINT)})


@pytest.fixture
def two_heads(tmp_path: Path) -> Path:
    """Two revisions on top of the shipped head: a diverged history."""
    return make_script_dir(tmp_path, {"0101": (HEAD, NOOP), "0102": (HEAD, NOOP)})


@pytest.fixture(params=["sqlite", "postgresql"])
def check_args(request: pytest.FixtureRequest) -> list[str]:
    """``check`` on each dialect: no URL (scratch SQLite file), or ``--url`` of a PostgreSQL
    server (scratch database created there and dropped)."""
    if request.param == "sqlite":
        request.applymarker(pytest.mark.sqlite)
        return []
    request.applymarker(pytest.mark.postgresql)
    return ["--url", str(request.getfixturevalue("pg_url"))]


def databases(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return set(connection.execute(sa.text("SELECT datname FROM pg_database")).scalars())
    finally:
        engine.dispose()


def test_check_passes_on_the_real_migrations(
    check_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", *check_args]) == 0
    assert "at head, no differences" in capsys.readouterr().out


def test_check_lists_a_column_the_head_lacks(
    check_args: list[str], drifted_scripts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", *check_args, "--script-location", str(drifted_scripts)]) == 1
    assert "missing column performance_alerts.endpoint" in capsys.readouterr().out


def test_check_fails_on_two_heads(two_heads: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--script-location", str(two_heads)]) == 1
    assert "2 heads" in capsys.readouterr().out


def test_check_json_is_machine_readable(
    drifted_scripts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--json", "--script-location", str(drifted_scripts)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["missing_columns"] == ["performance_alerts.endpoint"]
    assert report["differences"] == ["missing column performance_alerts.endpoint"]


def test_check_lists_a_column_added_to_the_models_without_a_migration() -> None:
    models = sa.MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(models)
    models.tables["users"].append_column(sa.Column("nickname", sa.String(50)))
    report = migrator.check(metadata=models)
    assert not report.ok
    assert report.differences() == ["missing column users.nickname"]


@pytest.mark.postgresql
def test_check_drops_its_scratch_database(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ai_secretary_schema.migrator"):
        assert migrator.check(pg_url).ok
    (scratch,) = [r.args[0] for r in caplog.records if "scratch database" in r.getMessage()]
    assert str(scratch).startswith("ais_check_")
    assert scratch not in databases(pg_url)


def test_validate_passes_on_a_database_at_head(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    migrator.upgrade(db_url)
    assert main(["validate", "--url", db_url]) == 0
    assert "at head, no differences" in capsys.readouterr().out


def test_validate_fails_on_a_database_behind_head_and_leaves_it_there(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    migrator.upgrade(db_url, "0001")
    assert main(["validate", "--json", "--url", db_url]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["current"], report["heads"], report["missing_tables"]) == (
        ["0001"],
        [HEAD],
        ["performance_alerts"],
    )
    assert migrator.current(db_url).current == ("0001",)


@pytest.mark.parametrize("command", ["upgrade", "current", "validate", "downgrade base"])
def test_an_unreachable_database_is_one_redacted_line_and_exit_1(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_CONNECT_DEADLINE", "0")
    url = "postgresql+psycopg2://someone:s3cret-pw@127.0.0.1:1/nowhere"
    assert main([*command.split(), "--url", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ai-secretary-schema: error: Could not reach PostgreSQL at 127.0.0.1:1")
    assert err.count("\n") == 1
    assert "s3cret-pw" not in err
    assert "Traceback" not in err
