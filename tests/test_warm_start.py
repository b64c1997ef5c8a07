"""The warm-start check: hits only when the database is at head with the models' schema.

Every case runs on real SQLite and PostgreSQL databases migrated by the real revisions; drift is
made with Alembic's own operations (batch mode, so SQLite can alter too). Each miss is checked
for its reason, so that a test cannot pass because the check missed for some other cause. The
head cache is exercised on a copy of the script directory in ``tmp_path``; timings belong to
``bench/startup.py``, not here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine, make_url

from ai_secretary_schema import warm_start
from ai_secretary_schema.commands import upgrade
from ai_secretary_schema.engine import create_engine
from ai_secretary_schema.models import REQUIRED_TABLES, Base
from ai_secretary_schema.warm_start import (
    CACHE_DIR_ENV,
    WarmCheck,
    cache_paths,
    cached_heads,
    default_script_location,
    expected_signature,
    models_signature,
    prime_caches,
    quick_check,
    warm_check,
)

#: An mtime safely outside the racy window, so that a file written by a test can be cached.
LONG_AGO = time.time() - 3600


@pytest.fixture(autouse=True)
def user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the fallback cache directory of every test (and its subprocesses) in tmp_path."""
    path = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(path))
    return path


@pytest.fixture
def script_dir(tmp_path: Path) -> Path:
    """A copy of the package's script directory (mtimes preserved, no cache in it)."""
    target = tmp_path / "migrations"
    shutil.copytree(default_script_location(), target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def add_revision(
    script_dir: Path, revision: str, down_revision: str, *, mtime: float | None = LONG_AGO
) -> Path:
    """Write a no-op revision file; ``mtime=None`` leaves it just written (racy)."""
    path = script_dir / "versions" / f"{revision}_noop.py"
    path.write_text(
        textwrap.dedent(
            f'''\
            """No-op revision {revision}."""

            revision = {revision!r}
            down_revision = {down_revision!r}
            branch_labels = None
            depends_on = None


            def upgrade() -> None:
                pass


            def downgrade() -> None:
                pass
            '''
        )
    )
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def migrated(db_url: str, script_dir: Path) -> Iterator[Engine]:
    """An engine on a database upgraded to head by the real revisions."""
    upgrade(db_url, script_location=script_dir)
    engine = create_engine(make_url(db_url), pooled=False)
    yield engine
    engine.dispose()


def check(engine: Engine, script_dir: Path) -> WarmCheck:
    with engine.connect() as connection:
        return warm_check(connection, script_dir)


def alter(engine: Engine, change: Callable[[Operations], None]) -> None:
    """Apply ``change`` with Alembic's operations, committed."""
    with engine.begin() as connection:
        change(Operations(MigrationContext.configure(connection)))


# --------------------------------------------------------------------------------------------
# Hits and misses on real databases
# --------------------------------------------------------------------------------------------


def test_migrated_database_hits(migrated: Engine, script_dir: Path) -> None:
    result = check(migrated, script_dir)
    assert result == WarmCheck(True, "at head, schema matches the models", ("0002",), ("0002",))
    with migrated.connect() as connection:
        assert quick_check(connection, script_dir) is True


def test_shipped_migrations_are_the_default(db_url: str) -> None:
    upgrade(db_url)
    engine = create_engine(make_url(db_url), pooled=False)
    try:
        with engine.connect() as connection:
            assert quick_check(connection) is True
    finally:
        engine.dispose()


def _drop_column(ops: Operations) -> None:
    with ops.batch_alter_table("users") as batch:
        batch.drop_column("full_name")


def _change_type(ops: Operations) -> None:
    with ops.batch_alter_table("users") as batch:
        batch.alter_column("role", type_=sa.String(60), existing_type=sa.String(50))


def _change_type_family(ops: Operations) -> None:
    with ops.batch_alter_table("performance_alerts") as batch:
        batch.alter_column("occurrence_count", type_=sa.String(20), existing_type=sa.Integer())


def _change_nullability(ops: Operations) -> None:
    with ops.batch_alter_table("users") as batch:
        batch.alter_column("full_name", nullable=False, existing_type=sa.String(200))


def _drop_index(ops: Operations) -> None:
    ops.drop_index("ix_performance_alerts_alert_type", table_name="performance_alerts")


def _drop_unique(ops: Operations) -> None:
    with ops.batch_alter_table("tenants") as batch:
        batch.drop_constraint("uq_tenants_slug", type_="unique")


def _add_column(ops: Operations) -> None:
    ops.add_column("users", sa.Column("nickname", sa.String(20)))


def _drop_table(ops: Operations) -> None:
    ops.drop_table("performance_alerts")


@pytest.mark.parametrize(
    ("change", "difference"),
    [
        pytest.param(_drop_column, "users.full_name: missing column", id="dropped-column"),
        pytest.param(
            _change_type,
            "users.role: string(50) NOT NULL in the models, string(60) NOT NULL in the database",
            id="changed-length",
        ),
        pytest.param(
            _change_type_family,
            "performance_alerts.occurrence_count: integer NULL in the models, "
            "string(20) NULL in the database",
            id="changed-type",
        ),
        pytest.param(
            _change_nullability,
            "users.full_name: string(200) NULL in the models, string(200) NOT NULL in the database",
            id="changed-nullability",
        ),
        pytest.param(
            _drop_index,
            "performance_alerts: index ('ix_performance_alerts_alert_type', ('alert_type',), "
            "False) missing or different",
            id="missing-index",
        ),
        pytest.param(
            _drop_unique,
            "tenants: unique constraint ('uq_tenants_slug', ('slug',)) missing or different",
            id="missing-unique-constraint",
        ),
        pytest.param(_add_column, "users.nickname: column not in the models", id="extra-column"),
        pytest.param(_drop_table, "table performance_alerts: missing", id="missing-table"),
    ],
)
def test_drifted_schema_misses(
    migrated: Engine,
    script_dir: Path,
    change: Callable[[Operations], None],
    difference: str,
) -> None:
    alter(migrated, change)
    result = check(migrated, script_dir)
    assert not result.hit
    assert result.reason == "the schema differs from the models"
    assert result.differences == (difference,)
    with migrated.connect() as connection:
        assert quick_check(connection, script_dir) is False


@pytest.mark.postgresql
def test_time_zone_change_misses_on_postgresql(pg_url: str, script_dir: Path) -> None:
    # SQLite reflects DATETIME with or without a time zone, so only PostgreSQL can tell.
    upgrade(pg_url, script_location=script_dir)
    engine = create_engine(make_url(pg_url), pooled=False)
    try:
        alter(
            engine,
            lambda ops: ops.alter_column(
                "users",
                "last_login_at",
                type_=sa.DateTime(timezone=False),
                existing_type=sa.DateTime(timezone=True),
            ),
        )
        assert check(engine, script_dir).differences == (
            "users.last_login_at: datetime(timezone) NULL in the models, "
            "datetime NULL in the database",
        )
    finally:
        engine.dispose()


def test_unapplied_new_revision_misses(migrated: Engine, script_dir: Path) -> None:
    add_revision(script_dir, "0003", "0002")
    result = check(migrated, script_dir)
    assert (result.hit, result.reason) == (False, "database at 0002, head is 0003")
    with migrated.connect() as connection:
        assert quick_check(connection, script_dir) is False


def test_new_revision_after_a_cached_hit_misses(migrated: Engine, script_dir: Path) -> None:
    assert check(migrated, script_dir).hit
    add_revision(script_dir, "0003", "0002")
    assert check(migrated, script_dir).reason == "database at 0002, head is 0003"
    # Once the database is upgraded to the new head, the check hits again.
    upgrade(migrated.url, script_location=script_dir)
    assert check(migrated, script_dir).hit


def test_stamped_at_older_revision_misses(migrated: Engine, script_dir: Path) -> None:
    with migrated.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))
    result = check(migrated, script_dir)
    assert (result.hit, result.reason) == (False, "database at 0001, head is 0002")


