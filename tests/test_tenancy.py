"""Tenant isolation through the ORM (SQLite, where it is the only layer), the scope, the policy
SQL and the Flask glue. PostgreSQL's row-level security: tests/test_tenancy_postgres.py."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import MakeSchemaApp
from flask import g
from sqlalchemy.orm import Session, sessionmaker

from ai_secretary_schema import (
    CrossTenantWriteError,
    Tenant,
    TenantRequiredError,
    User,
    cross_tenant,
    current_tenant,
    tenant_isolation_sql,
    tenant_scope,
    tenant_scoped_tables,
)
from ai_secretary_schema.engine import create_engine
from ai_secretary_schema.history import migrations_directory
from ai_secretary_schema.migrator import upgrade
from ai_secretary_schema.settings import SchemaSettings

USERS_PER_TENANT = {1: 3, 2: 2}


@pytest.fixture
def factory(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on a SQLite database at head with tenants 1 and 2 and their users."""
    upgrade(sqlite_url)
    engine = create_engine(sa.make_url(sqlite_url), SchemaSettings.resolve(environ={}))
    make = sessionmaker(bind=engine)
    with make() as session, cross_tenant():
        for tenant_id, count in USERS_PER_TENANT.items():
            session.add(Tenant(id=tenant_id, name=f"T{tenant_id}", slug=f"t{tenant_id}"))
            session.add_all(
                User(tenant_id=tenant_id, email=f"u{n}@t{tenant_id}", password_hash="x")
                for n in range(count)
            )
        session.commit()
    yield make
    engine.dispose()


def tenants_of(rows: Any) -> set[int]:
    return {row.tenant_id for row in rows}


# -- reads ---------------------------------------------------------------------------------------

READS: dict[str, Callable[[Session], list[Any]]] = {
    "select": lambda s: list(s.scalars(sa.select(User))),
    "filter-on-another-tenant": lambda s: list(
        s.scalars(sa.select(User).where(User.tenant_id == 2))
    ),
    "legacy-query": lambda s: s.query(User).all(),
    "join-from-tenant": lambda s: list(s.scalars(sa.select(User).join(User.tenant))),
    "relationship": lambda s: list(s.get_one(Tenant, 2).users) + list(s.get_one(Tenant, 1).users),
    "aliased": lambda s: list(s.scalars(sa.select(sa.orm.aliased(User)))),
}


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
def test_a_scoped_read_sees_its_tenants_rows_only(
    factory: sessionmaker[Session], read: Callable[[Session], list[Any]]
) -> None:
    with factory() as session, tenant_scope(1):
        rows = read(session)
    assert tenants_of(rows) <= {1}


def test_a_scoped_read_sees_every_row_of_its_tenant(factory: sessionmaker[Session]) -> None:
    with factory() as session, tenant_scope(1):
        assert len(session.scalars(sa.select(User)).all()) == USERS_PER_TENANT[1]


UNSCOPED: dict[str, Callable[[Session], Any]] = {
    "select": lambda s: s.scalars(sa.select(User)).all(),
    "count": lambda s: s.scalar(sa.select(sa.func.count(User.id))),
    "get": lambda s: s.get(User, 1),
    "update": lambda s: s.execute(sa.update(User).values(full_name="x")),
    "delete": lambda s: s.execute(sa.delete(User)),
    "relationship": lambda s: s.get_one(Tenant, 1).users,
}


@pytest.mark.parametrize("query", UNSCOPED.values(), ids=UNSCOPED.keys())
def test_without_a_tenant_the_orm_raises_naming_the_missing_scope(
    factory: sessionmaker[Session], query: Callable[[Session], Any]
) -> None:
    with factory() as session, pytest.raises(TenantRequiredError, match="tenant_scope") as raised:
        query(session)
    assert raised.value.entities == ("User",)


def test_without_a_tenant_a_join_to_users_matches_nothing(factory: sessionmaker[Session]) -> None:
    with factory() as session:
        assert session.scalars(sa.select(Tenant).join(Tenant.users)).all() == []


def test_tables_that_are_not_tenant_scoped_need_no_tenant(factory: sessionmaker[Session]) -> None:
    with factory() as session:
        assert len(session.scalars(sa.select(Tenant)).all()) == 2


def test_cross_tenant_sees_every_row(factory: sessionmaker[Session]) -> None:
    with factory() as session, cross_tenant():
        assert len(session.scalars(sa.select(User)).all()) == sum(USERS_PER_TENANT.values())


# -- writes --------------------------------------------------------------------------------------


def test_a_new_row_gets_the_tenant_of_its_scope(factory: sessionmaker[Session]) -> None:
    with factory() as session, tenant_scope(2):
        user = User(email="new@t2", password_hash="x")
        session.add(user)
        session.commit()
        assert user.tenant_id == 2


def change_tenant(session: Session, user: User) -> None:
    user.tenant_id = 2


