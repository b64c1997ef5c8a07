"""A revision never stalls a live PostgreSQL: it waits at most ``lock_timeout`` for a lock, then is
rolled back whole and retried, and the blocker is named.

The scene, on a database of the test's own at the shipped head: a "report" session holds a read
transaction on ``users`` (ACCESS SHARE), and revision 0101 adds a column to ``users`` (ACCESS
EXCLUSIVE). Without a lock timeout the ALTER would wait for the report, and every later query
on ``users`` would queue behind it.

* Through every door (startup hook, CLI, ``flask db``, ``alembic``), as real processes: the
  upgrade waits, is retried, logs the blocker once per retry (pid, application, query without
  its literals) and succeeds once the report ends; with the retries spent, the error names the
  blocker's pid and the database is still at the shipped head.
* Per revision: ``ddl_retries``, ``ddl_lock_timeout`` (``None``: no limit) override the settings.
* ``CREATE INDEX CONCURRENTLY`` in an ``autocommit_block()`` works; the session's own
  lock_timeout applies inside the block, the revision's again after it; a revision blocked after
  its block committed is not retried.
* A relative destination is not retried once a step of the run has committed.
* ``SET LOCAL`` never leaks to the session; read-only and offline runs set and watch nothing;
  SQLite ignores the settings with a DEBUG line and keeps its ``flock``.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import sqlalchemy as sa
from helpers.db import versions
from helpers.scripts import HEAD, SHIPPED, make_script_dir
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from ai_secretary_schema import migrator
from ai_secretary_schema.alembic_config import make_alembic_config
from ai_secretary_schema.ddl_guard import strip_literals
from ai_secretary_schema.errors import DatabaseConfigError, MigrationBlockedError, MigrationError
from ai_secretary_schema.lock import sqlite_lock_path
from ai_secretary_schema.migrator import Migrator
from ai_secretary_schema.settings import SchemaSettings

ROOT = Path(__file__).resolve().parents[1]
HELPERS = Path(__file__).parent / "helpers"
STARTUP_WORKER = HELPERS / "startup_worker.py"
FLASK_APP = HELPERS / "flask_door_app.py"

#: What the blocking "report" runs; the literal must never appear in any output.
SECRET = "s3cret-literal-9f2"
REPORT = f"SELECT count(*) FROM users WHERE password_hash <> '{SECRET}' AND id > 4242"

ADD_NICKNAME = """
def upgrade():
    op.add_column("users", sa.Column("nickname", sa.String(length=50), nullable=True))


def downgrade():
    op.drop_column("users", "nickname")
"""

#: Takes ACCESS EXCLUSIVE on ``users`` (as nearly every ALTER TABLE does) without changing what
#: the models describe, so that the startup hook's validation passes afterwards.
TOUCH_USERS = """
def upgrade():
    op.execute("ALTER TABLE users ALTER COLUMN role SET DEFAULT 'member'")


def downgrade():
    pass
"""

CREATE_SIDE_TABLE = """
def upgrade():
    op.create_table("side", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade():
    op.drop_table("side")
"""

#: Records the lock_timeout in force before, inside and after an autocommit block, in which an
#: index is built concurrently, and whether the migration lock is still held then (the block
#: commits the migration's transaction; the lock lives in another one).
CONCURRENT_INDEX = """
def _record(phase):
    op.execute(
        sa.text(
            "INSERT INTO ddl_phases (phase, lock_timeout, advisory) "
            "VALUES (:phase, current_setting('lock_timeout'), "
            "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())))"
        ).bindparams(phase=phase)
    )


def upgrade():
    op.create_table(
        "ddl_phases",
        sa.Column("phase", sa.String(10)),
        sa.Column("lock_timeout", sa.String(20)),
        sa.Column("advisory", sa.Integer()),
    )
    _record("before")
    with op.get_context().autocommit_block():
        _record("inside")
        op.create_index(
            "ix_users_full_name", "users", ["full_name"], postgresql_concurrently=True
        )
    _record("after")


def downgrade():
    op.drop_index("ix_users_full_name", table_name="users")
    op.drop_table("ddl_phases")
"""

#: Builds an index concurrently (committed), then alters ``users``: blocked after its block.
CONCURRENT_THEN_ALTER = """
def upgrade():
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_alerts_title", "performance_alerts", ["title"], postgresql_concurrently=True
        )
    op.add_column("users", sa.Column("nickname", sa.String(length=50), nullable=True))


