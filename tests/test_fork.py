"""Nothing of an application's pools, locks or threads crosses a fork.

Servers that fork after loading the application (``gunicorn --preload``, uWSGI without
``lazy-apps``, multiprocessing's ``fork``) give every worker a copy of the parent's pooled
connections: the same sockets. Two processes talking over one socket interleave their protocol
messages, and psycopg2 fails ("error with status PGRES_TUPLES_OK and no message from the
libpq", "server closed the connection unexpectedly") or hands one process the rows another
asked for. The extension gives each forked child new pools (``engine.dispose(close=False)``,
SQLAlchemy's recipe) and restarts the background health monitor there.

Proved twice: with a plain ``os.fork()`` of an application (the child's connections are its own,
the parent's keep working), and with real ``gunicorn --preload`` workers answering 2000 requests
that each read a tenant by id and are checked against the rows written.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.pool import NullPool

from ai_secretary_schema import migrator
from ai_secretary_schema.flask import EXTENSION_KEY, SchemaExtension
from ai_secretary_schema.models import Tenant

if TYPE_CHECKING:
    from conftest import MakeSchemaApp

logger = logging.getLogger(__name__)

TESTS_DIR = Path(__file__).resolve().parent
REDIS_URL = "redis://127.0.0.1:6379/0"

# Python 3.12+ warns that forking a process with threads may deadlock the child; here the
# threads are the health monitor and its checks, and making that safe is what is tested.
pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning"
)


# -- a plain os.fork() ---------------------------------------------------------------------------


def in_child(work: Callable[[], Any], parent: Callable[[], None] = lambda: None) -> Any:
    """Fork: the child runs ``work``, sends back what it returns (JSON), and exits at once (no
    pytest teardown, no atexit). Meanwhile a thread of the parent calls ``parent`` again and
    again. Either side stuck on a socket the other one uses (the bug) fails within 30 s."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(read_end)
            try:
                payload = {"result": work()}
            except BaseException as error:
                payload = {"error": f"{type(error).__name__}: {error}"}
            with os.fdopen(write_end, "w") as out:
                json.dump(payload, out)
        finally:
            os._exit(0)
    os.close(write_end)
    child_done = threading.Event()
    parent_errors: list[BaseException] = []

    def parent_traffic() -> None:
        try:
            while not child_done.is_set():
                parent()
        except BaseException as error:
            parent_errors.append(error)

    traffic = threading.Thread(target=parent_traffic, daemon=True)
    traffic.start()
    deadline = time.monotonic() + 30
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            # The parent's traffic must not outlive this test into the next ones.
            child_done.set()
            traffic.join(10)
            raise AssertionError("the forked child did not finish within 30 s")
        time.sleep(0.01)
    child_done.set()
    traffic.join(10)
    assert not traffic.is_alive(), "the parent got stuck while the child ran"
    if parent_errors:
        raise parent_errors[0]
    with os.fdopen(read_end) as answer:
        payload = json.load(answer)
    assert "error" not in payload, f"in the forked child: {payload['error']}"
    return payload["result"]


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


@dataclass
class Traffic:
    """What an application's engine did, in which process: every DBAPI connection checked out
    (by object id) and every connection invalidated (what follows a broken socket)."""

    checkouts: list[tuple[int, int]] = field(default_factory=list)
    invalidated: list[int] = field(default_factory=list)

    def watch(self, engine: sa.Engine) -> None:
        # Engine-level pool events: dispose() carries them over to the engine's new pool.
        sa.event.listen(
            engine, "checkout", lambda dbapi, *_: self.checkouts.append((os.getpid(), id(dbapi)))
        )
        sa.event.listen(engine, "invalidate", lambda *_: self.invalidated.append(os.getpid()))

    def connections_of(self, pid: int) -> set[int]:
        return {connection for owner, connection in self.checkouts if owner == pid}


def read_tenant(app: Flask, schema: SchemaExtension, tenant_id: int) -> tuple[str, int | None]:
    """The tenant's slug through ``schema.session``, and the server process that answered
    (PostgreSQL's backend pid; None on SQLite)."""
    with app.app_context():
        tenant = schema.session.get(Tenant, tenant_id)
        assert tenant is not None
        backend = None
        if schema.engine.dialect.name == "postgresql":
            backend = schema.session.scalar(sa.select(sa.func.pg_backend_pid()))
        return tenant.slug, backend


