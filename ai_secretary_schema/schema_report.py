"""What a live database has, compared with what the models and the head revision say it should.

:func:`build_schema_report` runs Alembic's ``compare_metadata`` with exactly the comparison
options of ``migrations/env.py`` (:func:`~ai_secretary_schema.migration_env.online_options`:
types, server defaults, only the package's own tables) and sorts the differences into the
categories a person acts on: missing tables, missing and unexpected columns, type and
nullability mismatches, missing indexes, and everything else as Alembic's raw diffs. On
PostgreSQL it also compares the row-level security of the tenant-scoped tables with what the
migrations create (:func:`~ai_secretary_schema.tenancy.policy_differences`), which Alembic's
comparison does not look at. The report
never contains a URL or a credential: only the dialect's name, table and column names, types,
and revision ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import Connection, MetaData

if TYPE_CHECKING:
    from ai_secretary_schema.history import HostHistory, ScriptLocation
    from ai_secretary_schema.lint import Finding


@dataclass(frozen=True)
class ColumnDifference:
    """A column that differs: ``expected`` is what the models say, ``actual`` the database."""

    table: str
    column: str
    expected: str
    actual: str

    def describe(self, what: str) -> str:
        return (
            f"{self.table}.{self.column}: {what} is {self.actual} in the database, "
            f"{self.expected} in the models"
        )


@dataclass(frozen=True)
class SchemaReport:
    """The differences between a database and the models, and where it stands in the history.

    Empty lists mean "no difference of that kind". ``diffs`` holds every difference Alembic
    found, as text, including those that fit none of the named categories (server defaults,
    unique constraints, foreign keys, unexpected indexes). ``skipped`` is set when nothing was
    checked (``SCHEMA_STARTUP=off``); ``fast_path`` when the warm-start check alone confirmed
    the database is at head and matches the models.
    """

    dialect: str
    current: tuple[str, ...] = ()
    heads: tuple[str, ...] = ()
    missing_tables: tuple[str, ...] = ()
    missing_columns: tuple[str, ...] = ()  #: ``table.column``
    unexpected_columns: tuple[str, ...] = ()  #: ``table.column``
    type_mismatches: tuple[ColumnDifference, ...] = ()
    nullability_mismatches: tuple[ColumnDifference, ...] = ()
    missing_indexes: tuple[str, ...] = ()  #: ``table.index_name``
    diffs: tuple[str, ...] = ()
    #: Row-level security of a tenant-scoped table that is off, not forced, or whose policies
    #: are missing or different (PostgreSQL), one line each naming the table.
    policies: tuple[str, ...] = ()
    skipped: bool = False
    fast_path: bool = False
    #: Set by the startup hook: the revision an unversioned database was adopted at.
    adopted_at: str | None = field(default=None)
    #: Set by ``check``: what the lint found in the revisions (:mod:`ai_secretary_schema.lint`);
    #: a finding of severity ``error`` makes the report not ``ok``.
    lint: tuple[Finding, ...] = ()
    #: How many histories the heads belong to: 2 with the host application's beside the
    #: package's. More heads than histories means one has diverged.
    histories: int = 1

    @property
    def diverged(self) -> bool:
        """A history has more than one head (they must be merged)."""
        return len(self.heads) > self.histories

    @property
    def at_head(self) -> bool:
        """The database is at the (single set of) head revision(s)."""
        return bool(self.current) and set(self.current) == set(self.heads)

    @property
    def matches_models(self) -> bool:
        """No difference at all between the database and the models (policies included)."""
        return not self.diffs and not self.policies

    @property
    def lint_errors(self) -> tuple[Finding, ...]:
        """The lint findings that fail the report (information does not)."""
        return tuple(finding for finding in self.lint if finding.fails)

    @property
    def ok(self) -> bool:
        """At head, no difference, no failing lint finding: what the startup hook and ``check``
        require (always true if skipped)."""
        return self.skipped or (
            self.at_head and self.matches_models and not self.diverged and not self.lint_errors
        )

    def differences(self) -> list[str]:
        """Every difference, one readable line each (table, column, what differs)."""
        lines = [f"missing table {name}" for name in self.missing_tables]
        lines += [f"missing column {name}" for name in self.missing_columns]
        lines += [
            f"unexpected column {name} (not in the models)" for name in self.unexpected_columns
        ]
        lines += [d.describe("type") for d in self.type_mismatches]
        lines += [d.describe("nullable") for d in self.nullability_mismatches]
        lines += [f"missing index {name}" for name in self.missing_indexes]
        lines += [diff for diff in self.diffs if not _is_categorised(diff)]
        lines += [f"row-level security: {line}" for line in self.policies]
        return lines

    def status(self) -> str:
        if self.skipped:
            return "not checked (SCHEMA_STARTUP=off)"
        if self.diverged:
            where = f"{len(self.heads)} heads ({', '.join(self.heads)}): merge them"
        elif self.at_head:
            where = "at head"
        elif not self.current:
            where = f"not versioned (head is {', '.join(self.heads) or 'none'})"
        else:
            where = f"behind head ({', '.join(self.heads) or 'none'})"
        found = self.differences()
        what = "no differences" if not found else f"{len(found)} difference(s)"
        unsafe = f", {len(self.lint_errors)} lint finding(s)" if self.lint_errors else ""
        return f"{where}, {what}{unsafe}"

    def advice(self) -> str | None:
        """What to do about what the report found, or ``None`` when it is ok.

        Behind head is fixed by upgrading; a difference at head is not (the upgrade has nothing
        left to run), so it gets the advice that fits it instead.
        """
        if self.ok:
            return None
        if self.diverged:
            return (
                f"the migration history has {len(self.heads)} heads: merge them with "
                "`alembic merge heads -m merge`, then upgrade"
            )
        if not self.current:
            return (
                "the database has no recorded revision: run `ai-secretary-schema upgrade` in "
                "your release step (it creates the tables, or adopts a database made before "
                "migrations), or start with SCHEMA_STARTUP=upgrade"
            )
        if not self.at_head:
            return (
                "the database is behind head: run `ai-secretary-schema upgrade` (or "
                "`flask db upgrade`) in your release step, or start with SCHEMA_STARTUP=upgrade"
            )
        if self.matches_models:
            return (
                "a revision is not safe to run on a live database: rewrite it the safe way "
                "given with each lint finding; if a finding is safe in its revision, say why "
                "there with lint_ignore = {'rule-id': 'why it is safe here'}"
            )
        if self.policies and not self.diffs:
            return (
                "a tenant-scoped table is not isolated as the migrations left it, so one tenant "
                "may see another's rows: if it was changed by hand, restore it with the "
                "statements of ai_secretary_schema.tenancy.tenant_isolation_sql(table) (run "
                "as the table owner); a new tenant-scoped model needs a revision running them"
            )
        return (
            "the database is at head but differs from the models: a model changed without a "
            "migration, or the database was changed by hand. See every difference with "
            "`ai-secretary-schema validate`; if the models are right, write a revision "
            '(`flask db migrate -m "..."` for your own tables, `alembic revision '
            '--autogenerate -m "..."` for the package\'s; review it, then upgrade); if the '
            "database was changed by hand, undo that change"
        )

    def to_text(self) -> str:
        """For people: a headline, one line per difference, then what to do."""
        revision = ", ".join(self.current) or "none"
        lines = [f"Schema report ({self.dialect}): revision {revision}; {self.status()}."]
        if self.adopted_at:
            lines.append(f"  adopted an unversioned database at revision {self.adopted_at}")
        lines += [f"  - {line}" for line in self.differences()]
        lines += ["  - lint " + finding.to_text().replace("\n", "\n  ") for finding in self.lint]
        advice = self.advice()
        if advice is not None:
            lines.append(f"  What to do: {advice}.")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """For machines: every field, plus ``ok``, ``at_head`` and ``differences``."""
        data = asdict(self)
        data.update(
            lint=[finding.to_dict() for finding in self.lint],
            ok=self.ok,
            at_head=self.at_head,
            differences=self.differences(),
            advice=self.advice(),
        )
        return data

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)


_CATEGORISED_KINDS = (
    "add_table",
    "add_column",
    "remove_column",
    "modify_type",
    "modify_nullable",
    "add_index",
)


def _is_categorised(diff: str) -> bool:
    return diff.split(" ", 1)[0] in _CATEGORISED_KINDS


def _type_text(value: Any, connection: Connection) -> str:
    try:
        return str(value.compile(dialect=connection.dialect))
    except Exception:  # a type the dialect cannot render is still shown
        return repr(value)


def _flatten(diffs: Iterable[Any]) -> list[tuple[Any, ...]]:
    flat: list[tuple[Any, ...]] = []
    for diff in diffs:
        # modify_* diffs of one column come grouped in a list.
        if isinstance(diff, list):
            flat.extend(diff)
        else:
            flat.append(diff)
    return flat


def _diff_text(diff: tuple[Any, ...], connection: Connection) -> str:
    kind = diff[0]
    if kind in ("add_table", "remove_table"):
        return f"{kind} {diff[1].name}"
    if kind in ("add_column", "remove_column"):
        column = diff[3]
        return f"{kind} {diff[2]}.{column.name} {_type_text(column.type, connection)}"
    if kind in ("add_index", "remove_index"):
        index = diff[1]
        columns = ", ".join(str(getattr(c, "name", c)) for c in index.expressions)
        unique = " unique" if index.unique else ""
        return f"{kind} {index.table.name}.{index.name} ({columns}){unique}"
    if kind in ("add_constraint", "remove_constraint", "add_fk", "remove_fk"):
        constraint = diff[1]
        columns = ", ".join(c.name for c in constraint.columns)
        return f"{kind} {constraint.table.name}.{constraint.name} ({columns})"
    if kind.startswith("modify_"):
        _, _schema, table, column, _kw, old, new = diff
        if kind == "modify_type":
            old, new = _type_text(old, connection), _type_text(new, connection)
        elif kind == "modify_default":
            old = getattr(getattr(old, "arg", old), "text", old)
            new = getattr(getattr(new, "arg", new), "text", new)
        return f"{kind} {table}.{column}: {old} -> {new}"
    return " ".join(str(part) for part in diff)


def compare_with_models(
    connection: Connection, metadata: MetaData | None = None, host: HostHistory | None = None
) -> list[tuple[Any, ...]]:
    """Alembic's raw differences between the database and ``metadata`` (default: the models,
    and the ``host`` application's when it has them)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from ai_secretary_schema.migration_env import online_options

    options = online_options(connection, host=host)
    if metadata is not None:
        tables = metadata.tables

        def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
            return name in tables if type_ == "table" else True

        options.update(target_metadata=metadata, include_name=include_name)
    target: MetaData | list[MetaData] = options["target_metadata"]
    context = MigrationContext.configure(connection, opts=options)
    diffs = _flatten(compare_metadata(context, target))  # type: ignore[arg-type]
    if connection.dialect.name == "sqlite":
        targets = target if isinstance(target, list) else [target]
        diffs = [
            diff
            for diff in diffs
            if not any(_sqlite_rowid_nullable(diff, each) for each in targets)
        ]
    return diffs


