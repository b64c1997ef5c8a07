"""ServiceHealthManager, the cache it falls back to and /health, on the real PostgreSQL and Redis.

Also what the extension's /health says and logs: the SQLite fallback of an invalid URL is
``fallback``, never ``healthy``; one outage is logged under one key (the database check's, not
again by the schema check that depends on it); a check writes no Alembic line.

Failures are real: PostgreSQL databases renamed after their backends were terminated, a table
held under ACCESS EXCLUSIVE by another connection, a pool with no free connection, a TCP port
that accepts connections and never answers (a hung server), Redis on a closed port. Every check
is bounded by the health timeout (1 s here unless a test says otherwise), and tests assert it
with a wall clock.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg2
import pytest
import redis
from flask import Flask, current_app
from helpers.db import database_renamed, terminate_backends
from sqlalchemy.engine import Engine, make_url

from ai_secretary_schema.engine import create_engine
from ai_secretary_schema.errors import DatabaseConfigError, ExtensionNotRegisteredError
from ai_secretary_schema.flask import SchemaExtension
from ai_secretary_schema.flask.cache import FallbackCache, InProcessCache
from ai_secretary_schema.flask.context import ApplicationContextManager
from ai_secretary_schema.flask.health import (
    CheckResult,
    HealthMonitorAlreadyRunningError,
    HealthReport,
    HealthStatus,
    ServiceHealth,
    ServiceHealthManager,
    create_health_blueprint,
    overall_status,
)

if TYPE_CHECKING:
    from conftest import MakeSchemaApp, StatementLog

REDIS_URL = "redis://127.0.0.1:6379/0"
CLOSED_PORT_REDIS_URL = "redis://127.0.0.1:1/0"
TIMEOUT = 1.0
#: What a bounded check may take beyond its timeout (thread start, scheduling, JSON).
MARGIN = 0.5

H = HealthStatus


# -- fixtures and helpers ----------------------------------------------------------------------


@dataclass
class Stack:
    app: Flask
    manager: ServiceHealthManager
    engine: Engine

    def get_health(self, path: str = "/health") -> tuple[int, dict[str, Any], float]:
        started = time.monotonic()
        response = self.app.test_client().get(path)
        return response.status_code, response.get_json(), time.monotonic() - started


MakeStack = Callable[..., Stack]


@pytest.fixture
def make_stack() -> Iterator[MakeStack]:
    """Factory of a Flask app with a health manager and /health over a real engine."""
    stacks: list[Stack] = []

    def make(
        database_url: str,
        *,
        redis_url: str | None = None,
        timeout: float | None = TIMEOUT,
        interval: float = 30.0,
        probe: str = "SELECT 1",
        **settings: Any,
    ) -> Stack:
        from ai_secretary_schema.settings import SchemaSettings

        resolved = SchemaSettings.resolve(
            environ={},
            database_url=database_url,
            redis_url=redis_url,
            health_check_timeout=timeout,
            health_check_interval=interval,
            **settings,
        )
        engine = create_engine(make_url(database_url), resolved)
        app = Flask(f"health_app_{len(stacks)}")
        manager = ServiceHealthManager(
            app,
            ApplicationContextManager(app),
            engine_provider=lambda: engine,
            settings=resolved,
            database_probe=probe,
        )
        app.register_blueprint(create_health_blueprint(manager))
        stack = Stack(app, manager, engine)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.manager.close()
        stack.engine.dispose()


@contextmanager
def table_locked(url: str, table: str) -> Iterator[None]:
    """Another connection holds ACCESS EXCLUSIVE on ``table`` (as a long migration would)."""
    parsed = make_url(url)
    connection = psycopg2.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, dbname=parsed.database
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE TABLE IF NOT EXISTS {table} (id integer)")
            connection.commit()
            cursor.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        connection.rollback()
        connection.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


def timed(func: Callable[[], ServiceHealth]) -> tuple[ServiceHealth, float]:
    started = time.monotonic()
    result = func()
    return result, time.monotonic() - started


# -- construction ------------------------------------------------------------------------------


@pytest.mark.sqlite
def test_the_design_constructor_takes_engine_settings_and_cache_from_the_extension(
    sqlite_url: str, statement_log: StatementLog
) -> None:
    app = Flask("design_constructor")
    extension = SchemaExtension(app, database_url=sqlite_url, health_check_timeout=TIMEOUT)
    manager = ServiceHealthManager(app, ApplicationContextManager(app))
    try:
        state = extension.state(app)
        assert manager.settings is state.settings
        assert manager.timeout == TIMEOUT
        assert manager.cache is state.cache
        statement_log.entries.clear()
        assert manager.check_database_health().status is H.HEALTHY
        assert "SELECT 1" in statement_log.on(state.engine)  # the probe, on the app engine
        assert statement_log.elsewhere(state.engine) == []
    finally:
        manager.close()
        extension.close(app)


def test_without_the_extension_or_an_engine_provider_the_manager_says_what_to_do() -> None:
    app = Flask("no_extension")
    with pytest.raises(ExtensionNotRegisteredError) as raised:
        ServiceHealthManager(app, ApplicationContextManager(app))
    assert "'no_extension'" in str(raised.value)
    assert "SchemaExtension(app)" in str(raised.value)
    assert "engine_provider=" in str(raised.value)


@pytest.mark.sqlite
def test_without_the_extension_settings_come_from_app_config(sqlite_url: str) -> None:
    app = Flask("engine_provider_only")
    app.config.update(HEALTH_CHECK_TIMEOUT="1.5", HEALTH_CHECK_INTERVAL=7)
    engine = create_engine(make_url(sqlite_url))
    manager = ServiceHealthManager(app, engine_provider=lambda: engine)
    try:
        assert (manager.timeout, manager.interval) == (1.5, 7.0)
        assert manager.check_database_health().status is H.HEALTHY
    finally:
        manager.close()
        engine.dispose()


# -- the database check ----------------------------------------------------------------------


def test_database_check_is_healthy_with_its_response_time(
    db_url: str, make_stack: MakeStack
) -> None:
    health = make_stack(db_url).manager.check_database_health()
    assert (health.service_name, health.status, health.error_message, health.critical) == (
        "database",
        H.HEALTHY,
        None,
        True,
    )
    assert health.response_time is not None
    assert 0 < health.response_time < TIMEOUT


@pytest.mark.postgresql
def test_database_check_sets_a_statement_timeout_that_ends_with_its_transaction(
    pg_url: str, make_stack: MakeStack
) -> None:
    stack = make_stack(pg_url, probe="SELECT current_setting('statement_timeout')")
    assert stack.manager.check_database_health().status is H.HEALTHY
    with stack.engine.connect() as connection:
        assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "0"


@pytest.mark.postgresql
@pytest.mark.parametrize(
    ("probe", "lock"),
    [("SELECT pg_sleep(30)", False), ("SELECT count(*) FROM jobs", True)],
    ids=["pg_sleep", "table locked ACCESS EXCLUSIVE"],
)
def test_a_hanging_query_is_cancelled_by_the_statement_timeout(
    pg_url: str, make_stack: MakeStack, probe: str, lock: bool
) -> None:
    stack = make_stack(pg_url, probe=probe)
    with ExitStack() as cleanup:
        if lock:
            cleanup.enter_context(table_locked(pg_url, "jobs"))
        health, elapsed = timed(stack.manager.check_database_health)
    assert health.status is H.UNHEALTHY
    assert "statement timeout" in str(health.error_message)
    assert elapsed < TIMEOUT + MARGIN


@pytest.mark.postgresql
def test_a_server_that_never_answers_is_unhealthy_within_the_default_timeout(
    silent_port: int, make_stack: MakeStack
) -> None:
    stack = make_stack(f"postgresql+psycopg2://postgres@127.0.0.1:{silent_port}/app", timeout=None)
    assert stack.manager.timeout == 3.0
    health, elapsed = timed(stack.manager.check_database_health)
    assert (health.status, health.error_message, health.response_time) == (
        H.UNHEALTHY,
        "no answer within 3 s",
        None,
    )
    assert elapsed < 3.0 + MARGIN


@pytest.mark.postgresql
def test_an_exhausted_pool_is_unhealthy_within_the_timeout_and_recovers(
    pg_url: str, make_stack: MakeStack
) -> None:
    stack = make_stack(pg_url, database_pool_size=1, database_max_overflow=0)
    with stack.engine.connect():
        health, elapsed = timed(stack.manager.check_database_health)
        assert health.status is H.UNHEALTHY
        assert elapsed < TIMEOUT + MARGIN
    wait_for(lambda: stack.manager.check_database_health().status is H.HEALTHY)


@pytest.mark.postgresql
def test_callers_share_a_hung_check_instead_of_starting_another(
    silent_port: int, make_stack: MakeStack
) -> None:
    stack = make_stack(f"postgresql+psycopg2://postgres@127.0.0.1:{silent_port}/app")
    stack.manager.check_database_health()
    threads_before = set(threading.enumerate())
    second, elapsed = timed(stack.manager.check_database_health)
    assert second.status is H.UNHEALTHY
    assert elapsed < 0.1
    assert set(threading.enumerate()) - threads_before == set()


@pytest.mark.postgresql
def test_terminated_backends_are_replaced_and_the_database_stays_healthy(
    pg_url: str, make_stack: MakeStack
) -> None:
    stack = make_stack(pg_url)
    assert stack.manager.check_database_health().status is H.HEALTHY
    terminate_backends(str(make_url(pg_url).database))
    assert stack.manager.check_database_health().status is H.HEALTHY


@pytest.mark.postgresql
def test_a_renamed_database_is_unhealthy_within_the_timeout_then_recovers(
    pg_url: str, make_stack: MakeStack
) -> None:
    stack = make_stack(pg_url)
    assert stack.manager.check_database_health().status is H.HEALTHY
    with database_renamed(pg_url):
        health, elapsed = timed(stack.manager.check_database_health)
        assert health.status is H.UNHEALTHY
        assert "does not exist" in str(health.error_message)
        assert elapsed < TIMEOUT + MARGIN
    assert stack.manager.check_database_health().status is H.HEALTHY


@pytest.mark.postgresql
def test_database_errors_are_redacted(pg_url: str, make_stack: MakeStack) -> None:
    # Trust authentication ignores the password, so the URL connects; the probe then makes
    # PostgreSQL quote the password back in its error message.
    url = pg_url.replace("postgres@", "postgres:s3cr3t-pw@")
    stack = make_stack(url, probe="SELECT 's3cr3t-pw'::integer")
    health = stack.manager.check_database_health()
    assert health.status is H.UNHEALTHY
    assert "s3cr3t-pw" not in str(health.error_message)
    assert 'integer: "***"' in str(health.error_message)


@pytest.mark.postgresql
def test_an_outage_logs_a_handful_of_lines(
    pg_url: str, make_stack: MakeStack, caplog: pytest.LogCaptureFixture
) -> None:
    stack = make_stack(pg_url)
    caplog.set_level(logging.INFO, logger="ai_secretary_schema.flask.health")
    with database_renamed(pg_url):
        for _ in range(30):
            stack.manager.check_database_health()
    stack.manager.check_database_health()
    records = [r for r in caplog.records if r.name == "ai_secretary_schema.flask.health"]
    assert [r.levelno for r in records] == [logging.ERROR] * 5 + [logging.INFO]
    assert "healthy again" in records[-1].getMessage()


# -- the Redis check and the cache -----------------------------------------------------------


@pytest.mark.parametrize(
    ("redis_url", "expected"),
    [
        (None, H.DISABLED),
        ("   ", H.DISABLED),
        (REDIS_URL, H.HEALTHY),
        (CLOSED_PORT_REDIS_URL, H.FALLBACK),
        ("redis://127.0.0.1:{blackhole}/0", H.FALLBACK),
    ],
    ids=["unset", "blank", "answering", "closed port", "never answers"],
)
def test_redis_check(
    sqlite_url: str,
    make_stack: MakeStack,
    request: pytest.FixtureRequest,
    redis_url: str | None,
    expected: HealthStatus,
) -> None:
    if redis_url and "{blackhole}" in redis_url:
        redis_url = redis_url.format(blackhole=request.getfixturevalue("silent_port"))
    stack = make_stack(sqlite_url, redis_url=redis_url)
    health, elapsed = timed(stack.manager.check_redis_health)
    assert (health.status, health.critical) == (expected, False)
    assert elapsed < TIMEOUT + MARGIN


def test_redis_errors_are_redacted(sqlite_url: str, make_stack: MakeStack) -> None:
    stack = make_stack(sqlite_url, redis_url="redis://:hunter2-redis@127.0.0.1:1/0")
    health = stack.manager.check_redis_health()
    assert health.status is H.FALLBACK
    assert "hunter2-redis" not in str(health.error_message)
    assert str(health.error_message).startswith("Redis unreachable, using the in-process cache")


@pytest.fixture
def key_prefix() -> Iterator[str]:
    prefix = f"ais-test-{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.mark.redis
def test_fallback_cache_stores_in_redis_while_it_answers(key_prefix: str) -> None:
    cache = FallbackCache(REDIS_URL, key_prefix=key_prefix)
    try:
        cache.set("user:1", {"name": "Ada"}, ttl=30)
        assert cache.get("user:1") == {"name": "Ada"}
        assert cache.backend == "redis"
        client = redis.Redis.from_url(REDIS_URL)
        assert client.get(f"{key_prefix}user:1") == b'{"name": "Ada"}'
        client.close()
        assert cache.delete("user:1")
        assert cache.get("user:1", "gone") == "gone"
    finally:
        cache.close()


@pytest.mark.parametrize("redis_url", [None, CLOSED_PORT_REDIS_URL], ids=["unset", "closed port"])
def test_fallback_cache_keeps_working_in_process_without_redis(redis_url: str | None) -> None:
    cache = FallbackCache(redis_url, timeout=0.5)
    try:
        started = time.monotonic()
        cache.set("user:1", {"name": "Ada"})
        assert cache.get("user:1") == {"name": "Ada"}
        assert cache.backend == "memory"
        assert time.monotonic() - started < 0.5 + MARGIN
    finally:
        cache.close()


def test_fallback_cache_does_not_retry_a_dead_redis_on_every_call(silent_port: int) -> None:
    cache = FallbackCache(f"redis://127.0.0.1:{silent_port}/0", timeout=0.3, retry_interval=60)
    try:
        cache.set("k", 1)  # pays the timeout once
        started = time.monotonic()
        for _ in range(20):
            assert cache.get("k") == 1
        assert time.monotonic() - started < 0.1
    finally:
        cache.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_in_process_cache_entries_expire_after_their_ttl() -> None:
    clock = FakeClock()
    cache = InProcessCache(default_ttl=10, clock=clock)
    cache.set("short", 1, ttl=1)
    cache.set("default", 2)
    clock.now = 5
    assert (cache.get("short"), cache.get("default")) == (None, 2)
    clock.now = 10
    assert cache.get("default", "expired") == "expired"


def test_in_process_cache_evicts_the_least_recently_used_beyond_its_size() -> None:
    cache = InProcessCache(max_entries=2)
    cache.set("a", 1)
    cache.set("b", 2)
    cache.get("a")
    cache.set("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == (1, None, 3, 2)


def test_in_process_cache_is_safe_under_concurrent_writers() -> None:
    cache = InProcessCache(max_entries=50)

    def write(worker: int) -> None:
        for i in range(2_000):
            cache.set(f"{worker}:{i}", i)
            cache.get(f"{worker}:{i // 2}")

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 50


# -- registered checks, availability and the overall status ----------------------------------


@pytest.mark.parametrize(
    ("outcome", "status", "message"),
    [
        (None, H.HEALTHY, None),
        (True, H.HEALTHY, None),
        (False, H.UNHEALTHY, "the check returned False"),
        (H.FALLBACK, H.FALLBACK, None),
        (CheckResult(H.DEGRADED, "slow answers"), H.DEGRADED, "slow answers"),
        ("yes", H.UNHEALTHY, "the check returned str, not a status"),
    ],
)
def test_registered_check_outcomes(
    sqlite_url: str, make_stack: MakeStack, outcome: Any, status: HealthStatus, message: str | None
) -> None:
    manager = make_stack(sqlite_url).manager
    manager.register_check("external_api", lambda: outcome)
    health = manager.check("external_api")
    assert (health.status, health.error_message) == (status, message)


def test_a_check_that_raises_is_unhealthy_with_a_redacted_error(
    sqlite_url: str, make_stack: MakeStack
) -> None:
    def external_api() -> None:
        raise ConnectionError("GET https://bot:tok-123@api.example.com/v1 refused")

    manager = make_stack(sqlite_url).manager
    manager.register_check("external_api", external_api)
    health = manager.check("external_api")
    assert health.status is H.UNHEALTHY
    assert health.error_message == "ConnectionError: GET https://bot:***@api.example.com/v1 refused"


def test_a_hanging_registered_check_is_unhealthy_within_its_own_timeout(
    sqlite_url: str, make_stack: MakeStack
) -> None:
    release = threading.Event()
    manager = make_stack(sqlite_url).manager
    manager.register_check("websocket", lambda: release.wait(30), timeout=0.3)
    try:
        health, elapsed = timed(lambda: manager.check("websocket"))
    finally:
        release.set()
    assert (health.status, health.error_message) == (H.UNHEALTHY, "no answer within 0.3 s")
    assert elapsed < 0.3 + MARGIN


def test_checks_run_inside_an_application_context_of_their_app(
    sqlite_url: str, make_stack: MakeStack
) -> None:
    stack = make_stack(sqlite_url)
    stack.manager.register_check(
        "context",
        lambda: current_app._get_current_object() is stack.app,  # type: ignore[attr-defined]
    )
    assert stack.manager.check("context").status is H.HEALTHY


def test_check_all_runs_checks_concurrently(sqlite_url: str, make_stack: MakeStack) -> None:
    release = threading.Event()
    manager = make_stack(sqlite_url).manager
    for name in ("api_a", "api_b", "api_c"):
        manager.register_check(name, lambda: release.wait(30), timeout=0.4)
    try:
        started = time.monotonic()
        report = manager.check_all()
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert [report.services[n].status for n in ("api_a", "api_b", "api_c")] == [H.UNHEALTHY] * 3
    assert elapsed < 0.4 + MARGIN


def test_is_available_follows_the_latest_check(sqlite_url: str, make_stack: MakeStack) -> None:
    api_up = True
    manager = make_stack(sqlite_url).manager
    manager.register_check("external_api", lambda: api_up)
    first = manager.is_available("external_api")  # never checked: checks now
    api_up = False
    cached = manager.is_available("external_api")  # uses the latest result
    manager.check("external_api")
    assert (first, cached, manager.is_available("external_api")) == (True, True, False)


@pytest.mark.parametrize(
    ("redis_url", "available"),
    [(None, False), (CLOSED_PORT_REDIS_URL, False), (REDIS_URL, True)],
    ids=["disabled", "fallback", "healthy"],
)
def test_is_available_is_true_only_for_a_usable_service(
    sqlite_url: str, make_stack: MakeStack, redis_url: str | None, available: bool
) -> None:
    assert make_stack(sqlite_url, redis_url=redis_url).manager.is_available("redis") is available


def test_unknown_and_duplicate_check_names_are_errors(
    sqlite_url: str, make_stack: MakeStack
) -> None:
    manager = make_stack(sqlite_url).manager
    with pytest.raises(KeyError, match="no health check named 'nope'; registered: database, redis"):
        manager.is_available("nope")
    with pytest.raises(ValueError, match="already registered"):
        manager.register_check("database", lambda: True)


def service(status: HealthStatus, critical: bool = False, name: str = "") -> ServiceHealth:
    return ServiceHealth(name or str(uuid.uuid4()), status, datetime.now(), None, 0.001, critical)


@pytest.mark.parametrize(
    ("services", "expected"),
    [
        ([service(H.HEALTHY, True), service(H.HEALTHY)], H.HEALTHY),
        ([service(H.HEALTHY, True), service(H.DISABLED)], H.HEALTHY),
        ([service(H.HEALTHY, True), service(H.FALLBACK)], H.DEGRADED),
        ([service(H.HEALTHY, True), service(H.UNHEALTHY)], H.DEGRADED),
        ([service(H.HEALTHY, True), service(H.UNKNOWN)], H.DEGRADED),
        ([service(H.UNHEALTHY, True), service(H.HEALTHY)], H.UNHEALTHY),
        ([service(H.FALLBACK), service(H.UNHEALTHY, True)], H.UNHEALTHY),
        ([service(H.FALLBACK, True)], H.DEGRADED),
        ([], H.HEALTHY),
    ],
    ids=[
        "all healthy",
        "disabled does not degrade",
        "fallback degrades",
        "non-critical unhealthy degrades",
        "unknown degrades",
        "critical unhealthy",
        "critical unhealthy wins over degraded",
        "critical in fallback only degrades",
        "nothing registered",
    ],
)
def test_overall_status(services: list[ServiceHealth], expected: HealthStatus) -> None:
    assert overall_status(services) is expected


def test_report_serialises_every_service_to_json() -> None:
    report = HealthReport.from_services(
        [service(H.HEALTHY, True, "database"), service(H.FALLBACK, False, "redis")]
    )
    body = json.loads(json.dumps(report.to_dict()))
    assert body["status"] == "degraded"
    assert body["services"]["database"].keys() == {
        "status",
        "critical",
        "last_check",
        "response_time_ms",
        "error",
    }
    assert body["services"]["database"]["response_time_ms"] == 1.0
    assert datetime.fromisoformat(body["services"]["redis"]["last_check"])


# -- background monitoring -------------------------------------------------------------------


def monitor_threads(app: Flask) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"health-monitor-{app.name}"]


def test_monitor_runs_a_round_every_interval(sqlite_url: str, make_stack: MakeStack) -> None:
    stack = make_stack(sqlite_url, interval=0.05)
    stack.manager.start_background_monitoring()
    wait_for(lambda: stack.manager.rounds_completed >= 3)
    assert stack.manager.last_result("database") is not None


def test_a_second_start_does_not_start_a_second_thread(
    sqlite_url: str, make_stack: MakeStack
) -> None:
    stack = make_stack(sqlite_url, interval=0.05)
    first = stack.manager.start_background_monitoring()
    second = stack.manager.start_background_monitoring()
    assert first is second
    assert monitor_threads(stack.app) == [first]
    assert first.daemon


def test_a_second_manager_cannot_monitor_the_same_app(
    sqlite_url: str, make_stack: MakeStack
) -> None:
    stack = make_stack(sqlite_url)
    stack.manager.start_background_monitoring()
    other = ServiceHealthManager(
        stack.app, engine_provider=lambda: stack.engine, settings=stack.manager.settings
    )
    with pytest.raises(HealthMonitorAlreadyRunningError, match="already monitors"):
        other.start_background_monitoring()


def test_each_application_has_its_own_monitor(sqlite_url: str, make_stack: MakeStack) -> None:
    first, second = make_stack(sqlite_url, interval=0.05), make_stack(sqlite_url, interval=0.05)
    threads = [stack.manager.start_background_monitoring() for stack in (first, second)]
    assert threads[0] is not threads[1]
    assert first.manager.stop()
    assert not first.manager.monitoring
    assert second.manager.monitoring


def test_a_check_that_raises_never_kills_the_monitor(
    sqlite_url: str, make_stack: MakeStack
) -> None:
    def broken() -> None:
        raise RuntimeError("feature flag service exploded")

    stack = make_stack(sqlite_url, interval=0.02)
    stack.manager.register_check("flags", broken)
    thread = stack.manager.start_background_monitoring()
    wait_for(lambda: stack.manager.rounds_completed >= 5)
    assert thread.is_alive()
    last = stack.manager.last_result("flags")
    assert last is not None
    assert last.error_message == "RuntimeError: feature flag service exploded"


def test_stop_returns_within_a_second_while_a_check_hangs(
    sqlite_url: str, make_stack: MakeStack
) -> None:
    entered, release = threading.Event(), threading.Event()

    def hangs() -> None:
        entered.set()
        release.wait(30)

    stack = make_stack(sqlite_url, interval=0.05)
    stack.manager.register_check("websocket", hangs, timeout=20)
    thread = stack.manager.start_background_monitoring()
    try:
        assert entered.wait(5)
        started = time.monotonic()
        stopped = stack.manager.stop()
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert stopped
    assert elapsed < 1.0
    assert not thread.is_alive()
    assert not stack.manager.monitoring


def test_monitor_can_be_restarted_after_stop(sqlite_url: str, make_stack: MakeStack) -> None:
    stack = make_stack(sqlite_url, interval=0.05)
    first = stack.manager.start_background_monitoring()
    assert stack.manager.stop()
    second = stack.manager.start_background_monitoring()
    assert second is not first
    assert monitor_threads(stack.app) == [second]


@pytest.mark.postgresql
def test_monitor_sees_an_outage_and_the_recovery(pg_url: str, make_stack: MakeStack) -> None:
    stack = make_stack(pg_url, interval=0.05)
    stack.manager.start_background_monitoring()

    def database_is(status: HealthStatus) -> Callable[[], bool]:
        def check() -> bool:
            last = stack.manager.last_result("database")
            return last is not None and last.status is status

        return check

    wait_for(database_is(H.HEALTHY))
    with database_renamed(pg_url):
        wait_for(database_is(H.UNHEALTHY))
    wait_for(database_is(H.HEALTHY))


# -- /health ---------------------------------------------------------------------------------


@dataclass
class Env:
    pg_url: str
    make_stack: MakeStack
    request: pytest.FixtureRequest
    cleanup: ExitStack

    def blackhole(self) -> int:
        return int(self.request.getfixturevalue("silent_port"))


def all_up(env: Env) -> Stack:
    return env.make_stack(env.pg_url, redis_url=REDIS_URL)


def redis_unset(env: Env) -> Stack:
    return env.make_stack(env.pg_url)


def redis_closed_port(env: Env) -> Stack:
    return env.make_stack(env.pg_url, redis_url=CLOSED_PORT_REDIS_URL)


def redis_never_answers(env: Env) -> Stack:
    return env.make_stack(env.pg_url, redis_url=f"redis://127.0.0.1:{env.blackhole()}/0")


def backends_terminated(env: Env) -> Stack:
    stack = env.make_stack(env.pg_url, redis_url=REDIS_URL)
    stack.manager.check_all()  # the pool now holds a connection to be killed
    terminate_backends(str(make_url(env.pg_url).database))
    return stack


def database_renamed_away(env: Env) -> Stack:
    stack = env.make_stack(env.pg_url, redis_url=REDIS_URL)
    stack.manager.check_all()
    env.cleanup.enter_context(database_renamed(env.pg_url))
    return stack


def database_never_answers(env: Env) -> Stack:
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{env.blackhole()}/app"
    return env.make_stack(url, redis_url=REDIS_URL)


def pool_exhausted(env: Env) -> Stack:
    stack = env.make_stack(
        env.pg_url, redis_url=REDIS_URL, database_pool_size=1, database_max_overflow=0
    )
    env.cleanup.enter_context(stack.engine.connect())
    return stack


def query_blocked_by_lock(env: Env) -> Stack:
    env.cleanup.enter_context(table_locked(env.pg_url, "jobs"))
    return env.make_stack(env.pg_url, redis_url=REDIS_URL, probe="SELECT count(*) FROM jobs")


def external_api_down(env: Env) -> Stack:
    stack = env.make_stack(env.pg_url, redis_url=REDIS_URL)
    stack.manager.register_check("external_api", lambda: False)
    return stack


def everything_down(env: Env) -> Stack:
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{env.blackhole()}/app"
    stack = env.make_stack(url, redis_url=CLOSED_PORT_REDIS_URL)
    release = threading.Event()
    env.cleanup.callback(release.set)
    stack.manager.register_check("external_api", lambda: release.wait(30), timeout=TIMEOUT)
    return stack


@pytest.mark.postgresql
@pytest.mark.parametrize(
    ("scenario", "http_status", "overall", "database", "redis_status"),
    [
        (all_up, 200, "healthy", "healthy", "healthy"),
        (redis_unset, 200, "healthy", "healthy", "disabled"),
        (redis_closed_port, 200, "degraded", "healthy", "fallback"),
        (redis_never_answers, 200, "degraded", "healthy", "fallback"),
        (backends_terminated, 200, "healthy", "healthy", "healthy"),
        (external_api_down, 200, "degraded", "healthy", "healthy"),
        (database_renamed_away, 503, "unhealthy", "unhealthy", "healthy"),
        (database_never_answers, 503, "unhealthy", "unhealthy", "healthy"),
        (pool_exhausted, 503, "unhealthy", "unhealthy", "healthy"),
        (query_blocked_by_lock, 503, "unhealthy", "unhealthy", "healthy"),
        (everything_down, 503, "unhealthy", "unhealthy", "fallback"),
    ],
    ids=lambda value: value.__name__ if callable(value) else None,
)
def test_health_endpoint(
    pg_url: str,
    make_stack: MakeStack,
    request: pytest.FixtureRequest,
    scenario: Callable[[Env], Stack],
    http_status: int,
    overall: str,
    database: str,
    redis_status: str,
) -> None:
    with ExitStack() as cleanup:
        stack = scenario(Env(pg_url, make_stack, request, cleanup))
        status_code, body, elapsed = stack.get_health()
    assert (status_code, body["status"]) == (http_status, overall)
    assert body["services"]["database"]["status"] == database
    assert body["services"]["redis"]["status"] == redis_status
    assert elapsed < TIMEOUT + MARGIN


@pytest.mark.postgresql
def test_health_endpoint_reports_each_service(pg_url: str, make_stack: MakeStack) -> None:
    status_code, body, _ = make_stack(pg_url, redis_url=CLOSED_PORT_REDIS_URL).get_health()
    database, redis_service = body["services"]["database"], body["services"]["redis"]
    assert status_code == 200
    assert (database["critical"], database["error"]) == (True, None)
    assert database["response_time_ms"] > 0
    assert datetime.fromisoformat(database["last_check"])
    assert redis_service["critical"] is False
    assert "in-process cache" in redis_service["error"]


@pytest.mark.postgresql
def test_health_endpoint_recovers_after_an_outage(pg_url: str, make_stack: MakeStack) -> None:
    stack = make_stack(pg_url)
    with database_renamed(pg_url):
        assert stack.get_health()[0] == 503
    assert stack.get_health()[0] == 200


def test_health_endpoint_serves_fresh_background_results_without_checking(
    sqlite_url: str, make_stack: MakeStack
) -> None:
    calls: list[int] = []
    stack = make_stack(sqlite_url, interval=60)
    stack.manager.register_check("counted", lambda: calls.append(1))
    stack.manager.start_background_monitoring()
    wait_for(lambda: stack.manager.rounds_completed >= 1)
    responses = [stack.get_health()[0] for _ in range(3)]
    assert (responses, len(calls)) == ([200, 200, 200], 1)


def test_health_endpoint_checks_on_request_without_a_monitor(
    sqlite_url: str, make_stack: MakeStack
) -> None:
    calls: list[int] = []
    stack = make_stack(sqlite_url)
    stack.manager.register_check("counted", lambda: calls.append(1))
    for _ in range(3):
        stack.get_health()
    assert len(calls) == 3


def test_health_endpoint_path_is_configurable(sqlite_url: str, make_stack: MakeStack) -> None:
    stack = make_stack(sqlite_url)
    stack.app.register_blueprint(
        create_health_blueprint(stack.manager, "/status/health/", name="status_health")
    )
    response = stack.app.test_client().get("/status/health")
    assert (response.status_code, response.get_json()["status"]) == (200, "healthy")
    assert response.headers["Cache-Control"] == "no-store"


# -- the extension's /health: fallbacks, one key per outage, no Alembic lines -------------------


@pytest.mark.parametrize(
    ("database_url", "shown"),
    [
        ("mysql://app:s3cr3t-pw@db.internal/app", "mysql://app:***@db.internal/app"),
        ("postgres://app:s3cr3t-pw@db.internal", "postgres://app:***@db.internal"),
        ("http://app:s3cr3t-pw@db.internal/app", "http://app:***@db.internal/app"),
    ],
    ids=["unsupported dialect", "no database name", "web url"],
)
def test_health_reports_the_sqlite_fallback_of_an_invalid_url_as_fallback(
    make_schema_app: MakeSchemaApp,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    database_url: str,
    shown: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # where the fallback file ./ai_secretary.db is made
    app, _ = make_schema_app(database_url=database_url)
    response = app.test_client().get("/health")
    database = response.json["services"]["database"]
    assert (response.status_code, response.json["status"], database["status"]) == (
        200,
        "degraded",
        "fallback",
    )
    assert f"the configured DATABASE_URL {shown} is invalid" in database["error"]
    assert f"the SQLite file {tmp_path / 'ai_secretary.db'} is in use instead" in database["error"]
    assert "DATABASE_STRICT=1" in database["error"]
    assert "s3cr3t-pw" not in response.get_data(as_text=True) + caplog.text


def test_strict_mode_refuses_an_invalid_url_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = Flask("strict")
    with pytest.raises(DatabaseConfigError, match="mysql://app:\\*\\*\\*@db/app"):
        SchemaExtension(app, database_url="mysql://app:pw@db/app", database_strict=True)
    assert not (tmp_path / "ai_secretary.db").exists()
    assert not app.blueprints


def health_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """(level, check) of every line the health checks logged."""
    return [
        (record.levelname, record.getMessage().split(":")[0])
        for record in caplog.records
        if record.name == "ai_secretary_schema.flask.health"
    ]


@pytest.mark.postgresql
@pytest.mark.parametrize("round_of", ["check_all", "the schema check alone"])
def test_an_outage_is_logged_by_the_database_check_and_not_again_by_the_schema_check(
    pg_url: str, make_schema_app: MakeSchemaApp, caplog: pytest.LogCaptureFixture, round_of: str
) -> None:
    app, schema = make_schema_app(database_url=pg_url, health_check_timeout=TIMEOUT)
    health = schema.state(app).health
    check = health.check_all if round_of == "check_all" else lambda: health.check("schema")
    caplog.set_level(logging.INFO, logger="ai_secretary_schema.flask.health")
    with database_renamed(pg_url):
        for _ in range(10):
            check()
        schema_health = health.last_result("schema")
    health.check_all()
    assert schema_health is not None
    assert schema_health.status is H.UNHEALTHY
    assert str(schema_health.error_message).endswith("(the database it depends on is unhealthy)")
    assert health_lines(caplog) == [("ERROR", "health check 'database'")] * 5 + [
        ("INFO", "health check 'database'")  # "healthy again"
    ]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_schema_behind_an_answering_database_is_logged_under_its_own_key(
    make_schema_app: MakeSchemaApp,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
    database: str,
) -> None:
    url = str(request.getfixturevalue("sqlite_url" if database == "sqlite" else "pg_url"))
    app, schema = make_schema_app(database_url=url, schema_startup="off")
    caplog.set_level(logging.INFO, logger="ai_secretary_schema.flask.health")
    for _ in range(3):
        schema.state(app).health.check_all()
    assert health_lines(caplog) == [("WARNING", "health check 'schema'")] * 3


def test_a_check_can_depend_only_on_a_check_registered_before_it(
    sqlite_url: str, make_stack: MakeStack
) -> None:
    with pytest.raises(ValueError, match="depends on 'queue', which is not registered"):
        make_stack(sqlite_url).manager.register_check("jobs", lambda: True, depends_on="queue")


def test_a_start_without_a_database_and_the_checks_after_it_write_five_lines(
    make_schema_app: MakeSchemaApp, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ai_secretary_schema")
    app, schema = make_schema_app(
        database_url=f"postgresql+psycopg2://postgres@127.0.0.1:{closed_port}/app",
        schema_startup="off",  # start anyway: /health reports the outage
        database_connect_deadline=0,
        health_check_timeout=TIMEOUT,
    )
    for _ in range(10):
        schema.state(app).health.check_all()
    lines = [(r.name.rsplit(".", 1)[-1], r.levelname) for r in caplog.records]
    assert lines == [
        ("connection", "ERROR"),  # Database connection failed (unreachable): …
        ("health", "WARNING"),  # Starting without a database connection …
        *[("health", "ERROR")] * 3,  # health check 'database': unhealthy: …
    ]


def test_health_checks_write_no_alembic_line(
    db_url: str, make_schema_app: MakeSchemaApp, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = make_schema_app(database_url=db_url)
    caplog.set_level(logging.INFO)  # the root logger, as an application that logs INFO has it
    caplog.clear()
    client = app.test_client()
    statuses = {client.get("/health").status_code for _ in range(20)}
    assert statuses == {200}
    assert [r.getMessage() for r in caplog.records if r.name.startswith("alembic")] == []
