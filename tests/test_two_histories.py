"""The package's history and a host application's, read and run together through the API.

Each test builds the application's migrations directory in ``tmp_path`` (a revision creating
``notes``, whose ``user_id`` references the package's ``users`` and which ``depends_on`` the
package's head, as ``flask db migrate`` writes it) and drives
:class:`~ai_secretary_schema.migrator.Migrator` with that
:class:`~ai_secretary_schema.history.HostHistory`. What `flask db` does with it is in
tests/test_host_history.py.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from itertools import pairwise
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers.db import execute, table_names, versions
from sqlalchemy.pool import NullPool

from ai_secretary_schema.errors import MigrationError, SchemaValidationError
from ai_secretary_schema.history import (
    HostHistory,
    branch_heads,
    histories,
    managed_current,
    migrations_directory,
    script_directory,
    step_back,
)
from ai_secretary_schema.host_directory import init_host_directory
from ai_secretary_schema.migrator import Migrator
from ai_secretary_schema.models import Base, User
from ai_secretary_schema.settings import SchemaSettings

REPO = Path(__file__).resolve().parents[1]
PACKAGE_HEAD = branch_heads(None, host=False)[0]
NOTES = "h001"
LONG_AGO = 1_000_000_000

NOTES_REVISION = '''"""Create notes.

Revision ID: h001
"""

import sqlalchemy as sa
from alembic import op

revision = "h001"
down_revision = None
branch_labels = ("app",)
depends_on = "{depends_on}"


def upgrade():
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
    )


def downgrade():
    op.drop_table("notes")
'''


def notes_metadata(*extra: sa.Column[object]) -> sa.MetaData:
    """The application's models: ``notes`` (plus ``extra`` columns a changed model adds)."""
    metadata = sa.MetaData()
    sa.Table(
        "notes",
        metadata,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey(User.id), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        *extra,
    )
    return metadata


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    directory = init_host_directory(tmp_path / "host_migrations")
    (directory / "versions" / "h001_notes.py").write_text(
        NOTES_REVISION.format(depends_on=PACKAGE_HEAD)
    )
    return directory


@pytest.fixture
def host(host_dir: Path) -> HostHistory:
    return HostHistory(host_dir, notes_metadata())


def migrator(url: str, host: HostHistory | None) -> Migrator:
    return Migrator(SchemaSettings.resolve(database_url=url), host=host)


def test_upgrade_to_head_brings_both_histories_to_their_heads(
    db_url: str, host: HostHistory
) -> None:
    with migrator(db_url, host) as both:
        state = both.upgrade()
    assert (state.at_head, sorted(state.current)) == (True, sorted([PACKAGE_HEAD, NOTES]))


def test_a_host_table_with_a_foreign_key_to_users_works_after_the_upgrade(
    db_url: str, host: HostHistory
) -> None:
    with migrator(db_url, host) as both:
        both.upgrade()
    execute(
        db_url,
        "INSERT INTO tenants (name, slug) VALUES ('Acme', 'acme')",
        "INSERT INTO users (tenant_id, email, password_hash) VALUES (1, 'a@acme.test', 'x')",
        "INSERT INTO notes (user_id, body) VALUES (1, 'hello')",
    )
    assert {"tenants", "users", "performance_alerts", "notes"} <= table_names(db_url)


def test_the_host_revision_waits_for_the_package_revision_it_depends_on(
    db_url: str, host: HostHistory
) -> None:
    with migrator(db_url, None) as package_only:
        package_only.upgrade("0001")
    progress = io.StringIO()
    with Migrator(SchemaSettings.resolve(database_url=db_url), host=host, progress=progress) as m:
        m.upgrade()
    started = [line.split(",")[0] for line in progress.getvalue().splitlines()]
    package = [script.revision for script in reversed(list(script_directory().walk_revisions()))]
    assert started == [
        *(f"Running upgrade {down} -> {up}" for down, up in pairwise(package)),
        f"Running upgrade  -> {NOTES}",
    ]


def test_the_startup_hook_validates_both_models(db_url: str, host: HostHistory) -> None:
    with migrator(db_url, host) as both:
        report = both.run_startup("upgrade")
    assert (report.ok, report.histories) == (True, 2)


def test_a_host_model_without_its_revision_fails_the_startup_hook(
    db_url: str, host_dir: Path
) -> None:
    changed = HostHistory(host_dir, notes_metadata(sa.Column("pinned", sa.Boolean())))
    with migrator(db_url, changed) as both, pytest.raises(SchemaValidationError) as raised:
        both.run_startup("upgrade")
    assert "notes.pinned" in str(raised.value)


def test_the_warm_start_stays_warm_for_both_histories(db_url: str, host: HostHistory) -> None:
    # Files changed within the last two seconds are never vouched for: these were just written.
    for path in host.directory.rglob("*"):
        os.utime(path, (LONG_AGO, LONG_AGO))
    with migrator(db_url, host) as both:
        both.run_startup("upgrade")
    with migrator(db_url, host) as both:
        assert both.run_startup("upgrade").fast_path


