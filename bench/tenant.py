"""The cost of tenant isolation: a request with and without row-level security, same run.

    python bench/tenant.py                 # about a minute
    python bench/tenant.py --rounds 3000   # more requests per variant
    python bench/tenant.py --pg-url postgresql://postgres@127.0.0.1:5432/postgres

Two throwaway databases on the server of ``--pg-url`` (dropped at the end), each with 4 tenants
of 2000 users, used by a role that is not a superuser (superusers bypass row-level security):

* **plain**: the tables without row-level security (migrated to the revision before it), the
  application filtering by hand (``WHERE tenant_id = …``), a plain session (the package's session
  events are removed for these requests, as in an application without its tenant isolation).
* **orm**: the same tables, ``tenant_scope(t)`` with the ORM layer alone: the ORM adds the tenant
  criterion (SQLite's isolation); no row-level security and no per-transaction setting.
* **rls**: the tables at head (row-level security enabled and forced), ``tenant_scope(t)`` with
  both layers: each transaction's first statement carries ``SET LOCAL ai_secretary.tenant_id``
  and the ORM adds the tenant criterion; PostgreSQL evaluates the policy on every row.

A request is what a Flask request does: a session from a pool, one transaction, one query,
commit. Two queries: a user looked up by email, and a page of 50 users ordered by id. The
variants alternate in blocks of 50 requests, in shuffled order, so the machine's drifting load
falls on all; the figure is the median time per request. The target is on what row-level
security and the per-transaction setting add, rls / orm of the medians: at most 1.10 for both
queries (printed as met or MISSED; exit status 1). rls / plain, the whole of the isolation with
the ORM layer, is printed beside it.
"""

# ruff: noqa: T201 (a benchmark reports by printing)

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg2
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from ai_secretary_schema import User, tenancy, tenant_scope
from ai_secretary_schema.history import heads, script_directory
from ai_secretary_schema.migrator import upgrade
from ai_secretary_schema.roles import grant_app_role

TENANTS = 4
USERS = 2000
BLOCK = 50
TARGET = 1.10


@contextmanager
def database(server: sa.URL, revision: str, role: str) -> Iterator[sa.URL]:
    """A database at ``revision`` with tenants and users, granted to ``role``."""
    name = f"ais_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(
        host=server.host, port=server.port or 5432, user=server.username, dbname=server.database
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    url = server.set(drivername="postgresql+psycopg2", database=name)
    try:
        upgrade(url, revision)
        engine = sa.create_engine(url)
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO tenants (id, name, slug) "
                    "SELECT t, 'T' || t, 't' || t FROM generate_series(1, :n) AS t"
                ),
                {"n": TENANTS},
            )
            connection.execute(
                sa.text(
                    "INSERT INTO users (tenant_id, email, password_hash) "
                    "SELECT t, 'u' || u || '@t' || t || '.example', 'x' "
                    "FROM generate_series(1, :n) AS t, generate_series(1, :u) AS u"
                ),
                {"n": TENANTS, "u": USERS},
            )
            connection.exec_driver_sql("ANALYZE users")
        grant_app_role(engine, role, ("tenants", "users", "performance_alerts"))
        engine.dispose()
        yield url.set(username=role)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


Request = Callable[[Session, int, int], object]


def lookup_plain(session: Session, tenant: int, n: int) -> object:
    email = f"u{n}@t{tenant}.example"
    return session.scalars(
        sa.select(User).where(User.tenant_id == tenant, User.email == email)
    ).one()


def lookup_rls(session: Session, tenant: int, n: int) -> object:
    return session.scalars(sa.select(User).where(User.email == f"u{n}@t{tenant}.example")).one()


def page_plain(session: Session, tenant: int, n: int) -> object:
    statement = sa.select(User).where(User.tenant_id == tenant).order_by(User.id)
    return session.scalars(statement.offset(n % 40 * 50).limit(50)).all()


def page_rls(session: Session, tenant: int, n: int) -> object:
    statement = sa.select(User).order_by(User.id).offset(n % 40 * 50).limit(50)
    return session.scalars(statement).all()