@pytest.mark.parametrize("share", ["own engine", "flask-sqlalchemy"])
def test_a_forked_child_queries_on_connections_of_its_own_while_the_parent_keeps_working(
    db_url: str, make_schema_app: MakeSchemaApp, share: str
) -> None:
    db = SQLAlchemy() if share == "flask-sqlalchemy" else None
    app, schema = make_schema_app(
        database_url=db_url, db=db, health_monitoring=True, health_check_interval=0.05
    )
    state = schema.state(app)
    traffic = Traffic()
    traffic.watch(state.engine)
    with app.app_context():
        schema.session.add(Tenant(name="Acme", slug="acme"))
        schema.session.commit()
        tenant_id = schema.session.scalars(sa.select(Tenant.id)).one()
    parent_pid, parent_pool = os.getpid(), id(state.engine.pool)
    parent_answers = [read_tenant(app, schema, tenant_id)]

    def child() -> dict[str, Any]:
        answers = [read_tenant(app, schema, tenant_id) for _ in range(20)]
        return {
            "pool_replaced": id(state.engine.pool) != parent_pool,
            "answers": answers,
            # The child's copy of the parent's records plus its own.
            "parent_connections": sorted(traffic.connections_of(parent_pid)),
            "connections": sorted(traffic.connections_of(os.getpid())),
            "invalidated": traffic.invalidated,
        }

    try:
        seen = in_child(child, lambda: parent_answers.append(read_tenant(app, schema, tenant_id)))
    finally:
        if db is not None:
            with app.app_context():
                db.engine.dispose()
    assert seen["pool_replaced"]
    assert {slug for slug, _ in seen["answers"]} == {"acme"}
    assert {slug for slug, _ in parent_answers} == {"acme"}
    # The child never checked out a connection of the parent's, nor reached one of its server
    # processes; no connection broke on either side (a broken one is invalidated).
    assert seen["connections"]
    assert set(seen["connections"]) & set(seen["parent_connections"]) == set()
    if db_url.startswith("postgresql"):
        child_backends = {backend for _, backend in seen["answers"]}
        assert child_backends & {backend for _, backend in parent_answers} == set()
    assert (seen["invalidated"], traffic.invalidated) == ([], [])


def test_the_health_monitor_runs_again_in_a_forked_child(
    sqlite_url: str, make_schema_app: MakeSchemaApp
) -> None:
    app, schema = make_schema_app(
        database_url=sqlite_url, health_monitoring=True, health_check_interval=0.05
    )
    health = schema.state(app).health
    wait_for(lambda: health.rounds_completed >= 1)

    def child() -> dict[str, Any]:
        rounds = health.rounds_completed
        wait_for(lambda: health.rounds_completed >= rounds + 3, timeout=5)
        return {"monitoring": health.monitoring, "stopped": health.stop()}

    assert in_child(child) == {"monitoring": True, "stopped": True}
    assert health.monitoring  # the parent's own monitor is untouched


def test_a_monitor_stopped_in_the_parent_stays_stopped_in_a_forked_child(
    sqlite_url: str, make_schema_app: MakeSchemaApp
) -> None:
    app, schema = make_schema_app(
        database_url=sqlite_url, health_monitoring=True, health_check_interval=0.05
    )
    health = schema.state(app).health
    assert health.stop()
    assert in_child(lambda: health.monitoring) is False


def test_a_check_in_flight_at_the_fork_runs_again_in_the_child(
    sqlite_url: str, make_schema_app: MakeSchemaApp
) -> None:
    # The parent's run of the check hangs in a thread the child does not have; a child that
    # joined it would wait for its timeout on every check, and report it unhealthy for ever.
    release = threading.Event()
    parent_pid = os.getpid()
    app, schema = make_schema_app(database_url=sqlite_url, health_check_timeout=30)
    schema.register_check("api", lambda: os.getpid() != parent_pid or release.wait(30))
    health = schema.state(app).health
    waiting = threading.Thread(target=health.check, args=("api",), daemon=True)
    waiting.start()
    try:
        wait_for(lambda: any(t.name == "health-check-api" for t in threading.enumerate()))
        status, elapsed = in_child(
            lambda: (health.check("api").status.value, health.check("api").response_time)
        )
    finally:
        release.set()
        waiting.join(5)
    assert status == "healthy"
    assert elapsed < 1


@pytest.mark.redis
def test_a_forked_child_talks_to_redis_on_a_connection_of_its_own(
    sqlite_url: str, make_schema_app: MakeSchemaApp
) -> None:
    # Nothing in the extension resets the Redis client: redis-py's ConnectionPool notices the
    # new process id and starts over. This proves it does, and that the parent keeps its own.
    app, schema = make_schema_app(database_url=sqlite_url, redis_url=REDIS_URL)
    cache = schema.state(app).cache
    cache.set("fork-test", "parent", ttl=30)
    client = cache._redis()  # the cache's client, to ask Redis which connection is talking
    parent_connection = client.client_id()

    def child() -> dict[str, Any]:
        return {"value": cache.get("fork-test"), "connection": client.client_id()}

    seen = in_child(child)
    assert seen["value"] == "parent"
    assert seen["connection"] != parent_connection
    assert client.client_id() == parent_connection
    assert cache.backend == "redis"


