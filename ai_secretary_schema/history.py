"""The migration history: where the script directory is, its heads, its revisions, the database's.

Below every module that migrates (the migrator, adoption, the schema report), so that they all
read the history the same way and import it downward. Alembic is imported inside the functions:
a warm start needs :func:`migrations_directory` and nothing else from here.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

from ai_secretary_schema.errors import MigrationError, MultipleHeadsError

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory
    from sqlalchemy import Connection

MIGRATIONS_PACKAGE = "ai_secretary_schema.migrations"

ScriptLocation = str | Path | None


def migrations_directory() -> Path:
    """The Alembic script directory shipped with the package (``migrations/`` in a checkout)."""
    # The directory is mapped into the package at build time (pyproject.toml), so it is found
    # through the import system rather than relative to this file.
    spec = find_spec(MIGRATIONS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MigrationError(
            f"the migrations ({MIGRATIONS_PACKAGE}) are not installed with the package; "
            "reinstall ai-secretary-schema (pip install --force-reinstall ai-secretary-schema)"
        )
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def script_path(script_location: ScriptLocation = None) -> Path:
    """``script_location`` as a path, or the shipped migrations when it is ``None``."""
    return Path(script_location).resolve() if script_location else migrations_directory()


def script_directory(script_location: ScriptLocation = None) -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(script_path(script_location)))


def heads(script_location: ScriptLocation = None) -> tuple[str, ...]:
    """The head revision(s) of the migration history; more than one means it has diverged."""
    return tuple(script_directory(script_location).get_heads())


def single_head(script_location: ScriptLocation = None) -> str:
    """The one head revision, or :class:`MultipleHeadsError` when the history has diverged."""
    found = heads(script_location)
    if len(found) != 1:
        raise MultipleHeadsError(
            f"the migration history has {len(found)} heads ({', '.join(found) or 'none'}); "
            "merge them with `alembic merge heads -m 'merge'` so there is exactly one",
            heads=found,
        )
    return found[0]


def history(script_location: ScriptLocation = None) -> list[str]:
    """One line per revision, newest first: ``0001 -> 0002 (head), Add performance_alerts.``"""
    lines = []
    for script in script_directory(script_location).walk_revisions():
        marks = " (head)" if script.is_head else ""
        down = script.down_revision or "<base>"
        if not isinstance(down, str):
            down = ", ".join(down)
        lines.append(f"{down} -> {script.revision}{marks}, {script.doc}")
    return lines


def revisions(script_location: ScriptLocation = None) -> frozenset[str]:
    """Every revision id of the history."""
    return frozenset(s.revision for s in script_directory(script_location).walk_revisions())


def current_revisions(connection: Connection) -> tuple[str, ...]:
    """The revisions recorded in ``alembic_version`` (empty for an unversioned database).

    A plain read of Alembic's version table (``alembic_version`` in the default schema, where
    env.py keeps it): Alembic's own ``MigrationContext.configure(...).get_current_heads()``
    logs "Context impl …" and "Will assume … DDL." at INFO on every call, and this runs on
    every schema health check. The table is looked up in the catalog first rather than read
    and caught: on PostgreSQL a failed SELECT would abort the caller's transaction.
    """
    import sqlalchemy as sa

    version_table = sa.table("alembic_version", sa.column("version_num", sa.String))
    if not sa.inspect(connection).has_table(version_table.name):
        return ()
    return tuple(connection.execute(sa.select(version_table.c.version_num)).scalars())


def pending_revisions(
    target: str, reached: tuple[str, ...], script_location: ScriptLocation = None
) -> list[str]:
    """The revisions an upgrade from ``reached`` to ``target`` applies, in order (oldest first)."""
    from alembic.util import CommandError

    start = reached[0] if len(reached) == 1 else "base"
    try:
        steps = list(script_directory(script_location).iterate_revisions(target, start))
    except CommandError:
        return []
    return [step.revision for step in reversed(steps)]
