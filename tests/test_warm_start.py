"""The warm start (:mod:`ai_secretary_schema.fingerprint`): the startup work is skipped only when
it is proven that nothing Alembic's full comparison would report has changed.

Everything runs on real SQLite files and real PostgreSQL databases migrated by the real
revisions, with drift made by raw SQL (SQLite, which cannot ALTER most things, gets its tables
rebuilt the way its documentation prescribes). In three parts:

* the catalog fingerprint: the same while nothing that matters changes, different after every
  kind of drift and after any change of ``alembic_version``, taken in one query;
* :class:`WarmStart`'s cache: a miss until a fingerprint is remembered, a hit after, a miss again
  when a package or script file changes or the cache file is damaged, and never a file written
  inside the package or the script directory;
* the startup hook end to end: after a warm start, every kind of drift makes ``validate`` and
  ``upgrade`` raise :class:`SchemaValidationError` naming the changed table.

Each test's cache directory is its own (``AI_SECRETARY_SCHEMA_CACHE_DIR`` in ``tmp_path``).
Timings belong to ``bench/startup.py``, not here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers.scripts import HEAD as SHIPPED_HEAD
from helpers.scripts import NOOP, make_script_dir, revision_file
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from ai_secretary_schema import fingerprint
from ai_secretary_schema.errors import SchemaValidationError
from ai_secretary_schema.fingerprint import (
    CACHE_DIR_ENV,
    MAX_REMEMBERED,
    WarmStart,
    cache_directory,
    catalog_fingerprint,
)
from ai_secretary_schema.migration_manager import MigrationManager
from ai_secretary_schema.migrator import upgrade
from ai_secretary_schema.models import REQUIRED_TABLES
from ai_secretary_schema.settings import StartupMode

#: Outside the racy window: a key taken over files this old may be stored under.
LONG_AGO = time.time() - 3600
HEAD = (SHIPPED_HEAD,)


# --------------------------------------------------------------------------------------------
# Drift, by raw SQL
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rebuild:
    """A change SQLite cannot ALTER: rebuild ``table`` from its own CREATE statement with the
    one match of ``pattern`` replaced (https://sqlite.org/lang_altertable.html, "otheralter")."""

    table: str
    pattern: str
    replacement: str


@dataclass(frozen=True)
class Drift:
    """One kind of drift: the table it is in and the raw SQL that makes it on each dialect."""

    table: str
    postgresql: tuple[str, ...]
    sqlite: tuple[str, ...] | Rebuild | None
    #: Why SQLite cannot express it (when ``sqlite`` is None).
    not_on_sqlite: str = ""


#: Every kind of difference Alembic's comparison reports, each made behind the package's back.
DRIFTS: dict[str, Drift] = {
    "table-dropped": Drift(
        "performance_alerts",
        ("DROP TABLE performance_alerts",),
        ("DROP TABLE performance_alerts",),
    ),
    "column-added": Drift(
        "users",
        ("ALTER TABLE users ADD COLUMN nickname VARCHAR(20)",),
        ("ALTER TABLE users ADD COLUMN nickname VARCHAR(20)",),
    ),
    "column-dropped": Drift(
        "users",
        ("ALTER TABLE users DROP COLUMN full_name",),
        ("ALTER TABLE users DROP COLUMN full_name",),
    ),
    "column-type-changed": Drift(
        "users",
        ("ALTER TABLE users ALTER COLUMN role TYPE VARCHAR(60)",),
        Rebuild("users", r"\brole VARCHAR\(50\)", "role VARCHAR(60)"),
    ),
    "nullability-changed": Drift(
        "users",
        ("ALTER TABLE users ALTER COLUMN full_name SET NOT NULL",),
        Rebuild("users", r"\bfull_name VARCHAR\(200\)", "full_name VARCHAR(200) NOT NULL"),
    ),
    "server-default-changed": Drift(
        "users",
        ("ALTER TABLE users ALTER COLUMN role SET DEFAULT 'admin'",),
        Rebuild("users", r"DEFAULT 'member'", "DEFAULT 'admin'"),
    ),
    "server-default-dropped": Drift(
        "performance_alerts",
        ("ALTER TABLE performance_alerts ALTER COLUMN status DROP DEFAULT",),
        Rebuild("performance_alerts", r" DEFAULT 'active'", ""),
    ),
    "index-dropped": Drift(
        "performance_alerts",
        ("DROP INDEX ix_performance_alerts_alert_type",),
        ("DROP INDEX ix_performance_alerts_alert_type",),
    ),
    "index-added": Drift(
        "users",
        ("CREATE INDEX ix_users_email ON users (email)",),
        ("CREATE INDEX ix_users_email ON users (email)",),
    ),
    "unique-constraint-dropped": Drift(
        "tenants",
        ("ALTER TABLE tenants DROP CONSTRAINT uq_tenants_slug",),
        Rebuild("tenants", r",\s*CONSTRAINT uq_tenants_slug UNIQUE \(slug\)", ""),
    ),
    "unique-constraint-added": Drift(
        "users",
        ("ALTER TABLE users ADD CONSTRAINT uq_users_email UNIQUE (email)",),
        Rebuild(
            "users",
            r"(CONSTRAINT pk_users PRIMARY KEY \(id\))",
            r"\1, CONSTRAINT uq_users_email UNIQUE (email)",
        ),
    ),
    "foreign-key-dropped": Drift(
        "users",
        ("ALTER TABLE users DROP CONSTRAINT fk_users_tenant_id_tenants",),
        Rebuild(
            "users",
            r",\s*CONSTRAINT fk_users_tenant_id_tenants FOREIGN KEY ?\(tenant_id\) "
            r"REFERENCES tenants \(id\) ON DELETE CASCADE",
            "",
        ),
    ),
    "column-comment-added": Drift(
        "users",
        ("COMMENT ON COLUMN users.role IS 'what the user may do'",),
        None,
        "SQLite has no comments",
    ),
}

#: Changes Alembic's comparison does not report, which the fingerprint sees all the same: it
#: describes the catalog, it does not judge it.
FINGERPRINT_ONLY: dict[str, Drift] = {
    "check-constraint-added": Drift(
        "users",
        ("ALTER TABLE users ADD CONSTRAINT ck_users_role CHECK (role <> '')",),
        Rebuild(
            "users",
            r"(CONSTRAINT pk_users PRIMARY KEY \(id\))",
            r"\1, CONSTRAINT ck_users_role CHECK (role <> '')",
        ),
    ),
    "column-renamed": Drift(
        "users",
        ("ALTER TABLE users RENAME COLUMN full_name TO display_name",),
        ("ALTER TABLE users RENAME COLUMN full_name TO display_name",),
    ),
}

#: What changes all the time in a live database and must not change the fingerprint, or no
#: start would ever be warm.
NOT_DRIFT: dict[str, tuple[str, ...]] = {
    "rows-written": (
        "INSERT INTO tenants (name, slug) VALUES ('Acme', 'acme')",
        "INSERT INTO users (tenant_id, email, password_hash) "
        "SELECT id, 'a@example.com', 'x' FROM tenants",
        "UPDATE users SET role = 'admin'",
        "DELETE FROM users",
    ),
    "statistics-gathered": ("ANALYZE",),
    "another-table-created": ("CREATE TABLE not_the_packages (id INTEGER PRIMARY KEY)",),
}

#: Every change of the migration state is a different fingerprint, schema unchanged or not.
VERSION_CHANGES: dict[str, tuple[str, ...]] = {
    "stamped-at-an-older-revision": ("UPDATE alembic_version SET version_num = '0001'",),
    "a-second-row": ("INSERT INTO alembic_version (version_num) VALUES ('0001')",),
    "emptied": ("DELETE FROM alembic_version",),
}


def dialect_of(url: str) -> str:
    return sa.engine.make_url(url).get_backend_name()


def sqlite_form(drift: Drift) -> tuple[str, ...] | Rebuild:
    if drift.sqlite is None:
        pytest.skip(drift.not_on_sqlite)
    return drift.sqlite


def apply(url: str, change: Drift | Sequence[str]) -> None:
    """Run ``change`` on the database at ``url`` and commit."""
    if isinstance(change, Drift):
        form = change.postgresql if dialect_of(url) == "postgresql" else sqlite_form(change)
    else:
        form = tuple(change)
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            if isinstance(form, Rebuild):
                rebuild_sqlite_table(connection, form)
            else:
                for statement in form:
                    connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


def rebuild_sqlite_table(connection: sa.Connection, rebuild: Rebuild) -> None:
    """Create the changed table beside the old one, copy, drop, rename, re-index."""
    table = rebuild.table
    create = connection.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).scalar_one()
    indexes = connection.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
        (table,),
    ).scalars()
    changed, found = re.subn(rebuild.pattern, rebuild.replacement, create)
    assert found == 1, f"{rebuild.pattern!r} is not in {create!r} exactly once"
    changed, found = re.subn(rf"^CREATE TABLE \"?{table}\"?", f"CREATE TABLE {table}_new", changed)
    assert found == 1, create
    index_sql = list(indexes)
    columns = ", ".join(row[1] for row in connection.exec_driver_sql(f"PRAGMA table_info({table})"))
    # A rebuilt table has no foreign keys pointing at it for a moment; the driver runs the
    # PRAGMA outside the transaction (pysqlite begins one only before a DML statement).
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    connection.exec_driver_sql(changed)
    connection.exec_driver_sql(f"INSERT INTO {table}_new ({columns}) SELECT {columns} FROM {table}")
    connection.exec_driver_sql(f"DROP TABLE {table}")
    connection.exec_driver_sql(f"ALTER TABLE {table}_new RENAME TO {table}")
    for statement in index_sql:
        connection.exec_driver_sql(statement)


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's warm-start cache; no test (nor its subprocesses) touches ~/.cache."""
    path = tmp_path / "warm-cache"
    monkeypatch.setenv(CACHE_DIR_ENV, str(path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return path


def age(root: Path) -> None:
    """Date every file below ``root`` an hour back, out of the racy window."""
    for path in root.rglob("*"):
        os.utime(path, (LONG_AGO, LONG_AGO))


@pytest.fixture(autouse=True)
def package_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The package files of the key, taken from an aged copy of the package.

    So that a test may change one, and so that the outcome does not depend on whether someone
    edited the checkout in the last two seconds (the racy window).
    """
    source = Path(fingerprint.__file__).parent
    target = tmp_path / "package" / "ai_secretary_schema"
    # Hidden files are editors' temporaries, which may vanish while being copied.
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    age(target)
    monkeypatch.setattr(fingerprint, "_package_dir", lambda: target)
    return target


@pytest.fixture
def script_dir(tmp_path: Path) -> Path:
    """A copy of the real script directory, its files an hour old."""
    target = make_script_dir(tmp_path)
    age(target)
    return target


@pytest.fixture
def migrated(db_url: str, script_dir: Path, cache_dir: Path) -> str:
    """A database upgraded to head by the real revisions, with nothing in the cache."""
    upgrade(db_url, script_location=script_dir)
    shutil.rmtree(cache_dir, ignore_errors=True)
    return db_url


@pytest.fixture
def engine(migrated: str) -> Iterator[Engine]:
    engine = sa.create_engine(migrated, poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def warm(script_dir: Path) -> WarmStart:
    return WarmStart(script_dir, REQUIRED_TABLES)


def take_fingerprint(engine: Engine) -> str:
    with engine.connect() as connection:
        return catalog_fingerprint(connection, REQUIRED_TABLES)


def remember_now(engine: Engine, script_dir: Path) -> str:
    """Remember the database as it is, as the startup hook does after a full comparison."""
    found = take_fingerprint(engine)
    WarmStart(script_dir, REQUIRED_TABLES).remember(found, HEAD, HEAD)
    return found


def check(engine: Engine, script_dir: Path) -> fingerprint.WarmCheck:
    """A check by a new instance, as a new worker process would make it."""
    with engine.connect() as connection:
        return WarmStart(script_dir, REQUIRED_TABLES).check(connection)


# --------------------------------------------------------------------------------------------
# The catalog fingerprint
# --------------------------------------------------------------------------------------------


def test_fingerprint_is_stable_across_calls_and_connections(engine: Engine) -> None:
    with engine.connect() as connection:
        first = catalog_fingerprint(connection, REQUIRED_TABLES)
        assert catalog_fingerprint(connection, REQUIRED_TABLES) == first
    assert take_fingerprint(engine) == first
    assert re.fullmatch(r"[0-9a-f]{64}", first)


def test_fingerprint_ignores_the_order_of_the_table_names(engine: Engine) -> None:
    with engine.connect() as connection:
        assert catalog_fingerprint(connection, REQUIRED_TABLES) == catalog_fingerprint(
            connection, tuple(reversed(REQUIRED_TABLES))
        )


@pytest.mark.parametrize(
    "drift", {**DRIFTS, **FINGERPRINT_ONLY}.values(), ids=[*DRIFTS, *FINGERPRINT_ONLY]
)
def test_fingerprint_changes_with_each_drift(engine: Engine, migrated: str, drift: Drift) -> None:
    before = take_fingerprint(engine)
    apply(migrated, drift)
    assert take_fingerprint(engine) != before


@pytest.mark.parametrize("statements", VERSION_CHANGES.values(), ids=VERSION_CHANGES)
def test_fingerprint_changes_with_alembic_version(
    engine: Engine, migrated: str, statements: tuple[str, ...]
) -> None:
    before = take_fingerprint(engine)
    apply(migrated, statements)
    assert take_fingerprint(engine) != before


@pytest.mark.parametrize("statements", NOT_DRIFT.values(), ids=NOT_DRIFT)
def test_fingerprint_does_not_change_with_data_or_statistics(
    engine: Engine, migrated: str, statements: tuple[str, ...]
) -> None:
    before = take_fingerprint(engine)
    apply(migrated, statements)
    assert take_fingerprint(engine) == before


def test_fingerprint_is_one_query(engine: Engine) -> None:
    statements: list[str] = []
    with engine.connect() as connection:
        # Attached once connected: the dialect's own first-connect queries are not ours.
        sa.event.listen(
            connection, "before_cursor_execute", lambda *args: statements.append(args[2])
        )
        catalog_fingerprint(connection, REQUIRED_TABLES)
    assert len(statements) == 1, statements


def test_fingerprint_raises_without_alembic_version(db_url: str) -> None:
    engine = sa.create_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as connection, pytest.raises(sa.exc.DBAPIError):
            catalog_fingerprint(connection, REQUIRED_TABLES)
    finally:
        engine.dispose()


def test_fingerprint_refuses_a_single_string_of_tables(engine: Engine) -> None:
    with engine.connect() as connection, pytest.raises(TypeError, match="collection"):
        catalog_fingerprint(connection, "users")


# --------------------------------------------------------------------------------------------
# WarmStart: the cache of fingerprints that passed
# --------------------------------------------------------------------------------------------


def test_check_misses_with_no_cache(engine: Engine, script_dir: Path) -> None:
    result = check(engine, script_dir)
    assert (result.hit, result.reason, result.current) == (False, "no cache entry", HEAD)
    assert result.fingerprint == take_fingerprint(engine)


def test_check_hits_after_remember(engine: Engine, script_dir: Path) -> None:
    found = remember_now(engine, script_dir)
    result = check(engine, script_dir)
    assert (result.hit, result.heads, result.current, result.fingerprint) == (
        True,
        HEAD,
        HEAD,
        found,
    )


def test_check_misses_a_fingerprint_not_remembered(
    engine: Engine, migrated: str, script_dir: Path
) -> None:
    remember_now(engine, script_dir)
    apply(migrated, DRIFTS["server-default-changed"])
    result = check(engine, script_dir)
    assert (result.hit, result.reason) == (False, "fingerprint not known")


def test_check_leaves_transactions_as_found(engine: Engine, warm: WarmStart) -> None:
    with engine.connect() as connection:
        warm.check(connection)
        assert not connection.in_transaction()
        connection.begin()
        warm.check(connection)
        assert connection.in_transaction()
        connection.rollback()


def test_a_failed_query_is_a_miss_that_leaves_the_connection_usable(
    db_url: str, warm: WarmStart
) -> None:
    engine = sa.create_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            result = warm.check(connection)
            assert (result.hit, result.fingerprint) == (False, None)
            assert result.reason.startswith("query failed: ")
            # On PostgreSQL a failed statement aborts its transaction: check rolled it back.
            assert connection.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


def touch(path: Path) -> None:
    os.utime(path, (LONG_AGO + 60, LONG_AGO + 60))


def add_revision(script_dir: Path) -> None:
    path = script_dir / "versions" / "0101_noop.py"
    path.write_text(revision_file("0101", SHIPPED_HEAD, NOOP))
    touch(path)


def add_file(path: Path) -> None:
    path.write_text("")
    touch(path)


#: Changes of a script directory's files, whether or not they change what the files mean: the
#: key cannot tell, so each one is a miss (and the next full comparison is remembered anew).
SCRIPT_CHANGES: dict[str, Callable[[Path], object]] = {
    "revision-file-touched": lambda d: touch(next((d / "versions").glob("0002_*.py"))),
    "env-py-touched": lambda d: touch(d / "env.py"),
    "revision-file-added": add_revision,
    "revision-file-removed": lambda d: next((d / "versions").glob("0002_*.py")).unlink(),
    "other-file-added": lambda d: add_file(d / "NOTES"),
    "file-added-in-a-subdirectory": lambda d: add_file(d / "versions" / "notes.txt"),
}


@pytest.mark.parametrize("change", SCRIPT_CHANGES.values(), ids=SCRIPT_CHANGES)
def test_check_misses_when_a_script_file_changes(
    engine: Engine, script_dir: Path, change: Callable[[Path], object]
) -> None:
    remember_now(engine, script_dir)
    assert check(engine, script_dir).hit
    change(script_dir)
    assert check(engine, script_dir).reason == "no cache entry"


@pytest.mark.parametrize("name", ["models.py", "migration_env.py", "fingerprint.py"])
def test_check_misses_when_a_package_file_changes(
    engine: Engine, script_dir: Path, package_copy: Path, name: str
) -> None:
    remember_now(engine, script_dir)
    assert check(engine, script_dir).hit
    touch(package_copy / name)
    assert check(engine, script_dir).reason == "no cache entry"


def test_check_misses_with_another_script_directory(
    engine: Engine, script_dir: Path, tmp_path: Path
) -> None:
    remember_now(engine, script_dir)
    other = tmp_path / "other"
    shutil.copytree(script_dir, other)
    assert check(engine, other).reason == "no cache entry"


def test_nothing_is_remembered_while_a_file_is_just_written(
    engine: Engine, script_dir: Path, cache_dir: Path
) -> None:
    # A file written moments ago may be written again within the same mtime tick, its size
    # unchanged: a key taken now could not tell the two contents apart.
    (script_dir / "env.py").touch()
    remember_now(engine, script_dir)
    assert check(engine, script_dir).reason == "no cache entry"
    assert not list(cache_dir.glob("*.json"))


def test_nothing_is_remembered_when_files_changed_during_the_comparison(
    engine: Engine, script_dir: Path, cache_dir: Path
) -> None:
    warm = WarmStart(script_dir, REQUIRED_TABLES)
    with engine.connect() as connection:
        result = warm.check(connection)
    add_revision(script_dir)
    assert result.fingerprint is not None
    warm.remember(result.fingerprint, HEAD, HEAD)
    assert not list(cache_dir.glob("*.json"))


#: A damaged cache file, and the reason the check then gives for its miss.
CORRUPT_FILES: dict[str, tuple[Callable[[dict[str, Any]], str], str]] = {
    "not-json": (lambda data: "{not json", "cache file unreadable"),
    "empty": (lambda data: "", "cache file unreadable"),
    "truncated": (lambda data: json.dumps(data)[:-10], "cache file unreadable"),
    "another-format": (lambda data: json.dumps({**data, "format": 999}), "cache file malformed"),
    "another-key": (lambda data: json.dumps({**data, "key": "0" * 64}), "cache file malformed"),
    "heads-not-strings": (lambda data: json.dumps({**data, "heads": [2]}), "cache file malformed"),
    "passed-not-a-list": (lambda data: json.dumps({**data, "passed": {}}), "cache file malformed"),
    "entry-without-current": (
        lambda data: json.dumps(
            {**data, "passed": [{"fingerprint": data["passed"][0]["fingerprint"]}]}
        ),
        "cache file malformed",
    ),
    "heads-not-the-database-revision": (
        lambda data: json.dumps({**data, "heads": ["0001"]}),
        "cache entry inconsistent",
    ),
}


@pytest.mark.parametrize(("corrupt", "reason"), CORRUPT_FILES.values(), ids=CORRUPT_FILES)
def test_check_misses_with_a_corrupt_cache_file(
    engine: Engine,
    script_dir: Path,
    warm: WarmStart,
    corrupt: Callable[[dict[str, Any]], str],
    reason: str,
) -> None:
    remember_now(engine, script_dir)
    data = json.loads(warm.cache_path.read_text())
    warm.cache_path.write_text(corrupt(data))
    result = check(engine, script_dir)
    assert (result.hit, result.reason.split(":")[0]) == (False, reason)
    # The next full comparison that passes repairs the file.
    remember_now(engine, script_dir)
    assert check(engine, script_dir).hit


def test_an_unwritable_cache_directory_only_costs_speed(
    engine: Engine, script_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A regular file where the directory should be (tests run as root: permissions can't tell).
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    monkeypatch.setenv(CACHE_DIR_ENV, str(blocked / "cache"))
    remember_now(engine, script_dir)
    assert not check(engine, script_dir).hit


def test_the_cache_keeps_the_most_recent_fingerprints(engine: Engine, script_dir: Path) -> None:
    remember_now(engine, script_dir)
    warm = WarmStart(script_dir, REQUIRED_TABLES)
    for number in range(MAX_REMEMBERED):
        warm.remember(f"{number:064x}", HEAD, HEAD)
    assert check(engine, script_dir).reason == "fingerprint not known"
    assert len(json.loads(warm.cache_path.read_text())["passed"]) == MAX_REMEMBERED
    remember_now(engine, script_dir)
    assert check(engine, script_dir).hit


@pytest.mark.parametrize(
    ("heads", "current"),
    [
        pytest.param(("0002",), ("0001",), id="behind-head"),
        pytest.param(("0002",), (), id="unversioned"),
        pytest.param((), (), id="no-head"),
        pytest.param(("0002", "0003"), ("0002",), id="one-of-two-heads"),
    ],
)
def test_remember_refuses_a_database_not_at_head(
    warm: WarmStart, heads: tuple[str, ...], current: tuple[str, ...]
) -> None:
    with pytest.raises(ValueError, match="only a database at head"):
        warm.remember("0" * 64, heads, current)


def snapshot(*roots: Path) -> dict[str, int]:
    return {str(path): path.stat().st_mtime_ns for root in roots for path in root.rglob("*")}


def test_nothing_is_written_under_the_package_or_the_script_directory(
    engine: Engine, script_dir: Path, cache_dir: Path, package_copy: Path
) -> None:
    package = Path(fingerprint.__file__).parent
    before = snapshot(package, package_copy, script_dir)
    remember_now(engine, script_dir)
    assert check(engine, script_dir).hit
    assert snapshot(package, package_copy, script_dir) == before
    assert [path.parent for path in cache_dir.glob("warm-*.json")] == [cache_dir]


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        pytest.param({CACHE_DIR_ENV: "/srv/cache"}, "/srv/cache", id="own-variable"),
        pytest.param(
            {CACHE_DIR_ENV: "", "XDG_CACHE_HOME": "/xdg"},
            "/xdg/ai-secretary-schema",
            id="xdg-cache-home",
        ),
        pytest.param({}, "/home/worker/.cache/ai-secretary-schema", id="home"),
    ],
)
def test_cache_directory(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], expected: str
) -> None:
    for name in (CACHE_DIR_ENV, "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/home/worker")
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert cache_directory() == Path(expected)


HIT_PATH = """\
import json
import sys
from pathlib import Path

import sqlalchemy as sa

from ai_secretary_schema import fingerprint

# The same aged copy of the package files as the test that remembered the database.
fingerprint._package_dir = lambda: Path(sys.argv[4])
engine = sa.create_engine(sys.argv[1], poolclass=sa.pool.NullPool)
with engine.connect() as connection:
    result = fingerprint.WarmStart(sys.argv[2], sys.argv[3].split(",")).check(connection)
heavy = ["alembic", "sqlalchemy.orm", "flask", "ai_secretary_schema.models"]
sys.stdout.write(json.dumps([result.hit, [name for name in heavy if name in sys.modules]]))
"""


def test_a_hit_imports_neither_alembic_nor_the_orm(
    engine: Engine, migrated: str, script_dir: Path, package_copy: Path
) -> None:
    remember_now(engine, script_dir)
    tables = ",".join(REQUIRED_TABLES)
    completed = subprocess.run(
        [sys.executable, "-c", HIT_PATH, migrated, str(script_dir), tables, str(package_copy)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(completed.stdout) == [True, []]


# --------------------------------------------------------------------------------------------
# End to end: the startup hook after a warm start (needs WarmStart wired into the Migrator)
# --------------------------------------------------------------------------------------------


def warm_up(url: str, script_location: Path | None = None) -> None:
    """A full start that fills the cache, then a start that must be warm."""
    with MigrationManager(url=url, script_location=script_location) as manager:
        assert manager.run_startup("upgrade").ok
        assert manager.run_startup("upgrade").fast_path


@pytest.mark.parametrize("drift", DRIFTS.values(), ids=DRIFTS)
def test_every_drift_fails_the_startup_after_a_warm_start(db_url: str, drift: Drift) -> None:
    if dialect_of(db_url) == "sqlite":
        sqlite_form(drift)
    upgrade(db_url)
    warm_up(db_url)
    apply(db_url, drift)
    modes: tuple[StartupMode, ...] = ("validate", "upgrade")
    with MigrationManager(url=db_url) as manager:
        for mode in modes:
            with pytest.raises(SchemaValidationError) as raised:
                manager.run_startup(mode)
            report = raised.value.report
            assert report is not None
            assert not report.fast_path
            assert report.differences()
            assert all(drift.table in line for line in report.differences()), mode
            assert drift.table in str(raised.value)


def test_a_new_revision_is_applied_after_a_warm_start(db_url: str, script_dir: Path) -> None:
    upgrade(db_url, script_location=script_dir)
    warm_up(db_url, script_dir)
    add_revision(script_dir)
    with MigrationManager(url=db_url, script_location=script_dir) as manager:
        report = manager.run_startup("upgrade")
        assert (report.fast_path, report.current) == (False, ("0101",))
        assert manager.run_startup("upgrade").fast_path


def test_a_database_stamped_back_is_not_warm(db_url: str) -> None:
    upgrade(db_url)
    warm_up(db_url)
    apply(db_url, VERSION_CHANGES["stamped-at-an-older-revision"])
    with MigrationManager(url=db_url) as manager, pytest.raises(SchemaValidationError):
        manager.run_startup("validate")
