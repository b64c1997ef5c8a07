"""Each revision is reported as it starts, with how long it took, through every door: on standard
output for the command lines, as INFO log lines for the startup hook; nothing when nothing runs."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.scripts import HEAD

from ai_secretary_schema.errors import MigrationError
from ai_secretary_schema.migration_manager import MigrationManager
from ai_secretary_schema.migrator import upgrade
from tests.helpers.scripts import FAIL, make_script_dir

REPOSITORY = Path(__file__).resolve().parent.parent
#: ``Running upgrade 0001 -> 0002, Add performance_alerts. … 0.04 s``
LINE = re.compile(r"^Running (upgrade|downgrade) (\S*) -> (\S*), .+ … \d+\.\d\d s$")


def _run(*argv: str, cwd: Path, url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["DATABASE_URL"] = url
    return subprocess.run(
        list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


DOORS = {
    "cli": [sys.executable, "-m", "ai_secretary_schema"],
    "alembic": [sys.executable, "-m", "alembic", "-c", str(REPOSITORY / "alembic.ini")],
}


def _steps(stdout: str) -> list[tuple[str, str, str]]:
    return [match.groups() for line in stdout.splitlines() if (match := LINE.match(line))]


@pytest.mark.parametrize("door", DOORS.values(), ids=DOORS.keys())
def test_an_upgrade_reports_each_revision_with_its_duration(
    door: list[str], db_url: str, tmp_path: Path
) -> None:
    result = _run(*door, "upgrade", "head", cwd=tmp_path, url=db_url)

    assert _steps(result.stdout) == [
        ("upgrade", "", "0001"),
        ("upgrade", "0001", "0002"),
        ("upgrade", "0002", "0003"),
    ]


@pytest.mark.parametrize("door", DOORS.values(), ids=DOORS.keys())
def test_a_downgrade_reports_each_revision(door: list[str], db_url: str, tmp_path: Path) -> None:
    upgrade(db_url)

    result = _run(*door, "downgrade", "base", cwd=tmp_path, url=db_url)

    assert _steps(result.stdout) == [
        ("downgrade", "0003", "0002"),
        ("downgrade", "0002", "0001"),
        ("downgrade", "0001", ""),
    ]


@pytest.mark.parametrize("door", DOORS.values(), ids=DOORS.keys())
def test_nothing_to_run_reports_nothing(door: list[str], db_url: str, tmp_path: Path) -> None:
    upgrade(db_url)

    result = _run(*door, "upgrade", "head", cwd=tmp_path, url=db_url)

    assert "Running" not in result.stdout


def test_a_failing_revision_is_reported_as_failed(sqlite_url: str, tmp_path: Path) -> None:
    scripts = make_script_dir(tmp_path, {"0101": (HEAD, FAIL)})

    result = _run(
        *DOORS["cli"], "upgrade", "--script-location", str(scripts), cwd=tmp_path, url=sqlite_url
    )

    assert result.stdout.splitlines()[-1].startswith(f"Running upgrade {HEAD} -> 0101")
    assert result.stdout.splitlines()[-1].endswith("failed")


def _progress_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ai_secretary_schema.progress"]


def test_the_startup_hook_logs_each_revision_at_info(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ai_secretary_schema.progress")

    with MigrationManager(url=db_url) as manager:
        manager.run_startup("upgrade")

    messages = _progress_messages(caplog)
    assert [m.split(",")[0] for m in messages] == [
        "Running upgrade  -> 0001",
        "Ran upgrade  -> 0001",
        "Running upgrade 0001 -> 0002",
        "Ran upgrade 0001 -> 0002",
        "Running upgrade 0002 -> 0003",
        "Ran upgrade 0002 -> 0003",
    ]


def test_the_startup_hook_logs_nothing_when_nothing_runs(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    upgrade(db_url)
    caplog.set_level(logging.INFO, logger="ai_secretary_schema.progress")

    with MigrationManager(url=db_url) as manager:
        manager.run_startup("upgrade")

    assert _progress_messages(caplog) == []


def test_the_startup_hook_names_a_failing_revision_before_it_fails(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scripts = make_script_dir(tmp_path, {"0101": (HEAD, FAIL)})
    caplog.set_level(logging.INFO, logger="ai_secretary_schema.progress")

    with (
        pytest.raises(MigrationError),
        MigrationManager(url=sqlite_url, script_location=scripts) as manager,
    ):
        manager.run_startup("upgrade")

    assert _progress_messages(caplog)[-1].startswith(f"Running upgrade {HEAD} -> 0101")