WRITES: dict[str, Callable[[Session, User], None]] = {
    "insert-for-another-tenant": lambda s, u: s.add(
        User(tenant_id=2, email="x@t2", password_hash="x")
    ),
    "move-own-row-to-another-tenant": change_tenant,
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_writing_another_tenants_row_raises(
    factory: sessionmaker[Session], write: Callable[[Session, User], None]
) -> None:
    with factory() as session, tenant_scope(1):
        own = session.scalars(sa.select(User)).first()
        assert own is not None
        write(session, own)
        with pytest.raises(CrossTenantWriteError, match="tenant 2 inside the scope of tenant 1"):
            session.flush()


@pytest.mark.parametrize("action", ["update", "delete"])
def test_a_row_of_another_tenant_loaded_elsewhere_cannot_be_changed(
    factory: sessionmaker[Session], action: str
) -> None:
    with factory() as session:
        with cross_tenant():
            other = session.scalars(sa.select(User).where(User.tenant_id == 2)).first()
        assert other is not None
        with tenant_scope(1):
            if action == "update":
                other.full_name = "changed"
            else:
                session.delete(other)
            with pytest.raises(CrossTenantWriteError):
                session.flush()


def test_an_orm_update_changes_its_tenants_rows_only(factory: sessionmaker[Session]) -> None:
    with factory() as session, tenant_scope(1):
        result = session.execute(sa.update(User).values(full_name="mine"))
        session.commit()
    assert result.rowcount == USERS_PER_TENANT[1]  # type: ignore[attr-defined]


def test_writing_with_no_tenant_raises(factory: sessionmaker[Session]) -> None:
    with factory() as session:
        session.add(User(tenant_id=1, email="x@t1", password_hash="x"))
        with pytest.raises(TenantRequiredError, match="cannot insert a User"):
            session.flush()


# -- the scope -----------------------------------------------------------------------------------


@pytest.mark.parametrize("tenant_id", [0, -1, True, "1", 1.0])
def test_a_tenant_id_is_a_positive_integer(tenant_id: Any) -> None:
    with pytest.raises(ValueError, match="positive integer"), tenant_scope(tenant_id):
        pass


def test_nested_scopes_restore_the_outer_one() -> None:
    with tenant_scope(1):
        with tenant_scope(2):
            assert current_tenant() == 2
        with tenant_scope(None):
            assert current_tenant() is None
        assert current_tenant() == 1
    assert current_tenant() is None


def test_a_pool_thread_does_not_inherit_the_scope() -> None:
    with tenant_scope(1), ThreadPoolExecutor(1) as pool:
        assert pool.submit(current_tenant).result() is None


# -- declared once, one policy -------------------------------------------------------------------


def test_users_is_the_one_tenant_scoped_table() -> None:
    assert [table.name for table in tenant_scoped_tables()] == ["users"]


def test_the_shipped_revision_runs_the_statements_of_the_helper() -> None:
    # A future tenant-scoped table gets the same policy from the same helper.
    path = next((migrations_directory() / "versions").glob("0003_*.py"))
    spec = importlib.util.spec_from_file_location("revision_0003", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (module.revision, module.UPGRADE) == ("0003", tenant_isolation_sql("users"))


# -- Flask ---------------------------------------------------------------------------------------


@pytest.fixture
def flask_app(sqlite_url: str, make_schema_app: MakeSchemaApp, factory: Any) -> Any:
    app, schema = make_schema_app(database_url=sqlite_url)

    @app.before_request
    def authenticate() -> None:
        g.tenant_id = int(app.config.get("TEST_TENANT", 1))

    @app.get("/users")
    def users() -> dict[str, Any]:
        rows = schema.session.scalars(sa.select(User)).all()
        return {"tenants": sorted(tenants_of(rows)), "count": len(rows)}

    return app, schema


def test_the_request_tenant_comes_from_flask_g(flask_app: Any) -> None:
    app, _schema = flask_app
    app.config["TEST_TENANT"] = 2
    assert app.test_client().get("/users").json == {"tenants": [2], "count": 2}


def test_a_context_without_g_tenant_id_raises(flask_app: Any) -> None:
    app, schema = flask_app
    with app.app_context(), pytest.raises(TenantRequiredError):
        schema.session.scalars(sa.select(User)).all()


def test_schema_tenant_scope_wins_over_g(flask_app: Any) -> None:
    app, schema = flask_app
    with app.app_context(), schema.tenant_scope(2):
        g.tenant_id = 1
        assert tenants_of(schema.session.scalars(sa.select(User))) == {2}


def test_background_work_takes_its_tenant_explicitly(flask_app: Any) -> None:
    _app, schema = flask_app

    def tenants_seen() -> set[int]:
        return tenants_of(schema.session.scalars(sa.select(User)))

    with ThreadPoolExecutor(1) as pool:
        assert schema.context.submit_for_tenant(pool, 2, tenants_seen).result() == {2}
        with pytest.raises(TenantRequiredError):
            schema.context.submit(pool, tenants_seen).result()


def test_a_background_context_never_inherits_the_callers_tenant(flask_app: Any) -> None:
    app, schema = flask_app
    with app.app_context(), tenant_scope(1):
        g.tenant_id = 1
        with schema.context.tenant_context(None):
            assert current_tenant() is None
            with pytest.raises(TenantRequiredError):
                schema.session.scalars(sa.select(User)).all()
