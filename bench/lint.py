"""The lint of 50 revisions, against plain Alembic emitting the same offline SQL.

    python bench/lint.py              # about 30 seconds
    python bench/lint.py --rounds 3   # fewer repetitions

A temporary script directory holds the shipped revisions and more, 50 in all (a mix of what
revisions do: nullable columns, concurrent indexes in ``autocommit_block()``, NOT VALID foreign
keys validated a revision later, new tables with indexes and foreign keys, a suppressed drop).
Every figure is the median of ``--rounds`` runs, each in a new process:

in-process   after ``import ai_secretary_schema.lint``: the first ``lint()`` (it imports Alembic
             and the models on the way, and Alembic loads the 50 revision files), then a repeat
             in the same process; beside them, plain Alembic's ``command.upgrade(config,
             "base:heads", sql=True)`` on the same script directory with a bare ``Config``, the
             first run importing Alembic as well. The lint's run is one such offline run
             (PostgreSQL), plus an upgrade of an in-memory SQLite database (the SQLite
             table-copy review), the range look-up (a third load of the revision files) and the
             review itself.
processes    ``ai-secretary-schema lint --script-location DIR`` against ``alembic -c INI upgrade
             base:heads --sql`` (both print the result; output discarded).

Target: the first ``lint()`` of 50 revisions in a process that has imported the package takes
under 1 s. Bytecode: as the environment says (these machines set ``PYTHONDONTWRITEBYTECODE=1``:
the package and the revision files compile at every start); the run prints which.
"""

# ruff: noqa: T201 (a benchmark reports by printing)
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ai_secretary_schema.history import heads, migrations_directory

REVISIONS = 50
TARGET_SECONDS = 1.0
PG_URL = "postgresql+psycopg2://bench@localhost/bench"

HEADER = '''"""Bench revision {rev}.

Revision ID: {rev}
Revises: {down}
"""

import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None
{top}

def upgrade():
{upgrade}


def downgrade():
{downgrade}
'''

#: (module-level lines, upgrade body, downgrade body), in turn from the first revision after the
#: shipped ones; {n} is the
#: revision's number. Each runs on SQLite too (batch mode, PostgreSQL-only SQL guarded).
KINDS: tuple[tuple[str, str, str], ...] = (
    (
        "",
        '    op.add_column("users", sa.Column("note_{n}", sa.String(100)))',
        '    op.drop_column("users", "note_{n}")',
    ),
    (
        "",
        "    with op.get_context().autocommit_block():\n"
        '        op.create_index("ix_users_note_{n1}", "users", ["note_{n1}"], '
        "postgresql_concurrently=True)",
        '    op.drop_index("ix_users_note_{n1}", table_name="users")',
    ),
    (
        "",
        '    op.create_table(\n        "things_{n}",\n'
        '        sa.Column("id", sa.Integer(), primary_key=True),\n'
        '        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id")),\n'
        '        sa.Column("name", sa.String(50), nullable=False),\n    )\n'
        '    op.create_index("ix_things_{n}_name", "things_{n}", ["name"])',
        '    op.drop_table("things_{n}")',
    ),
    (
        "",
        '    with op.batch_alter_table("things_{n1}") as batch:\n'
        '        batch.add_column(sa.Column("tenant_id", sa.Integer()))\n'
        '        batch.create_foreign_key("fk_things_{n1}_tenant", "tenants", ["tenant_id"], '
        '["id"], postgresql_not_valid=True)',
        '    with op.batch_alter_table("things_{n1}") as batch:\n'
        '        batch.drop_column("tenant_id")',
    ),
    (
        'lint_ignore = {{"drop-column": "note_{n4} was never read"}}',
        '    if op.get_context().dialect.name == "postgresql":\n'
        '        op.execute("ALTER TABLE things_{n2} VALIDATE CONSTRAINT fk_things_{n2}_tenant")\n'
        "    with op.get_context().autocommit_block():\n"
        '        op.drop_index("ix_users_note_{n4}", table_name="users", '
        "postgresql_concurrently=True)\n"
        '    with op.batch_alter_table("users") as batch:\n'
        '        batch.drop_column("note_{n4}")',
        '    op.add_column("users", sa.Column("note_{n4}", sa.String(100)))',
    ),
)

