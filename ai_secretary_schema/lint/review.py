"""The review: each step's statements against the rules, knowing what the steps before created.

The review walks every step from base, in order, keeping what the rules need to know about the
schema so far: which tables exist and which revision created them (a table created by the
revision under review is exempt from the lock rules), which table each index is on (``DROP
INDEX`` names no table), which constraints were added ``NOT VALID`` and in which transaction,
and which columns a validated ``CHECK (column IS NOT NULL)`` already proves not null (PostgreSQL
12+ then sets NOT NULL without a scan). Only the selected revisions report findings; the others
are walked for that knowledge alone. A revision's ``lint_ignore`` is applied to its own findings
last.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from ai_secretary_schema.lint.findings import Finding
from ai_secretary_schema.lint.rules import RULES
from ai_secretary_schema.lint.sql import (
    AddColumn,
    AddConstraint,
    AlterColumnType,
    Begin,
    CreateIndex,
    CreateTable,
    DropColumn,
    DropConstraint,
    DropIndex,
    DropTable,
    End,
    Operation,
    RenameColumn,
    RenameTable,
    SetNotNull,
    Statement,
    ValidateConstraint,
    operations,
)
from ai_secretary_schema.lint.steps import History, Revision, Step

__all__ = ["review"]

_TMP_PREFIX = "_alembic_tmp_"


@dataclass(frozen=True)
class _NotValid:
    table: str
    transaction: int | None
    not_null_column: str | None


@dataclass
class _Schema:
    """What the steps so far did, as far as the rules need to know."""

    tables: dict[str, str] = field(default_factory=dict)  #: table -> revision that created it
    indexes: dict[str, str] = field(default_factory=dict)  #: index -> its table
    not_valid: dict[str, _NotValid] = field(default_factory=dict)  #: constraint -> its ADD
    #: (table, column) -> the validated CHECK (column IS NOT NULL) that proves it not null.
    proven: dict[tuple[str, str], str] = field(default_factory=dict)
    transactions: int = 0  #: BEGINs so far: each transaction's number
    transaction: int | None = None  #: the open transaction, ``None`` in autocommit


def review(history: History, selected: Collection[str]) -> list[Finding]:
    """The findings of the ``selected`` revisions of ``history``, suppressions applied."""
    schema = _Schema()
    findings: list[Finding] = []
    for step in history.steps:
        found = _StepReview(step, schema).run()
        if step.revision.id not in selected:
            continue
        found += _sqlite(step)
        failure = history.sqlite_failure
        if failure is not None and failure[0] == step.revision.id:
            found.append(_finding("sqlite-not-reviewed", step.revision, "upgrade()", failure[1]))
        findings += _suppress(step.revision, found)
    return findings


def _finding(
    rule_id: str, revision: Revision, statement: str, detail: str, table: str | None = None
) -> Finding:
    rule = RULES[rule_id]
    lock = "" if rule.lock.startswith("none") else f"{rule.lock}; "
    return Finding(
        rule=rule_id,
        revision=revision.id,
        statement=statement,
        message=f"{detail}: {lock}{rule.why}",
        safe=rule.safe,
        table=table,
        file=revision.file,
        severity=rule.severity,
    )


class _StepReview:
    """One step's PostgreSQL statements, reviewed in order."""

    def __init__(self, step: Step, schema: _Schema) -> None:
        self.revision = step.revision
        self.step = step
        self.schema = schema
        self.created: set[str] = set()  #: tables this revision created (exempt from locks)
        self.found: list[Finding] = []
        self.statement: Statement | None = None

    def run(self) -> list[Finding]:
        did_something = False
        for statement in self.step.postgresql:
            self.statement = statement
            found = operations(statement)
            if not (len(found) == 1 and isinstance(found[0], Begin | End)):
                did_something = True
            for operation in found:
                self._operation(operation)
        gap = self.revision.downgrade_gap
        if gap is not None and did_something:
            self.found.append(
                _finding(
                    "missing-downgrade",
                    self.revision,
                    "def downgrade()",
                    f"downgrade() of {self.revision.file} is {gap}",
                )
            )
        return self.found

    def _flag(self, rule_id: str, table: str | None, detail: str) -> None:
        assert self.statement is not None
        self.found.append(_finding(rule_id, self.revision, self.statement.one_line, detail, table))

    def _where(self, table: str) -> str:
        """``table`` with where it came from, for messages."""
        creator = self.schema.tables.get(table)
        if creator is None:
            return f"{table} (created by no revision: assumed to exist)"
        return f"{table} (created by revision {creator})"

    def _operation(self, operation: Operation) -> None:
        schema = self.schema
        match operation:
            case Begin():
                schema.transactions += 1
                schema.transaction = schema.transactions
            case End():
                schema.transaction = None
            case CreateTable(table=table):
                self.created.add(table)
                schema.tables[table] = self.revision.id
            case DropTable(table=table):
                if table not in self.created:
                    self._flag("drop-table", table, f"drops {self._where(table)}")
                self._forget(table)
            case RenameTable(table=table, new_name=new_name):
                if table not in self.created:
                    self._flag("rename-table", table, f"renames {self._where(table)}")
                self._rename(table, new_name)
            case CreateIndex(index=index, table=table, concurrently=concurrently):
                if index is not None:
                    schema.indexes[index] = table
                self._index(
                    "create-index-non-concurrently",
                    table,
                    concurrently,
                    f"builds index {index or '(unnamed)'} on {self._where(table)}",
                )
            case DropIndex(index=index, concurrently=concurrently):
                on = schema.indexes.pop(index, None)
                where = self._where(on) if on is not None else "a table no revision created"
                self._index(
                    "drop-index-non-concurrently",
                    on,
                    concurrently,
                    f"drops index {index} of {where}",
                )
            case AddColumn(table=table):
                if table not in self.created:
                    self._add_column(operation)
            case DropColumn(table=table, column=column):
                if table not in self.created:
                    where = self._where(table)
                    self._flag("drop-column", table, f"drops column {column} of {where}")
            case RenameColumn(table=table, column=column, new_name=new_name):
                if table not in self.created:
                    self._flag(
                        "rename-column",
                        table,
                        f"renames column {column} of {self._where(table)} to {new_name}",
                    )
            case AlterColumnType(table=table, column=column, type=new_type):
                if table not in self.created:
                    self._flag(
                        "change-column-type",
                        table,
                        f"changes column {column} of {self._where(table)} to {new_type}",
                    )
            case SetNotNull(table=table, column=column):
                if table not in self.created and (table, column) not in schema.proven:
                    self._flag(
                        "set-not-null",
                        table,
                        f"sets column {column} of {self._where(table)} NOT NULL, with no "
                        f"validated CHECK ({column} IS NOT NULL) to skip the scan",
                    )
            case AddConstraint():
                self._add_constraint(operation)
            case ValidateConstraint(table=table, name=name):
                added = schema.not_valid.pop(name, None)
                if added is None:
                    return
                if added.not_null_column is not None:
                    schema.proven[(table, added.not_null_column)] = name
                same = added.transaction is not None and added.transaction == schema.transaction
                if same and table not in self.created:
                    self._flag(
                        "validate-in-same-transaction",
                        table,
                        f"validates {name} on {self._where(table)} in the transaction that "
                        "added it NOT VALID",
                    )
            case DropConstraint(name=name):
                schema.not_valid.pop(name, None)
                schema.proven = {k: v for k, v in schema.proven.items() if v != name}

    def _index(self, rule_id: str, table: str | None, concurrently: bool, detail: str) -> None:
        if concurrently:
            if self.schema.transaction is not None:
                self._flag("concurrently-in-transaction", table, f"{detail}, in a transaction")
        elif table is None or table not in self.created:
            self._flag(rule_id, table, detail)

    def _add_column(self, column: AddColumn) -> None:
        what = f"adds column {column.column} to {self._where(column.table)}"
        if column.rewrite is not None:
            self._flag("add-column-volatile-default", column.table, f"{what}: {column.rewrite}")
        elif column.not_null and column.default is None:
            self._flag("add-column-not-null-without-default", column.table, f"{what}, NOT NULL")
        if column.references:
            self._flag("add-foreign-key-validated", column.table, f"{what}, with REFERENCES")
        if column.unique:
            self._flag("add-unique-constraint", column.table, f"{what}, UNIQUE")
        if column.check:
            self._flag("add-check-validated", column.table, f"{what}, with a CHECK")

    def _add_constraint(self, constraint: AddConstraint) -> None:
        schema = self.schema
        table, name = constraint.table, constraint.name
        if name is not None and constraint.not_valid:
            schema.not_valid[name] = _NotValid(
                table, schema.transaction, constraint.not_null_column
            )
        elif name is not None and constraint.not_null_column is not None:
            schema.proven[(table, constraint.not_null_column)] = name
        if table in self.created:
            return
        what = f"adds {constraint.kind} {name or '(unnamed)'} to {self._where(table)}"
        if constraint.kind == "FOREIGN KEY" and not constraint.not_valid:
            self._flag("add-foreign-key-validated", table, what)
        elif constraint.kind == "CHECK" and not constraint.not_valid:
            self._flag("add-check-validated", table, what)
        elif constraint.kind in ("UNIQUE", "PRIMARY KEY") and not constraint.using_index:
            self._flag("add-unique-constraint", table, what)

    def _forget(self, table: str) -> None:
        schema = self.schema
        self.created.discard(table)
        schema.tables.pop(table, None)
        schema.indexes = {i: t for i, t in schema.indexes.items() if t != table}
        schema.proven = {k: v for k, v in schema.proven.items() if k[0] != table}

    def _rename(self, table: str, new_name: str) -> None:
        schema = self.schema
        renamed = table in self.created
        creator = schema.tables.get(table)
        moved = [index for index, on in schema.indexes.items() if on == table]
        self._forget(table)
        if renamed:
            self.created.add(new_name)
        if creator is not None:
            schema.tables[new_name] = creator
        schema.indexes.update(dict.fromkeys(moved, new_name))


