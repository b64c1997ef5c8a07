"""The migration history: where the script directory is, its heads, its revisions, the database's.

Below every module that migrates (the migrator, adoption, the schema report), so that they all
read the history the same way and import it downward. Alembic is imported inside the functions:
a warm start needs :func:`migrations_directory` and nothing else from here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

from ai_secretary_schema.errors import MigrationError, MultipleHeadsError

if TYPE_CHECKING:
    from alembic.script import Script, ScriptDirectory
    from sqlalchemy import Connection, MetaData

MIGRATIONS_PACKAGE = "ai_secretary_schema.migrations"

#: The branch label of the package's history (set on its first revision): Alembic then names
#: its head ``ai_secretary_schema@head`` and shows the label beside each of its revisions.
PACKAGE_BRANCH = "ai_secretary_schema"
#: The branch label the host application's first revision gets (``app@head``).
HOST_BRANCH = "app"


@dataclass(frozen=True)
class HostHistory:
    """The host application's own migrations, kept beside the package's in ``alembic_version``.

    Both histories are branches of one Alembic history: the package's revisions come from its
    own ``versions`` directory, the host's from ``directory/versions``; each keeps its own row in
    the version table, and a host revision that needs a package table says so with
    ``depends_on`` (which ``flask db migrate`` fills in), so Alembic orders the two.
    """

    #: The host's migrations directory (``flask db init`` makes it; revisions in ``versions/``).
    directory: Path
    #: The host's models: autogenerate's target beside the package's, compared by validate and
    #: check. ``None``: the host's tables are migrated but not compared.
    metadata: MetaData | None = None
    #: Whether the package's upgrade and startup hook bring the host's history to head too.
    #: ``False`` when the host migrates in a release step of its own: its history and tables
    #: are then left alone (neither upgraded nor compared).
    managed: bool = True

    @property
    def versions(self) -> Path:
        return self.directory / "versions"


@dataclass(frozen=True)
class Histories:
    """The package's script directory (its env.py and revisions) and, beside it, the host's."""

    package: Path
    host: HostHistory | None = None

    @property
    def version_locations(self) -> tuple[Path, ...]:
        """Every directory of revisions: the package's, then the host's if it exists."""
        found = [self.package / "versions"]
        if self.host is not None and self.host.versions.is_dir():
            found.append(self.host.versions)
        return tuple(found)


ScriptLocation = str | Path | Histories | None


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
    """The package's script directory: ``script_location``'s, or the shipped migrations."""
    if isinstance(script_location, Histories):
        return script_location.package
    return Path(script_location).resolve() if script_location else migrations_directory()


def histories(script_location: ScriptLocation = None) -> Histories:
    """``script_location`` as :class:`Histories` (the package's history alone unless it is one)."""
    if isinstance(script_location, Histories):
        return script_location
    return Histories(script_path(script_location))


def script_directory(script_location: ScriptLocation = None) -> ScriptDirectory:
    """Alembic's view of the history: the package's revisions, and the host's when given.

    One instance per unchanged set of revision files: building one is cheap, but its first
    question imports every revision, and a report or a health check asks several.
    """
    found = histories(script_location)
    locations = tuple(str(path) for path in found.version_locations)
    return _script_directory(str(found.package), locations, _revision_files(locations))


@functools.lru_cache(maxsize=16)
def _script_directory(
    package: str, locations: tuple[str, ...], files: tuple[tuple[str, str, int, int], ...]
) -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(package, version_locations=list(locations))


def _revision_files(locations: tuple[str, ...]) -> tuple[tuple[str, str, int, int], ...]:
    """Each revision file of ``locations`` with its size and modification time: what makes a
    cached :func:`script_directory` stale."""
    found = []
    for location in locations:
        try:
            with os.scandir(location) as entries:
                for entry in entries:
                    if entry.name.endswith(".py"):
                        stat = entry.stat()
                        found.append((location, entry.name, stat.st_size, stat.st_mtime_ns))
        except FileNotFoundError:
            continue
    return tuple(sorted(found))


def is_host_revision(script: Script, script_location: ScriptLocation) -> bool:
    """Whether ``script`` is one of the host application's revisions (by the file it is in)."""
    host = histories(script_location).host
    return host is not None and Path(script.path).resolve().parent == host.versions.resolve()


def branch_name(script: Script, script_location: ScriptLocation) -> str:
    """Which history ``script`` belongs to, for people: its branch label, else the package's or
    the host's default label (a host revision made before it had one)."""
    if script.branch_labels:
        return sorted(script.branch_labels)[0]
    return HOST_BRANCH if is_host_revision(script, script_location) else PACKAGE_BRANCH


def branch_heads(script_location: ScriptLocation, *, host: bool) -> tuple[str, ...]:
    """The head(s) of one history: the host's (``host=True``) or the package's."""
    script = script_directory(script_location)
    found = []
    for head in script.get_heads():
        revision = script.get_revision(head)
        if revision is not None and is_host_revision(revision, script_location) == host:
            found.append(head)
    return tuple(found)


def history_count(script_location: ScriptLocation) -> int:
    """How many histories have revisions: 2 once the host application has its own."""
    return 2 if branch_heads(script_location, host=True) else 1


def step_back(script_location: ScriptLocation, *, host: bool) -> str:
    """The revision one step below the head of one history (``downgrade``'s default ``-1``).

    Alembic's relative ``label@-1`` cannot tell the histories apart once a host revision
    depends on a package revision, so the target is named: the head's parent, or
    ``<head>@base`` for the first revision of that history.
    """
    from alembic.util import to_tuple

    found = branch_heads(script_location, host=host)
    whose = "application's" if host else "package's"
    if len(found) != 1:
        raise MigrationError(
            f"the {whose} history has {len(found)} heads ({', '.join(found) or 'none'}), so "
            "there is no one revision to step back from: name the revision to downgrade to"
        )
    revision = script_directory(script_location).get_revision(found[0])
    below = to_tuple(None if revision is None else revision.down_revision, default=())
    if len(below) > 1:
        raise MigrationError(
            f"the {whose} head {found[0]} merges {', '.join(below)}: name the revision to "
            "downgrade to"
        )
    return below[0] if below else f"{found[0]}@base"


def managed_heads(script_location: ScriptLocation = None) -> tuple[str, ...]:
    """The heads the package's upgrade goes to and its checks expect: every history's, but the
    package's alone when the host migrates its own in a release step."""
    found = histories(script_location)
    if found.host is not None and not found.host.managed:
        return branch_heads(found, host=False)
    return heads(found)


def managed_current(current: tuple[str, ...], script_location: ScriptLocation) -> tuple[str, ...]:
    """Where each history the package manages stands: the newest revision of each that the
    recorded revisions ``current`` reach, to compare with :func:`managed_heads`.

    With two histories the version table may hold fewer rows than there are histories: a
    package revision that a host revision depends on is recorded only through it (Alembic
    calls it an "effective head"). The host's revisions are left out when the host migrates
    its own history.
    """
    from alembic.util import to_tuple

    found = histories(script_location)
    if found.host is None:
        return current
    script = script_directory(found)
    reached = {
        revision: script.get_revision(revision) for revision in requirements(script, current)
    }
    if not found.host.managed:
        reached = {
            name: revision
            for name, revision in reached.items()
            if revision is not None and not is_host_revision(revision, found)
        }
    # Below a revision are its ancestors in its own history (down_revision), not the
    # revisions of the other history it depends on: those are that history's own tops.
    below: set[str] = set()
    for revision in reached.values():
        if revision is not None:
            below.update(
                requirements(script, to_tuple(revision.down_revision, default=()), follow=False)
            )
    return tuple(sorted(set(reached) - below))


def requirements(script: ScriptDirectory, tops: Iterable[str], *, follow: bool = True) -> set[str]:
    """Every revision ``tops`` stand on, themselves included: their ancestors and (``follow``)
    their dependencies, transitively."""
    from alembic.util import to_tuple

    seen: set[str] = set()
    todo = list(tops)
    while todo:
        found = script.get_revision(todo.pop())
        if found is None or found.revision in seen:
            continue
        seen.add(found.revision)
        dependencies = to_tuple(found.dependencies, default=()) if follow else ()
        for name in [*to_tuple(found.down_revision, default=()), *dependencies]:
            todo.extend(each.revision for each in script.get_revisions(name) if each is not None)
    return seen


def foreign_revisions(current: Iterable[str], script_location: ScriptLocation) -> tuple[str, ...]:
    """The revisions in ``current`` that no history of ``script_location`` has."""
    known = revisions(script_location)
    return tuple(revision for revision in current if revision not in known)


def refuse_foreign(current: tuple[str, ...], script_location: ScriptLocation, where: str) -> None:
    """Raise :class:`MigrationError` when the version table of the database ``where`` holds
    revisions no history of ``script_location`` has: Alembic could not tell where it stands,
    so nothing may run (a layout that cannot be told apart is refused, not guessed)."""
    foreign = foreign_revisions(current, script_location)
    if not foreign:
        return
    host = histories(script_location).host
    known = (
        "the package's history does not have"
        if host is None
        else f"neither the package's history nor the application's ({host.versions}) has"
    )
    raise MigrationError(
        f"{where} records revision(s) {', '.join(foreign)} in alembic_version, which {known}: "
        "they were made by another migration history, usually the application's own. Hand "
        "that history's directory to the package (SchemaExtension(app, db=db, "
        "directory='migrations'), or --directory DIR on the command line) so that both "
        "histories are read together; nothing was changed",
        revision=", ".join(current),
    )


def describe_current(current: tuple[str, ...], script_location: ScriptLocation) -> list[str]:
    """One line per recorded revision, saying its history: ``0002 (ai_secretary_schema) (head)``."""
    script = script_directory(script_location)
    tops = set(script.get_heads())
    lines = []
    for revision in current:
        found = script.get_revision(revision)
        if found is None:
            lines.append(f"{revision} (unknown revision)")
            continue
        head = " (head)" if revision in tops else ""
        lines.append(f"{revision} ({branch_name(found, script_location)}){head}")
    return lines


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
    two = histories(script_location).host is not None
    lines = []
    for script in script_directory(script_location).walk_revisions():
        marks = " (head)" if script.is_head else ""
        if two:  # say which history each line belongs to
            marks = f" ({branch_name(script, script_location)}){marks}"
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

    start: str | tuple[str, ...] = reached if reached else "base"
    try:
        steps = list(script_directory(script_location).iterate_revisions(target, start))
    except CommandError:
        return []
    return [step.revision for step in reversed(steps) if step.revision not in reached]
