"""Start-up of an application with its own migrations beside the package's, as whole processes.

    python bench/host.py            # SQLite and PostgreSQL, 9 rounds
    python bench/host.py --quick    # 3 rounds

Against a database already at both heads, for SQLite and a throwaway PostgreSQL database on
127.0.0.1:5432, it times whole new processes:

plain app        Flask + Flask-SQLAlchemy with the same ``Note`` model, connecting once
                 (``SELECT 1``): the least an application that uses a database does at start.
package alone    ``SchemaExtension(app)`` without ``directory``: one history, warm start (on a
                 database of its own: the package alone refuses one that holds the host's
                 revisions).
two histories    ``examples.host_app.create_app()``: both histories, warm start (the key covers
                 the host's revisions and the DDL of its models).
flask db upgrade ``flask db upgrade`` of the example: Alembic reads both histories and finds
                 nothing to do (what a release step pays on every deploy).

Variants run back to back in a shuffled order in every round (the machine is shared and
noisy); the median of each and its ratio to ``plain app`` of the same round are printed.
"""

# ruff: noqa: T201 (a benchmark reports by printing)
from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

REPO = Path(__file__).resolve().parents[1]

PLAIN = """
import sqlalchemy as sa
from flask import Flask
from examples.host_app import db

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = {url!r}
db.init_app(app)
with app.app_context():
    with db.engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
"""

PACKAGE_ALONE = """
from flask import Flask
from ai_secretary_schema import SchemaExtension

app = Flask(__name__)
report = SchemaExtension(app, health_path=None).state(app).startup_report
assert report.fast_path, report.to_text()
"""

TWO_HISTORIES = """
from examples.host_app import create_app

app = create_app()
report = app.extensions["ai_secretary_schema"].startup_report
assert report.fast_path, report.to_text()
"""

VARIANTS = ("plain app", "package alone", "two histories", "flask db upgrade")


def command(variant: str, url: str) -> list[str]:
    python = sys.executable
    if variant == "plain app":
        return [python, "-c", PLAIN.format(url=url)]
    if variant == "package alone":
        return [python, "-c", PACKAGE_ALONE]
    if variant == "two histories":
        return [python, "-c", TWO_HISTORIES]
    return [python, "-m", "flask", "--app", "examples.host_app:create_app", "db", "upgrade"]


def run(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{argv[-1][:60]!r} failed:\n{done.stderr[-3000:]}")
    return elapsed


def bench(dialect: str, url: str, alone: str, rounds: int, rng: random.Random, cache: Path) -> None:
    """``url``: the database of both histories; ``alone``: the package's alone."""
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "AI_SECRETARY_SCHEMA_CACHE_DIR": str(cache / dialect),
        "PYTHONPATH": str(REPO),
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as a user's machine runs: bytecode cached
    envs = {variant: env for variant in VARIANTS}
    envs["package alone"] = {**env, "DATABASE_URL": alone}
    # The heads, then one start each on the full path so the warm start remembers it.
    for variant in ("flask db upgrade", "package alone", "two histories"):
        first = command(variant, url)
        if variant != "flask db upgrade":
            first = [first[0], "-c", first[2].replace("assert report.fast_path", "assert report")]
        run(first, envs[variant])
    samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
    ratios: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        order = list(VARIANTS)
        rng.shuffle(order)
        times = {variant: run(command(variant, url), envs[variant]) for variant in order}
        for variant, seconds in times.items():
            samples[variant].append(seconds)
            ratios[variant].append(seconds / times["plain app"])
    print(f"\n{dialect}: median of {rounds} rounds (ratio: to plain app of the same round)")
    for variant in VARIANTS:
        median = statistics.median(samples[variant])
        print(
            f"  {variant:<17} {median * 1000:7.0f} ms   {statistics.median(ratios[variant]):.2f}x"
        )
    two = statistics.median(samples["two histories"])
    for other in ("package alone", "flask db upgrade"):
        print(f"  two histories / {other}: {two / statistics.median(samples[other]):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 9")
    parser.add_argument(
        "--pg-url", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    args = parser.parse_args()
    rounds = 3 if args.quick else 9
    rng = random.Random(1)
    with tempfile.TemporaryDirectory(prefix="ais-bench-host-") as tmp:
        root = Path(tmp)
        sqlite = [f"sqlite:///{root / name}" for name in ("host.db", "alone.db")]
        bench("sqlite", *sqlite, rounds, rng, root)
        if args.no_pg:
            return
        names = [f"ais_bench_{kind}_{os.getpid()}" for kind in ("host", "alone")]
        admin = sa.create_engine(args.pg_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            for name in names:
                connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            both, alone = (
                sa.make_url(args.pg_url).set(database=name).render_as_string(hide_password=False)
                for name in names
            )
            bench("postgresql", both, alone, rounds, rng, root)
        finally:
            with admin.connect() as connection:
                for name in names:
                    connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()


if __name__ == "__main__":
    main()
