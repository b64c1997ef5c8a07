"""The ``ai-secretary-schema`` command line: each command, its output and its exit status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers.scripts import BEFORE_HEAD, HEAD

from ai_secretary_schema.cli import main
from ai_secretary_schema.models import Base


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ai_secretary_schema", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_upgrade_without_url_creates_the_default_sqlite_database_at_head(tmp_path: Path) -> None:
    result = run_cli("upgrade", cwd=tmp_path)
    # Before it, a line per revision applied (tests/test_progress.py).
    last_line = result.stdout.splitlines()[-1]
    assert (result.returncode, last_line, (tmp_path / "ai_secretary.db").is_file()) == (
        0,
        f"sqlite:///ai_secretary.db: revision {HEAD} (at head)",
        True,
    )


def test_upgrade_reads_database_url_from_the_environment(tmp_path: Path) -> None:
    result = run_cli("upgrade", cwd=tmp_path, env={"DATABASE_URL": "sqlite:///from_env.db"})
    assert (result.returncode, (tmp_path / "from_env.db").is_file()) == (0, True)


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([["upgrade"]], f"revision {HEAD} (at head)"),
        ([["upgrade", "0001"]], f"revision 0001 (head is {HEAD})"),
        ([["upgrade"], ["downgrade", "-1"]], f"revision {BEFORE_HEAD} (head is {HEAD})"),
        (
            [["upgrade"], ["downgrade", "base"]],
            f"revision base (no revision applied) (head is {HEAD})",
        ),
        ([["upgrade", "0001"], ["current"]], f"revision 0001 (head is {HEAD})"),
        ([["current"]], f"revision base (no revision applied) (head is {HEAD})"),
        ([["upgrade"], ["stamp", "0001"]], f"revision 0001 (head is {HEAD})"),
        ([["upgrade", "0001"], ["stamp", "head"]], f"revision {HEAD} (at head)"),
    ],
    ids=[
        "upgrade",
        "upgrade-to-0001",
        "downgrade-one",
        "downgrade-base",
        "current",
        "current-empty",
        "stamp-back",
        "stamp-head",
    ],
)
def test_each_command_prints_the_revision_the_database_ends_at(
    db_url: str, capsys: pytest.CaptureFixture[str], steps: list[list[str]], expected: str
) -> None:
    for step in steps:
        assert main([*step, "--url", db_url]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(expected)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (
            ["history"],
            [
                "0002 -> 0003 (head), Row-level security on users: each tenant sees and writes "
                "its own rows only.",
                "0001 -> 0002, Add performance_alerts.",
                "<base> -> 0001, Create tenants and users.",
            ],
        ),
        (["heads"], [HEAD]),
    ],
    ids=["history", "heads"],
)
def test_history_and_heads_need_no_database(
    capsys: pytest.CaptureFixture[str], command: list[str], expected: list[str]
) -> None:
    assert (main(command), capsys.readouterr().out.splitlines()) == (0, expected)


def test_sql_prints_the_offline_upgrade(capsys: pytest.CaptureFixture[str]) -> None:
    main(["sql", "--url", "postgresql+psycopg2://u@db.invalid/app"])
    assert "CREATE TABLE performance_alerts" in capsys.readouterr().out


@pytest.mark.parametrize(
    "url",
    ["mysql://u:p@h/db", "not a url", "http://example.com", "postgresql://"],
)
def test_a_bad_url_is_a_one_line_error_and_exit_status_1(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["upgrade", "--url", url])
    err = capsys.readouterr().err
    assert (status, err.startswith("ai-secretary-schema: error: "), err.count("\n")) == (1, True, 1)


def test_an_unknown_revision_is_an_error_that_names_it(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["upgrade", "nonexistent", "--url", sqlite_url])
    assert (status, "'nonexistent'" in capsys.readouterr().err) == (1, True)


def test_python_dash_m_and_the_console_script_agree(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("ai-secretary-schema")
    via_script = subprocess.run(
        [str(script), "heads"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert via_script.stdout == run_cli("heads", cwd=tmp_path).stdout == f"{HEAD}\n"


def test_upgrade_to_head_adopts_a_database_made_before_migrations(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = sa.create_engine(sqlite_url)
    Base.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO tenants (name, slug) VALUES ('Acme', 'acme')"))
    status = main(["upgrade", "--url", sqlite_url])
    with engine.connect() as connection:
        tenants = connection.execute(sa.text("SELECT slug FROM tenants")).scalars().all()
    engine.dispose()
    assert (status, capsys.readouterr().out.strip().endswith("(at head)"), tenants) == (
        0,
        True,
        ["acme"],
    )


@pytest.mark.parametrize("command", ["upgrade", "current", "validate"])
def test_a_bad_url_never_falls_back_to_the_default_sqlite_file(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    status = main([command, "--url", "mysql://u:p@h/db"])
    assert (status, list(tmp_path.iterdir())) == (1, [])
