"""``ai-secretary-schema``: the package's migrations from the command line.

A thin layer: each command calls a library function, prints its result, and turns the package's
typed errors into a one-line message on stderr and exit status 1 (2 for bad usage).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from ai_secretary_schema import commands
from ai_secretary_schema.errors import SchemaError
from ai_secretary_schema.redaction import redact_text

logger = logging.getLogger("ai_secretary_schema.cli")

Handler = Callable[[argparse.Namespace], int]


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _cmd_upgrade(args: argparse.Namespace) -> int:
    _out(commands.upgrade(args.url, args.revision).describe())
    return 0


def _cmd_downgrade(args: argparse.Namespace) -> int:
    _out(commands.downgrade(args.url, args.revision).describe())
    return 0


def _cmd_current(args: argparse.Namespace) -> int:
    _out(commands.current(args.url).describe())
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    for line in commands.history():
        _out(line)
    return 0


def _cmd_heads(args: argparse.Namespace) -> int:
    for head in commands.heads():
        _out(head)
    return 0


def _cmd_sql(args: argparse.Namespace) -> int:
    _out(commands.offline_sql(args.url, args.revision))
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        help="database URL (default: $DATABASE_URL, else sqlite:///ai_secretary.db)",
    )
    parser = argparse.ArgumentParser(
        prog="ai-secretary-schema",
        description="Migrate and inspect the AI Secretary database (SQLite or PostgreSQL).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log Alembic's progress")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        command_parser = sub.add_parser(name, parents=[common], help=help_text)
        command_parser.set_defaults(handler=handler)
        return command_parser

    add("upgrade", _cmd_upgrade, "upgrade the database (default: to head)").add_argument(
        "revision", nargs="?", default="head", help="target revision (default: head)"
    )
    add("downgrade", _cmd_downgrade, "downgrade the database to REVISION").add_argument(
        "revision", help="target revision: an id, -1, or base"
    )
    add("current", _cmd_current, "show the database's revision")
    add("history", _cmd_history, "list the revisions, newest first")
    add("heads", _cmd_heads, "list the head revision(s)")
    add("sql", _cmd_sql, "print the SQL of an upgrade (offline mode)").add_argument(
        "revision", nargs="?", default="head", help="target revision (default: head)"
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
        return handler(args)
    except SchemaError as exc:
        sys.stderr.write(f"ai-secretary-schema: error: {redact_text(str(exc))}\n")
        return 1


if __name__ == "__main__":  # pragma: no cover - exercised through `python -m`
    sys.exit(main())
