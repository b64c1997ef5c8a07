"""Tenant isolation on a real PostgreSQL, as deployed: migrated by a table owner that is not a
superuser, used by the application role ``grant-app-role`` made, through a pool."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg2.errors
import pytest
import sqlalchemy as sa
from conftest import TENANTS, TenantDatabase
from helpers.scripts import HEAD, make_script_dir
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from ai_secretary_schema import (
    CrossTenantWriteError,
    MigrationManager,
    SchemaValidationError,
    TenantRequiredError,
    User,
    cross_tenant,
    tenant_scope,
)
from ai_secretary_schema.cli import main
from ai_secretary_schema.migrator import upgrade

pytestmark = pytest.mark.postgresql

REQUESTS = 1000


@pytest.fixture
def app_engine(tenant_db: TenantDatabase) -> Iterator[Engine]:
    """The application's engine: the application role, a pool of 2 and no overflow."""
    engine = sa.create_engine(tenant_db.app_url, pool_size=2, max_overflow=0, pool_timeout=30)
    yield engine
    engine.dispose()


def owner_rows(tenant_db: TenantDatabase) -> list[Any]:
    """Every user row, read by the owner across tenants."""
    engine = sa.create_engine(tenant_db.owner_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection, cross_tenant():
            connection.exec_driver_sql("SELECT set_config('ai_secretary.cross_tenant', 'on', true)")
            return list(connection.execute(sa.text("SELECT * FROM users")))
    finally:
        engine.dispose()


# -- 1000 interleaved requests, 4 tenants, a pool of 2 --------------------------------------------


class Leaks:
    """What each request saw or changed that was not its own tenant's."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.operations: Counter[str] = Counter()
        self.pids: set[int] = set()

    def add(self, what: str, leaked: int) -> None:
        with self.lock:
            self.operations[what] += 1
            self.counts[what] += leaked


def one_request(factory: sessionmaker[Session], tenant: int, kind: str, leaks: Leaks) -> None:
    """One request of ``tenant``: a new session, one transaction, as a Flask request would."""
    other = random.choice([t for t in TENANTS if t != tenant])
    marker = f"t{tenant}-{random.randrange(10**9)}"
    with tenant_scope(tenant), factory() as session:
        pid = session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        with leaks.lock:
            leaks.pids.add(pid)
        leaked = 0  # rows of another tenant this request read or changed
        if kind == "orm-read":
            rows = session.scalars(sa.select(User)).all()
            leaked = sum(row.tenant_id != tenant for row in rows)
        elif kind == "raw-read":
            rows = session.execute(sa.text("SELECT tenant_id FROM users")).all()
            leaked = sum(row.tenant_id != tenant for row in rows)
        elif kind == "raw-read-other":
            rows = session.execute(
                sa.text("SELECT tenant_id FROM users WHERE tenant_id = :o"), {"o": other}
            ).all()
            leaked = len(rows)
        elif kind == "orm-insert":
            session.add(User(email=f"{marker}@orm", password_hash="x", full_name=marker))
        elif kind == "raw-insert":
            session.execute(
                sa.text(
                    "INSERT INTO users (tenant_id, email, password_hash, full_name) "
                    "VALUES (:t, :e, 'x', :m)"
                ),
                {"t": tenant, "e": f"{marker}@raw", "m": marker},
            )
        elif kind == "orm-update":
            session.execute(sa.update(User).values(full_name=marker))
        elif kind == "raw-update":
            session.execute(sa.text("UPDATE users SET full_name = :m"), {"m": marker})
        elif kind == "raw-update-other":
            leaked = session.execute(
                sa.text("UPDATE users SET full_name = :m WHERE tenant_id = :o"),
                {"m": marker, "o": other},
            ).rowcount
        elif kind == "orm-delete":
            session.execute(sa.delete(User).where(User.email.like("%@orm")))
        elif kind == "raw-delete-other":
            leaked = session.execute(
                sa.text("DELETE FROM users WHERE tenant_id = :o"), {"o": other}
            ).rowcount
        leaks.add(kind, leaked)
        session.commit()


KINDS = (
    "orm-read",
    "raw-read",
    "raw-read-other",
    "orm-insert",
    "raw-insert",
    "orm-update",
    "raw-update",
    "raw-update-other",
    "orm-delete",
    "raw-delete-other",
)


def test_1000_interleaved_requests_of_4_tenants_through_a_pool_of_2_never_leak(
    tenant_db: TenantDatabase, app_engine: Engine, record_property: Callable[[str, Any], None]
) -> None:
    factory = sessionmaker(bind=app_engine)
    leaks = Leaks()
    rng = random.Random(13)
    plan = [(rng.choice(TENANTS), rng.choice(KINDS)) for _ in range(REQUESTS)]
    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(one_request, factory, *step, leaks) for step in plan]:
            future.result()

    rows = owner_rows(tenant_db)
    # Every row's full_name (when a request of its tenant set one) names its own tenant.
    foreign = [
        row for row in rows if row.full_name and not row.full_name.startswith(f"t{row.tenant_id}-")
    ]
    record_property("operations", dict(leaks.operations))
    record_property("backend_pids", len(leaks.pids))
    assert (sum(leaks.operations.values()), dict(leaks.counts), foreign, len(leaks.pids)) == (
        REQUESTS,
        dict.fromkeys(leaks.counts, 0),
        [],
        2,
    )
    assert set(leaks.operations) == set(KINDS)
    # The seeded rows of every tenant are all still there: no delete reached another tenant.
    assert Counter(row.tenant_id for row in rows if "@t" in row.email) == dict.fromkeys(
        TENANTS, tenant_db.users_per_tenant
    )


# -- no tenant -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM users",
        "SELECT * FROM users WHERE tenant_id = 1",
        "UPDATE users SET full_name = 'x' RETURNING id",
        "DELETE FROM users RETURNING id",
    ],
)
def test_without_a_tenant_raw_sql_as_the_application_role_sees_no_row(
    app_engine: Engine, statement: str
) -> None:
    with app_engine.begin() as connection:
        assert connection.execute(sa.text(statement)).all() == []


@pytest.mark.parametrize("value", ["", "on"])
def test_the_application_role_cannot_switch_on_cross_tenant_reads(
    app_engine: Engine, value: str
) -> None:
    with app_engine.begin() as connection:
        connection.exec_driver_sql(
            f"SELECT set_config('ai_secretary.cross_tenant', '{value}', true)"
        )
        assert connection.execute(sa.text("SELECT * FROM users")).all() == []


def test_without_a_tenant_the_orm_raises(app_engine: Engine) -> None:
    with Session(app_engine) as session, pytest.raises(TenantRequiredError, match="tenant_scope"):
        session.scalars(sa.select(User)).all()


def test_cross_tenant_as_the_application_role_still_sees_nothing(app_engine: Engine) -> None:
    with Session(app_engine) as session, cross_tenant():
        assert session.scalars(sa.select(User)).all() == []


# -- WITH CHECK ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO users (tenant_id, email, password_hash) VALUES (2, 'x@y', 'x')",
        "UPDATE users SET tenant_id = 2",
    ],
    ids=["insert", "update"],
)
def test_writing_another_tenants_id_is_rejected_by_with_check(
    app_engine: Engine, statement: str
) -> None:
    with Session(app_engine) as session, tenant_scope(1):
        with pytest.raises(sa.exc.ProgrammingError) as raised:
            session.execute(sa.text(statement))
        assert isinstance(raised.value.orig, psycopg2.errors.InsufficientPrivilege)
        assert "row-level security policy" in str(raised.value.orig)


def test_the_orm_rejects_another_tenants_id_before_the_database(app_engine: Engine) -> None:
    with Session(app_engine) as session, tenant_scope(1):
        session.add(User(tenant_id=2, email="x@y", password_hash="x"))
        with pytest.raises(CrossTenantWriteError):
            session.flush()


# -- nothing survives the transaction ------------------------------------------------------------


def test_the_same_backend_carries_no_tenant_after_a_scoped_transaction(
    tenant_db: TenantDatabase,
) -> None:
    engine = sa.create_engine(tenant_db.app_url, pool_size=1, max_overflow=0)
    read = sa.text(
        "SELECT pg_backend_pid(), current_setting('ai_secretary.tenant_id', true), "
        "(SELECT count(*) FROM users)"
    )
    try:
        with tenant_scope(3), Session(engine) as session:
            pid, tenant, count = session.execute(read).one()
            session.commit()
        with engine.connect() as connection:
            after = connection.execute(read).one()
    finally:
        engine.dispose()
    assert (pid, tenant, count) == (after[0], "3", tenant_db.users_per_tenant)
    assert (after[1] or "", after[2]) == ("", 0)


def test_a_scoped_transaction_that_ran_no_statement_leaves_no_tenant_behind(
    tenant_db: TenantDatabase,
) -> None:
    # The setting travels with a transaction's first statement; a transaction that never
    # sent one must not hand it to the next user of the pooled connection.
    engine = sa.create_engine(tenant_db.app_url, pool_size=1, max_overflow=0)
    try:
        with tenant_scope(3), Session(engine) as session:
            session.connection()  # begins the transaction, runs nothing
            session.commit()
        with engine.connect() as connection:
            after = connection.execute(
                sa.text(
                    "SELECT current_setting('ai_secretary.tenant_id', true), "
                    "(SELECT count(*) FROM users)"
                )
            ).one()
    finally:
        engine.dispose()
    assert (after[0] or "", after[1]) == ("", 0)


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT tenant_id FROM users",  # compiled by SQLAlchemy: the setting goes with it
        # Not compiled by SQLAlchemy: the setting goes in a statement of its own before it.
        "SELECT tenant_id FROM users WHERE email LIKE '%%'",
    ],
    ids=["text", "driver-sql"],
)
def test_the_first_statement_of_a_transaction_sees_the_tenant(
    app_engine: Engine, statement: str
) -> None:
    with tenant_scope(2), Session(app_engine) as session:
        if "LIKE" in statement:
            connection = session.connection()
            rows = connection.exec_driver_sql(statement).all()
        else:
            rows = session.execute(sa.text(statement)).all()
    assert {row.tenant_id for row in rows} == {2}


def test_the_tenant_follows_a_scope_entered_inside_an_open_transaction(
    app_engine: Engine,
) -> None:
    with Session(app_engine) as session:
        session.execute(sa.text("SELECT 1"))  # begins, with no tenant
        with tenant_scope(2):
            assert {u.tenant_id for u in session.scalars(sa.select(User))} == {2}
        assert session.execute(sa.text("SELECT count(*) FROM users")).scalar_one() == 0


# -- the application role ------------------------------------------------------------------------


def test_the_application_role_owns_nothing_and_cannot_bypass_rls(
    tenant_db: TenantDatabase, app_engine: Engine
) -> None:
    with app_engine.connect() as connection:
        role = connection.execute(
            sa.text(
                "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles "
                "WHERE rolname = current_user"
            )
        ).one()
        owned = connection.execute(
            sa.text(
                "SELECT count(*) FROM pg_class WHERE relowner = "
                "(SELECT oid FROM pg_roles WHERE rolname = current_user)"
            )
        ).scalar_one()
    assert (tuple(role), owned) == ((False, False, False, False), 0)


def test_the_application_role_cannot_act_as_the_table_owner(
    tenant_db: TenantDatabase, app_engine: Engine
) -> None:
    with app_engine.connect() as connection, pytest.raises(sa.exc.ProgrammingError) as raised:
        connection.exec_driver_sql(f"SET ROLE {tenant_db.owner}")
    assert isinstance(raised.value.orig, psycopg2.errors.InsufficientPrivilege)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["Bad Name"], "is not a usable role name"),
        (["pg_app"], "is not a usable role name"),
        (["postgres"], "bypasses row-level security"),
        (["ais_x", "--password-env", "AIS_TEST_UNSET_PASSWORD"], "not set or empty"),
    ],
)
def test_grant_app_role_refuses_what_would_not_isolate(
    tenant_db: TenantDatabase,
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    message: str,
) -> None:
    assert main(["grant-app-role", *arguments, "--url", tenant_db.superuser_url]) == 1
    assert message in capsys.readouterr().err


def test_grant_app_role_refuses_the_table_owner(
    tenant_db: TenantDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["grant-app-role", tenant_db.owner, "--url", tenant_db.superuser_url]) == 1
    assert f"role {tenant_db.owner} owns" in capsys.readouterr().err


def test_grant_app_role_sets_a_password_it_never_prints(
    tenant_db: TenantDatabase, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIS_TEST_PASSWORD", "s3cr'et-sentinel")
    status = main(
        [
            "grant-app-role",
            tenant_db.app_role,
            "--password-env",
            "AIS_TEST_PASSWORD",
            "--url",
            tenant_db.superuser_url,
        ]
    )
    out, err = capsys.readouterr()
    assert (status, "password set" in out, "sentinel" in out + err) == (0, True, False)


# -- drift: check and validate compare the policies ----------------------------------------------

BREAKAGES = {
    "policy-dropped": (
        "DROP POLICY tenant_isolation ON users",
        "policy tenant_isolation is missing",
    ),
    "rls-disabled": ("ALTER TABLE users DISABLE ROW LEVEL SECURITY", "not enabled"),
    "not-forced": ("ALTER TABLE users NO FORCE ROW LEVEL SECURITY", "not forced"),
    "policy-widened": (
        "ALTER POLICY tenant_isolation ON users USING (true)",
        "policy tenant_isolation differs",
    ),
    "policy-added": ("CREATE POLICY everything ON users USING (true)", "unexpected policy"),
}


@pytest.mark.parametrize(("statement", "message"), BREAKAGES.values(), ids=BREAKAGES.keys())
def test_validate_exits_1_naming_the_table(
    tenant_db: TenantDatabase, capsys: pytest.CaptureFixture[str], statement: str, message: str
) -> None:
    assert main(["validate", "--url", tenant_db.owner_url]) == 0
    engine = sa.create_engine(tenant_db.owner_url, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql(statement)
    engine.dispose()
    capsys.readouterr()

    assert main(["validate", "--url", tenant_db.owner_url]) == 1
    assert f"row-level security: users: {message}" in capsys.readouterr().out


UNDO_0003 = """
def upgrade():
    op.execute("{statement}")


def downgrade():
    pass
"""


@pytest.mark.parametrize(
    ("statement", "message"),
    [BREAKAGES["policy-dropped"], BREAKAGES["rls-disabled"], BREAKAGES["not-forced"]],
    ids=["policy-dropped", "rls-disabled", "not-forced"],
)
def test_check_exits_1_when_a_revision_undoes_the_isolation(
    pg_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    statement: str,
    message: str,
) -> None:
    scripts = make_script_dir(tmp_path, {"0101": (HEAD, UNDO_0003.format(statement=statement))})

    assert main(["check", "--url", pg_url, "--script-location", str(scripts)]) == 1
    assert f"row-level security: users: {message}" in capsys.readouterr().out


def test_the_warm_start_never_hides_a_dropped_policy(tenant_db: TenantDatabase) -> None:
    with MigrationManager(url=tenant_db.owner_url) as manager:
        assert manager.run_startup("validate").ok
        assert manager.run_startup("validate").fast_path
    engine = sa.create_engine(tenant_db.owner_url, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP POLICY tenant_isolation ON users")
    engine.dispose()

    with (
        MigrationManager(url=tenant_db.owner_url) as manager,
        pytest.raises(SchemaValidationError, match="users: policy tenant_isolation is missing"),
    ):
        manager.run_startup("validate")


# -- data migrations see every tenant, as the owner, when they say so ----------------------------

DATA_MIGRATION = """
def upgrade():
    {cross}
    op.execute("UPDATE users SET role = 'migrated'")


def downgrade():
    pass
"""
CROSS_ON = "op.execute(\"SELECT set_config('ai_secretary.cross_tenant', 'on', true)\")"


@pytest.mark.parametrize(
    ("cross", "migrated"),
    [(CROSS_ON, len(TENANTS)), ("pass", 0)],
    ids=["cross-tenant", "without-cross-tenant"],
)
def test_a_data_migration_run_by_the_owner_reaches_every_tenant_when_it_says_so(
    tenant_db: TenantDatabase, tmp_path: Path, cross: str, migrated: int
) -> None:
    scripts = make_script_dir(tmp_path, {"0101": (HEAD, DATA_MIGRATION.format(cross=cross))})

    upgrade(tenant_db.owner_url, script_location=scripts)

    rows = owner_rows(tenant_db)
    assert len({row.tenant_id for row in rows if row.role == "migrated"}) == migrated