def test_a_changed_host_model_misses_the_warm_start(db_url: str, host_dir: Path) -> None:
    with migrator(db_url, HostHistory(host_dir, notes_metadata())) as both:
        both.run_startup("upgrade")
    changed = HostHistory(host_dir, notes_metadata(sa.Column("pinned", sa.Boolean())))
    with migrator(db_url, changed) as both, pytest.raises(SchemaValidationError):
        both.run_startup("upgrade")


def test_release_mode_upgrades_the_package_and_leaves_the_host_alone(
    db_url: str, host_dir: Path
) -> None:
    released = HostHistory(host_dir, notes_metadata(), managed=False)
    with migrator(db_url, released) as package_first:
        report = package_first.run_startup("upgrade")
    assert (report.ok, "notes" in table_names(db_url)) == (True, False)


def test_release_mode_accepts_a_database_the_host_has_migrated_since(
    db_url: str, host: HostHistory, host_dir: Path
) -> None:
    with migrator(db_url, host) as both:
        both.upgrade()
    released = HostHistory(host_dir, notes_metadata(), managed=False)
    with migrator(db_url, released) as package_only:
        report = package_only.run_startup("validate")
    assert (report.ok, report.current) == (True, (PACKAGE_HEAD,))


def test_a_revision_of_an_unknown_history_is_refused_and_nothing_changes(db_url: str) -> None:
    execute(
        db_url,
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)",
        "INSERT INTO alembic_version (version_num) VALUES ('cb5091c87432')",
    )
    with migrator(db_url, None) as package_only, pytest.raises(MigrationError) as raised:
        package_only.upgrade()
    assert "cb5091c87432" in str(raised.value)
    assert "directory" in str(raised.value)
    assert table_names(db_url) == {"alembic_version"}


def test_alembic_from_the_host_directory_refuses_an_unknown_revision(
    sqlite_url: str, host_dir: Path
) -> None:
    execute(
        sqlite_url,
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)",
        "INSERT INTO alembic_version (version_num) VALUES ('cb5091c87432')",
    )
    result = run_alembic(host_dir, sqlite_url, "upgrade", "heads")
    assert result.returncode != 0
    assert "records revision(s) cb5091c87432" in result.stderr


