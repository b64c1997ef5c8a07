"""``flask db …`` through the real ``flask`` command, on SQLite and on PostgreSQL.

Every command runs as a subprocess of ``/work/venv/bin/flask --app examples.app:create_app``
(the example application; a host application sharing Flask-SQLAlchemy's engine for the tests of
that), with its environment passed explicitly. ``SCHEMA_STARTUP=validate``
is set throughout: the startup hook must not run in a ``flask db`` process, or a database that is
behind could never be upgraded with ``flask db upgrade``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest
from helpers import flask_cli
from helpers.db import table_names
from helpers.flask_cli import REPO, flask_env, ok
from helpers.scripts import BEFORE_HEAD, HEAD

from ai_secretary_schema import migrator
from ai_secretary_schema.flask import SchemaExtension
from ai_secretary_schema.history import migrations_directory

if TYPE_CHECKING:
    from conftest import StatementLog

APP = "examples.app:create_app"


#: A host application that has Flask-SQLAlchemy and a model of its own, and shares its engine
#: with the extension (``SchemaExtension(db=db)``).
HOST_APP = """
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

from ai_secretary_schema.flask import SchemaExtension

db = SQLAlchemy()
schema = SchemaExtension(db=db)


class Note(db.Model):
    __tablename__ = "host_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(sa.String(100))


def create_app() -> Flask:
    app = Flask(__name__)
    schema.init_app(app)
    return app
