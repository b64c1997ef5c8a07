"""Row-level security on users: each tenant sees and writes its own rows only.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 09:00:00

PostgreSQL only (SQLite has no row-level security: there the ORM's tenant criterion is the
isolation). Row-level security is enabled and forced, so the table owner is subject to it too;
the policy ``tenant_isolation`` lets every role see and write the rows whose ``tenant_id`` is the
transaction's ``ai_secretary.tenant_id`` setting, and an unset or empty setting matches no row.
The policy ``cross_tenant`` lets the role running this revision (the owner, who migrates) see
every row when ``ai_secretary.cross_tenant`` is ``'on'`` in its transaction: data migrations.

The statements are ``ai_secretary_schema.tenancy.tenant_isolation_sql("users")`` as it was when
this revision was written, copied because a revision must not import the package (it runs with
every later version); a test checks that they are still the same.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TENANT = "tenant_id = NULLIF(current_setting('ai_secretary.tenant_id', true), '')::integer"
_CROSS = "current_setting('ai_secretary.cross_tenant', true) = 'on'"

UPGRADE = [
    "ALTER TABLE users ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE users FORCE ROW LEVEL SECURITY",
    "CREATE POLICY tenant_isolation ON users AS PERMISSIVE FOR ALL TO PUBLIC "
    f"USING ({_TENANT}) WITH CHECK ({_TENANT})",
    "CREATE POLICY cross_tenant ON users AS PERMISSIVE FOR ALL TO CURRENT_USER "
    f"USING ({_CROSS}) WITH CHECK ({_CROSS})",
]

DOWNGRADE = [
    "DROP POLICY IF EXISTS cross_tenant ON users",
    "DROP POLICY IF EXISTS tenant_isolation ON users",
    "ALTER TABLE users NO FORCE ROW LEVEL SECURITY",
    "ALTER TABLE users DISABLE ROW LEVEL SECURITY",
]


def _run(statements: list[str]) -> None:
    # get_context().dialect works offline (--sql) too, where there is no bind.
    if op.get_context().dialect.name != "postgresql":
        return
    for statement in statements:
        op.execute(statement)


def upgrade() -> None:
    _run(UPGRADE)


def downgrade() -> None:
    _run(DOWNGRADE)
