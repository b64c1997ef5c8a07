"""A host application's own models and migrations beside the package's, end to end.

The host is the example host application (``examples/host_app``: a ``notes`` table whose
``user_id`` references the package's ``users``, its revisions in
``examples/host_app/migrations/versions``), or, where a test writes revisions or changes the
models, an application of tests/helpers/host_apps.py on a copy of its migrations in
``tmp_path``. Both histories share one ``alembic_version``; each ``flask db`` command is a real
``flask`` process, and each database a real SQLite file or PostgreSQL database of the test's own.

Revision ids are read from the histories, never spelled: the package's head moves with its
releases. Where a database stands is asserted through what ``flask db current`` says and what
tables exist, not through raw ``alembic_version`` rows: a package revision that a host revision
depends on is recorded only through that host revision.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from helpers import flask_cli, host_apps
from helpers.crowd import release
from helpers.db import table_names, versions
from helpers.flask_cli import REPO, SCRUBBED, flask_env, ok
from helpers.scripts import make_script_dir, revision_file
from sqlalchemy.pool import NullPool

from ai_secretary_schema import Base, Migrator, SchemaSettings, Tenant, User, tenant_scope
from ai_secretary_schema.flask import EXTENSION_KEY
from ai_secretary_schema.history import (
    Histories,
    HostHistory,
    branch_heads,
    migrations_directory,
    script_directory,
)
from examples import host_app

HELPERS = Path(__file__).parent / "helpers"
EXAMPLE = "examples.host_app:create_app"
HOST_APPS = f"{HELPERS / 'host_apps.py'}:create_app"
HOST_WORKER = HELPERS / "host_worker.py"

#: The package's revisions, oldest first, and its tables.
PACKAGE = [script.revision for script in reversed(list(script_directory().walk_revisions()))]
PACKAGE_HEAD = PACKAGE[-1]
PACKAGE_TABLES = set(Base.metadata.tables)
#: The example host application's one revision (it creates ``notes``).
(HOST_HEAD,) = branch_heads(
    Histories(migrations_directory(), HostHistory(host_app.MIGRATIONS)), host=True
)

#: The package revision the example's revision depends on (the head when it was generated).
(HOST_NEEDS,) = (
    script_directory(Histories(migrations_directory(), HostHistory(host_app.MIGRATIONS)))
    .get_revision(HOST_HEAD)
    .dependencies,
)

#: The "Running upgrade <from> -> <to>" lines of a fresh database.
PACKAGE_STEPS = [("", PACKAGE[0]), *pairwise(PACKAGE)]
FRESH_STEPS = [*PACKAGE_STEPS, ("", HOST_HEAD)]
RAN = re.compile(r"Running upgrade (\w*) -> (\w+)")

CURRENT_AT_HEADS = [f"{PACKAGE_HEAD} (ai_secretary_schema) (head)", f"{HOST_HEAD} (app) (head)"]


# -- running flask and the startup hook ----------------------------------------------------------


def environment(database_url: str, **extra: str | Path) -> dict[str, str]:
    """The environment of a process (see ``flask_env``), with the repository on the path:
    host_apps.py imports the example."""
    return flask_env(database_url, PYTHONPATH=REPO, **extra)


def run_flask(
    *args: str, env: dict[str, str], app: str = EXAMPLE
) -> subprocess.CompletedProcess[str]:
    return flask_cli.run_flask(*args, env=env, app=app)


def flask_db(*args: str, env: dict[str, str], app: str = EXAMPLE) -> str:
    """``flask db ARGS``, which must succeed; its stdout."""
    return ok(run_flask("db", *args, env=env, app=app))


def current_lines(env: dict[str, str], app: str = EXAMPLE) -> list[str]:
    return sorted(flask_db("current", env=env, app=app).splitlines())


def steps(output: str) -> list[tuple[str, str]]:
    return RAN.findall(output)


def in_dependency_order(ran: list[tuple[str, str]], expected: list[tuple[str, str]]) -> bool:
    """``ran`` is ``expected`` in an order Alembic may choose: the package's revisions in
    their order, and the host's after the package revision it depends on (later package
    revisions may come before or after it)."""
    package = [step for step in ran if step[1] != HOST_HEAD]
    ups = [up for _down, up in ran]
    return (
        sorted(ran) == sorted(expected)
        and package == [step for step in expected if step[1] != HOST_HEAD]
        and (HOST_NEEDS not in ups or ups.index(HOST_HEAD) > ups.index(HOST_NEEDS))
    )


def start_in_a_process(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Start an application of host_apps.py in a process of its own (the startup hook runs)."""
    return subprocess.run(
        [sys.executable, str(HOST_WORKER), "startup"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def execute(url: str, *statements: str) -> list[Any]:
    """Run ``statements`` in one transaction; the rows of the last."""
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            results = [connection.execute(sa.text(statement)) for statement in statements]
            return list(results[-1].all()) if results[-1].returns_rows else []
    finally:
        engine.dispose()


def add_note(url: str, body: str) -> None:
    """A tenant, a user of it and the user's note: what ``notes.user_id`` references."""
    execute(
        url,
        "INSERT INTO tenants (name, slug) VALUES ('Acme', 'acme')",
        "INSERT INTO users (tenant_id, email, password_hash) "
        "SELECT id, 'ada@acme.test', 'x' FROM tenants WHERE slug = 'acme'",
        f"INSERT INTO notes (user_id, body) SELECT id, '{body}' FROM users",
    )


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_inherited_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Applications started in this process read only what the test gives them."""
    for key in SCRUBBED:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def started() -> Iterator[Callable[..., Flask]]:
    """Calls an application factory (the startup hook runs) and closes what it made when the
    test ends: the extension (monitor, cache) and Flask-SQLAlchemy's engine, which the
    extension does not own. Ask for the database fixture first, so the apps close before it
    is dropped."""
    apps: list[Flask] = []

    def start(factory: Callable[..., Flask], *args: Any, **kwargs: Any) -> Flask:
        app = factory(*args, **kwargs)
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.extensions[EXTENSION_KEY].extension.close(app)
        with app.app_context():
            for engine in app.extensions["sqlalchemy"].engines.values():
                engine.dispose()


@pytest.fixture
def host_copy(tmp_path: Path) -> Path:
    """A copy of the example's migrations directory, for tests that write revisions."""
    target = tmp_path / "host_migrations"
    shutil.copytree(
        host_app.MIGRATIONS, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return target


def new_revisions(directory: Path) -> list[Path]:
    """The revisions of ``directory`` that the example's migrations do not have."""
    shipped = {path.name for path in (host_app.MIGRATIONS / "versions").glob("*.py")}
    return sorted(p for p in (directory / "versions").glob("*.py") if p.name not in shipped)


# -- the failure: a host history the package is not told about -----------------------------------


@pytest.fixture
def separately_migrated(db_url: str, tmp_path: Path) -> tuple[str, Path, str]:
    """A database that a host application migrated first with a Flask-Migrate history of its
    own (``Migrate(app, db, directory=…)`` beside ``SchemaExtension(…, migrate_command=None)``):
    ``flask db init``, ``migrate`` and ``upgrade`` of plain Flask-Migrate. Its ``notes`` has no
    ``user_id``: the package's ``users`` did not exist yet. Returns the URL, the host's
    migrations directory and the host revision ``alembic_version`` records."""
    directory = tmp_path / "legacy_migrations"
    env = environment(
        db_url, HOST_MIGRATIONS=directory, HOST_MODELS="legacy", HOST_HISTORY="separate"
    )
    for command in (["init"], ["migrate", "-m", "create notes"], ["upgrade"]):
        flask_db(*command, env=env, app=HOST_APPS)
    (recorded,) = versions(db_url)
    return db_url, directory, recorded


def test_a_host_history_the_package_is_not_told_about_stops_the_start_and_says_the_fix(
    separately_migrated: tuple[str, Path, str],
) -> None:
    url, directory, recorded = separately_migrated
    env = environment(
        url,
        HOST_MIGRATIONS=directory,
        HOST_MODELS="legacy",
        HOST_HISTORY="separate",
        SCHEMA_STARTUP="upgrade",
    )

    result = start_in_a_process(env)

    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("MigrationError: ")
    assert recorded in result.stderr
    assert "made by another migration history" in result.stderr
    assert "SchemaExtension(app, db=db, directory=" in result.stderr  # how to hand it over
    assert "Can't locate revision" not in result.stderr
    # Nothing was changed.
    assert table_names(url) == {"alembic_version", "notes"}
    assert versions(url) == [recorded]


def test_a_host_history_handed_to_the_extension_starts_with_both_histories_at_head(
    separately_migrated: tuple[str, Path, str], started: Callable[..., Flask]
) -> None:
    url, directory, recorded = separately_migrated

    app = started(
        host_apps.create_app,
        {"DATABASE_URL": url, "SCHEMA_STARTUP": "upgrade"},
        directory=directory,
        models="legacy",
    )

    report = app.extensions[EXTENSION_KEY].startup_report
    assert report.ok, report.to_text()
    assert table_names(url) == {"alembic_version", "notes", *PACKAGE_TABLES}
    env = environment(url, HOST_MIGRATIONS=directory, HOST_MODELS="legacy")
    assert current_lines(env, app=HOST_APPS) == sorted(
        [f"{PACKAGE_HEAD} (ai_secretary_schema) (head)", f"{recorded} (app) (head)"]
    )


# -- a fresh database ----------------------------------------------------------------------------


def test_one_flask_db_upgrade_creates_the_package_tables_then_the_host_tables(db_url: str) -> None:
    output = flask_db("upgrade", env=environment(db_url))

    assert in_dependency_order(steps(output), FRESH_STEPS)
    assert table_names(db_url) == {"alembic_version", "notes", *PACKAGE_TABLES}


def test_flask_db_current_names_each_history_at_its_head(db_url: str) -> None:
    env = environment(db_url)
    flask_db("upgrade", env=env)

    assert current_lines(env) == CURRENT_AT_HEADS


def test_flask_db_history_labels_each_revision_with_its_history(sqlite_url: str) -> None:
    history = flask_db("history", env=environment(sqlite_url))

    assert f"<base> ({HOST_NEEDS}) -> {HOST_HEAD} (app) (head), Create notes." in history
    assert f"<base> -> {PACKAGE[0]} (ai_secretary_schema)" in history
    for down, up in PACKAGE_STEPS[1:]:
        assert f"{down} -> {up} (ai_secretary_schema)" in history


def test_a_note_references_a_user_of_the_package(
    db_url: str, started: Callable[..., Flask]
) -> None:
    flask_db("upgrade", env=environment(db_url))
    app = started(host_app.create_app, {"DATABASE_URL": db_url, "SCHEMA_STARTUP": "validate"})
    with app.app_context():
        tenant = Tenant(name="Acme", slug="acme")
        host_app.db.session.add(tenant)
        host_app.db.session.flush()
        with tenant_scope(tenant.id):  # users is tenant-scoped: written in its tenant's scope
            user = User(tenant_id=tenant.id, email="ada@acme.test", password_hash="x")
            host_app.db.session.add(user)
            host_app.db.session.commit()
            user_id = user.id
        tenant_id = tenant.id
    client = app.test_client()

    tenant_header = {"X-Tenant-Id": str(tenant_id)}
    created = client.post(
        f"/users/{user_id}/notes", json={"body": "call Bob"}, headers=tenant_header
    )
    listed = client.get(f"/users/{user_id}/notes", headers=tenant_header)
    elsewhere = client.get(f"/users/{user_id}/notes", headers={"X-Tenant-Id": "999"})

    assert created.status_code == 201
    assert [note["body"] for note in listed.get_json()] == ["call Bob"]
    assert elsewhere.status_code == 404  # another tenant's user is not there
    with app.app_context():
        host_app.db.session.add(host_app.Note(user_id=user_id + 1, body="nobody's"))
        with pytest.raises(sa.exc.IntegrityError):
            host_app.db.session.commit()


# -- the order of the two histories --------------------------------------------------------------


#: To every head, the package's remaining revisions run; to the host's head, those it needs.
WAITS = {
    "heads": PACKAGE_STEPS[1:],
    "app@head": PACKAGE_STEPS[1 : PACKAGE.index(HOST_NEEDS) + 1],
}


@pytest.mark.parametrize("target", list(WAITS))
def test_the_host_revision_waits_for_the_package_revisions_it_depends_on(
    db_url: str, target: str
) -> None:
    """On a database at the package's first revision, upgrading (to every head, or to the
    host's alone) runs the package revisions the host's needs before it."""
    env = environment(db_url)
    flask_db("upgrade", PACKAGE[0], env=env)

    output = flask_db("upgrade", target, env=env)

    assert in_dependency_order(steps(output), [*WAITS[target], ("", HOST_HEAD)])


# -- a host history of more than one revision ---------------------------------------------------

#: A second host revision, on the example's: the column of the "titled" models.
SECOND = "5ec0"
ADD_TITLE = """
def upgrade():
    with op.batch_alter_table("notes") as batch:
        batch.add_column(sa.Column("title", sa.String(length=200), nullable=True))


def downgrade():
    with op.batch_alter_table("notes") as batch:
        batch.drop_column("title")
"""


def test_a_second_host_revision_keeps_both_histories_at_head(db_url: str, host_copy: Path) -> None:
    """The version table then holds the second host revision alone: the package's head is
    reached through the first one's ``depends_on``, and still counts as current."""
    (host_copy / "versions" / f"{SECOND}_add_title.py").write_text(
        revision_file(SECOND, HOST_HEAD, ADD_TITLE, doc="Add a title to notes.")
    )
    env = environment(db_url, HOST_MIGRATIONS=host_copy, HOST_MODELS="titled")
    flask_db("upgrade", env=env, app=HOST_APPS)

    assert current_lines(env, app=HOST_APPS) == sorted(
        [f"{PACKAGE_HEAD} (ai_secretary_schema) (head)", f"{SECOND} (app) (head)"]
    )
    start = start_in_a_process(env)  # SCHEMA_STARTUP=validate: at head and as the models say
    assert start.returncode == 0, start.stderr


# -- flask db migrate: the host's revisions only -------------------------------------------------


def test_flask_db_migrate_without_a_model_change_writes_no_revision(
    db_url: str, host_copy: Path
) -> None:
    env = environment(db_url, HOST_MIGRATIONS=host_copy)
    flask_db("upgrade", env=env, app=HOST_APPS)

    output = flask_db("migrate", "-m", "nothing", env=env, app=HOST_APPS)

    assert "No changes in schema detected." in output
    assert new_revisions(host_copy) == []


def test_flask_db_migrate_after_a_host_model_change_writes_a_revision_of_the_host_tables_only(
    db_url: str, host_copy: Path
) -> None:
    env = environment(db_url, HOST_MIGRATIONS=host_copy, HOST_MODELS="titled")
    flask_db("upgrade", env=env, app=HOST_APPS)

    flask_db("migrate", "-m", "add a title to notes", env=env, app=HOST_APPS)

    (revision,) = new_revisions(host_copy)
    text = revision.read_text()
    assert re.search(r"""add_column\((\s*["']notes["'],)?\s*sa\.Column\(["']title["']""", text)
    assert f"down_revision: str | Sequence[str] | None = {HOST_HEAD!r}" in text
    assert "branch_labels: str | Sequence[str] | None = None" in text
    quoted = set(re.findall(r"""["'](\w+)["']""", text))
    assert "notes" in quoted
    assert not PACKAGE_TABLES & quoted
    # It applies on top of the host's head, and the database then matches the changed models.
    flask_db("upgrade", env=env, app=HOST_APPS)
    assert "No new upgrade operations detected" in flask_db("check", env=env, app=HOST_APPS)


# -- a package upgrade under a host history ------------------------------------------------------

#: A new package revision (on the package's head). It changes data only, so that the package's
#: models (which do not know this test's revision) still match; the alert records its run.
PACKAGE_NEXT = "9f00"
PACKAGE_DATA = """
def upgrade():
    op.execute(
        "INSERT INTO performance_alerts (alert_type, severity, title) "
        "VALUES ('release', 'info', 'package revision 9f00 ran')"
    )


def downgrade():
    op.execute("DELETE FROM performance_alerts WHERE alert_type = 'release'")
"""


def test_a_package_upgrade_applies_its_revision_and_leaves_the_host_history_alone(
    db_url: str, tmp_path: Path
) -> None:
    flask_db("upgrade", env=environment(db_url))
    add_note(db_url, "kept")
    newer_package = make_script_dir(tmp_path, {PACKAGE_NEXT: (PACKAGE_HEAD, PACKAGE_DATA)})

    with Migrator(
        SchemaSettings.resolve(database_url=db_url),
        script_location=newer_package,
        host=HostHistory(host_app.MIGRATIONS, host_app.db.metadata),
    ) as migrator:
        report = migrator.run_startup("upgrade")
        state = migrator.current()

    assert report.ok, report.to_text()
    assert set(state.current) == {PACKAGE_NEXT, HOST_HEAD}
    assert execute(db_url, "SELECT title FROM performance_alerts") == [
        ("package revision 9f00 ran",)
    ]
    assert execute(db_url, "SELECT body FROM notes") == [("kept",)]


# -- flask db downgrade and check ----------------------------------------------------------------


def test_flask_db_downgrade_steps_back_the_host_history_only(db_url: str) -> None:
    env = environment(db_url)
    flask_db("upgrade", env=env)

    output = flask_db("downgrade", env=env)

    assert re.findall(r"Running downgrade (\w*) -> (\w*)", output) == [(HOST_HEAD, "")]
    assert table_names(db_url) == {"alembic_version", *PACKAGE_TABLES}
    assert current_lines(env) == [f"{PACKAGE_HEAD} (ai_secretary_schema) (head)"]


@pytest.mark.parametrize(
    ("steps_back", "status", "says"),
    [
        (0, 0, "No new upgrade operations detected"),
        (1, 1, "Target database is not up to date"),
    ],
    ids=["at both heads", "notes downgraded"],
)
def test_flask_db_check_compares_both_histories(
    db_url: str, steps_back: int, status: int, says: str
) -> None:
    env = environment(db_url)
    flask_db("upgrade", env=env)
    for _ in range(steps_back):
        flask_db("downgrade", env=env)

    result = run_flask("db", "check", env=env)

    assert result.returncode == status
    assert says in result.stdout + result.stderr


# -- SCHEMA_HOST_MIGRATIONS=release --------------------------------------------------------------


def test_in_release_mode_the_startup_hook_leaves_the_host_history_alone(
    db_url: str, started: Callable[..., Flask]
) -> None:
    app = started(
        host_app.create_app,
        {"DATABASE_URL": db_url, "SCHEMA_STARTUP": "upgrade", "SCHEMA_HOST_MIGRATIONS": "release"},
    )

    assert app.extensions[EXTENSION_KEY].startup_report.ok
    assert table_names(db_url) == {"alembic_version", *PACKAGE_TABLES}
    assert current_lines(environment(db_url)) == [f"{PACKAGE_HEAD} (ai_secretary_schema) (head)"]


# -- a crowd through both doors ------------------------------------------------------------------

CROWD = 8
ROUNDS = 2
#: Appended to the example's revision (in a copy): it then also records each of its runs in
#: ``migration_runs``, after a pause that makes unserialised runs overlap for certain.
COUNTING = """

_create_notes = upgrade


def upgrade() -> None:
    import os
    import time

    _create_notes()
    op.create_table(
        "migration_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("pid", sa.Integer(), nullable=False),
    )
    time.sleep(0.2)
    op.execute(f"INSERT INTO migration_runs (pid) VALUES ({os.getpid()})")
"""


def run_crowd(commands: list[list[str]], env: dict[str, str], barrier: Path) -> list[str]:
    """Start every host_worker.py command, release them together once all are ready, and
    return each one's output (stderr, then stdout); every one must succeed."""
    barrier.mkdir()
    processes = [
        subprocess.Popen(
            [sys.executable, str(HOST_WORKER), "--barrier", str(barrier), *command],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    release(processes, barrier)
    outputs = []
    failures = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        outputs.append(err + out)
        if process.returncode != 0:
            failures.append(f"exit {process.returncode}: {(err + out)[-2000:]}")
    assert not failures, "\n\n".join(failures)
    return outputs


@pytest.mark.slow
def test_a_crowd_of_flask_db_upgrades_and_startup_hooks_applies_each_revision_once(
    make_url: Callable[[], str], host_copy: Path, tmp_path: Path
) -> None:
    (revision,) = (host_copy / "versions").glob(f"{HOST_HEAD}_*.py")
    revision.write_text(revision.read_text() + COUNTING)
    commands = [["flask", "db", "upgrade"], ["startup"]] * (CROWD // 2)
    for round_ in range(ROUNDS):
        url = make_url()
        env = environment(
            url, HOST_MIGRATIONS=host_copy, HOST_MODELS="counted", SCHEMA_STARTUP="upgrade"
        )

        outputs = run_crowd(commands, env, tmp_path / f"barrier{round_}")

        # Every revision run is reported (stdout for flask, the log for the hook): once in all.
        ran = [step for output in outputs for step in steps(output)]
        assert sorted(ran) == sorted(FRESH_STEPS)
        assert execute(url, "SELECT count(*) FROM migration_runs") == [(1,)]
        assert table_names(url) == {"alembic_version", "notes", "migration_runs", *PACKAGE_TABLES}