IN_PROCESS = """\
import io, json, sys, time

t0 = time.perf_counter()
import ai_secretary_schema.lint as lint_module
t1 = time.perf_counter()
script_dir = sys.argv[1]
if sys.argv[2] == "lint":
    def run():
        report = lint_module.lint(script_location=script_dir)
        unreviewed = [f for f in report.findings if f.rule == "sqlite-not-reviewed"]
        assert report.ok and len(report.revisions) == 50 and not unreviewed, report.to_text()
else:
    def run():
        # Imported here, as the lint imports Alembic on its first call.
        from alembic import command
        from alembic.config import Config

        config = Config(output_buffer=io.StringIO())
        config.set_main_option("script_location", script_dir)
        config.set_main_option("sqlalchemy.url", sys.argv[3])
        command.upgrade(config, "base:heads", sql=True)
t2 = time.perf_counter()
run()
t3 = time.perf_counter()
run()
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first": t3 - t2, "again": t4 - t3}))
"""

ALEMBIC_INI = """\
[alembic]
script_location = {script_dir}
path_separator = os
sqlalchemy.url = {url}
"""


def build(root: Path) -> Path:
    """The shipped revisions and more, 50 in all, in ``root``/migrations; returns the directory."""
    source = migrations_directory()
    target = root / "migrations"
    (target / "versions").mkdir(parents=True)
    for name in ("env.py", "script.py.mako"):
        shutil.copy(source / name, target / name)
    shipped = sorted((source / "versions").glob("[0-9]*.py"))
    for path in shipped:
        shutil.copy(path, target / "versions" / path.name)
    first = len(shipped) + 1
    for n in range(first, REVISIONS + 1):
        top, upgrade, downgrade = KINDS[(n - first) % len(KINDS)]
        # n1, n2, n4: the revisions 1, 2 and 4 back, whose column, table or key a kind uses.
        names = {"n": n, "n1": n - 1, "n2": n - 2, "n4": n - 4}
        (target / "versions" / f"{n:04d}_bench.py").write_text(
            HEADER.format(
                rev=f"{n:04d}",
                down=heads()[0] if n == first else f"{n - 1:04d}",
                top=top.format(**names),
                upgrade=upgrade.format(**names),
                downgrade=downgrade.format(**names),
            )
        )
    return target


def in_process(script_dir: Path, what: str) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", IN_PROCESS, str(script_dir), what, PG_URL],
        capture_output=True,
        text=True,
        check=True,
    )
    timings: dict[str, float] = json.loads(result.stdout)
    return timings


def whole_process(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, capture_output=True, check=True)
    return time.perf_counter() - start


def median(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.0f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="runs per figure (default 7)")
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory(prefix="ais-bench-lint-") as directory:
        root = Path(directory)
        script_dir = build(root)
        ini = root / "alembic.ini"
        ini.write_text(ALEMBIC_INI.format(script_dir=script_dir, url=PG_URL))
        runs: dict[str, list[dict[str, float]]] = {"lint": [], "alembic": []}
        processes: dict[str, list[float]] = {"lint": [], "alembic": []}
        lint_command = [str(bin_dir / "ai-secretary-schema"), "lint"]
        lint_command += ["--script-location", str(script_dir)]
        alembic_command = [str(bin_dir / "alembic"), "-c", str(ini)]
        alembic_command += ["upgrade", "base:heads", "--sql"]
        for _ in range(args.rounds):
            for what in ("lint", "alembic"):
                runs[what].append(in_process(script_dir, what))
            processes["lint"].append(whole_process(lint_command, root))
            processes["alembic"].append(whole_process(alembic_command, root))

    bytecode = "off" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "on"
    print(f"{REVISIONS} revisions, median of {args.rounds} runs, bytecode caching {bytecode}")
    print()
    print(f"{'':34}{'lint':>10}  {'alembic --sql':>14}")
    for key, label in (
        ("import", "import ai_secretary_schema.lint"),
        ("first", "first run in the process"),
        ("again", "second run in the process"),
    ):
        lint_times = [run[key] for run in runs["lint"]]
        alembic_times = [run[key] for run in runs["alembic"]]
        alembic = "" if key == "import" else median(alembic_times)
        print(f"{label:34}{median(lint_times):>10}  {alembic:>14}")
    print(
        f"{'whole process (CLI)':34}{median(processes['lint']):>10}  "
        f"{median(processes['alembic']):>14}"
    )
    first = statistics.median(run["first"] for run in runs["lint"])
    verdict = "met" if first < TARGET_SECONDS else "MISSED"
    print()
    print(
        f"target: first lint of {REVISIONS} revisions after import < {TARGET_SECONDS:.0f} s: "
        f"{verdict} ({first:.2f} s)"
    )
    return 0 if first < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