#: The events tenancy installs: the per-transaction setting, then the ORM layer. The plain
#: variant runs without any, as an application without the package's tenant isolation would;
#: the orm variant with the ORM layer's alone.
SETTING = [
    (Session, "after_begin", tenancy._after_begin),
    (Session, "after_transaction_end", tenancy._after_transaction_end),
    (sa.Engine, "before_cursor_execute", tenancy._send_pending),
]
ORM_LAYER = [
    (Session, "do_orm_execute", tenancy._on_orm_execute),
    (Session, "before_flush", tenancy._before_flush),
]
LAYERS = {"plain": (), "orm": ("orm",), "rls": ("orm", "setting")}


def installed(layers: tuple[str, ...]) -> None:
    for layer, listeners in (("setting", SETTING), ("orm", ORM_LAYER)):
        on = layer in layers
        for target, name, listener in listeners:
            if event.contains(target, name, listener) != on:
                if on:
                    event.listen(target, name, listener, retval=name == "before_cursor_execute")
                else:
                    event.remove(target, name, listener)


def time_block(factory: sessionmaker[Session], request: Request, variant: str) -> list[float]:
    scoped = variant != "plain"
    installed(LAYERS[variant])
    times = []
    for _ in range(BLOCK):
        tenant, n = random.randint(1, TENANTS), random.randint(1, USERS)
        start = time.perf_counter()
        if scoped:
            with tenant_scope(tenant), factory() as session:
                request(session, tenant, n)
                session.commit()
        else:
            with factory() as session:
                request(session, tenant, n)
                session.commit()
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rounds", type=int, default=2000, help="requests per variant and query")
    args = parser.parse_args()
    server = sa.make_url(args.pg_url)
    head = heads()[0]
    before = str(script_directory().get_revision(head).down_revision)
    role = f"ais_bench_app_{uuid.uuid4().hex[:8]}"
    try:
        with database(server, before, role) as plain_url, database(server, head, role) as rls_url:
            plain_engine = sa.create_engine(plain_url, pool_size=2, max_overflow=0)
            rls_engine = sa.create_engine(rls_url, pool_size=2, max_overflow=0)
            # plain and orm use the tables without row-level security, rls those with it.
            factories = {
                "plain": sessionmaker(bind=plain_engine),
                "orm": sessionmaker(bind=plain_engine),
                "rls": sessionmaker(bind=rls_engine),
            }
            queries: dict[str, dict[str, Request]] = {
                "lookup by email": {"plain": lookup_plain, "orm": lookup_rls, "rls": lookup_rls},
                "page of 50": {"plain": page_plain, "orm": page_rls, "rls": page_rls},
            }
            results: dict[tuple[str, str], list[float]] = {}
            blocks = [
                (query, variant)
                for query in queries
                for variant in LAYERS
                for _ in range(args.rounds // BLOCK)
            ]
            for query, variant in [(q, v) for q in queries for v in LAYERS]:
                time_block(factories[variant], queries[query][variant], variant)  # warm
            random.shuffle(blocks)
            for query, variant in blocks:
                results.setdefault((query, variant), []).extend(
                    time_block(factories[variant], queries[query][variant], variant)
                )
            plain_engine.dispose()
            rls_engine.dispose()
    finally:
        installed(LAYERS["rls"])
        admin = psycopg2.connect(
            host=server.host,
            port=server.port or 5432,
            user=server.username,
            dbname=server.database,
        )
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f"DROP ROLE IF EXISTS {role}")
        admin.close()
    where = f"{server.host}:{server.port or 5432}"
    print(f"{args.rounds} requests per variant and query, PostgreSQL at {where}; medians")
    print(
        f"{'query':<16} {'plain':>9} {'orm':>9} {'rls':>9} {'rls/orm':>8}  target   "
        f"{'rls/plain':>9}"
    )
    failed = False
    for query in queries:
        plain, orm, rls = (statistics.median(results[(query, v)]) for v in LAYERS)
        ratio = rls / orm
        met = ratio <= TARGET
        failed |= not met
        print(
            f"{query:<16} {plain * 1e3:>6.3f} ms {orm * 1e3:>6.3f} ms {rls * 1e3:>6.3f} ms "
            f"{ratio:>8.3f}  <= {TARGET:.2f} {'met' if met else 'MISSED'}  {rls / plain:>9.3f}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
