"""The lint's rules: for each, a stable id, what it flags, the lock it takes, why that hurts on
a live database, and the safe way to do the same thing.

The ids are part of the interface: revisions name them in ``lint_ignore`` and CI parses them
from ``--json``. Never rename one; retire it and add another.

Every rule about locks applies only to a table that existed before the revision: a table the
same revision created is empty and unused by the running release, so nothing waits on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["RULES", "Rule", "Severity"]

#: ``error`` fails ``lint`` and ``check``; ``info`` is reported and fails nothing.
Severity = Literal["error", "info"]


@dataclass(frozen=True)
class Rule:
    id: str
    flags: str  #: what the rule flags
    lock: str  #: the lock the statement takes (or what else goes wrong)
    why: str  #: why it hurts on a live database
    safe: str  #: the safe way to get the same result
    severity: Severity = "error"
    #: Whether ``lint_ignore`` may name it (the suppression rules themselves may not).
    suppressible: bool = True


_RULES = (
    Rule(
        "create-index-non-concurrently",
        "CREATE INDEX without CONCURRENTLY on an existing table",
        "SHARE on the table for the whole build",
        "inserts, updates and deletes wait until the index is built",
        "build it concurrently, outside the transaction: `with "
        "op.get_context().autocommit_block(): op.create_index(..., "
        "postgresql_concurrently=True)`",
    ),
    Rule(
        "drop-index-non-concurrently",
        "DROP INDEX without CONCURRENTLY on an existing table",
        "ACCESS EXCLUSIVE on the table",
        "reads and writes wait, queued behind every query the DROP itself waits for",
        "`with op.get_context().autocommit_block(): op.drop_index(..., "
        "postgresql_concurrently=True)`",
    ),
    Rule(
        "concurrently-in-transaction",
        "CREATE or DROP INDEX CONCURRENTLY inside the revision's transaction",
        "none: PostgreSQL refuses the statement",
        "the upgrade fails (`cannot run inside a transaction block`), on PostgreSQL only",
        "run it inside `with op.get_context().autocommit_block():`; if the build fails there, "
        "drop the INVALID index it leaves before retrying",
    ),
    Rule(
        "add-column-not-null-without-default",
        "ADD COLUMN … NOT NULL without a default on an existing table",
        "ACCESS EXCLUSIVE",
        "fails with `column … contains null values` as soon as the table has rows",
        "add it with a constant `server_default` (PostgreSQL 11+ adds it without a rewrite), "
        "or add it nullable, backfill in batches, then set NOT NULL the safe way "
        "(see set-not-null)",
    ),
    Rule(
        "add-column-volatile-default",
        "ADD COLUMN whose value differs per row (volatile default such as gen_random_uuid(), "
        "random() or clock_timestamp(); serial; identity; stored generated column)",
        "ACCESS EXCLUSIVE for a rewrite of the whole table",
        "every row is rewritten while reads and writes wait",
        "add the column without a default, give new rows the default with "
        "`op.alter_column(..., server_default=...)`, backfill existing rows in batches",
    ),
    Rule(
        "set-not-null",
        "ALTER COLUMN … SET NOT NULL on an existing table",
        "ACCESS EXCLUSIVE while every row is scanned",
        "reads and writes wait for a full scan of the table",
        "revision 1: `op.create_check_constraint(name, table, 'col IS NOT NULL', "
        "postgresql_not_valid=True)`; revision 2: `op.execute('ALTER TABLE … VALIDATE "
        "CONSTRAINT name')`, then `op.alter_column(..., nullable=False)` (PostgreSQL 12+ "
        "skips the scan given the valid check), then drop the check",
    ),
    Rule(
        "add-foreign-key-validated",
        "ADD FOREIGN KEY (or ADD COLUMN … REFERENCES) without NOT VALID on an existing table",
        "SHARE ROW EXCLUSIVE on the table and on the referenced table while every row is checked",
        "writes to both tables wait for a full scan",
        "revision 1: `op.create_foreign_key(..., postgresql_not_valid=True)`; revision 2: "
        "`op.execute('ALTER TABLE … VALIDATE CONSTRAINT …')` (SHARE UPDATE EXCLUSIVE: reads and "
        "writes go on)",
    ),
    Rule(
        "add-check-validated",
        "ADD CHECK without NOT VALID on an existing table",
        "ACCESS EXCLUSIVE while every row is checked",
        "reads and writes wait for a full scan",
        "revision 1: `op.create_check_constraint(..., postgresql_not_valid=True)`; revision 2: "
        "`op.execute('ALTER TABLE … VALIDATE CONSTRAINT …')`",
    ),
    Rule(
        "validate-in-same-transaction",
        "VALIDATE CONSTRAINT in the transaction that added the constraint NOT VALID",
        "the lock of the ADD (ACCESS EXCLUSIVE or SHARE ROW EXCLUSIVE), held through the scan",
        "NOT VALID then buys nothing: the validation scan runs under the strong lock",
        "validate in a later revision (each revision commits on its own)",
    ),
    Rule(
        "add-unique-constraint",
        "ADD UNIQUE or PRIMARY KEY constraint that builds its index, on an existing table",
        "ACCESS EXCLUSIVE while the index is built",
        "reads and writes wait for the whole build",
        "`with op.get_context().autocommit_block(): op.create_index(name, table, cols, "
        "unique=True, postgresql_concurrently=True)`, then `op.execute('ALTER TABLE t ADD "
        "CONSTRAINT name UNIQUE USING INDEX name')` (or keep the unique index alone)",
    ),
    Rule(
        "change-column-type",
        "ALTER COLUMN … TYPE on an existing table",
        "ACCESS EXCLUSIVE; most type changes rewrite the table and its indexes",
        "reads and writes wait for the rewrite, and the release still serving may write values "
        "the new type refuses",
        "add a column of the new type, write both, backfill in batches, move readers over, drop "
        "the old column in a later release (widening VARCHAR(n) or to TEXT rewrites nothing: "
        "suppress with that reason)",
    ),
    Rule(
        "rename-column",
        "RENAME of a column of an existing table",
        "ACCESS EXCLUSIVE (brief)",
        "the release still serving queries the old name and fails until it is replaced",
        "expand and contract: add the new column, write both, backfill, move readers, drop the "
        "old one in a later release",
    ),
    Rule(
        "rename-table",
        "RENAME of an existing table",
        "ACCESS EXCLUSIVE (brief)",
        "the release still serving queries the old name and fails until it is replaced",
        "create the new table (or leave a view under the old name), move the code over, drop "
        "the old one in a later release",
    ),
    Rule(
        "drop-column",
        "DROP COLUMN of an existing table",
        "ACCESS EXCLUSIVE (brief)",
        "destructive: the data is gone, and the release still serving fails on queries that "
        "name the column",
        "stop using the column in one release (models and queries), drop it in a later one "
        "with lint_ignore = {'drop-column': 'unused since release …'}",
    ),
    Rule(
        "drop-table",
        "DROP TABLE of an existing table",
        "ACCESS EXCLUSIVE (brief)",
        "destructive: the data is gone, and the release still serving fails on queries that "
        "name the table",
        "stop using the table in one release, drop it in a later one with "
        "lint_ignore = {'drop-table': 'unused since release …'}",
    ),
    Rule(
        "missing-downgrade",
        "a revision whose downgrade() is missing, empty or raises NotImplementedError",
        "none",
        "the release cannot be rolled back with `ai-secretary-schema downgrade`",
        "write the downgrade that undoes upgrade(); if it cannot be undone, say why with "
        "lint_ignore = {'missing-downgrade': '…'}",
    ),
    Rule(
        "suppression-without-reason",
        "a lint_ignore entry without a reason (or a lint_ignore that is not a dict)",
        "none",
        "nobody can tell later whether the suppression still holds; it suppresses nothing",
        "lint_ignore = {'rule-id': 'why it is safe in this revision'}",
        suppressible=False,
    ),
    Rule(
        "unused-suppression",
        "a lint_ignore entry for a rule that did not fire in the revision (or is no rule)",
        "none",
        "a stale suppression would silence the rule if the revision changed",
        "remove the entry",
        suppressible=False,
    ),
    Rule(
        "sqlite-table-rebuild",
        "SQLite batch mode copies an existing table (CREATE TABLE _alembic_tmp_…, INSERT … "
        "SELECT, DROP, RENAME)",
        "SQLite's database write lock for the copy",
        "the copy takes time and disk in proportion to the table",
        "expected with SQLite batch mode: information only",
        severity="info",
    ),
    Rule(
        "sqlite-not-reviewed",
        "a revision whose upgrade of an in-memory SQLite database failed, so it and the "
        "revisions after it were not reviewed for SQLite table copies",
        "none",
        "the revision cannot run on SQLite as written (`ai-secretary-schema check` shows it)",
        "make the revision run on SQLite (batch operations; PostgreSQL-only SQL under `if "
        "op.get_context().dialect.name == 'postgresql':`)",
        severity="info",
    ),
)

#: Every rule, by id, in the order of the README's table.
RULES: Mapping[str, Rule] = {r.id: r for r in _RULES}