def test_the_fork_handler_keeps_no_discarded_application_alive(sqlite_url: str) -> None:
    app = Flask("discarded")
    schema = SchemaExtension(app, database_url=sqlite_url)
    state = app.extensions[EXTENSION_KEY]
    state.engine.dispose()
    alive = (weakref.ref(app), weakref.ref(state), weakref.ref(state.health))
    del app, schema, state
    gc.collect()
    assert [ref() for ref in alive] == [None, None, None]


# -- gunicorn --preload --------------------------------------------------------------------------


def seed_tenants(url: str, count: int) -> dict[int, str]:
    """Bring ``url`` to head and write ``count`` tenants; returns their slugs by id."""
    migrator.upgrade(url)
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.insert(Tenant),
                [{"name": f"Tenant {n}", "slug": f"tenant-{n}"} for n in range(count)],
            )
            rows = connection.execute(sa.select(Tenant.id, Tenant.slug)).all()
    finally:
        engine.dispose()
    return {tenant_id: slug for tenant_id, slug in rows}


@contextmanager
def gunicorn_preload(url: str, log: Path, *, workers: int) -> Iterator[str]:
    """``gunicorn --preload`` serving tests/helpers/preload_app.py on a free loopback port;
    yields its base URL once every worker has booted."""
    environment = {
        **os.environ,
        "DATABASE_URL": url,
        # The monitor runs in the master before the fork, as it would in production.
        "HEALTH_MONITORING": "1",
        "HEALTH_CHECK_INTERVAL": "1",
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--preload",
        f"--workers={workers}",
        "--worker-class=sync",
        "--bind=127.0.0.1:0",  # the kernel picks a free port; the log says which
        f"--pythonpath={TESTS_DIR}",
        "--graceful-timeout=5",
        f"--error-logfile={log}",
        "helpers.preload_app:app",
    ]
    process = subprocess.Popen(command, env=environment, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            text = log.read_text() if log.exists() else ""
            listening = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", text)
            if listening and text.count("Booting worker") >= workers:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gunicorn did not start (status {process.poll()}):\n{text}")
            time.sleep(0.05)
        yield listening.group(1)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Load:
    """The outcome of :func:`read_tenants`."""

    made: int = 0
    #: Requests that got no answer, or an error status: what happened to each.
    failures: list[str] = field(default_factory=list)
    #: Answers that were not the tenant asked for (another tenant, or 404 for one that exists).
    wrong: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def percentile(self, q: int) -> float:
        """The ``q``-th percentile latency in milliseconds."""
        return statistics.quantiles(self.latencies, n=100)[q - 1] * 1000

    def summary(self) -> str:
        return (
            f"{self.made} requests, {len(self.failures)} failures, {len(self.wrong)} wrong "
            f"answers, p50 {self.percentile(50):.1f} ms, p99 {self.percentile(99):.1f} ms"
        )


def read_tenants(
    base_url: str, tenants: dict[int, str], *, requests: int, threads: int, seconds: float
) -> Load:
    """``requests`` GETs of /tenants/<id> from ``threads`` threads, ids in turn, each answer
    checked; requests not started within ``seconds`` are not made."""
    load = Load()
    lock = threading.Lock()
    ids = sorted(tenants)
    deadline = time.monotonic() + seconds

    def one(n: int) -> None:
        if time.monotonic() > deadline:
            return
        tenant_id = ids[n % len(ids)]
        started = time.perf_counter()
        outcome: tuple[str, str] | None = None
        try:
            with urllib.request.urlopen(f"{base_url}/tenants/{tenant_id}", timeout=10) as answer:
                body = answer.read().decode()
            if f'"slug":"{tenants[tenant_id]}"' not in body or f'"id":{tenant_id},' not in body:
                outcome = ("wrong", f"tenant {tenant_id}: {body[:200]}")
        except urllib.error.HTTPError as error:
            kind = "wrong" if error.code == 404 else "failure"
            outcome = (kind, f"tenant {tenant_id}: HTTP {error.code}")
        except OSError as error:
            outcome = ("failure", f"tenant {tenant_id}: {type(error).__name__}: {error}")
        elapsed = time.perf_counter() - started
        with lock:
            load.made += 1
            if outcome is None:
                load.latencies.append(elapsed)
            elif outcome[0] == "wrong":
                load.wrong.append(outcome[1])
            else:
                load.failures.append(outcome[1])

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(requests)))
    return load


@pytest.mark.slow
@pytest.mark.postgresql
def test_gunicorn_preload_workers_answer_every_request_right(
    pg_url: str, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    tenants = seed_tenants(pg_url, 50)
    log = tmp_path / "gunicorn.log"
    with gunicorn_preload(pg_url, log, workers=4) as base_url:
        load = read_tenants(base_url, tenants, requests=2000, threads=8, seconds=40)
    record_property("gunicorn_preload", load.summary())
    logger.info("gunicorn --preload, 4 sync workers: %s", load.summary())
    assert (load.failures[:5], load.wrong[:5]) == ([], [])
    assert load.made == 2000
    assert "Traceback" not in log.read_text()