def run_alembic(host_dir: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url={url}", *args],
        cwd=host_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_alembic_from_the_host_directory_upgrades_both_histories(
    sqlite_url: str, host_dir: Path
) -> None:
    result = run_alembic(host_dir, sqlite_url, "upgrade", "heads")
    assert result.returncode == 0, result.stderr
    assert {"users", "notes"} <= table_names(sqlite_url)


def test_an_old_database_with_the_host_history_in_the_same_table_is_adopted(
    db_url: str, tmp_path: Path
) -> None:
    # The package's tables made by create_all; the host's revision, made by its own
    # Flask-Migrate before it knew of the package (no label, no depends_on), recorded in the
    # same alembic_version: no package revision there.
    legacy = init_host_directory(tmp_path / "legacy")
    (legacy / "versions" / "h001_notes.py").write_text(
        NOTES_REVISION.format(depends_on="x")
        .replace('branch_labels = ("app",)', "branch_labels = None")
        .replace('depends_on = "x"', "depends_on = None")
    )
    engine = sa.create_engine(db_url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            Base.metadata.create_all(connection)
            connection.exec_driver_sql("INSERT INTO tenants (name, slug) VALUES ('Acme', 'a')")
            notes_metadata().create_all(connection)
            connection.exec_driver_sql(
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"
            )
            connection.exec_driver_sql("INSERT INTO alembic_version VALUES ('h001')")
    finally:
        engine.dispose()
    with migrator(db_url, HostHistory(legacy, notes_metadata())) as both:
        report = both.run_startup("upgrade")
    assert (report.ok, report.adopted_at is not None, sorted(versions(db_url))) == (
        True,
        True,
        sorted([PACKAGE_HEAD, NOTES]),
    )


def test_current_tells_where_each_history_stands_when_one_is_recorded_through_the_other(
    host_dir: Path,
) -> None:
    location = histories(None)
    both = type(location)(location.package, HostHistory(host_dir))
    assert managed_current((NOTES,), both) == tuple(sorted((PACKAGE_HEAD, NOTES)))


def test_a_second_host_revision_keeps_the_package_head_among_the_current_ones(
    host_dir: Path,
) -> None:
    second = (host_dir / "versions" / "h001_notes.py").read_text()
    (host_dir / "versions" / "h002_more.py").write_text(
        second.replace('revision = "h001"', 'revision = "h002"')
        .replace("down_revision = None", 'down_revision = "h001"')
        .replace('branch_labels = ("app",)', "branch_labels = None")
        .replace(f'depends_on = "{PACKAGE_HEAD}"', "depends_on = None")
    )
    location = histories(None)
    both = type(location)(location.package, HostHistory(host_dir))
    assert managed_current(("h002",), both) == tuple(sorted((PACKAGE_HEAD, "h002")))


def test_downgrade_steps_back_in_the_host_history_by_default_in_flask_db(host_dir: Path) -> None:
    location = histories(None)
    both = type(location)(location.package, HostHistory(host_dir))
    assert step_back(both, host=True) == f"{NOTES}@base"


def test_a_host_history_with_two_heads_has_no_one_step_back(host_dir: Path) -> None:
    second = (host_dir / "versions" / "h001_notes.py").read_text().replace("h001", "h002")
    (host_dir / "versions" / "h002_notes.py").write_text(
        second.replace('branch_labels = ("app",)', "branch_labels = None")
    )
    location = histories(None)
    both = type(location)(location.package, HostHistory(host_dir))
    with pytest.raises(MigrationError, match="2 heads"):
        step_back(both, host=True)


def test_check_reports_a_diverged_host_history(host_dir: Path) -> None:
    diverged = (host_dir / "versions" / "h001_notes.py").read_text()
    (host_dir / "versions" / "h002_other.py").write_text(
        diverged.replace("h001", "h002").replace('branch_labels = ("app",)', "branch_labels = None")
    )
    with Migrator(
        SchemaSettings.resolve(database_url="sqlite://"), host=HostHistory(host_dir)
    ) as m:
        report = m.check()
    assert not report.ok
    assert any("the application's migration history has 2 heads" in d for d in report.diffs)


def test_init_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "keep.txt").write_text("mine")
    with pytest.raises(MigrationError, match="already exists and is not empty"):
        init_host_directory(tmp_path / "migrations")
    assert sorted(p.name for p in (tmp_path / "migrations").iterdir()) == ["keep.txt"]


def test_the_host_directory_runs_the_package_env(host_dir: Path) -> None:
    assert (host_dir / "env.py").read_text() == (migrations_directory() / "env.py").read_text()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["upgrade", "--directory", "nowhere"], "--directory nowhere: no versions/ directory"),
        (["current"], "belongs to another history"),
    ],
    ids=["missing-directory", "foreign-revision"],
)
def test_the_cli_says_what_to_do_about_the_host_history(
    sqlite_url: str, tmp_path: Path, args: list[str], expected: str
) -> None:
    execute(
        sqlite_url,
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)",
        "INSERT INTO alembic_version (version_num) VALUES ('cb5091c87432')",
    )
    result = subprocess.run(
        [sys.executable, "-m", "ai_secretary_schema", *args, "--url", sqlite_url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert expected in result.stdout + result.stderr


def test_the_cli_migrates_both_histories_with_directory(sqlite_url: str, host_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from ai_secretary_schema.cli import main
        sys.exit(main(["upgrade", "--url", {sqlite_url!r}, "--directory", {str(host_dir)!r}]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "notes" in table_names(sqlite_url)


@pytest.mark.parametrize("mode", ["startup", "release"])
def test_the_schema_health_check_is_healthy_with_both_histories_at_head(
    db_url: str, host_dir: Path, mode: str
) -> None:
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy

    from ai_secretary_schema.flask import SchemaExtension

    with migrator(db_url, HostHistory(host_dir)) as both:
        both.upgrade()
    app = Flask(__name__)
    app.config.update(DATABASE_URL=db_url, SCHEMA_HOST_MIGRATIONS=mode)
    schema = SchemaExtension(
        app, db=SQLAlchemy(metadata=notes_metadata()), directory=host_dir, health_path=None
    )
    try:
        result = schema.state(app).health.check("schema")
    finally:
        schema.close(app)
    assert (result.status.value, result.error_message) == ("healthy", None)


HOST_MODELS = """
import sqlalchemy as sa

from ai_secretary_schema.models import User

metadata = sa.MetaData()
sa.Table(
    "notes",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("user_id", sa.Integer(), sa.ForeignKey(User.id), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),{extra}
)
"""


@pytest.mark.parametrize(
    ("extra", "status", "difference"),
    [
        ("", 0, None),
        ('\n    sa.Column("pinned", sa.Boolean()),', 1, "missing column notes.pinned"),
    ],
    ids=["models-match", "model-without-revision"],
)
def test_the_cli_check_compares_the_models_alembic_ini_names(
    tmp_path: Path, host_dir: Path, extra: str, status: int, difference: str | None
) -> None:
    (tmp_path / "hostmodels.py").write_text(HOST_MODELS.format(extra=extra))
    ini = host_dir / "alembic.ini"
    ini.write_text(
        ini.read_text().replace(
            "# ai_secretary_schema.host_metadata = myapp.models:db.metadata",
            "ai_secretary_schema.host_metadata = hostmodels:metadata",
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "ai_secretary_schema", "check", "--directory", str(host_dir)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == status, result.stdout + result.stderr
    assert difference is None or difference in result.stdout