def test_two_version_rows_miss(migrated: Engine, script_dir: Path) -> None:
    with migrated.begin() as connection:
        connection.execute(sa.text("INSERT INTO alembic_version (version_num) VALUES ('0001')"))
    assert check(migrated, script_dir).reason == "database at 0001, 0002, head is 0002"


def test_unversioned_database_misses(migrated: Engine, script_dir: Path) -> None:
    with migrated.begin() as connection:
        connection.execute(sa.text("DROP TABLE alembic_version"))
    assert check(migrated, script_dir).reason == "no alembic_version table"


def test_empty_database_misses(db_url: str, script_dir: Path) -> None:
    engine = create_engine(make_url(db_url), pooled=False)
    try:
        assert check(engine, script_dir).reason == "no alembic_version table"
    finally:
        engine.dispose()


def test_multiple_heads_never_hit(migrated: Engine, script_dir: Path) -> None:
    add_revision(script_dir, "0003a", "0002")
    add_revision(script_dir, "0003b", "0002")
    assert check(migrated, script_dir).reason == "the migration history has 2 heads"
    # Asked twice: a cached multi-head history does not hit either.
    assert check(migrated, script_dir).reason == "the migration history has 2 heads"


def test_connection_transactions_are_left_as_found(migrated: Engine, script_dir: Path) -> None:
    with migrated.connect() as connection:
        assert quick_check(connection, script_dir)
        assert not connection.in_transaction()
        connection.begin()
        assert quick_check(connection, script_dir)
        assert connection.in_transaction()
        connection.rollback()