def downgrade():
    op.drop_column("users", "nickname")
    op.drop_index("ix_alerts_title", table_name="performance_alerts")
"""


def with_attributes(body: str, **attributes: Any) -> str:
    lines = "".join(f"{name} = {value!r}\n" for name, value in attributes.items())
    return f"{lines}\n{body}"


# -- the scene ---------------------------------------------------------------------------------


class Report:
    """A session holding a read transaction on ``users`` until :meth:`end`."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.connection = psycopg2.connect(
            host=parsed.host,
            port=parsed.port or 5432,
            user=parsed.username,
            dbname=parsed.database,
            application_name="nightly-report",
        )
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            row = cursor.fetchone()
            assert row is not None
            self.pid = int(row[0])
            # Last: pg_stat_activity shows an idle session's last query.
            cursor.execute(REPORT)

    def end(self) -> None:
        if not self.connection.closed:
            self.connection.rollback()
            self.connection.close()


@pytest.fixture
def at_head(pg_url: str, tmp_path: Path) -> tuple[str, Path]:
    """A database at the shipped head and scripts whose 0101 adds ``users.nickname``."""
    scripts = make_script_dir(tmp_path, {"0101": (HEAD, ADD_NICKNAME)})
    migrator.upgrade(pg_url, HEAD, script_location=scripts)
    return pg_url, scripts


@pytest.fixture
def report(at_head: tuple[str, Path]) -> Iterator[Report]:
    session = Report(at_head[0])
    try:
        yield session
    finally:
        session.end()


@pytest.fixture
def door_scene(pg_url: str, tmp_path: Path) -> Iterator[tuple[str, Path, Report]]:
    """A database at the shipped head whose 0101 alters ``users``, and the report blocking it."""
    scripts = make_script_dir(tmp_path, {"0101": (HEAD, TOUCH_USERS)})
    migrator.upgrade(pg_url, HEAD, script_location=scripts)
    session = Report(pg_url)
    try:
        yield pg_url, scripts, session
    finally:
        session.end()


def columns(url: str, table: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return {column["name"] for column in sa.inspect(connection).get_columns(table)}
    finally:
        engine.dispose()


def waits_behind(url: str, pid: int) -> set[object]:
    """The statements (by start time) waiting for a lock ``pid`` holds."""
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT query_start FROM pg_stat_activity "
                    "WHERE :pid = ANY (pg_blocking_pids(pid))"
                ),
                {"pid": pid},
            )
            return {row[0] for row in rows}
    finally:
        engine.dispose()


def settings(url: str, **values: Any) -> SchemaSettings:
    return SchemaSettings.resolve(database_url=url, **values)


# -- every door, as real processes ----------------------------------------------------------------


def door_command(
    door: str, url: str, scripts: Path, tmp_path: Path
) -> tuple[list[str], dict[str, str]]:
    bin_dir = Path(sys.executable).parent
    if door == "startup":
        return [sys.executable, str(STARTUP_WORKER), url, "--script-location", str(scripts)], {}
    if door == "cli":
        command = ["upgrade", "--url", url, "--script-location", str(scripts)]
        return [str(bin_dir / "ai-secretary-schema"), *command], {}
    if door == "flask":
        flask = [str(bin_dir / "flask"), "--app", f"{FLASK_APP}:create_app"]
        return [*flask, "db", "upgrade", "-d", str(scripts)], {"DATABASE_URL": url}
    ini = tmp_path / "alembic.ini"
    ini.write_text(
        re.sub(
            r"^script_location = .*$",
            f"script_location = {scripts}",
            (ROOT / "alembic.ini").read_text(),
            flags=re.M,
        )
    )
    return [str(bin_dir / "alembic"), "-c", str(ini), "-x", f"url={url}", "upgrade", "head"], {}


DOORS = ["startup", "cli", "flask", "alembic"]


