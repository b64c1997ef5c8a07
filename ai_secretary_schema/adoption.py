"""Adopt a database made before migrations existed: find its revision, stamp it, go on from there.

A database whose tables came from ``create_all`` or from hand-written DDL (the design document's
``CREATE TABLE IF NOT EXISTS performance_alerts …``) has the package's tables but no
``alembic_version``; upgrading it from base would fail on the first ``CREATE TABLE``.
:func:`adopt` recognises it instead:

1. The schema of every revision is computed by upgrading a scratch in-memory SQLite database one
   revision at a time and reflecting it after each step (one migration run, not one per revision).
   Only table and column *names*, and index names, are kept: they are the same on every dialect,
   while types are spelled differently by each (and are checked afterwards by the schema report).
2. The newest revision whose tables and columns are exactly the live database's package tables is
   the one the database is at. Indexes of that revision that the database lacks (hand-written DDL
   seldom creates them) are created, then the revision is stamped, in one transaction.
3. The caller upgrades from there as usual, and validates.

A database whose package tables match no revision is refused with
:class:`~ai_secretary_schema.errors.AdoptionError`, listing how it differs from the nearest
revision; nothing in it is changed. The scratch database is SQLite: a revision that only runs on
PostgreSQL (dialect-specific DDL, data migrations needing its functions) cannot be replayed there,
and adoption then refuses with a message that says so rather than guess.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from ai_secretary_schema.errors import AdoptionError
from ai_secretary_schema.history import (
    ScriptLocation,
    current_revisions,
    requirements,
    revisions,
    script_directory,
    script_path,
    single_head,
)
from ai_secretary_schema.models import Base

logger = logging.getLogger(__name__)

VERSION_TABLE = "alembic_version"


@dataclass(frozen=True)
class TableShape:
    """The dialect-independent shape of one table: column names, index name → columns."""

    columns: frozenset[str]
    indexes: tuple[tuple[str, tuple[str, ...], bool], ...]  #: (name, columns, unique)


Shape = dict[str, TableShape]


@dataclass(frozen=True)
class RevisionShape:
    revision: str
    tables: Shape


def _reflect(connection: Connection, tables: set[str] | None = None) -> Shape:
    inspector = sa.inspect(connection)
    shape: Shape = {}
    for name in inspector.get_table_names():
        if name == VERSION_TABLE or (tables is not None and name not in tables):
            continue
        columns = frozenset(column["name"] for column in inspector.get_columns(name))
        indexes = tuple(
            sorted(
                (
                    str(index["name"]),
                    tuple(str(c) for c in index["column_names"] if c is not None),
                    bool(index["unique"]),
                )
                for index in inspector.get_indexes(name)
                if index["name"]
            )
        )
        shape[name] = TableShape(columns, indexes)
    return shape


def revision_shapes(script_location: ScriptLocation = None) -> list[RevisionShape]:
    """The shape of the schema after each revision, base first, replayed on scratch SQLite."""
    from alembic import command

    from ai_secretary_schema.alembic_config import make_alembic_config
    from ai_secretary_schema.engine import create_engine
    from ai_secretary_schema.settings import SchemaSettings

    single_head(script_location)
    shapes: list[RevisionShape] = []
    engine = create_engine(sa.make_url("sqlite://"), pooled=False)
    try:
        with engine.connect() as connection:

            def record(*, step: Any, **_kw: Any) -> None:
                (revision,) = step.up_revision_ids
                shapes.append(RevisionShape(revision, _reflect(connection)))

            # One migration run through env.py, with a callback that sees the schema after
            # each revision.
            config = make_alembic_config(
                SchemaSettings(database_url="sqlite://"),
                connection=connection,
                script_location=script_location,
                on_version_apply=record,
            )
            command.upgrade(config, "heads")
    except Exception as exc:
        raise AdoptionError(
            "cannot adopt the database: replaying the migrations on a scratch SQLite database, "
            f"to learn each revision's tables, failed ({type(exc).__name__}: {exc}). Stamp the "
            "database's revision by hand (`alembic stamp <revision>`) and start again.",
            report=_empty_report(),
        ) from exc
    finally:
        engine.dispose()
    return shapes


def _empty_report() -> Any:
    from ai_secretary_schema.schema_report import SchemaReport

    return SchemaReport(dialect="sqlite")


def known_tables(shapes: list[RevisionShape]) -> set[str]:
    """Every table a revision or the models ever had: what adoption looks at in the database."""
    names = set(Base.metadata.tables)
    for shape in shapes:
        names.update(shape.tables)
    return names


def needs_adoption(connection: Connection, script_location: ScriptLocation = None) -> bool:
    """The database has some of the package's tables but no revision of the package's history
    recorded (the host application's may be: it is a branch of its own)."""
    inspector = sa.inspect(connection)
    names = set(inspector.get_table_names())
    if VERSION_TABLE in names:
        # A package revision that a host revision depends on is recorded only through it.
        reached = requirements(script_directory(script_location), current_revisions(connection))
        if reached & revisions(script_path(script_location)):
            return False
    return bool(names & set(Base.metadata.tables))


def _columns_differ(live: Shape, expected: Shape) -> list[str]:
    lines = [f"missing table {name}" for name in sorted(set(expected) - set(live))]
    lines += [f"unexpected table {name}" for name in sorted(set(live) - set(expected))]
    for name in sorted(set(live) & set(expected)):
        missing = expected[name].columns - live[name].columns
        extra = live[name].columns - expected[name].columns
        lines += [f"missing column {name}.{column}" for column in sorted(missing)]
        lines += [f"unexpected column {name}.{column}" for column in sorted(extra)]
    return lines


def find_revision(live: Shape, shapes: list[RevisionShape]) -> str | None:
    """The newest revision whose tables and columns are exactly ``live``'s, if any.

    Of revisions that leave the shape as it was (row-level security, data migrations), the
    first is chosen: nothing shows whether the database had what they do, so they run.
    """
    for index in range(len(shapes) - 1, -1, -1):
        if not _columns_differ(live, shapes[index].tables):
            while index > 0 and shapes[index - 1].tables == shapes[index].tables:
                index -= 1
            return shapes[index].revision
    return None


def adopt(connection: Connection, script_location: ScriptLocation = None) -> str:
    """Stamp the unversioned database behind ``connection`` at the revision it already has.

    Creates that revision's missing indexes and stamps it in one transaction, then returns the
    revision; the caller holds the migration lock and upgrades afterwards. Raises
    :class:`AdoptionError` (nothing changed) when no revision matches.
    """
    from alembic.runtime.migration import MigrationContext

    shapes = revision_shapes(script_path(script_location))
    if connection.in_transaction():
        connection.rollback()
    live = _reflect(connection, known_tables(shapes))
    revision = find_revision(live, shapes)
    if revision is None:
        raise _no_match(connection, live, shapes, script_location)
    expected = next(shape for shape in shapes if shape.revision == revision).tables
    connection.rollback()  # reflection began a transaction; the changes get one of their own
    with connection.begin():
        _create_missing_indexes(connection, live, expected)
        context = MigrationContext.configure(connection)
        context.stamp(script_directory(script_location), revision)
    logger.warning(
        "adopted an unversioned %s database: its tables are those of revision %s, stamped it",
        connection.dialect.name,
        revision,
    )
    return revision


def _create_missing_indexes(connection: Connection, live: Shape, expected: Shape) -> None:
    for table_name, shape in expected.items():
        present = {index[0] for index in live[table_name].indexes}
        missing = [index for index in shape.indexes if index[0] not in present]
        if not missing:
            continue
        table = sa.Table(table_name, sa.MetaData(), autoload_with=connection)
        for name, columns, unique in missing:
            logger.warning("adoption: creating missing index %s on %s", name, table_name)
            sa.Index(name, *(table.c[column] for column in columns), unique=unique).create(
                connection
            )


def _no_match(
    connection: Connection,
    live: Shape,
    shapes: list[RevisionShape],
    script_location: ScriptLocation,
) -> AdoptionError:
    from ai_secretary_schema.schema_report import build_schema_report

    candidates = [(len(_columns_differ(live, s.tables)), i, s) for i, s in enumerate(shapes)]
    _, _, nearest = min(candidates, key=lambda item: (item[0], -item[1]))
    differences = _columns_differ(live, nearest.tables)
    report = build_schema_report(connection, script_location)
    connection.rollback()
    return AdoptionError(
        f"the {connection.dialect.name} database has tables of this package but no "
        f"alembic_version, and its tables match no revision, so it was left unchanged. "
        f"Nearest is revision {nearest.revision}; the database differs from it by: "
        f"{'; '.join(differences)}. Bring the tables in line with a revision (or stamp one "
        f"with `alembic stamp <revision>` once they are) and start again.",
        report=report,
    )
