"""The SQL each revision runs, cut into steps: what the lint reviews.

PostgreSQL
    One offline run (``alembic upgrade base:<destination> --sql``) through the script
    directory's own env.py, with a PostgreSQL URL that is never connected to. Alembic calls the
    ``on_version_apply`` callback after each step's SQL in offline mode too; the callback notes
    where the output stood, which cuts the output into steps without running env.py once per
    revision. The output keeps the transaction markers as emitted: env.py runs each revision in
    a transaction of its own (``BEGIN;`` … ``COMMIT;``), and ``autocommit_block()`` emits
    ``COMMIT;`` before its statements and ``BEGIN;`` after them.

SQLite
    Offline SQL cannot show a batch-mode table copy: batch mode reflects the table it copies,
    and offline mode has no database to reflect (Alembic refuses: "batch mode … requires a live
    database connection"). So the SQLite steps are the statements an upgrade of a private
    in-memory SQLite database executes, cut with the same callback.

The revisions' own attributes (``lint_ignore``, whether ``downgrade()`` does anything) are read
from the scripts Alembic loaded for the run (``MigrationInfo.up_revision``), not loaded again.
"""

from __future__ import annotations

import ast
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ai_secretary_schema.errors import MigrationError, RevisionRangeError
from ai_secretary_schema.history import ScriptLocation, script_directory
from ai_secretary_schema.lint.sql import Statement, split
from ai_secretary_schema.settings import SchemaSettings

if TYPE_CHECKING:
    from alembic.runtime.migration import MigrationContext, MigrationInfo
    from alembic.script import ScriptDirectory

__all__ = ["POSTGRESQL_URL", "SQLITE_URL", "History", "Revision", "Step", "emit", "select"]

#: The URL whose dialect the offline SQL is emitted for; nothing ever connects to it.
POSTGRESQL_URL = "postgresql+psycopg2://lint@localhost/lint"
#: The private database the SQLite review upgrades.
SQLITE_URL = "sqlite://"
#: Revision ids listed in a range error before "…".
_LISTED = 20


@dataclass(frozen=True)
class Revision:
    """A revision file, as far as the lint needs it."""

    id: str
    file: str  #: its file name
    #: The module's ``lint_ignore`` as written (validated by the review), ``None`` if absent.
    lint_ignore: object
    #: What ``downgrade()`` is when it undoes nothing: ``"missing"``, ``"empty"``,
    #: ``"raises NotImplementedError"``; ``None`` when it does something.
    downgrade_gap: str | None


@dataclass(frozen=True)
class Step:
    """One revision's upgrade: its PostgreSQL statements (with the transaction markers around
    them) and the statements its SQLite upgrade executed. Statements on the version table are
    left out: they are Alembic's, not the revision's."""

    revision: Revision
    postgresql: tuple[Statement, ...]
    sqlite: tuple[Statement, ...] = ()


@dataclass(frozen=True)
class History:
    """Every step from base to the destination, oldest first."""

    steps: tuple[Step, ...]
    #: The revision whose SQLite upgrade failed, and why; the steps from it on have no SQLite
    #: statements.
    sqlite_failure: tuple[str, str] | None = None


def select(
    revision_range: str | None, script_location: ScriptLocation = None
) -> tuple[list[str], str]:
    """The revisions ``revision_range`` names, oldest first, and the revision to emit up to.

    ``None`` (or empty): every revision. ``A:B``: the revisions after ``A`` up to ``B``, as in
    ``alembic upgrade A:B --sql`` (``base`` and ``head``/``heads`` allowed, either side may be
    left empty). ``A`` alone: that one revision. An unknown revision, or an ``A`` that is not
    below ``B``, is a :class:`~ai_secretary_schema.errors.RevisionRangeError`.
    """
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    script = script_directory(script_location)
    given = (revision_range or "").strip()
    if ":" in given:
        lower, _, upper = given.partition(":")
        lower, upper = lower.strip() or "base", upper.strip() or "heads"
    elif given:
        lower, upper = "", given
    else:
        lower, upper = "base", "heads"
    try:
        if not lower:
            found = script.get_revisions(upper)
            if len(found) != 1 or found[0] is None:
                raise CommandError(f"{upper!r} names {len(found)} revisions, not one")
            return [found[0].revision], found[0].revision
        revisions = [s.revision for s in script.iterate_revisions(upper, lower)]
    except (CommandError, RevisionError) as exc:
        raise _range_error(given, str(exc), script) from None
    if not revisions and upper != lower:
        raise _range_error(given, f"no revision lies after {lower} up to {upper}", script)
    return list(reversed(revisions)), upper


def _range_error(given: str, reason: str, script: ScriptDirectory) -> RevisionRangeError:
    known = [s.revision for s in script.walk_revisions()][::-1]
    listed = ", ".join(known[:_LISTED]) + (", …" if len(known) > _LISTED else "")
    return RevisionRangeError(
        f"cannot lint {given!r}: {reason}; the revisions are {listed or 'none'} (use REV, "
        "A:B for the revisions after A up to B, base and head allowed)",
        revision_range=given,
        known=tuple(known),
    )


def emit(destination: str, script_location: ScriptLocation = None) -> History:
    """The steps from base to ``destination``: PostgreSQL offline SQL and SQLite statements."""
    revisions, postgresql, version_table = _postgresql_steps(destination, script_location)
    sqlite, failure = _sqlite_steps(destination, script_location, [r.id for r in revisions])
    steps = tuple(
        Step(
            revision,
            _without_version_table(statements, version_table),
            _without_version_table(sqlite.get(revision.id, ()), version_table),
        )
        for revision, statements in zip(revisions, postgresql, strict=True)
    )
    return History(steps, failure)


