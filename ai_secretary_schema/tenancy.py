"""Tenant isolation: declared once on the models, set per transaction, enforced twice.

**Declared once.** A model that inherits :class:`TenantScoped` gets a ``tenant_id`` column
(→ ``tenants.id``, ``ON DELETE CASCADE``, indexed) and its table is marked tenant-scoped
(``table.info["tenant_scoped"]``); :func:`tenant_scoped_tables` lists those tables.

**The tenant of the current work** is set with :func:`tenant_scope` (a context manager, held in
a :class:`~contextvars.ContextVar`, so threads and asyncio tasks never share it), or by a
per-session *resolver* kept in ``Session.info`` (the Flask extension's reads ``flask.g``).
:func:`cross_tenant` is the one documented way to work across tenants on purpose.

**Two layers**, installed on every ORM :class:`~sqlalchemy.orm.Session` of the process when this
module is imported (the models import it, so no session can use them without it):

* *PostgreSQL row-level security*: each transaction of the session sets
  ``ai_secretary.tenant_id`` transaction-locally (``SET LOCAL`` in the round trip of its first
  statement with psycopg2, ``set_config(…, true)`` before it otherwise), so nothing of it is
  left on a pooled connection when the transaction ends. The policies of the migrations
  (:func:`tenant_isolation_sql`) compare ``tenant_id`` with that setting and fail closed when it
  is unset or empty. If the scope changes while a transaction is open, the setting follows it
  before the next statement of the session.
* *The ORM*: every ORM statement gets a ``with_loader_criteria`` limiting tenant-scoped entities
  to the scope's tenant (SQLite's only isolation; on PostgreSQL the second layer). With no
  tenant, a statement on a tenant-scoped entity raises :class:`TenantRequiredError`, and a row
  written with another tenant's ``tenant_id`` raises :class:`CrossTenantWriteError`.

:func:`policy_differences` is the drift check of the policies (``validate``, ``check``, the
startup hook), and :func:`tenant_isolation_sql` the DDL a revision uses for a tenant-scoped table.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine, ForeignKey, MetaData, Table, event
from sqlalchemy.orm import (
    Mapped,
    Mapper,
    ORMExecuteState,
    Session,
    SessionTransaction,
    mapped_column,
    object_session,
    with_loader_criteria,
)

from ai_secretary_schema.errors import CrossTenantWriteError, TenantRequiredError

__all__ = [
    "CROSS_TENANT_POLICY",
    "CROSS_TENANT_SETTING",
    "TENANT_POLICY",
    "TENANT_RESOLVER",
    "TENANT_SETTING",
    "TenantScoped",
    "cross_tenant",
    "current_tenant",
    "drop_tenant_isolation_sql",
    "policy_differences",
    "set_tenant",
    "tenant_isolation_sql",
    "tenant_scope",
    "tenant_scoped_tables",
]

#: The transaction-local setting the policies compare ``tenant_id`` with.
TENANT_SETTING = "ai_secretary.tenant_id"
#: The transaction-local setting that lets the table owner (only) see every tenant.
CROSS_TENANT_SETTING = "ai_secretary.cross_tenant"
#: The policy every role is subject to: rows of the transaction's tenant only.
TENANT_POLICY = "tenant_isolation"
#: The policy of the table owner (the role that migrates): every row, when asked for explicitly.
CROSS_TENANT_POLICY = "cross_tenant"
#: ``Session.info`` key of a callable returning the session's tenant when no scope is set.
TENANT_RESOLVER = "ai_secretary_schema.tenant_resolver"

_TABLE_FLAG = "tenant_scoped"
_APPLIED = "ai_secretary_schema.tenant_applied"


# -- declared once -------------------------------------------------------------------------------


class TenantScoped:
    """Mixin of a model whose rows belong to one tenant.

    Adds ``tenant_id`` (→ ``tenants.id`` ``ON DELETE CASCADE``, indexed, not null) and marks
    the table tenant-scoped, which is what the policies, the drift check and the ORM guard
    look at. List it before the declarative base: ``class Note(TenantScoped, Base)``.
    """

    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The declarative base maps the class (and makes __table__) in its own
        # __init_subclass__, which super() runs: the table exists afterwards.
        super().__init_subclass__(**kwargs)
        table = cls.__dict__.get("__table__")
        if isinstance(table, Table):
            table.info[_TABLE_FLAG] = True


def is_tenant_scoped(table: Table) -> bool:
    return bool(table.info.get(_TABLE_FLAG))


def tenant_scoped_tables(metadata: MetaData | None = None) -> list[Table]:
    """The tenant-scoped tables of ``metadata`` (default: the package's models), sorted."""
    if metadata is None:
        from ai_secretary_schema.models import Base

        metadata = Base.metadata
    return sorted(
        (table for table in metadata.tables.values() if is_tenant_scoped(table)),
        key=lambda table: table.name,
    )


# -- the scope ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scope:
    tenant_id: int | None
    cross_tenant: bool = False


_NO_TENANT = _Scope(None)
_CROSS_TENANT = _Scope(None, cross_tenant=True)
_scope: ContextVar[_Scope | None] = ContextVar("ai_secretary_schema_tenant", default=None)


def _checked(tenant_id: object) -> int:
    # bool is an int: True would silently mean tenant 1.
    if isinstance(tenant_id, bool) or not isinstance(tenant_id, int) or tenant_id < 1:
        raise ValueError(
            f"a tenant id is a positive integer (tenants.id), not {tenant_id!r}: pass the id of "
            "the request's tenant"
        )
    return tenant_id


@contextmanager
def _scoped(scope: _Scope) -> Iterator[None]:
    token = _scope.set(scope)
    try:
        yield
    finally:
        _scope.reset(token)


@contextmanager
def tenant_scope(tenant_id: int | None) -> Iterator[int | None]:
    """Every session used inside the block works for ``tenant_id`` only (see the module doc).

    ``None`` means explicitly *no* tenant (a background context that must not inherit its
    caller's): tenant-scoped queries then raise :class:`TenantRequiredError` and PostgreSQL
    shows no tenant-scoped row. Nested scopes restore the outer one when they end.
    """
    scope = _NO_TENANT if tenant_id is None else _Scope(_checked(tenant_id))
    with _scoped(scope):
        yield scope.tenant_id


@contextmanager
def cross_tenant() -> Iterator[None]:
    """Work across tenants on purpose (reports, data migrations, tenant deletion).

    The ORM adds no tenant criterion and raises nothing; PostgreSQL sets
    ``ai_secretary.cross_tenant = 'on'`` for the transaction, which the ``cross_tenant`` policy
    honours for the table owner only: the application role still sees no row without a tenant,
    whatever it sets. Run cross-tenant work as the owner (the role that migrates).
    """
    with _scoped(_CROSS_TENANT):
        yield


def current_tenant(session: Session | None = None) -> int | None:
    """The tenant in scope (the block's, else ``session``'s resolver's), or ``None``."""
    return _resolve(session).tenant_id


def _resolve(session: Session | None) -> _Scope:
    scope = _scope.get()
    if scope is not None:
        return scope
    resolver: Callable[[], object] | None = (
        None if session is None else session.info.get(TENANT_RESOLVER)
    )
    if resolver is not None:
        tenant = resolver()
        if tenant is not None:
            return _Scope(_checked(tenant))
    return _NO_TENANT


# -- PostgreSQL: the setting, per transaction ------------------------------------------------------

_SET_CONFIG = (
    f"SELECT set_config('{TENANT_SETTING}', {{tenant}}, true), "
    f"set_config('{CROSS_TENANT_SETTING}', {{cross}}, true)"
)
_SET = sa.text(_SET_CONFIG.format(tenant=":ais_tenant", cross=":ais_cross"))
#: The same, for a DBAPI cursor of psycopg2 or psycopg (pyformat).
_SET_PYFORMAT = _SET_CONFIG.format(tenant="%(ais_tenant)s", cross="%(ais_cross)s")


def _values(tenant_id: int | None, cross: bool) -> dict[str, str]:
    """The settings' values: the tenant's id (checked), or '' for none; 'on', or ''."""
    return {
        "ais_tenant": "" if tenant_id is None else str(_checked(tenant_id)),
        "ais_cross": "on" if cross else "",
    }


def set_tenant(connection: Connection, tenant_id: int | None, *, cross: bool = False) -> None:
    """Set the tenant of ``connection``'s current transaction (Core code without a session).

    Transaction-local (``set_config(…, true)``): it ends with the transaction. ``None`` clears
    it. Does nothing on a dialect other than PostgreSQL.
    """
    if connection.dialect.name != "postgresql":
        return
    connection.execute(_SET, _values(tenant_id, cross))


def _apply(
    session: Session, connection: Connection, scope: _Scope, *, deferred: bool = False
) -> None:
    applied: dict[Connection, _Scope] = session.info.setdefault(_APPLIED, {})
    if applied.get(connection, _NO_TENANT) != scope:
        if deferred:
            _defer(connection, scope)
        else:
            set_tenant(connection, scope.tenant_id, cross=scope.cross_tenant)
    applied[connection] = scope


def _after_begin(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
    if connection.dialect.name != "postgresql":
        return
    # A new transaction starts with nothing set (only transaction-local settings are ever
    # used), so "no tenant" costs no statement.
    _apply(session, connection, _resolve(session), deferred=True)


# The setting travels with the transaction's first statement rather than in a round trip of
# its own: a request's one query then costs one round trip, as without isolation. Deferred
# per transaction (the pending entry names the transaction it belongs to, so one left by a
# transaction that ran no statement is never sent in another).
_PENDING = "ai_secretary_schema.pending_tenant"


def _defer(connection: Connection, scope: _Scope) -> None:
    values = _values(scope.tenant_id, scope.cross_tenant)
    connection.info[_PENDING] = (connection.get_transaction(), values)


def _set_local(values: dict[str, str]) -> str:
    """``SET LOCAL`` of the settings: a utility statement, which PostgreSQL neither plans nor
    returns rows for. The values are digits, 'on' or empty (see :func:`_values`), so they are
    written inline."""
    settings = ((TENANT_SETTING, values["ais_tenant"]), (CROSS_TENANT_SETTING, values["ais_cross"]))
    return "; ".join(f"SET LOCAL {name} = '{value}'" for name, value in settings if value)


def _send_pending(
    connection: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> tuple[str, Any]:
    pending = connection.info.pop(_PENDING, None) if connection.info else None
    if pending is None:
        return statement, parameters
    transaction, values = pending
    if transaction is not connection.get_transaction():
        return statement, parameters  # left by a transaction that ran no statement
    if connection.dialect.driver == "psycopg2" and not executemany:
        # psycopg2 sends "SET LOCAL …; <statement>" in one round trip and returns the
        # statement's result; the prefix holds no placeholder and no percent sign.
        prefix = _set_local(values)
        return (f"{prefix}; {statement}" if prefix else statement), parameters
    cursor.execute(_SET_PYFORMAT, values)
    return statement, parameters


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_APPLIED, None)


def _follow_scope(session: Session, scope: _Scope) -> None:
    """The scope changed while a transaction was open: the setting follows before the next
    statement."""
    applied: dict[Connection, _Scope] | None = session.info.get(_APPLIED)
    if applied:
        for connection, was in list(applied.items()):
            if was != scope and not connection.closed:
                _apply(session, connection, scope)


# -- the ORM guard --------------------------------------------------------------------------------


def _scoped_names(mappers: Any) -> list[str]:
    return sorted(
        mapper.class_.__name__ for mapper in mappers if issubclass(mapper.class_, TenantScoped)
    )


def _on_orm_execute(state: ORMExecuteState) -> None:
    scope = _resolve(state.session)
    _follow_scope(state.session, scope)
    if scope.cross_tenant or not state.is_orm_statement:
        return
    if scope.tenant_id is None:
        touched = _scoped_names(state.all_mappers)
        if touched:
            raise TenantRequiredError(
                f"{', '.join(touched)} is tenant-scoped and no tenant is in scope: run it "
                "inside `with tenant_scope(tenant_id):` (Flask: set flask.g.tenant_id, or "
                "`with schema.tenant_scope(tenant_id):`), or inside `with cross_tenant():` "
                "for deliberate cross-tenant work",
                entities=touched,
            )
        if state.is_select or state.is_update or state.is_delete:
            # A join to a tenant-scoped entity from another one: no rows of it.
            state.statement = state.statement.options(
                with_loader_criteria(TenantScoped, lambda cls: sa.false(), include_aliases=True)
            )
        return
    if state.is_select or state.is_update or state.is_delete:
        state.statement = state.statement.options(_tenant_criteria(scope.tenant_id))


@functools.lru_cache(maxsize=4096)
def _tenant_criteria(tenant_id: int) -> Any:
    """The ORM criterion of one tenant, built once: analysing the lambda is most of what the
    guard costs a query, and an option with a fixed tenant can be shared by every query."""
    return with_loader_criteria(
        TenantScoped, lambda cls: cls.tenant_id == tenant_id, include_aliases=True
    )


def _before_flush(session: Session, flush_context: Any, instances: Any) -> None:
    _follow_scope(session, _resolve(session))


def _check_write(action: str) -> Callable[[Mapper[Any], Connection, Any], None]:
    def check(mapper: Mapper[Any], connection: Connection, target: Any) -> None:
        scope = _resolve(object_session(target))
        if scope.cross_tenant:
            return
        name = type(target).__name__
        if scope.tenant_id is None:
            raise TenantRequiredError(
                f"cannot {action} a {name} with no tenant in scope: run it inside "
                "`with tenant_scope(tenant_id):` (Flask: set flask.g.tenant_id), or inside "
                "`with cross_tenant():` for deliberate cross-tenant work",
                entities=[name],
            )
        if action == "insert" and target.tenant_id is None:
            target.tenant_id = scope.tenant_id
        if target.tenant_id != scope.tenant_id:
            raise CrossTenantWriteError(
                f"cannot {action} a {name} of tenant {target.tenant_id} inside the scope of "
                f"tenant {scope.tenant_id}: a row is written by its own tenant, or inside "
                "`with cross_tenant():`",
                tenant_id=scope.tenant_id,
                row_tenant_id=target.tenant_id,
            )

    return check


event.listen(Session, "after_begin", _after_begin)
event.listen(Engine, "before_cursor_execute", _send_pending, retval=True)
event.listen(Session, "after_transaction_end", _after_transaction_end)
event.listen(Session, "do_orm_execute", _on_orm_execute)
event.listen(Session, "before_flush", _before_flush)
for _action in ("insert", "update", "delete"):
    event.listen(TenantScoped, f"before_{_action}", _check_write(_action), propagate=True)


# -- the policies ---------------------------------------------------------------------------------

#: Matches the transaction's tenant; NULLIF makes an unset ('' after a reset, NULL before) or
#: empty setting compare as NULL, i.e. match no row, rather than raise on the cast.
TENANT_EXPRESSION = f"tenant_id = NULLIF(current_setting('{TENANT_SETTING}', true), '')::integer"
CROSS_TENANT_EXPRESSION = f"current_setting('{CROSS_TENANT_SETTING}', true) = 'on'"


def _quoted(name: str) -> str:
    # Plain lower-case names stay bare, as a person would write them in a revision.
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def tenant_isolation_sql(table: str) -> list[str]:
    """The statements that isolate the tenant-scoped ``table`` (PostgreSQL), in order.

    Row-level security enabled and forced (so the owner is subject to it too); the policy
    ``tenant_isolation`` for every role and command, ``USING`` and ``WITH CHECK`` the
    transaction's tenant; the policy ``cross_tenant`` for the role that runs it (the owner, who
    migrates) only, when ``ai_secretary.cross_tenant`` is ``'on'``. A revision copies these
    statements (revisions never import the package) inside ``if dialect == "postgresql"``.
    """
    name = _quoted(table)
    return [
        f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY",
        f"CREATE POLICY {TENANT_POLICY} ON {name} AS PERMISSIVE FOR ALL TO PUBLIC "
        f"USING ({TENANT_EXPRESSION}) WITH CHECK ({TENANT_EXPRESSION})",
        f"CREATE POLICY {CROSS_TENANT_POLICY} ON {name} AS PERMISSIVE FOR ALL TO CURRENT_USER "
        f"USING ({CROSS_TENANT_EXPRESSION}) WITH CHECK ({CROSS_TENANT_EXPRESSION})",
    ]


def drop_tenant_isolation_sql(table: str) -> list[str]:
    """The statements that undo :func:`tenant_isolation_sql` (a revision's downgrade)."""
    name = _quoted(table)
    return [
        f"DROP POLICY IF EXISTS {CROSS_TENANT_POLICY} ON {name}",
        f"DROP POLICY IF EXISTS {TENANT_POLICY} ON {name}",
        f"ALTER TABLE {name} NO FORCE ROW LEVEL SECURITY",
        f"ALTER TABLE {name} DISABLE ROW LEVEL SECURITY",
    ]


def _normalised(expression: str | None) -> str:
    """An expression as PostgreSQL deparses it and as written compare equal: casts to text,
    parentheses and white space are what deparsing adds."""
    if expression is None:
        return ""
    return re.sub(r"::text|[()\s]", "", expression).lower()


@dataclass(frozen=True)
class _Policy:
    command: str
    permissive: bool
    roles: frozenset[str]
    using: str
    check: str


def _expected(owner: str) -> dict[str, _Policy]:
    tenant, cross = _normalised(TENANT_EXPRESSION), _normalised(CROSS_TENANT_EXPRESSION)
    return {
        TENANT_POLICY: _Policy("ALL", True, frozenset({"public"}), tenant, tenant),
        CROSS_TENANT_POLICY: _Policy("ALL", True, frozenset({owner}), cross, cross),
    }


_TABLES_SQL = sa.text(
    """
SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner) AS owner
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND c.relname IN :tables
"""
).bindparams(sa.bindparam("tables", expanding=True))

_POLICIES_SQL = sa.text(
    """
SELECT tablename, policyname, permissive, roles::text[] AS roles, cmd, qual, with_check
FROM pg_catalog.pg_policies
WHERE schemaname = current_schema() AND tablename IN :tables
"""
).bindparams(sa.bindparam("tables", expanding=True))


def policy_differences(connection: Connection, metadata: MetaData | None = None) -> list[str]:
    """How the row-level security of the tenant-scoped tables of ``metadata`` differs from what
    :func:`tenant_isolation_sql` makes, one line per difference naming the table; empty when
    they match, on SQLite (no row-level security there), or when no table is tenant-scoped. A
    tenant-scoped table missing from the database is left to the schema comparison."""
    tables = [table.name for table in tenant_scoped_tables(metadata)]
    if connection.dialect.name != "postgresql" or not tables:
        return []
    found = {row.relname: row for row in connection.execute(_TABLES_SQL, {"tables": tables})}
    policies: dict[str, dict[str, _Policy]] = {}
    for row in connection.execute(_POLICIES_SQL, {"tables": tables}):
        policies.setdefault(row.tablename, {})[row.policyname] = _Policy(
            row.cmd,
            row.permissive == "PERMISSIVE",
            frozenset(row.roles),
            _normalised(row.qual),
            _normalised(row.with_check),
        )
    lines: list[str] = []
    for name in tables:
        table = found.get(name)
        if table is None:
            continue
        if not table.relrowsecurity:
            lines.append(f"{name}: not enabled on this tenant-scoped table")
        if not table.relforcerowsecurity:
            lines.append(
                f"{name}: not forced on this tenant-scoped table, so its owner bypasses it"
            )
        actual = policies.get(name, {})
        for policy, expected in _expected(table.owner).items():
            if policy not in actual:
                lines.append(f"{name}: policy {policy} is missing (tenant-scoped table)")
            elif actual[policy] != expected:
                lines.append(
                    f"{name}: policy {policy} differs from the one the migrations create "
                    f"(found {_describe(actual[policy])}; expected {_describe(expected)})"
                )
        for policy in sorted(set(actual) - set(_expected(table.owner))):
            lines.append(
                f"{name}: unexpected policy {policy} (a permissive policy widens what every "
                "role it applies to can see)"
            )
    return lines


def _describe(policy: _Policy) -> str:
    kind = "permissive" if policy.permissive else "restrictive"
    roles = ", ".join(sorted(policy.roles))
    return f"{kind} FOR {policy.command} TO {roles} USING {policy.using} WITH CHECK {policy.check}"