def start_door(
    door: str, url: str, scripts: Path, tmp_path: Path, **environment: str
) -> subprocess.Popen[str]:
    argv, env = door_command(door, url, scripts, tmp_path)
    base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.Popen(
        argv,
        cwd=tmp_path,
        env={**base, **env, **environment},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


RETRY_LINE = re.compile(
    r"retry (\d+) of (\d+) in [\d.]+ s, the migration lock held\. Blocked by (.*)"
)


@pytest.mark.slow
@pytest.mark.postgresql
@pytest.mark.parametrize("door", DOORS)
def test_every_door_waits_retries_names_the_blocker_and_succeeds_once_it_ends(
    door: str, door_scene: tuple[str, Path, Report], tmp_path: Path
) -> None:
    url, scripts, report = door_scene
    process = start_door(
        door, url, scripts, tmp_path, SCHEMA_DDL_LOCK_TIMEOUT="0.5", SCHEMA_DDL_RETRIES="10"
    )
    # End the report once the ALTER has waited for it twice (a first attempt and a retry).
    seen: set[object] = set()
    deadline = time.monotonic() + 60
    while len(seen) < 2:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the upgrade never waited for the report"
        seen |= waits_behind(url, report.pid)
        time.sleep(0.02)
    report.end()
    out, err = process.communicate(timeout=60)

    assert process.returncode == 0, err
    assert versions(url) == ["0101"]
    retries = RETRY_LINE.findall(err)
    assert [int(n) for n, _, _ in retries] == list(range(1, len(retries) + 1))
    assert len(retries) >= 1
    for _, _, blockers in retries:
        # Once per retry, the blocker with its pid, application, state and its query with
        # every literal left out.
        assert blockers.startswith(f"pid {report.pid} (application 'nightly-report', idle in")
        assert "query 'SELECT count(*) FROM users WHERE password_hash <> ? AND id > ?'" in blockers
    assert err.count(f"Blocked by pid {report.pid}") == len(retries)
    assert SECRET not in out + err


@pytest.mark.slow
@pytest.mark.postgresql
@pytest.mark.parametrize("door", DOORS)
def test_every_door_fails_naming_the_blocker_when_the_retries_are_spent(
    door: str, door_scene: tuple[str, Path, Report], tmp_path: Path
) -> None:
    url, scripts, report = door_scene
    process = start_door(
        door, url, scripts, tmp_path, SCHEMA_DDL_LOCK_TIMEOUT="0.3", SCHEMA_DDL_RETRIES="2"
    )
    out, err = process.communicate(timeout=120)

    assert process.returncode != 0
    message = " ".join(err.split())
    assert "revision 0101 (upgrade) of postgresql+psycopg2://postgres@127.0.0.1:5432/" in message
    assert "could not get its locks within lock_timeout 0.3 s in 3 attempt(s)" in message
    assert f"blocked by pid {report.pid} (application 'nightly-report'" in message
    assert f"The database was left at revision {HEAD}" in message
    assert f"SELECT pg_terminate_backend({report.pid})" in message
    assert len(RETRY_LINE.findall(err)) == 2
    assert SECRET not in out + err
    # Rolled back whole.
    assert versions(url) == [HEAD]


def test_the_proof_without_a_lock_timeout_the_alter_waits_for_the_whole_report(
    at_head: tuple[str, Path], report: Report
) -> None:
    # SCHEMA_DDL_LOCK_TIMEOUT=0 is Alembic as it ships: the ALTER waits as long as the report
    # holds its transaction (here ended after 1.5 s), queueing every later query behind it.
    url, scripts = at_head
    threading.Timer(1.5, report.end).start()
    started = time.monotonic()
    with Migrator(settings(url, schema_ddl_lock_timeout=0), script_location=scripts) as m:
        m.upgrade()
    assert time.monotonic() - started >= 1.4
    assert versions(url) == ["0101"]


# -- in process: the error, the policy of a revision ----------------------------------------------


@pytest.mark.postgresql
def test_the_typed_error_carries_the_revisions_and_the_blockers(
    at_head: tuple[str, Path], report: Report
) -> None:
    url, scripts = at_head
    with (
        Migrator(
            settings(url, schema_ddl_lock_timeout=0.2, schema_ddl_retries=1),
            script_location=scripts,
        ) as m,
        pytest.raises(MigrationBlockedError) as caught,
    ):
        m.upgrade()

    error = caught.value
    assert isinstance(error, MigrationError)
    assert (error.failed_revision, error.revision, error.attempts) == ("0101", HEAD, 2)
    assert [b.pid for b in error.blockers] == [report.pid]
    assert error.blockers[0].application_name == "nightly-report"
    assert error.blockers[0].state == "idle in transaction"
    assert (error.blockers[0].age or 0) > 0
    assert SECRET not in str(error)


@pytest.mark.postgresql
def test_a_revision_can_refuse_retries(pg_url: str, tmp_path: Path) -> None:
    scripts = make_script_dir(
        tmp_path, {"0101": (HEAD, with_attributes(ADD_NICKNAME, ddl_retries=0))}
    )
    migrator.upgrade(pg_url, HEAD, script_location=scripts)
    report = Report(pg_url)
    try:
        with (
            Migrator(
                settings(pg_url, schema_ddl_lock_timeout=0.2, schema_ddl_retries=5),
                script_location=scripts,
            ) as m,
            pytest.raises(MigrationBlockedError) as caught,
        ):
            m.upgrade()
    finally:
        report.end()
    assert caught.value.attempts == 1


@pytest.mark.postgresql
def test_a_revision_can_set_its_own_lock_timeout(pg_url: str, tmp_path: Path) -> None:
    scripts = make_script_dir(
        tmp_path, {"0101": (HEAD, with_attributes(ADD_NICKNAME, ddl_lock_timeout=0.2))}
    )
    migrator.upgrade(pg_url, HEAD, script_location=scripts)
    report = Report(pg_url)
    started = time.monotonic()
    try:
        with (
            Migrator(
                settings(pg_url, schema_ddl_lock_timeout=60, schema_ddl_retries=0),
                script_location=scripts,
            ) as m,
            pytest.raises(MigrationBlockedError, match=r"lock_timeout 0\.2 s"),
        ):
            m.upgrade()
    finally:
        report.end()
    assert time.monotonic() - started < 5


@pytest.mark.postgresql
def test_a_revision_can_opt_out_of_the_lock_timeout(pg_url: str, tmp_path: Path) -> None:
    scripts = make_script_dir(
        tmp_path, {"0101": (HEAD, with_attributes(ADD_NICKNAME, ddl_lock_timeout=None))}
    )
    migrator.upgrade(pg_url, HEAD, script_location=scripts)
    report = Report(pg_url)
    threading.Timer(1.0, report.end).start()
    started = time.monotonic()
    with Migrator(
        settings(pg_url, schema_ddl_lock_timeout=0.2, schema_ddl_retries=0),
        script_location=scripts,
    ) as m:
        m.upgrade()
    assert time.monotonic() - started >= 0.9  # it waited for the report, as it asked
    assert versions(pg_url) == ["0101"]


@pytest.mark.postgresql
def test_an_invalid_revision_attribute_is_an_error_that_names_it(
    pg_url: str, tmp_path: Path
) -> None:
    scripts = make_script_dir(
        tmp_path, {"0101": (HEAD, with_attributes(ADD_NICKNAME, ddl_retries=-1))}
    )
    with pytest.raises(MigrationError, match=r"revision 0101: ddl_retries = -1 is not valid"):
        migrator.upgrade(pg_url, script_location=scripts)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("schema_ddl_lock_timeout", "-1"),
        ("schema_ddl_retries", "many"),
        ("schema_ddl_statement_timeout", "x"),
    ],
)
def test_the_settings_are_validated(key: str, value: str) -> None:
    with pytest.raises(DatabaseConfigError, match=key.upper()):
        SchemaSettings.resolve({}, {key.upper(): value})


