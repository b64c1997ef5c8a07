"""Warm start of a worker whose database is already at head, as whole processes.

    python bench/startup.py            # full run (about 3 minutes)
    python bench/startup.py --quick    # fewer repetitions (about 1 minute)

For SQLite and PostgreSQL, at 2 (the shipped history), 100 and 1000 revisions, it times whole
processes started against a database already at head:

floor        imports SQLAlchemy, connects, ``SELECT version_num FROM alembic_version``, and
             ``sa.inspect(connection).get_columns(table)`` for the package's three tables: the
             least a process can do to look at the database it is about to serve.
warm start   imports the package, ``MigrationManager(...).run_startup('upgrade')`` (which builds
             the engine and connects); the process fails unless the warm-start path answered and
             Alembic was never imported.
check only   the package's engine and ``fingerprint.WarmStart(...).check()``: the warm-start check
             without the startup hook around it.
flask db     ``flask db upgrade`` of a tiny Flask app with plain Flask-Migrate on the script dir.
alembic      ``alembic upgrade head`` with an alembic.ini.

The extra revisions are no-ops appended to a copy of the real ones in a temporary script
directory, so the models still match; each database is upgraded to head before timing, and one
start per case before timing takes the full path so that the warm-start cache (kept in a
temporary ``AI_SECRETARY_SCHEMA_CACHE_DIR``) remembers the database. Variants
are interleaved in a shuffled order in every round (the machine is shared and noisy) and the
median of each is reported, with its ratio to the floor measured in the same rounds. Both
bytecode settings are run: ``off`` as these machines run (``PYTHONDONTWRITEBYTECODE=1``: the
package's own modules and the revision files are compiled at every start, site-packages use the
``.pyc`` files they were installed with) and ``on`` as a user's machine runs (every module from
cached bytecode, kept in a temporary ``PYTHONPYCACHEPREFIX`` and warmed before timing).

A throwaway PostgreSQL database per revision count is created on 127.0.0.1:5432 (user postgres;
``--pg-url`` for another server) and dropped at the end; ``--no-pg`` runs SQLite only.
"""

# ruff: noqa: T201 (a benchmark reports by printing)
from __future__ import annotations

import argparse
import importlib.util
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from ai_secretary_schema.migrator import upgrade

#: The order matters for the warm-up: "warm start" takes the full path once and fills the
#: warm-start cache, which "check only" then reads.
VARIANTS = ("floor", "warm start", "check only", "flask db upgrade", "alembic upgrade head")
#: Variants timed in every round; the slow reference commands are timed in fewer rounds.
CORE = ("floor", "warm start", "check only")
TARGET_FLOOR_RATIO = 1.2
TARGET_FLAT_RATIO = 1.1
#: Files of the script directories are dated well outside the warm-start cache's "racy" window:
#: a package key taken within 2 s of a file's mtime is never stored under.
OLD_MTIME = time.time() - 86_400
TABLES = ("tenants", "users", "performance_alerts")

FLOOR = f"""\
import sys

import sqlalchemy as sa

engine = sa.create_engine(sys.argv[1], poolclass=sa.pool.NullPool)
with engine.connect() as connection:
    connection.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    inspector = sa.inspect(connection)
    for table in {TABLES!r}:
        inspector.get_columns(table)
engine.dispose()
"""

WARM = """\
import os
import sys

import ai_secretary_schema
from ai_secretary_schema.migration_manager import MigrationManager

manager = MigrationManager(url=sys.argv[1], script_location=sys.argv[2])
try:
    hit = manager.run_startup("upgrade").fast_path
finally:
    manager.close()
# The first start of a case takes the full path (Alembic's comparison) and remembers the
# database's fingerprint; every later one must answer from it without importing Alembic.
if not os.environ.get("BENCH_FIRST_START") and (not hit or "alembic" in sys.modules):
    sys.exit(f"not a warm start: hit={hit}, alembic imported={'alembic' in sys.modules}")
"""

CHECK_ONLY = f"""\
import sys

from sqlalchemy.engine import make_url

from ai_secretary_schema.engine import create_engine
from ai_secretary_schema.fingerprint import WarmStart

engine = create_engine(make_url(sys.argv[1]), pooled=False)
with engine.connect() as connection:
    check = WarmStart(sys.argv[2], {TABLES!r}).check(connection)
engine.dispose()
if not check.hit or "alembic" in sys.modules:
    sys.exit(f"not a warm start: {{check.reason}}, alembic imported={{'alembic' in sys.modules}}")
"""

FLASK_APP = """\
import os

from flask import Flask
from flask_migrate import Migrate

from ai_secretary_schema.models import Base


class Db:
    # Migrate(app, None) registers no `flask db` commands: give it the metadata.
    metadata = Base.metadata


app = Flask(__name__)
Migrate(app, Db(), directory=os.environ["BENCH_SCRIPT_DIR"])
"""

ALEMBIC_INI = """\
[alembic]
script_location = {script_dir}
path_separator = os
"""

