"""A failed or killed upgrade leaves no half state and no lock behind.

A test-only script directory adds revision ``0101`` to the real ones: in one variant it creates
``half_done``, writes a row and raises; in the other it creates ``half_done`` and blocks until the
process is killed with SIGKILL. Both dialects run each test: PostgreSQL has transactional DDL;
SQLite gets it because the package's engine issues a real ``BEGIN`` (see ``engine.py``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers.crowd import wait_for_marker
from helpers.db import table_names, versions
from helpers.scripts import BLOCK, FAIL, HEAD, make_script_dir
from sqlalchemy.pool import NullPool

from ai_secretary_schema import migrator
from ai_secretary_schema.errors import MigrationError
from ai_secretary_schema.lock import advisory_lock_key, migration_lock
from ai_secretary_schema.migration_manager import MigrationManager

WORKER = Path(__file__).parent / "helpers" / "startup_worker.py"


@pytest.fixture
def failing_scripts(tmp_path: Path) -> Path:
    """The real revisions plus ``0101``, which creates a table, writes a row and raises."""
    return make_script_dir(tmp_path, {"0101": (HEAD, FAIL)})


@pytest.fixture
def blocking_scripts(tmp_path: Path) -> Path:
    """The real revisions plus ``0101``, which blocks when ``AIS_TEST_MARKER`` is set."""
    return make_script_dir(tmp_path, {"0101": (HEAD, BLOCK)})


def advisory_locks(url: str) -> int:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
                ).scalar_one()
            )
    finally:
        engine.dispose()


def lock_is_free(url: str) -> bool:
    """The migration lock can be taken at once (0 s timeout) from this process."""
    try:
        with migration_lock(sa.make_url(url), timeout=0):
            return True
    except MigrationError:
        return False


def test_a_failed_revision_leaves_the_database_at_the_previous_one(
    db_url: str, failing_scripts: Path
) -> None:
    with pytest.raises(MigrationError) as caught:
        migrator.upgrade(db_url, script_location=failing_scripts)
    assert caught.value.failed_revision == "0101"
    assert caught.value.revision == HEAD
    assert versions(db_url) == [HEAD]
    assert "half_done" not in table_names(db_url)


def test_the_error_of_a_failed_revision_names_it_and_where_the_database_was_left(
    db_url: str, failing_scripts: Path
) -> None:
    with pytest.raises(MigrationError, match=rf"failed in revision 0101 .*left at revision {HEAD}"):
        migrator.upgrade(db_url, script_location=failing_scripts)


def test_the_startup_hook_raises_the_same_error(db_url: str, failing_scripts: Path) -> None:
    with (
        MigrationManager(url=db_url, script_location=failing_scripts) as manager,
        pytest.raises(MigrationError) as caught,
    ):
        manager.run_startup("upgrade")
    assert (caught.value.failed_revision, caught.value.revision) == ("0101", HEAD)
    assert "half_done" not in table_names(db_url)


def test_a_failed_upgrade_releases_the_lock(db_url: str, failing_scripts: Path) -> None:
    with pytest.raises(MigrationError):
        migrator.upgrade(db_url, script_location=failing_scripts)
    assert lock_is_free(db_url)
    if db_url.startswith("postgresql"):
        assert advisory_locks(db_url) == 0


def test_the_advisory_key_depends_on_the_database_name() -> None:
    assert advisory_lock_key("a") == advisory_lock_key("a")
    assert advisory_lock_key("a") != advisory_lock_key("b")
    assert -(2**63) <= advisory_lock_key("a") < 2**63


@pytest.mark.slow
def test_a_worker_killed_mid_upgrade_leaves_no_lock_and_the_next_start_completes(
    db_url: str, blocking_scripts: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "inside-0101"
    victim = subprocess.Popen(
        [sys.executable, str(WORKER), db_url, "--script-location", str(blocking_scripts)],
        env={**os.environ, "AIS_TEST_MARKER": str(marker)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_marker(victim, marker, "revision 0101")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)

    # The server ends the dead session (PostgreSQL) / the kernel drops the flock (SQLite) at once.
    deadline = time.monotonic() + 10
    while not lock_is_free(db_url):
        assert time.monotonic() < deadline, "the killed worker's lock was left behind"
        time.sleep(0.05)
    assert versions(db_url) == [HEAD]
    assert "half_done" not in table_names(db_url)

    next_start = subprocess.run(
        [
            sys.executable,
            str(WORKER),
            db_url,
            "--script-location",
            str(blocking_scripts),
            "--lock-timeout",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert next_start.returncode == 0, next_start.stderr
    assert versions(db_url) == ["0101"]
    assert "half_done" in table_names(db_url)