"""


def run_flask(
    *args: str, env: dict[str, str], app: str = APP, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    return flask_cli.run_flask(*args, env=env, app=app, cwd=cwd)


def exercise_every_command(env: dict[str, str]) -> None:
    """upgrade, check, current, history, heads, downgrade base, check (fails), stamp head."""
    ok(run_flask("db", "upgrade", env=env))
    assert "No new upgrade operations detected" in ok(run_flask("db", "check", env=env))
    assert ok(run_flask("db", "current", env=env)).split() == [HEAD, "(head)"]
    history = ok(run_flask("db", "history", env=env))
    assert "<base> -> 0001" in history
    assert f"{BEFORE_HEAD} -> {HEAD} (ai_secretary_schema) (head)" in history
    assert ok(run_flask("db", "heads", env=env)).split() == [
        HEAD,
        "(ai_secretary_schema)",
        "(head)",
    ]
    ok(run_flask("db", "downgrade", "base", env=env))
    assert ok(run_flask("db", "current", env=env)).strip() == ""
    behind = run_flask("db", "check", env=env)
    assert behind.returncode == 1
    assert "not up to date" in behind.stderr
    ok(run_flask("db", "stamp", "head", env=env))
    assert ok(run_flask("db", "current", env=env)).split() == [HEAD, "(head)"]


def test_every_flask_db_command(db_url: str) -> None:
    exercise_every_command(flask_env(db_url))
    # stamp only wrote alembic_version: the tables dropped by "downgrade base" stay dropped.
    assert table_names(db_url) == {"alembic_version"}


def test_every_flask_db_command_with_flask_sqlalchemy_sharing_the_engine(
    db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "host_app.py").write_text(HOST_APP)
    env = flask_env(db_url)

    def run(*args: str) -> str:
        return ok(run_flask(*args, env=env, app="host_app:create_app", cwd=tmp_path))

    run("db", "upgrade")
    assert run("db", "current").split() == [HEAD, "(head)"]
    # The host's own table is the host's: the package's migrations neither create nor report it.
    assert "No new upgrade operations detected" in run("db", "check")
    assert table_names(db_url) == {"alembic_version", "tenants", "users", "performance_alerts"}
    run("db", "downgrade", "base")
    assert table_names(db_url) == {"alembic_version"}


@pytest.mark.parametrize("shared", [False, True], ids=["own engine", "flask-sqlalchemy engine"])
def test_flask_db_upgrade_runs_on_the_application_engine(
    db_url: str, statement_log: StatementLog, shared: bool
) -> None:
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy

    app = Flask("cli_engine")
    db = SQLAlchemy() if shared else None
    schema = SchemaExtension(app, database_url=db_url, schema_startup="off", db=db)
    engine = schema.state(app).engine
    statement_log.entries.clear()  # the connection check at start
    try:
        result = app.test_cli_runner().invoke(args=["db", "upgrade"])
        assert result.exit_code == 0, result.output
        assert "CREATE TABLE tenants" in " ".join(statement_log.on(engine))
        # Not env.py's own engine, nor any other: only the lock has a connection of its own.
        assert statement_log.elsewhere(engine) == []
    finally:
        schema.close(app)
        engine.dispose()


@pytest.mark.sqlite
def test_x_url_migrates_the_database_it_names(sqlite_url: str, tmp_path: Path) -> None:
    other = f"sqlite:///{tmp_path / 'other.db'}"
    env = flask_env(sqlite_url)
    ok(run_flask("db", "upgrade", "-x", f"url={other}", env=env))
    assert "performance_alerts" in table_names(other)
    assert table_names(sqlite_url) == set()  # the application's database was left alone
    # The group's -x reaches every command (`current` has no -x of its own).
    current = ok(run_flask("db", "-x", f"url={other}", "current", env=env))
    assert current.split() == [HEAD, "(head)"]


@pytest.mark.sqlite
def test_flask_db_commands_never_run_the_startup_hook(sqlite_url: str) -> None:
    """SCHEMA_STARTUP=upgrade would create the tables if the hook ran in `flask db current`."""
    env = flask_env(sqlite_url, SCHEMA_STARTUP="upgrade")
    assert ok(run_flask("db", "current", env=env)).strip() == ""
    assert "performance_alerts" not in table_names(sqlite_url)
    ok(run_flask("db", "upgrade", "0001", env=env))
    assert ok(run_flask("db", "current", env=env)).split() == ["0001"]


@pytest.mark.sqlite
def test_flask_db_migrate_autogenerates_into_a_scratch_directory(
    sqlite_url: str, tmp_path: Path
) -> None:
    # Never into the package's own migrations/: a copy of it, selected with -d.
    scripts = tmp_path / "migrations"
    shutil.copytree(migrations_directory(), scripts, ignore=shutil.ignore_patterns("__pycache__"))
    env = flask_env(sqlite_url)
    ok(run_flask("db", "upgrade", "-d", str(scripts), env=env))
    ok(run_flask("db", "migrate", "-d", str(scripts), "-m", "nothing changed", env=env))
    generated = list((scripts / "versions").glob("*nothing_changed.py"))
    assert len(generated) == 1
    text = generated[0].read_text()
    assert f"'{HEAD}'" in text
    assert "op.create_table" not in text  # the models match the migrations


@pytest.mark.postgresql
def test_legacy_postgres_scheme(pg_url: str) -> None:
    legacy = pg_url.replace("postgresql+psycopg2://", "postgres://", 1)
    env = flask_env(legacy)
    ok(run_flask("db", "upgrade", env=env))
    assert ok(run_flask("db", "current", env=env)).split() == [HEAD, "(head)"]
    assert "No new upgrade operations detected" in ok(run_flask("db", "check", env=env))


@pytest.mark.postgresql
def test_plain_postgresql_url_uses_psycopg2_when_psycopg3_is_missing(
    pg_url: str, tmp_path: Path
) -> None:
    """SQLAlchemy 2.1 sends a plain postgresql:// to psycopg 3; a venv with only psycopg2 must
    still work. psycopg 3 is made unimportable for the subprocess by a shadowing module."""
    fakes = tmp_path / "no_psycopg3"
    fakes.mkdir()
    (fakes / "psycopg.py").write_text(
        'raise ImportError("psycopg 3 is deliberately not importable in this test")\n'
    )
    plain = pg_url.replace("postgresql+psycopg2://", "postgresql://", 1)
    env = flask_env(plain, PYTHONPATH=f"{fakes}{os.pathsep}{REPO}")
    probe = subprocess.run(
        [sys.executable, "-c", "import psycopg"], env=env, capture_output=True, text=True
    )
    assert probe.returncode != 0
    assert "deliberately not importable" in probe.stderr
    exercise_every_command(env)


@pytest.mark.postgresql
def test_password_with_percent_signs_survives(pg_url: str) -> None:
    # The server trusts local connections, so the password is not checked; what is tested is
    # that "%" in the URL reaches Alembic's ConfigParser escaped, and is never printed.
    password = "p%ss@w0rd%%"
    url = pg_url.replace("postgres@", f"postgres:{quote(password, safe='')}@", 1)
    env = flask_env(url)
    results = [
        run_flask("db", "upgrade", env=env),
        run_flask("db", "current", env=env),
        run_flask("db", "check", env=env),
    ]
    for result in results:
        ok(result)
        for secret in (password, quote(password, safe="")):
            assert secret not in result.stdout + result.stderr
    assert results[1].stdout.split() == [HEAD, "(head)"]


@pytest.mark.sqlite
def test_in_process_upgrade_keeps_the_host_loggers(
    sqlite_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples.app import create_app

    host_logger = logging.getLogger("host_application.orders")
    app = create_app({"DATABASE_URL": sqlite_url, "SCHEMA_STARTUP": "off"})
    try:
        result = app.test_cli_runner().invoke(args=["db", "upgrade"])
        assert result.exit_code == 0, result.output
        assert migrator.current(sqlite_url).at_head
        assert not host_logger.disabled
        assert not app.logger.disabled
        with caplog.at_level(logging.INFO):
            host_logger.info("order 42 shipped")
            app.logger.warning("still logging")
        messages = [record.getMessage() for record in caplog.records]
        assert "order 42 shipped" in messages
        assert "still logging" in messages
    finally:
        from examples.app import schema

        schema.close(app)