REVISION = '''\
"""No-op revision {number} of the benchmark."""

from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401

revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
'''


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def migrations_directory() -> Path:
    """The package's script directory, found without importing Alembic (as a worker would)."""
    spec = importlib.util.find_spec("ai_secretary_schema.migrations")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("ai_secretary_schema.migrations is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def make_script_dir(root: Path, revisions: int) -> Path:
    """A copy of the real script directory with no-op revisions up to ``revisions`` in all."""
    source = migrations_directory()
    target = root / f"scripts-{revisions}"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    versions = target / "versions"
    real = sorted(path for path in versions.glob("[0-9]*.py"))
    down = real[-1].name.split("_", 1)[0]
    for number in range(len(real) + 1, revisions + 1):
        revision = f"{number:04d}"
        path = versions / f"{revision}_noop.py"
        path.write_text(REVISION.format(number=number, revision=revision, down=down))
        os.utime(path, (OLD_MTIME, OLD_MTIME))
        down = revision
    ini = target / "alembic.ini"
    ini.write_text(ALEMBIC_INI.format(script_dir=target))
    os.utime(ini, (OLD_MTIME, OLD_MTIME))
    return target


@dataclass(frozen=True)
class Case:
    dialect: str
    revisions: int
    url: str
    script_dir: Path


@contextmanager
def pg_databases(admin_url: URL, names: list[str]) -> Iterator[list[str]]:
    """Create the databases (on the server of ``admin_url``), drop them afterwards."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    created: list[str] = []
    try:
        with admin.connect() as connection:
            for name in names:
                connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
                created.append(name)
        yield [admin_url.set(database=name).render_as_string(False) for name in names]
    finally:
        with admin.connect() as connection:
            for name in created:
                connection.exec_driver_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                )
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        admin.dispose()


def command(variant: str, case: Case, tmp: Path) -> tuple[list[str], dict[str, str]]:
    python = sys.executable
    env = {
        "DATABASE_URL": case.url,
        "BENCH_SCRIPT_DIR": str(case.script_dir),
        # A cache of the benchmark's own: it starts empty and leaves ~/.cache alone.
        "AI_SECRETARY_SCHEMA_CACHE_DIR": str(tmp / "warm-cache"),
    }
    if variant == "floor":
        return [python, str(tmp / "floor.py"), case.url], env
    if variant == "warm start":
        return [python, str(tmp / "warm.py"), case.url, str(case.script_dir)], env
    if variant == "check only":
        return [python, str(tmp / "check.py"), case.url, str(case.script_dir)], env
    if variant == "flask db upgrade":
        return [python, "-m", "flask", "--app", str(tmp / "flaskapp.py"), "db", "upgrade"], env
    ini = str(case.script_dir / "alembic.ini")
    return [python, "-m", "alembic", "-c", ini, "-x", f"url={case.url}", "upgrade", "head"], env


def bytecode_env(mode: str, tmp: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
    }
    if mode == "off":
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    return env


def run(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    completed = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv)} failed ({completed.returncode}):\n{completed.stderr[-3000:]}"
        )
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--rounds", type=int, help="rounds of floor and warm start (default 7)")
    parser.add_argument(
        "--revisions", default="2,100,1000", help="revision counts (default 2,100,1000)"
    )
    parser.add_argument("--bytecode", choices=("off", "on", "both"), default="both")
    parser.add_argument(
        "--pg-url", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rounds = args.rounds or (3 if args.quick else 7)
    slow_rounds = 1 if args.quick else 3
    counts = [int(n) for n in args.revisions.split(",")]
    modes = ["off", "on"] if args.bytecode == "both" else [args.bytecode]
    rng = random.Random(args.seed)
    started = time.perf_counter()

    tmp = Path(tempfile.mkdtemp(prefix="ais-bench-"))
    try:
        (tmp / "floor.py").write_text(FLOOR)
        (tmp / "warm.py").write_text(WARM)
        (tmp / "check.py").write_text(CHECK_ONLY)
        (tmp / "flaskapp.py").write_text(FLASK_APP)
        script_dirs = {n: make_script_dir(tmp, n) for n in counts}
        pg_counts = [] if args.no_pg else counts
        pg_names = [f"ais_bench_{os.getpid()}_{n}" for n in pg_counts]
        with pg_databases(make_url(args.pg_url), pg_names) as pg_urls:
            cases = [
                Case("sqlite", n, f"sqlite:///{tmp / f'db-{n}.sqlite'}", script_dirs[n])
                for n in counts
            ] + [
                Case("postgresql", n, url, script_dirs[n])
                for n, url in zip(pg_counts, pg_urls, strict=True)
            ]
            for case in cases:
                log(f"upgrading {case.dialect} to head at {case.revisions} revisions ...")
                upgrade(case.url, script_location=case.script_dir)
            samples, ratios = measure(cases, modes, tmp, rounds, slow_rounds, rng)
        report(cases, modes, samples, ratios, rounds, slow_rounds, time.perf_counter() - started)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


#: (bytecode mode, dialect, revisions, variant) -> seconds of each round.
Samples = dict[tuple[str, str, int, str], list[float]]
#: The same key -> that variant's time divided by the floor's in the same block.
Ratios = dict[tuple[str, str, int, str], list[float]]


def measure(
    cases: list[Case],
    modes: list[str],
    tmp: Path,
    rounds: int,
    slow_rounds: int,
    rng: random.Random,
) -> tuple[Samples, Ratios]:
    """Time every variant; each round runs blocks (one case, one mode) in shuffled order.

    Within a block the variants run back to back in shuffled order, so that each ratio to the
    floor compares processes that ran within a second or two of each other.
    """
    samples: Samples = defaultdict(list)
    ratios: Ratios = defaultdict(list)
    log("warming up (writes the warm-start caches and, for bytecode on, the .pyc files) ...")
    for mode in modes:
        base = bytecode_env(mode, tmp)
        for case in cases:
            for variant in VARIANTS:
                argv, extra = command(variant, case, tmp)
                if variant == "warm start":
                    run(argv, {**base, **extra, "BENCH_FIRST_START": "1"})
                run(argv, {**base, **extra})
    for index in range(rounds):
        log(f"round {index + 1}/{rounds} ...")
        blocks = [(mode, case) for mode in modes for case in cases]
        rng.shuffle(blocks)
        for mode, case in blocks:
            variants = [v for v in VARIANTS if v in CORE or index < slow_rounds]
            rng.shuffle(variants)
            times: dict[str, float] = {}
            for variant in variants:
                argv, extra = command(variant, case, tmp)
                times[variant] = run(argv, {**bytecode_env(mode, tmp), **extra})
            for variant, elapsed in times.items():
                key = (mode, case.dialect, case.revisions, variant)
                samples[key].append(elapsed)
                ratios[key].append(elapsed / times["floor"])
    return samples, ratios


MODE_TITLES = {
    "off": "bytecode caching OFF (PYTHONDONTWRITEBYTECODE=1, as on these machines: the package's "
    "modules and the revision files compile at every start)",
    "on": "bytecode caching ON (PYTHONPYCACHEPREFIX, warmed: every module from cached bytecode, "
    "as on a user's machine)",
}


def report(
    cases: list[Case],
    modes: list[str],
    samples: Samples,
    ratios: Ratios,
    rounds: int,
    slow_rounds: int,
    total: float,
) -> None:
    median = statistics.median
    print("ai-secretary-schema: start of a worker whose database is already at head")
    print(
        f"Python {sys.version.split()[0]}, SQLAlchemy {sa.__version__}, "
        f"alembic {_dist_version('alembic')}, Flask-Migrate {_dist_version('Flask-Migrate')}, "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"whole processes, wall clock, median of {rounds} rounds ({', '.join(CORE)}) and of "
        f"{slow_rounds} (the others);"
    )
    print(
        "(x) = median of the ratios to the floor run next to it; 'check only' is the package's "
        "engine + fingerprint.WarmStart.check() without MigrationManager"
    )
    worst_floor = 0.0
    worst_flat = 0.0
    for mode in modes:
        print()
        print(MODE_TITLES[mode])
        print(
            f"{'dialect':<11}{'revisions':>9}{'floor':>9}"
            + "".join(f"{v:>22}" for v in VARIANTS[1:])
        )
        for case in cases:
            keys = {v: (mode, case.dialect, case.revisions, v) for v in VARIANTS}
            floor = median(samples[keys["floor"]]) * 1000
            line = f"{case.dialect:<11}{case.revisions:>9}{floor:>7.0f}ms"
            for variant in VARIANTS[1:]:
                value = median(samples[keys[variant]]) * 1000
                line += f"{value:>12.0f}ms ({median(ratios[keys[variant]]):4.2f}x)"
            print(line)
            worst_floor = max(worst_floor, median(ratios[keys["warm start"]]))
        for dialect in dict.fromkeys(case.dialect for case in cases):
            counts = sorted(case.revisions for case in cases if case.dialect == dialect)
            if len(counts) < 2:
                continue
            # The floor does the same work at every revision count, so dividing by it (paired)
            # cancels the machine's load drifting between blocks.
            first = median(ratios[(mode, dialect, counts[0], "warm start")])
            last = median(ratios[(mode, dialect, counts[-1], "warm start")])
            raw = median(samples[(mode, dialect, counts[-1], "warm start")]) / median(
                samples[(mode, dialect, counts[0], "warm start")]
            )
            worst_flat = max(worst_flat, last / first)
            print(
                f"  {dialect}: warm start at {counts[-1]} revisions / at {counts[0]}: "
                f"{last / first:.2f}x (floor-normalised; raw medians {raw:.2f}x)"
            )
    print()
    verdict = "met" if worst_floor <= TARGET_FLOOR_RATIO else "MISSED"
    print(
        f"target: warm start <= {TARGET_FLOOR_RATIO}x the floor: {verdict} "
        f"(worst {worst_floor:.2f}x)"
    )
    verdict = "met" if worst_flat <= TARGET_FLAT_RATIO else "MISSED"
    print(
        f"target: warm start at the most revisions <= {TARGET_FLAT_RATIO}x at the fewest: "
        f"{verdict} (worst {worst_flat:.2f}x)"
    )
    print(f"total run time {total:.0f} s")


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