# -- autocommit blocks and relative destinations -------------------------------------------------


@pytest.mark.postgresql
@pytest.mark.parametrize("isolation", ["read committed", "repeatable read"])
def test_create_index_concurrently_in_an_autocommit_block(
    isolation: str, pg_url: str, tmp_path: Path
) -> None:
    # CREATE INDEX CONCURRENTLY waits for every transaction holding an older snapshot, the
    # migration lock's idle one included if it held one: under a repeatable-read default it
    # would wait for its own migrator forever, unless the lock's transaction is read committed.
    engine = sa.create_engine(pg_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        database = make_url(pg_url).database
        connection.exec_driver_sql(
            f"ALTER DATABASE \"{database}\" SET default_transaction_isolation = '{isolation}'"
        )
    engine.dispose()
    scripts = make_script_dir(tmp_path, {"0101": (HEAD, CONCURRENT_INDEX)})
    migrator.upgrade(pg_url, script_location=scripts, lock_timeout=30)
    with Migrator(settings(pg_url, schema_ddl_lock_timeout=0.5), script_location=scripts) as m:
        m.downgrade(HEAD)
        m.upgrade()
    engine = sa.create_engine(pg_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            phases = {
                phase: (lock_timeout, advisory)
                for phase, lock_timeout, advisory in connection.execute(
                    sa.text("SELECT phase, lock_timeout, advisory FROM ddl_phases")
                )
            }
            valid = connection.execute(
                sa.text(
                    "SELECT indisvalid FROM pg_index "
                    "WHERE indexrelid = 'ix_users_full_name'::regclass"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    # The revision's own transaction, the session's setting inside the block (no transaction to
    # scope a SET LOCAL to), the revision's again in the transaction after it; and the migration
    # lock held throughout, the block's commit notwithstanding.
    assert phases == {"before": ("500ms", 1), "inside": ("0", 1), "after": ("500ms", 1)}
    assert valid is True


@pytest.mark.postgresql
def test_a_revision_blocked_after_its_autocommit_block_committed_is_not_retried(
    pg_url: str, tmp_path: Path
) -> None:
    scripts = make_script_dir(tmp_path, {"0101": (HEAD, CONCURRENT_THEN_ALTER)})
    migrator.upgrade(pg_url, HEAD, script_location=scripts)
    report = Report(pg_url)
    try:
        with (
            Migrator(
                settings(pg_url, schema_ddl_lock_timeout=0.3, schema_ddl_retries=5),
                script_location=scripts,
            ) as m,
            pytest.raises(MigrationBlockedError, match="committed part of its work") as caught,
        ):
            m.upgrade()
    finally:
        report.end()
    assert caught.value.attempts == 1
    assert "INVALID index" in str(caught.value)
    assert versions(pg_url) == [HEAD]


@pytest.fixture
def two_steps(pg_url: str, tmp_path: Path) -> tuple[str, Path]:
    """At the shipped head; 0101 creates a table (no lock on users), 0102 alters ``users``."""
    scripts = make_script_dir(
        tmp_path, {"0101": (HEAD, CREATE_SIDE_TABLE), "0102": ("0101", ADD_NICKNAME)}
    )
    migrator.upgrade(pg_url, HEAD, script_location=scripts)
    return pg_url, scripts


@pytest.mark.postgresql
def test_a_relative_destination_is_not_retried_after_a_step_committed(
    two_steps: tuple[str, Path],
) -> None:
    url, scripts = two_steps
    report = Report(url)
    try:
        with (
            Migrator(
                settings(url, schema_ddl_lock_timeout=0.2, schema_ddl_retries=5),
                script_location=scripts,
            ) as m,
            pytest.raises(MigrationBlockedError, match=r"overshoot the relative destination '\+2'"),
        ):
            m.upgrade("+2")
    finally:
        report.end()
    assert versions(url) == ["0101"]


@pytest.mark.postgresql
def test_an_absolute_destination_is_retried_from_where_it_stopped(
    two_steps: tuple[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    url, scripts = two_steps
    report = Report(url)
    threading.Timer(1.0, report.end).start()
    with Migrator(
        settings(url, schema_ddl_lock_timeout=0.3, schema_ddl_retries=10), script_location=scripts
    ) as m:
        state = m.upgrade("0102")
    assert state.current == ("0102",)
    assert "retry 1 of 10" in caplog.text
    assert "revision 0102 (upgrade)" in caplog.text


# -- nothing leaks, nothing for reads, nothing on SQLite -----------------------------------------


@pytest.mark.postgresql
def test_set_local_never_leaks_to_the_session(at_head: tuple[str, Path]) -> None:
    url, scripts = at_head
    # One pooled connection, reused by the migration and then by this test.
    engine = sa.create_engine(url, pool_size=1, max_overflow=0)
    try:
        with Migrator(
            settings(url, schema_ddl_lock_timeout=0.7, schema_ddl_statement_timeout=9),
            engine,
            script_location=scripts,
        ) as m:
            m.upgrade()
        with engine.connect() as connection:
            shown = connection.execute(
                sa.text(
                    "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')"
                )
            ).one()
    finally:
        engine.dispose()
    assert tuple(shown) == ("0", "0")


@pytest.mark.postgresql
def test_each_revision_sets_its_timeouts_in_its_own_transaction(
    pg_url: str, tmp_path: Path, statement_log: Any
) -> None:
    scripts = make_script_dir(tmp_path, {"0101": (HEAD, ADD_NICKNAME)})
    engine = sa.create_engine(pg_url, poolclass=NullPool)
    try:
        with Migrator(
            settings(pg_url, schema_ddl_statement_timeout=30), engine, script_location=scripts
        ) as m:
            m.upgrade()
    finally:
        engine.dispose()
    ran = statement_log.on(engine)
    guards = [i for i, s in enumerate(ran) if "set_config('lock_timeout'" in s]
    assert len(guards) == len(SHIPPED) + 1  # one per revision
    assert all("set_config('statement_timeout'" in ran[i] for i in guards)
    assert not any(re.match(r"\s*SET\s+(lock|statement)_timeout", s, re.I) for s in ran)


@pytest.mark.postgresql
def test_read_only_and_offline_runs_set_and_watch_nothing(
    at_head: tuple[str, Path], statement_log: Any
) -> None:
    from alembic import command

    url, scripts = at_head
    current_config = make_alembic_config(settings(url), script_location=scripts)
    command.current(current_config)
    with Migrator(settings(url), script_location=scripts) as m:
        sql = m.sql("head")
    ran = [statement for _, statement in statement_log.entries]
    assert not any("lock_timeout" in s or "pg_blocking_pids" in s for s in ran)
    assert "lock_timeout" not in sql


@pytest.mark.sqlite
def test_sqlite_ignores_the_settings_with_a_debug_line_and_keeps_its_flock(
    sqlite_url: str, sqlite_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ai_secretary_schema.ddl_guard")
    with Migrator(settings(sqlite_url, schema_ddl_lock_timeout=0.1, schema_ddl_retries=1)) as m:
        assert m.upgrade().at_head
    debug = [r for r in caplog.records if r.name == "ai_secretary_schema.ddl_guard"]
    assert [r.levelno for r in debug] == [logging.DEBUG]
    assert "apply to PostgreSQL only and are ignored" in debug[0].getMessage()
    assert sqlite_lock_path(sqlite_path).exists()


# -- the query text of a blocker ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        ("SELECT * FROM users WHERE email = 'a@b.c'", "SELECT * FROM users WHERE email = ?"),
        ("UPDATE t SET pw = 'it''s' WHERE id = 42", "UPDATE t SET pw = ? WHERE id = ?"),
        ("SELECT E'a\\'b', 1.5e3, .5", "SELECT ?, ?, ?"),
        ("SELECT $$secret$$, $tag$x $$ y$tag$", "SELECT ?, ?"),
        ('SELECT "col 1", t1.x2 FROM "it\'s" t1', 'SELECT "col 1", t1.x2 FROM "it\'s" t1'),
        ("SELECT 1 -- password hunter2\nFROM t", "SELECT ? FROM t"),
        ("SELECT /* token abc */ x FROM t WHERE y = $1", "SELECT x FROM t WHERE y = $1"),
        ("INSERT INTO t VALUES ('cut short by track_activity_query_si", "INSERT INTO t VALUES (?"),
        ("SELECT x FROM t WHERE y = $q$never closed", "SELECT x FROM t WHERE y = ?"),
    ],
)
def test_literals_are_left_out_of_a_blockers_query(query: str, shown: str) -> None:
    assert strip_literals(query) == shown


def test_a_long_query_is_cut() -> None:
    shown = strip_literals("SELECT " + ", ".join(f"column_{i}" for i in range(100)))
    assert len(shown) == 120
    assert shown.endswith("…")