def _postgresql_steps(
    destination: str, script_location: ScriptLocation
) -> tuple[list[Revision], list[list[Statement]], str]:
    from alembic import command

    from ai_secretary_schema.alembic_config import make_alembic_config

    output = io.StringIO()
    revisions: list[Revision] = []
    ends: list[int] = []
    version_table: list[str] = []

    def mark(*, ctx: MigrationContext, step: MigrationInfo, **_: Any) -> None:
        revisions.append(_revision(step))
        ends.append(output.tell())  # the step's SQL ends here, before its COMMIT
        version_table[:] = [ctx.version_table]

    settings = SchemaSettings.resolve(environ={}, database_url=POSTGRESQL_URL)
    config = make_alembic_config(
        settings, script_location=script_location, output=output, on_version_apply=mark
    )
    try:
        command.upgrade(config, f"base:{destination}", sql=True)
    except Exception as exc:  # the revision's own code may raise anything
        after = revisions[-1].id if revisions else "base"
        raise MigrationError(
            f"cannot emit the offline PostgreSQL SQL of the revision after {after} "
            f"({type(exc).__name__}: {exc}); the lint reviews that SQL, so every revision must "
            "run in offline mode (`alembic upgrade --sql`): guard reads of the database with "
            "`if not context.is_offline_mode():` (`from alembic import context`)",
            revision=None if after == "base" else after,
        ) from exc
    sql = output.getvalue()
    if sql.strip() and not ends:
        raise MigrationError(
            f"the env.py of {script_location or 'the shipped migrations'} does not pass "
            "on_version_apply in offline mode, so its SQL cannot be cut into revisions: pass "
            "`migration_env.offline_options(settings, context.config)` to context.configure()"
        )
    return revisions, _cut(split(sql), ends), (version_table or ["alembic_version"])[0]


def _sqlite_steps(
    destination: str, script_location: ScriptLocation, order: Sequence[str]
) -> tuple[dict[str, list[Statement]], tuple[str, str] | None]:
    from alembic import command
    from sqlalchemy import event

    from ai_secretary_schema.alembic_config import make_alembic_config
    from ai_secretary_schema.engine import create_engine

    executed: list[str] = []
    applied: list[str] = []
    ends: list[int] = []

    def mark(*, step: MigrationInfo, **_: Any) -> None:
        applied.append(step.up_revision_id or "")
        ends.append(len(executed))

    def record(*args: Any) -> None:
        executed.append(args[2])  # (connection, cursor, statement, parameters, context, many)

    settings = SchemaSettings.resolve(environ={}, database_url=SQLITE_URL)
    engine = create_engine(settings.url, settings)
    event.listen(engine, "before_cursor_execute", record)
    failure = None
    try:
        with engine.connect() as connection:
            config = make_alembic_config(
                settings,
                connection=connection,
                script_location=script_location,
                on_version_apply=mark,
            )
            try:
                command.upgrade(config, destination)
            except Exception as exc:  # reported as information, see rules.py
                failed = next((r for r in order if r not in applied), "?")
                failure = (failed, _error_text(exc))
    finally:
        engine.dispose()
    statements: dict[str, list[Statement]] = {}
    start = 0
    for revision, end in zip(applied, ends, strict=True):
        statements[revision] = [s for text in executed[start:end] for s in split(text)]
        start = end
    return statements, failure


def _cut(statements: list[Statement], ends: list[int]) -> list[list[Statement]]:
    """``statements`` cut at the output offsets ``ends`` (one per step, ascending)."""
    steps: list[list[Statement]] = [[] for _ in ends]
    index = 0
    for statement in statements:
        while index < len(ends) and statement.start >= ends[index]:
            index += 1
        if index == len(ends):
            break  # the final COMMIT, after the last step
        steps[index].append(statement)
    return steps


def _without_version_table(
    statements: Sequence[Statement], version_table: str
) -> tuple[Statement, ...]:
    return tuple(s for s in statements if all(t.name != version_table for t in s.tokens))


def _revision(step: MigrationInfo) -> Revision:
    from alembic.script import Script

    script = step.up_revision
    assert isinstance(script, Script), step.up_revision_id
    path = Path(script.path)
    return Revision(
        script.revision,
        path.name,
        getattr(script.module, "lint_ignore", None),
        _downgrade_gap(path),
    )


def _downgrade_gap(path: Path) -> str | None:
    """How ``downgrade()`` fails to undo anything, read from the source (never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    function = next(
        (
            node
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "downgrade"
        ),
        None,
    )
    if function is None:
        return "missing"
    body = [node for node in function.body if not _is_docstring_or_pass(node)]
    if not body:
        return "empty"
    if len(body) == 1 and isinstance(body[0], ast.Raise) and _names_not_implemented(body[0]):
        return "raises NotImplementedError"
    return None


def _is_docstring_or_pass(node: ast.stmt) -> bool:
    if isinstance(node, ast.Pass):
        return True
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)


def _names_not_implemented(node: ast.Raise) -> bool:
    raised = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
    return isinstance(raised, ast.Name) and raised.id == "NotImplementedError"


def _error_text(exc: BaseException) -> str:
    """``exc`` on one line, without SQLAlchemy's "Background on this error" link."""
    lines = [line for line in str(exc).splitlines() if not line.startswith("(Background on")]
    return f"{type(exc).__name__}: {' '.join(' '.join(lines).split())}"
