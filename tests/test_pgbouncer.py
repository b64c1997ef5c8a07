"""Behind a real PgBouncer in transaction mode, the migration lock still serialises a fleet.

Each test starts its own PgBouncer (``pgbouncer`` fixture: ``pool_mode = transaction``,
``default_pool_size = 3``) in front of a fresh database. The lock is a transaction-scoped
advisory lock held in an open transaction on a connection of its own, which the pooler pins to
one server connection for exactly as long as the lock is held (lock.py).

* 16 workers started together through the pooler on a fresh database all succeed, the counting
  revision runs once, and no advisory lock is left in ``pg_locks``. The same fleet with the old
  session-level lock swapped in (tests/helpers/session_lock.py) fails: the proof that the test
  sees the bug.
* ``kill -9`` of a migrator in the middle of a revision: the pooler drops the dead client's
  server connection, the transaction and its lock end, and the next start completes at once.
* psycopg2 and psycopg 3 both work through the pooler (psycopg 3 with server-side prepared
  statements off: engine.py).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers.crowd import release, wait_for_marker
from helpers.db import table_names, versions
from helpers.pgbouncer import PgBouncer
from helpers.scripts import BLOCK, COUNT, HEAD, make_script_dir
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from ai_secretary_schema import migrator
from ai_secretary_schema.engine import create_engine
from ai_secretary_schema.lock import migration_lock
from ai_secretary_schema.settings import SchemaSettings

pytestmark = pytest.mark.postgresql

HELPERS = Path(__file__).parent / "helpers"
FLEET_WORKER = HELPERS / "fleet_worker.py"
STARTUP_WORKER = HELPERS / "startup_worker.py"
FLEET = 16


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(sql))]
    finally:
        engine.dispose()


def advisory_locks(direct_url: str) -> int:
    """Advisory locks held in the database (asked directly, not through the pooler)."""
    return int(
        query(
            direct_url,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )[0][0]  # type: ignore[call-overload]
    )


def start_fleet(
    url: str, scripts: Path, barrier: Path, count: int, env: dict[str, str]
) -> list[subprocess.Popen[str]]:
    barrier.mkdir()
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(FLEET_WORKER),
                url,
                "--script-location",
                str(scripts),
                "--barrier",
                str(barrier),
                "--lock-timeout",
                "120",
            ],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    release(workers, barrier)
    return workers


def fleet_problems(
    direct_url: str,
    pooled_url: str,
    scripts: Path,
    barrier: Path,
    env: dict[str, str],
    *,
    deadline: float = 180,
) -> tuple[list[str], float]:
    """Run a fleet through the pooler; what went wrong (nothing, with a lock that works) and
    the wall time from the release of the fleet to the last worker's end. A worker still
    running after ``deadline`` seconds is killed and counted as hung (a lock that leaked, or a
    pool exhausted by blocking waits)."""
    workers = start_fleet(pooled_url, scripts, barrier, FLEET, env)
    started = time.monotonic()
    problems: list[str] = []
    for worker in workers:
        try:
            _, err = worker.communicate(timeout=max(0.1, started + deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.communicate()
            problems.append(f"worker hung for more than {deadline:g} s")
            continue
        if worker.returncode != 0:
            problems.append(
                f"worker failed: {err.strip().splitlines()[-1] if err.strip() else '?'}"
            )
    elapsed = time.monotonic() - started
    if "migration_runs" in table_names(direct_url):
        runs = query(direct_url, "SELECT count(*) FROM migration_runs")[0][0]
        if runs != 1:
            problems.append(f"revision 0101 ran {runs} times")
    else:
        problems.append("revision 0101 never committed")
    if versions(direct_url) != ["0101"]:
        problems.append(f"alembic_version is {versions(direct_url)}")
    left = advisory_locks(direct_url)
    if left:
        problems.append(f"{left} advisory lock(s) left in pg_locks")
    return problems, elapsed


@pytest.fixture
def counting_scripts(tmp_path: Path) -> Path:
    return make_script_dir(tmp_path, {"0101": (HEAD, COUNT)})


def pooled(pgbouncer: PgBouncer, direct_url: str, driver: str = "postgresql+psycopg2") -> str:
    return pgbouncer.url(str(make_url(direct_url).database), driver=driver)


# -- a fleet -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_fleet_through_pgbouncer_in_transaction_mode_migrates_once(
    pgbouncer: PgBouncer, pg_url: str, counting_scripts: Path, tmp_path: Path
) -> None:
    problems, elapsed = fleet_problems(
        pg_url, pooled(pgbouncer, pg_url), counting_scripts, tmp_path / "barrier", {}
    )

    assert problems == []
    assert elapsed < 120


@pytest.mark.slow
def test_the_same_fleet_with_a_session_advisory_lock_fails(
    pgbouncer: PgBouncer,
    make_pg_database: Callable[[], str],
    counting_scripts: Path,
    tmp_path: Path,
) -> None:
    # The proof that the fleet test can see the bug: the lock this package had before, a
    # session-level advisory lock, swapped in for every worker. Up to five rounds, each on a
    # fresh database, in case one happens to serialise (about 1 round in 8 did here; a round
    # with problems ends the test: 1 to 3 workers failed, a lock leaked, or a worker hung).
    seen: list[str] = []
    for round_ in range(5):
        url = make_pg_database()
        seen, _ = fleet_problems(
            url,
            pooled(pgbouncer, url),
            counting_scripts,
            tmp_path / f"barrier{round_}",
            {"AIS_TEST_LOCK": "session"},
            deadline=60,
        )
        if seen:
            break

    assert seen != []


# -- a killed migrator ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_migrator_killed_behind_pgbouncer_leaves_no_lock_and_the_next_start_is_immediate(
    pgbouncer: PgBouncer, pg_url: str, tmp_path: Path
) -> None:
    scripts = make_script_dir(tmp_path, {"0101": (HEAD, BLOCK)})
    url = pooled(pgbouncer, pg_url)
    marker = tmp_path / "inside-0101"
    victim = subprocess.Popen(
        [sys.executable, str(STARTUP_WORKER), url, "--script-location", str(scripts)],
        env={**os.environ, "AIS_TEST_MARKER": str(marker)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_marker(victim, marker, "revision 0101")
    assert advisory_locks(pg_url) == 1  # held, in the victim's open transaction
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)

    started = time.monotonic()
    next_start = subprocess.run(
        [
            sys.executable,
            str(STARTUP_WORKER),
            url,
            "--script-location",
            str(scripts),
            "--lock-timeout",
            "30",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - started

    assert next_start.returncode == 0, next_start.stderr
    # A process start (imports ~1-2 s) and a migration, no wait for the dead worker's lock.
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert versions(pg_url) == ["0101"]
    assert "half_done" in table_names(pg_url)
    assert advisory_locks(pg_url) == 0


# -- the lock through the pooler, in process ----------------------------------------------------


def test_a_second_taker_through_the_pooler_times_out_naming_the_holder(
    pgbouncer: PgBouncer, pg_url: str
) -> None:
    url = make_url(pooled(pgbouncer, pg_url))
    with migration_lock(url, timeout=5):
        (pid,) = query(
            pg_url,
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )[0]
        # Another thread of this process would wait on the process lock: a second process
        # is what takes the advisory lock, as a worker would.
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, sqlalchemy as sa\n"
                "from ai_secretary_schema.lock import migration_lock\n"
                "from ai_secretary_schema.errors import MigrationLockTimeout\n"
                "try:\n"
                "    with migration_lock(sa.make_url(sys.argv[1]), timeout=1): pass\n"
                "except MigrationLockTimeout as e:\n"
                "    print(e); sys.exit(3)\n",
                str(url.render_as_string(hide_password=False)),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert result.returncode == 3, result.stderr
    assert f"PostgreSQL backend pid {pid} holds it" in result.stdout
    assert "pg_terminate_backend" in result.stdout
    assert advisory_locks(pg_url) == 0


def test_the_lock_is_free_again_once_released_through_the_pooler(
    pgbouncer: PgBouncer, pg_url: str
) -> None:
    url = make_url(pooled(pgbouncer, pg_url))
    with migration_lock(url, timeout=5):
        assert advisory_locks(pg_url) == 1
    assert advisory_locks(pg_url) == 0
    with migration_lock(url, timeout=0):
        pass


# -- both drivers --------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["postgresql+psycopg2", "postgresql+psycopg"])
def test_both_drivers_migrate_and_query_through_the_pooler(
    driver: str, pgbouncer: PgBouncer, pg_url: str, counting_scripts: Path
) -> None:
    url = pooled(pgbouncer, pg_url, driver)
    state = migrator.upgrade(url, script_location=counting_scripts)
    assert state.at_head

    # Two clients, each running the same query in many short transactions, interleaved: the
    # pooler moves them across server connections between transactions.
    engines = [
        create_engine(make_url(url), SchemaSettings.resolve(database_url=url)) for _ in range(2)
    ]
    try:
        interleave_transactions(engines)
    finally:
        for engine in engines:
            engine.dispose()
    assert versions(pg_url) == ["0101"]


def interleave_transactions(engines: list[sa.Engine], rounds: int = 20) -> None:
    connections = [engine.connect() for engine in engines]
    try:
        for round_ in range(rounds):
            for connection in connections:
                connection.execute(sa.text("SELECT :n + 1"), {"n": round_}).scalar_one()
                connection.commit()
    finally:
        for connection in connections:
            connection.close()


def test_psycopg3_with_prepared_statements_fails_behind_the_pooler(
    pgbouncer: PgBouncer, pg_url: str
) -> None:
    # The proof for the test above: psycopg 3 as it ships (prepare_threshold=5) prepares the
    # query at its sixth run, on whichever server connection that transaction has; the other
    # client's statement of the same name collides with it there, or is missing elsewhere.
    url = pooled(pgbouncer, pg_url, "postgresql+psycopg")
    engines = [sa.create_engine(url, poolclass=NullPool) for _ in range(2)]
    try:
        with pytest.raises(sa.exc.DBAPIError, match=re.compile("prepared statement", re.I)):
            interleave_transactions(engines)
    finally:
        for engine in engines:
            engine.dispose()