def _sqlite(step: Step) -> list[Finding]:
    """Batch-mode copies of tables the revision did not create, on SQLite: information."""
    created: set[str] = set()
    found = []
    for statement in step.sqlite:
        for operation in operations(statement):
            if not isinstance(operation, CreateTable):
                continue
            table = operation.table
            copied = table[len(_TMP_PREFIX) :] if table.startswith(_TMP_PREFIX) else None
            if copied is None:
                created.add(table)
            elif copied not in created:
                found.append(
                    _finding(
                        "sqlite-table-rebuild",
                        step.revision,
                        statement.one_line,
                        f"batch mode copies {copied} into {table} and swaps it in",
                        copied,
                    )
                )
    return found


def _suppress(revision: Revision, found: list[Finding]) -> list[Finding]:
    """``found`` less what the revision's ``lint_ignore`` suppresses with a reason, plus a
    finding for each entry that has no reason or suppresses nothing."""
    ignore = revision.lint_ignore
    if ignore is None:
        return found
    if not isinstance(ignore, Mapping):
        return [
            *found,
            _finding(
                "suppression-without-reason",
                revision,
                f"lint_ignore = {ignore!r}",
                f"lint_ignore is a {type(ignore).__name__}, not a dict of rule id to reason",
            ),
        ]
    fired = {finding.rule for finding in found}
    reasons: set[str] = set()
    problems = []
    for rule_id, reason in ignore.items():
        entry = f"lint_ignore[{rule_id!r}] = {reason!r}"
        rule = RULES.get(rule_id) if isinstance(rule_id, str) else None
        if rule is None or not rule.suppressible:
            what = "is no rule" if rule is None else "cannot be suppressed"
            problems.append(_finding("unused-suppression", revision, entry, f"{rule_id!r} {what}"))
        elif not isinstance(reason, str) or not reason.strip():
            problems.append(
                _finding(
                    "suppression-without-reason",
                    revision,
                    entry,
                    f"the suppression of {rule_id} gives no reason",
                )
            )
        elif rule_id not in fired:
            problems.append(
                _finding(
                    "unused-suppression",
                    revision,
                    entry,
                    f"{rule_id} did not fire in revision {revision.id}",
                )
            )
        else:
            reasons.add(rule_id)
    return [finding for finding in found if finding.rule not in reasons] + problems
