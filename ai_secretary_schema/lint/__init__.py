"""``ai-secretary-schema lint``: every revision reviewed for lock safety on a live database.

A revision that passes every test on an empty database can still take a production table down:
``CREATE INDEX`` without ``CONCURRENTLY`` blocks writes for the whole build, ``ADD COLUMN …
NOT NULL`` without a default fails on a table with rows, ``SET NOT NULL`` and a new foreign key
scan the table under a strong lock, a type change rewrites it, a rename or a dropped column
breaks the release still serving. :func:`lint` reviews each revision's PostgreSQL upgrade, as
the offline SQL of that one step, with what only the migration history knows: which tables
existed before the revision (one it creates itself is exempt from the lock rules), which
statements run inside ``autocommit_block()``, and the revision's own suppressions::

    lint_ignore = {"drop-column": "unused since release 2026.11; nothing reads it"}

A suppression without a reason, or for a rule that did not fire, is itself a finding. On SQLite,
a revision whose batch mode copies an existing table is reported for information.

The layers, each importing only those above it: :mod:`~.rules` (the catalogue),
:mod:`~.findings` (the report), :mod:`~.sql` (reading SQL), :mod:`~.steps` (the SQL each revision
runs, from Alembic), :mod:`~.review` (the rules applied). ``check`` runs the lint on every
revision (:meth:`ai_secretary_schema.migrator.Migrator.check`).
"""

from __future__ import annotations

from ai_secretary_schema.history import ScriptLocation
from ai_secretary_schema.lint.findings import Finding, LintReport
from ai_secretary_schema.lint.rules import RULES, Rule

__all__ = ["RULES", "Finding", "LintReport", "Rule", "lint"]


def lint(revision_range: str | None = None, script_location: ScriptLocation = None) -> LintReport:
    """Review the revisions of ``revision_range`` (default: every one); see
    :func:`~ai_secretary_schema.lint.steps.select` for the range's forms.

    Raises :class:`~ai_secretary_schema.errors.RevisionRangeError` for a range naming an unknown
    revision, :class:`~ai_secretary_schema.errors.MigrationError` when a revision cannot emit
    its offline SQL. Never connects to a database (SQLite's review uses a private in-memory one).
    """
    from ai_secretary_schema.lint.review import review
    from ai_secretary_schema.lint.steps import emit, select

    if not revision_range:
        # Every revision: the run itself says which there are (no second load of the files).
        history = emit("heads", script_location)
        selected = [step.revision.id for step in history.steps]
    else:
        selected, destination = select(revision_range, script_location)
        if not selected:
            return LintReport((), ())
        history = emit(destination, script_location)
    return LintReport(tuple(selected), tuple(review(history, set(selected))))
