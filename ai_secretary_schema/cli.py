"""``ai-secretary-schema``: the package's migrations from the command line.

A thin layer over :class:`~ai_secretary_schema.migrator.Migrator`: the settings are resolved
once (``--url``, else ``DATABASE_URL``, else ``sqlite:///ai_secretary.db``; an empty ``--url``
is an error), each command calls one method, prints its result, and turns the package's typed
errors (connection failures included) into a one-line, redacted message on stderr and exit
status 1 (2 for bad usage).

``check`` is the drift check for CI: it upgrades a scratch database to head and compares it with
the models; exit 0 when they agree, 1 listing every difference (or more than one head). Without
``--url`` the scratch database is a temporary SQLite file; with a PostgreSQL ``--url`` a scratch
database is created on that server and dropped afterwards (the role needs ``CREATEDB``; the URL's
own database is not changed). ``validate`` reports a live database the same way and never alters
it. Both take ``--json``.

``lint [REVISION_RANGE]`` reviews the revisions for lock safety on a live PostgreSQL database
(:mod:`ai_secretary_schema.lint`; ``check`` runs it on every revision too): exit 0 when clean,
1 listing each finding with its safe way, 2 for a range naming an unknown revision.

``grant-app-role NAME [--password-env VAR]`` creates the application's PostgreSQL role (owns
nothing, cannot bypass row-level security) and grants it what it needs
(:func:`ai_secretary_schema.roles.grant_app_role`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ai_secretary_schema.errors import (
    AppRoleError,
    MigrationError,
    RevisionRangeError,
    SchemaError,
)
from ai_secretary_schema.history import HostHistory
from ai_secretary_schema.migrator import Migrator, check
from ai_secretary_schema.redaction import redact_text
from ai_secretary_schema.schema_report import SchemaReport
from ai_secretary_schema.settings import SchemaSettings

logger = logging.getLogger("ai_secretary_schema.cli")

Handler = Callable[[argparse.Namespace, Migrator], int]


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _cmd_upgrade(args: argparse.Namespace, migrator: Migrator) -> int:
    _out(migrator.upgrade(args.revision).describe())
    return 0


def _cmd_downgrade(args: argparse.Namespace, migrator: Migrator) -> int:
    _out(migrator.downgrade(args.revision).describe())
    return 0


def _cmd_stamp(args: argparse.Namespace, migrator: Migrator) -> int:
    _out(migrator.stamp(args.revision).describe())
    return 0


def _cmd_current(args: argparse.Namespace, migrator: Migrator) -> int:
    _out(migrator.current().describe())
    return 0


def _cmd_history(args: argparse.Namespace, migrator: Migrator) -> int:
    for line in migrator.history():
        _out(line)
    return 0


def _cmd_heads(args: argparse.Namespace, migrator: Migrator) -> int:
    for head in migrator.heads():
        _out(head)
    return 0


def _cmd_sql(args: argparse.Namespace, migrator: Migrator) -> int:
    _out(migrator.sql(args.revision))
    return 0


def _report(report: SchemaReport, as_json: bool) -> int:
    _out(report.to_json(indent=2) if as_json else report.to_text())
    return 0 if report.ok else 1


def _cmd_check(args: argparse.Namespace, migrator: Migrator) -> int:
    return _report(
        check(args.url, script_location=args.script_location, host=_host(args)), args.json
    )


def _cmd_validate(args: argparse.Namespace, migrator: Migrator) -> int:
    return _report(migrator.validate(), args.json)


def _cmd_lint(args: argparse.Namespace, migrator: Migrator) -> int:
    report = migrator.lint(args.revision_range)
    _out(report.to_json(indent=2) if args.json else report.to_text())
    return 0 if report.ok else 1


def _cmd_grant_app_role(args: argparse.Namespace, migrator: Migrator) -> int:
    from ai_secretary_schema.migrator import PACKAGE_TABLES
    from ai_secretary_schema.roles import grant_app_role

    password = None
    if args.password_env is not None:
        password = os.environ.get(args.password_env)
        if not password:
            raise AppRoleError(
                f"--password-env {args.password_env}: that environment variable is not set "
                "or empty; export the password in it (it is never printed)",
                role=args.name,
            )
    _out(grant_app_role(migrator.engine, args.name, PACKAGE_TABLES, password=password).describe())
    return 0


def _host(args: argparse.Namespace) -> HostHistory | None:
    if args.directory is None:
        return None
    directory = Path(args.directory)
    if not (directory / "versions").is_dir():
        raise MigrationError(
            f"--directory {directory}: no versions/ directory there; it names the "
            "application's migrations directory (the one `flask db init` made)"
        )
    metadata = None
    ini = directory / "alembic.ini"
    if ini.is_file():
        from alembic.config import Config

        from ai_secretary_schema.migration_env import ini_host_metadata

        metadata = ini_host_metadata(Config(str(ini)))
    return HostHistory(directory.resolve(), metadata)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        help="database URL (default: $DATABASE_URL, else sqlite:///ai_secretary.db)",
    )
    common.add_argument(
        "--script-location",
        metavar="DIR",
        help="Alembic script directory (default: the migrations shipped with the package)",
    )
    common.add_argument(
        "--directory",
        metavar="DIR",
        help="the application's own migrations directory (its revisions in DIR/versions), "
        "migrated beside the package's in one version table; its tables are compared too "
        "when DIR/alembic.ini names its models (ai_secretary_schema.host_metadata = "
        "module:attribute)",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print the report as JSON")
    parser = argparse.ArgumentParser(
        prog="ai-secretary-schema",
        description="Migrate and inspect the AI Secretary database (SQLite or PostgreSQL).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log Alembic's progress")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, handler: Handler, help_text: str, *, report: bool = False
    ) -> argparse.ArgumentParser:
        parents = [common, as_json] if report else [common]
        command_parser = sub.add_parser(name, parents=parents, help=help_text)
        command_parser.set_defaults(handler=handler)
        return command_parser

    add("upgrade", _cmd_upgrade, "upgrade the database (default: to head)").add_argument(
        "revision", nargs="?", default="head", help="target revision (default: head)"
    )
    add("downgrade", _cmd_downgrade, "downgrade the database to REVISION").add_argument(
        "revision", help="target revision: an id, -1, or base"
    )
    add("stamp", _cmd_stamp, "record REVISION without running migrations").add_argument(
        "revision", help="revision to record: an id, head, or base"
    )
    add("current", _cmd_current, "show the database's revision")
    add("history", _cmd_history, "list the revisions, newest first")
    add("heads", _cmd_heads, "list the head revision(s)")
    add("sql", _cmd_sql, "print the SQL of an upgrade (offline mode)").add_argument(
        "revision", nargs="?", default="head", help="target revision (default: head)"
    )
    add(
        "check",
        _cmd_check,
        "upgrade a scratch database (SQLite; PostgreSQL with --url) to head and compare it with "
        "the models, and lint every revision: exit 1 listing every difference and unsafe "
        "statement, or on more than one head",
        report=True,
    )
    add(
        "validate",
        _cmd_validate,
        "compare a live database with the models and the head revision (never alters it): "
        "exit 1 when it is behind head or differs",
        report=True,
    )
    add(
        "lint",
        _cmd_lint,
        "review the revisions for lock safety on a live PostgreSQL database (never connects): "
        "exit 1 listing each unsafe statement and its safe way",
        report=True,
    ).add_argument(
        "revision_range",
        nargs="?",
        metavar="REVISION_RANGE",
        help="A:B for the revisions after A up to B (as `alembic upgrade A:B --sql`), or one "
        "revision (default: every revision)",
    )
    grant = add(
        "grant-app-role",
        _cmd_grant_app_role,
        "PostgreSQL: create (if missing) the application's role NAME, which owns nothing and "
        "cannot bypass row-level security, and grant it the least it needs on the package's "
        "tables and sequences; run as the owner, after each upgrade that adds a table",
    )
    grant.add_argument("name", metavar="NAME", help="the role's name, e.g. ais_app")
    grant.add_argument(
        "--password-env",
        metavar="VAR",
        help="set the role's password from this environment variable (never printed)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    try:
        settings = SchemaSettings.resolve(database_url=args.url)
        with Migrator(
            settings, script_location=args.script_location, progress=sys.stdout, host=_host(args)
        ) as migrator:
            return handler(args, migrator)
    except SchemaError as exc:
        message = " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        sys.stderr.write(f"ai-secretary-schema: error: {redact_text(message)}\n")
        return 2 if isinstance(exc, RevisionRangeError) else 1


if __name__ == "__main__":  # pragma: no cover - exercised through `python -m`
    sys.exit(main())
