"""What the lint found: one :class:`Finding` per unsafe statement, and the :class:`LintReport`
of a run, for people (:meth:`LintReport.to_text`) and machines (:meth:`LintReport.to_json`).

Kept free of Alembic and SQLAlchemy: :class:`~ai_secretary_schema.schema_report.SchemaReport`
carries findings too (``check`` runs the lint), and a warm start imports that report.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from ai_secretary_schema.lint.rules import RULES, Severity

__all__ = ["SUPPRESS_HINT", "Finding", "LintReport"]

SUPPRESS_HINT = (
    "if a finding is safe in its revision, say why there: "
    "lint_ignore = {'rule-id': 'why it is safe here'}"
)
_STATEMENT_WIDTH = 100


@dataclass(frozen=True)
class Finding:
    """One rule that fired on one statement of one revision."""

    rule: str  #: a key of :data:`~ai_secretary_schema.lint.rules.RULES`
    revision: str
    statement: str  #: the statement, whitespace collapsed to single spaces
    message: str  #: what this statement does here, the lock it takes and why that hurts
    safe: str  #: the safe way (the rule's)
    table: str | None = None
    file: str | None = None  #: the revision's file name
    severity: Severity = "error"

    @property
    def fails(self) -> bool:
        return self.severity == "error"

    def to_text(self) -> str:
        """A headline (revision, rule, statement), what it does here, the safe way."""
        statement = self.statement
        if len(statement) > _STATEMENT_WIDTH:
            statement = statement[: _STATEMENT_WIDTH - 1] + "…"
        mark = "" if self.fails else " (info)"
        return (
            f"{self.revision} {self.rule}{mark}: {statement}\n"
            f"    {self.message}\n"
            f"    safe: {self.safe}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lock": RULES[self.rule].lock}


@dataclass(frozen=True)
class LintReport:
    """The findings of one run over ``revisions`` (oldest first), in revision order."""

    revisions: tuple[str, ...]
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(finding for finding in self.findings if finding.fails)

    @property
    def ok(self) -> bool:
        """No finding that fails (information does not)."""
        return not self.errors

    def summary(self) -> str:
        reviewed = f"{len(self.revisions)} revision(s) reviewed"
        if not self.findings:
            return f"lint: {reviewed}, no findings"
        errors = len(self.errors)
        where = len({finding.revision for finding in self.errors})
        infos = len(self.findings) - errors
        text = f"lint: {reviewed}, {errors} finding(s) in {where} revision(s)"
        if infos:
            text += f", {infos} for information"
        return text

    def to_text(self) -> str:
        lines = [finding.to_text() for finding in self.findings]
        lines.append(self.summary() + ("" if self.ok else f"; {SUPPRESS_HINT}"))
        return "\n".join(lines)

    def to_json(self, **kwargs: Any) -> str:
        """The findings as a JSON list of objects (``rule``, ``revision``, ``statement``,
        ``message``, ``safe``, ``lock``, ``table``, ``file``, ``severity``)."""
        return json.dumps([finding.to_dict() for finding in self.findings], **kwargs)
