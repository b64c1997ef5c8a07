"""A revision that alters ``users`` while a long read holds it: how long does live traffic stall?

    python bench/live_ddl.py                    # about 20 s
    python bench/live_ddl.py --hold 5 --lock-timeout 1 --pg-url postgresql://postgres@127.0.0.1:5432/postgres

For each variant, on a throwaway database of its own at the shipped head (with a few rows):

1. a reader issues ``SELECT 1 FROM users LIMIT 1`` every 20 ms on a connection of its own, and
   records how long each one took;
2. a blocker opens a read transaction on ``users`` and holds it for ``--hold`` seconds (5);
3. right after the blocker's start, ``flask db upgrade`` runs revision 0101, which adds a column
   to ``users`` (its process has done its imports beforehand and waits for a go signal, so the
   ALTER reaches the server at once).

The variants, in the same run:

plain       Alembic as it ships: a plain Flask-Migrate application (Flask-SQLAlchemy, ``Migrate``)
            with the generic env.py that ``flask db init`` writes, on a copy of the package's
            revisions plus 0101.
package     the package's Flask extension (``flask db upgrade`` through the package's env.py)
            on the same revisions, with ``SCHEMA_DDL_LOCK_TIMEOUT=--lock-timeout`` (1 s).

It prints, per variant, the reader's longest wait, how long the upgrade took and whether it
completed (after the blocker ended). Target: with the package the longest wait is at most
lock_timeout + 200 ms; plain Alembic stalls the reader for the blocker's whole hold. The
databases are dropped at the end; everything else lives in a temporary directory.
"""

# ruff: noqa: T201 (a benchmark reports by printing)
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from ai_secretary_schema.history import heads, migrations_directory
from ai_secretary_schema.migrator import upgrade

READ_EVERY = 0.020
TARGET_SLACK = 0.200

REVISION_0101 = '''"""Add users.nickname.

Revision ID: 0101
Revises: {head}
"""

import sqlalchemy as sa
from alembic import op

revision = "0101"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("users", sa.Column("nickname", sa.String(length=50), nullable=True))


def downgrade():
    op.drop_column("users", "nickname")
'''

PLAIN_APP = """
import os

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
db = SQLAlchemy(app)
Migrate(app, db)
"""

PACKAGE_APP = """
from flask import Flask

from ai_secretary_schema import SchemaExtension

app = Flask(__name__)
SchemaExtension(app, health_path=None)
"""

#: Imports the door first, then waits for the go file, then runs ``flask ARGS…``.
GATED_FLASK = """
import sys
import time
from pathlib import Path

import flask.cli
import flask_migrate
import sqlalchemy

go = Path(sys.argv[1])
(go.parent / "ready").touch()
while not go.exists():
    time.sleep(0.005)
flask.cli.cli.main(args=sys.argv[2:], prog_name="flask")
"""


@dataclass
class Outcome:
    variant: str
    longest_wait: float
    reads: int
    upgrade_seconds: float
    completed: bool
    after_blocker: bool
    retries: int
    error: str


def psycopg2_connect(url: URL, **kwargs: object) -> psycopg2.extensions.connection:
    return psycopg2.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=url.database,
        **kwargs,
    )


def create_database(server: URL, name: str) -> None:
    admin = psycopg2_connect(server)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()


def drop_database(server: URL, name: str) -> None:
    admin = psycopg2_connect(server)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def prepare_scripts(root: Path) -> tuple[Path, Path, Path]:
    """The package's script directory plus 0101, a plain Flask-Migrate directory (generic
    env.py from ``flask db init``) with the same revisions, and the two applications."""
    source = migrations_directory()
    package_dir = root / "package_migrations"
    shutil.copytree(
        source, package_dir, ignore=shutil.ignore_patterns("__pycache__", "__init__.py")
    )
    (package_dir / "versions" / "0101_add_nickname.py").write_text(
        REVISION_0101.replace("{head}", heads()[0])
    )

    (root / "plain_app.py").write_text(PLAIN_APP)
    (root / "package_app.py").write_text(PACKAGE_APP)
    plain_dir = root / "plain_migrations"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "plain_app:app",
            "db",
            "init",
            "-d",
            str(plain_dir),
        ],
        cwd=root,
        env={**os.environ, "DATABASE_URL": "sqlite://"},
        check=True,
        capture_output=True,
    )
    for path in (package_dir / "versions").glob("[0-9]*.py"):
        shutil.copy(path, plain_dir / "versions" / path.name)
    return package_dir, plain_dir, root / "gated_flask.py"


def seed(url: URL, scripts: Path) -> None:
    """Upgrade to the shipped head and add a tenant and some users."""
    upgrade(url, heads()[0], script_location=scripts)
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO tenants (name, slug) VALUES ('Acme', 'acme')"))
        connection.execute(
            sa.text(
                "INSERT INTO users (tenant_id, email, password_hash) "
                "SELECT 1, 'user' || n || '@example.com', 'x' FROM generate_series(1, 200) AS n"
            )
        )
    engine.dispose()