# --------------------------------------------------------------------------------------------
# The head cache
# --------------------------------------------------------------------------------------------


def forbid_slow_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(script_dir: Path) -> tuple[str, ...]:
        raise AssertionError(f"the heads of {script_dir} were computed, not read from the cache")

    monkeypatch.setattr(warm_start, "_compute_heads", fail)


def test_cache_is_written_then_read_without_alembic(
    script_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    primary = cache_paths(script_dir)[0]
    assert not primary.exists()
    assert cached_heads(script_dir) == ("0002",)
    assert json.loads(primary.read_text())["heads"] == ["0002"]
    # Readable by other users: a cache primed as root while building an image serves workers.
    assert primary.stat().st_mode & 0o777 == 0o644
    forbid_slow_path(monkeypatch)
    assert cached_heads(script_dir) == ("0002",)


def test_added_revision_invalidates_the_cache(
    script_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cached_heads(script_dir) == ("0002",)
    # Even with an old mtime, a new file name changes the fingerprint.
    add_revision(script_dir, "0003", "0002")
    assert cached_heads(script_dir) == ("0003",)
    forbid_slow_path(monkeypatch)
    assert cached_heads(script_dir) == ("0003",)


def test_edited_revision_invalidates_the_cache(script_dir: Path) -> None:
    path = add_revision(script_dir, "0003", "0002")
    assert cached_heads(script_dir) == ("0003",)
    # Same name, same size, new content: the mtime tells.
    path.write_text(path.read_text().replace("'0003'", "'0004'"))
    assert cached_heads(script_dir) == ("0004",)


def test_removed_revision_invalidates_the_cache(script_dir: Path) -> None:
    path = add_revision(script_dir, "0003", "0002")
    assert cached_heads(script_dir) == ("0003",)
    path.unlink()
    assert cached_heads(script_dir) == ("0002",)


def test_just_written_revision_is_not_cached(
    script_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file modified moments ago could change again within the same mtime tick: its
    # fingerprint is used for this call but not stored.
    primary = cache_paths(script_dir)[0]
    add_revision(script_dir, "0003", "0002", mtime=None)
    assert cached_heads(script_dir) == ("0003",)
    assert not primary.exists()
    calls: list[Path] = []
    compute = warm_start._compute_heads

    def counting(path: Path) -> tuple[str, ...]:
        calls.append(path)
        return compute(path)

    monkeypatch.setattr(warm_start, "_compute_heads", counting)
    assert cached_heads(script_dir) == ("0003",)
    assert len(calls) == 1


def test_unwritable_script_directory_falls_back_to_user_cache(
    script_dir: Path, user_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A regular file where the cache directory should be: creating it fails as it would in a
    # read-only site-packages (tests run as root, so permissions cannot be used).
    (script_dir / "__pycache__").write_text("")
    fallback = cache_paths(script_dir)[1]
    assert fallback.is_relative_to(user_cache)
    assert cached_heads(script_dir) == ("0002",)
    assert json.loads(fallback.read_text())["heads"] == ["0002"]
    forbid_slow_path(monkeypatch)
    assert cached_heads(script_dir) == ("0002",)


def test_corrupt_cache_is_recomputed(script_dir: Path) -> None:
    primary = cache_paths(script_dir)[0]
    assert cached_heads(script_dir) == ("0002",)
    primary.write_text("{not json")
    assert cached_heads(script_dir) == ("0002",)
    assert json.loads(primary.read_text())["heads"] == ["0002"]


def test_cache_of_another_directory_is_not_used(tmp_path: Path, script_dir: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(script_dir, other)
    add_revision(other, "0003", "0002")
    assert cached_heads(other) == ("0003",)
    assert cached_heads(script_dir) == ("0002",)


# --------------------------------------------------------------------------------------------
# The models' signature cache
# --------------------------------------------------------------------------------------------


@pytest.fixture
def models_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Copies of the files the models' signature is keyed on, and a cache of their own."""
    sources = warm_start._models_files()
    copies = []
    for source in sources:
        copy = tmp_path / "models-src" / source.name
        copy.parent.mkdir(exist_ok=True)
        shutil.copy2(source, copy)
        os.utime(copy, (LONG_AGO, LONG_AGO))
        copies.append(copy)
    monkeypatch.setattr(warm_start, "_models_files", lambda: copies)
    monkeypatch.setattr(
        warm_start,
        "models_cache_paths",
        lambda dialect: (tmp_path / "models-cache" / f"{dialect}.json",),
    )
    return copies


def forbid_models_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> object:
        raise AssertionError("the models' signature was computed, not read from the cache")

    monkeypatch.setattr(warm_start, "expected_signature", fail)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_cached_models_signature_is_the_models_signature(
    dialect: str, models_cache: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    live = expected_signature(Base.metadata, dialect, REQUIRED_TABLES)
    assert set(live) == set(REQUIRED_TABLES)
    assert models_signature(dialect) == live
    forbid_models_computation(monkeypatch)
    assert models_signature(dialect) == live


def test_changed_models_invalidate_the_signature_cache(
    models_cache: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    models_signature("sqlite")
    calls: list[object] = []
    compute = warm_start.expected_signature

    def counting(*args: object) -> object:
        calls.append(args)
        return compute(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(warm_start, "expected_signature", counting)
    models_signature("sqlite")
    assert calls == []
    models_py = models_cache[0]
    models_py.write_text(models_py.read_text() + "\n# changed\n")
    models_signature("sqlite")
    assert len(calls) == 1


def test_signature_cache_is_per_dialect(
    models_cache: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sqlite = models_signature("sqlite")
    postgresql = models_signature("postgresql")
    assert sqlite["users"].columns["created_at"].type == "datetime"
    assert postgresql["users"].columns["created_at"].type == "datetime(timezone)"
    forbid_models_computation(monkeypatch)
    assert (models_signature("sqlite"), models_signature("postgresql")) == (sqlite, postgresql)


# --------------------------------------------------------------------------------------------
# The hit path imports neither Alembic nor the ORM
# --------------------------------------------------------------------------------------------

_CHILD = """
import json, sys
from sqlalchemy.engine import make_url
from ai_secretary_schema.engine import create_engine
from ai_secretary_schema.warm_start import quick_check
engine = create_engine(make_url(sys.argv[1]), pooled=False)
with engine.connect() as connection:
    hit = quick_check(connection, sys.argv[2])
alembic = sorted(name for name in sys.modules if name.startswith("alembic"))
print(json.dumps({"hit": hit, "alembic": alembic, "orm": "sqlalchemy.orm" in sys.modules}))
"""


def run_child(url: str, script_dir: Path) -> dict[str, object]:
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, url, str(script_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, object] = json.loads(completed.stdout)
    return result


@pytest.fixture
def own_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every cache of this test and its subprocesses in a directory of its own, empty."""
    path = tmp_path / "caches"
    monkeypatch.setenv(CACHE_DIR_ENV, str(path))
    return path


def test_hit_imports_neither_alembic_nor_the_orm(
    migrated: Engine, script_dir: Path, own_cache_dir: Path
) -> None:
    url = migrated.url.render_as_string(hide_password=False)
    with migrated.connect() as connection:
        assert quick_check(connection, script_dir)  # writes both caches
    assert len(list(own_cache_dir.glob("*.json"))) == 2
    assert run_child(url, script_dir) == {"hit": True, "alembic": [], "orm": False}


def test_primed_caches_hit_without_alembic(
    migrated: Engine, script_dir: Path, own_cache_dir: Path
) -> None:
    url = migrated.url.render_as_string(hide_password=False)
    assert prime_caches(script_dir) == ("0002",)
    assert run_child(url, script_dir) == {"hit": True, "alembic": [], "orm": False}


def test_cold_caches_import_alembic_and_the_orm(
    migrated: Engine, script_dir: Path, own_cache_dir: Path
) -> None:
    # The control of the tests above: without caches the head comes from Alembic and the
    # expected signature from the models, and the check still hits.
    url = migrated.url.render_as_string(hide_password=False)
    result = run_child(url, script_dir)
    assert result["hit"] is True
    assert "alembic" in result["alembic"]  # type: ignore[operator]
    assert result["orm"] is True
    # ... and leaves the caches behind for the next start.
    assert run_child(url, script_dir) == {"hit": True, "alembic": [], "orm": False}