def _sqlite_rowid_nullable(diff: tuple[Any, ...], metadata: MetaData) -> bool:
    """A SQLite ``INTEGER PRIMARY KEY`` declared without ``NOT NULL`` (the design document's
    ``id INTEGER PRIMARY KEY AUTOINCREMENT``) reflects as nullable, but it is the rowid and can
    never hold NULL: not a difference."""
    if diff[0] != "modify_nullable":
        return False
    table = metadata.tables.get(diff[2])
    if table is None:
        return False
    key = list(table.primary_key.columns)
    return (
        len(key) == 1
        and key[0].name == diff[3]
        and isinstance(key[0].type, sa.Integer)
        and diff[5] is True
        and diff[6] is False
    )


def build_schema_report(
    connection: Connection,
    script_location: ScriptLocation = None,
    *,
    metadata: MetaData | None = None,
) -> SchemaReport:
    """Compare the database behind ``connection`` with the models; read-only.

    ``script_location`` is the Alembic script directory whose head(s) the database's revision is
    compared with (default: the package's migrations); with the host application's history
    (:class:`~ai_secretary_schema.history.Histories`) its heads and models count too, unless the
    host migrates its own. ``metadata`` replaces the models (tests, or an application that
    extends them).
    """
    from ai_secretary_schema.history import (
        current_revisions,
        histories,
        history_count,
        managed_current,
        managed_heads,
    )
    from ai_secretary_schema.tenancy import policy_differences

    found = histories(script_location)
    host = found.host
    raw = compare_with_models(
        connection, metadata, host if host is not None and host.managed else None
    )
    current = managed_current(current_revisions(connection), script_location)
    policies = policy_differences(connection, metadata)
    if connection.in_transaction():
        connection.rollback()

    missing_tables: list[str] = []
    missing_columns: list[str] = []
    unexpected_columns: list[str] = []
    types: list[ColumnDifference] = []
    nullability: list[ColumnDifference] = []
    missing_indexes: list[str] = []
    for diff in raw:
        kind = diff[0]
        if kind == "add_table":
            missing_tables.append(diff[1].name)
        elif kind == "add_column":
            missing_columns.append(f"{diff[2]}.{diff[3].name}")
        elif kind == "remove_column":
            unexpected_columns.append(f"{diff[2]}.{diff[3].name}")
        elif kind == "modify_type":
            _, _, table, column, _, actual, expected = diff
            types.append(
                ColumnDifference(
                    table, column, _type_text(expected, connection), _type_text(actual, connection)
                )
            )
        elif kind == "modify_nullable":
            _, _, table, column, _, actual, expected = diff
            nullability.append(
                ColumnDifference(
                    table,
                    column,
                    "NULL" if expected else "NOT NULL",
                    "NULL" if actual else "NOT NULL",
                )
            )
        elif kind == "add_index":
            missing_indexes.append(f"{diff[1].table.name}.{diff[1].name}")
    return SchemaReport(
        dialect=connection.dialect.name,
        current=current,
        heads=managed_heads(script_location),
        histories=1 if host is None or not host.managed else history_count(found),
        missing_tables=tuple(missing_tables),
        missing_columns=tuple(missing_columns),
        unexpected_columns=tuple(unexpected_columns),
        type_mismatches=tuple(types),
        nullability_mismatches=tuple(nullability),
        missing_indexes=tuple(missing_indexes),
        diffs=tuple(_diff_text(diff, connection) for diff in raw),
        policies=tuple(policies),
    )