def reader(url: URL, stop: threading.Event, waits: list[float]) -> None:
    connection = psycopg2_connect(url, application_name="bench-reader")
    connection.autocommit = True
    with connection.cursor() as cursor:
        next_at = time.perf_counter()
        while not stop.is_set():
            started = time.perf_counter()
            cursor.execute("SELECT 1 FROM users LIMIT 1")
            cursor.fetchall()
            waits.append(time.perf_counter() - started)
            next_at += READ_EVERY
            time.sleep(max(0.0, next_at - time.perf_counter()))
            next_at = max(next_at, time.perf_counter())
    connection.close()


def run_variant(
    variant: str, url: URL, root: Path, app: str, scripts: Path, hold: float, lock_timeout: float
) -> Outcome:
    gate = root / f"gate-{variant}"
    gate.mkdir()
    flask_args = ["--app", app, "db", "upgrade", "-d", str(scripts)]
    environment = {
        **os.environ,
        "DATABASE_URL": url.render_as_string(hide_password=False),
        "SCHEMA_DDL_LOCK_TIMEOUT": str(lock_timeout),
    }
    process = subprocess.Popen(
        [sys.executable, str(root / "gated_flask.py"), str(gate / "go"), *flask_args],
        cwd=root,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not (gate / "ready").exists():
        if process.poll() is not None:
            raise RuntimeError(f"the {variant} upgrade died: {process.communicate()[1]}")
        time.sleep(0.01)
    time.sleep(1.0)  # the process has finished importing; let it settle

    waits: list[float] = []
    stop = threading.Event()
    read = threading.Thread(target=reader, args=(url, stop, waits))
    read.start()
    time.sleep(0.2)
    blocker = psycopg2_connect(url, application_name="bench-blocker")
    with blocker.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM users")  # a read transaction on users, held open
    blocker_ends = time.monotonic() + hold
    threading.Timer(hold, blocker.rollback).start()

    started = time.monotonic()
    (gate / "go").touch()
    _, err = process.communicate(timeout=hold + 120)
    finished = time.monotonic()
    time.sleep(0.3)
    stop.set()
    read.join()
    time.sleep(max(0.0, blocker_ends - time.monotonic()) + 0.1)
    blocker.close()
    return Outcome(
        variant=variant,
        longest_wait=max(waits),
        reads=len(waits),
        upgrade_seconds=finished - started,
        completed=process.returncode == 0,
        after_blocker=finished >= blocker_ends,
        retries=err.count("and was rolled back; retry"),
        error="" if process.returncode == 0 else err.strip().splitlines()[-1],
    )


def version(url: URL) -> str:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        found = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    return str(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pg-url", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--hold", type=float, default=5.0, help="seconds the blocker holds")
    parser.add_argument("--lock-timeout", type=float, default=1.0, help="SCHEMA_DDL_LOCK_TIMEOUT")
    args = parser.parse_args()
    server = make_url(args.pg_url)
    suffix = uuid.uuid4().hex[:8]
    names = {"plain": f"ais_bench_live_plain_{suffix}", "package": f"ais_bench_live_pkg_{suffix}"}
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="ais-live-ddl-") as directory:
        root = Path(directory)
        package_dir, plain_dir, gated = prepare_scripts(root)
        gated.write_text(textwrap.dedent(GATED_FLASK))
        try:
            for variant, app, scripts in (
                ("plain", "plain_app:app", plain_dir),
                ("package", "package_app:app", package_dir),
            ):
                create_database(server, names[variant])
                url = server.set(database=names[variant])
                seed(url, package_dir)
                outcome = run_variant(
                    variant, url, root, app, scripts, args.hold, args.lock_timeout
                )
                if outcome.completed and version(url) != "0101":
                    outcome.completed = False
                    outcome.error = f"ended at {version(url)}"
                outcomes.append(outcome)
        finally:
            for name in names.values():
                drop_database(server, name)

    target = args.lock_timeout + TARGET_SLACK
    labels = {
        "plain": "plain flask db upgrade (Alembic as it ships)",
        "package": f"ai-secretary-schema (lock_timeout {args.lock_timeout:g} s)",
    }
    print(f"blocker holds a read on users for {args.hold:g} s; reader every 20 ms\n")
    print(
        "| variant | longest reader wait | reads | upgrade took | retries "
        "| completed after the blocker |"
    )
    print("|---|---|---|---|---|---|")
    for o in outcomes:
        done = (
            ("yes" if o.after_blocker else "yes, before it ended")
            if o.completed
            else f"NO: {o.error}"
        )
        print(
            f"| {labels[o.variant]} | {o.longest_wait * 1000:.0f} ms | {o.reads} | "
            f"{o.upgrade_seconds:.2f} s | {o.retries} | {done} |"
        )
    package = next(o for o in outcomes if o.variant == "package")
    met = package.completed and package.longest_wait <= target
    print(
        f"\ntarget: longest wait with the package <= lock_timeout + {TARGET_SLACK * 1000:.0f} ms "
        f"= {target * 1000:.0f} ms, upgrade completed: {'met' if met else 'MISSED'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
