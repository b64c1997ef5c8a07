"""Many workers start at once: every one succeeds and the migrations run exactly once.

The script directory is the real one plus a revision ``0101`` that creates ``migration_runs`` and
inserts one row per run (after a pause that widens the window for a collision). Without the
migration lock, workers collide (``DuplicateTable``, ``UniqueViolation`` on ``pg_type``, ``table
already exists``) or the row is inserted more than once; with it, there is exactly one row and
``alembic_version`` holds one row, the head.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers.crowd import release
from helpers.scripts import COUNT, HEAD, make_script_dir
from sqlalchemy.pool import NullPool

from ai_secretary_schema.migration_manager import MigrationManager
from ai_secretary_schema.schema_report import SchemaReport

WORKER = Path(__file__).parent / "helpers" / "startup_worker.py"
WORKERS = 16
THREADS = 8


@pytest.fixture
def counting_scripts(tmp_path: Path) -> Path:
    """The real revisions plus ``0101``, which records each run in ``migration_runs``."""
    return make_script_dir(tmp_path, {"0101": (HEAD, COUNT)})


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(sql))]
    finally:
        engine.dispose()


def start_workers(
    url: str, scripts: Path, barrier: Path, count: int
) -> list[subprocess.Popen[str]]:
    barrier.mkdir()
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                url,
                "--script-location",
                str(scripts),
                "--barrier",
                str(barrier),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    # Release them together once every one has finished importing.
    release(workers, barrier)
    return workers


def assert_migrated_once(url: str) -> None:
    assert query(url, "SELECT count(*) FROM migration_runs") == [(1,)]
    assert query(url, "SELECT version_num FROM alembic_version") == [("0101",)]


@pytest.mark.slow
def test_sixteen_processes_started_together_all_succeed_and_migrate_once(
    db_url: str, counting_scripts: Path, tmp_path: Path
) -> None:
    workers = start_workers(db_url, counting_scripts, tmp_path / "barrier", WORKERS)
    started = time.monotonic()
    outcomes = [w.communicate(timeout=180) for w in workers]
    elapsed = time.monotonic() - started
    failures = [err for w, (_, err) in zip(workers, outcomes, strict=True) if w.returncode != 0]
    assert failures == []
    reports = [json.loads(out) for out, _ in outcomes]
    assert all(r["ok"] and r["current"] == ["0101"] for r in reports)
    assert_migrated_once(db_url)
    # Exactly one worker migrated; at most it and the ones that waited did a full comparison.
    assert elapsed < 120


def test_threads_of_one_process_migrate_once(db_url: str, counting_scripts: Path) -> None:
    reports: list[SchemaReport] = []
    errors: list[BaseException] = []
    go = threading.Event()

    def worker() -> None:
        go.wait()
        try:
            with MigrationManager(url=db_url, script_location=counting_scripts) as manager:
                reports.append(manager.run_startup("upgrade"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert len(reports) == THREADS
    assert all(report.ok for report in reports)
    assert_migrated_once(db_url)
