"""The example application through Flask's test client, on the real PostgreSQL and Redis.

The failure cases of ``/health`` are made for real: Redis at a closed port, the test's own
PostgreSQL database taken away mid-run (its backends terminated with ``pg_terminate_backend``
and the database renamed), and a PostgreSQL that stops answering (a TCP proxy in front of it that
stops forwarding). Each must be answered within ``HEALTH_CHECK_TIMEOUT`` (plus a margin for the
request itself), and the application must recover when the database comes back.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers.db import database_renamed
from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/0"
CLOSED_PORT_REDIS_URL = "redis://127.0.0.1:1/0"
TIMEOUT = 2.0  # HEALTH_CHECK_TIMEOUT of these tests
MARGIN = 1.0  # what a request may add to the slowest check

pytestmark = [pytest.mark.postgresql, pytest.mark.redis]


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Any:
    for key in ("DATABASE_URL", "REDIS_URL", "SCHEMA_STARTUP", "EXTERNAL_API_URL"):
        monkeypatch.delenv(key, raising=False)
    import examples.app

    return examples.app


@pytest.fixture
def make_app(example: Any) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def make(database_url: str, **config: Any) -> Flask:
        app: Flask = example.create_app(
            {"DATABASE_URL": database_url, "HEALTH_CHECK_TIMEOUT": TIMEOUT, **config}
        )
        apps.append(app)
        return app

    yield make
    for app in apps:
        for thread in app.extensions["example_background_threads"]:
            thread.join(5)
        example.schema.close(app)


def timed_get(client: FlaskClient, path: str) -> tuple[int, dict[str, Any], float]:
    start = time.monotonic()
    response = client.get(path)
    return response.status_code, response.get_json(), time.monotonic() - start


# -- the happy path ----------------------------------------------------------------------------


def test_health_is_healthy_with_real_postgresql_and_redis(
    make_app: Callable[..., Flask], pg_url: str
) -> None:
    client = make_app(pg_url, REDIS_URL=REDIS_URL).test_client()
    status, body, elapsed = timed_get(client, "/health")
    assert status == 200, body
    assert body["status"] == "healthy"
    services = body["services"]
    assert {name: s["status"] for name, s in services.items()} == {
        "database": "healthy",
        "redis": "healthy",
        "schema": "healthy",
        "external_api": "disabled",
    }
    assert services["database"]["critical"] is True
    assert services["database"]["response_time_ms"] > 0
    assert services["database"]["last_check"]
    assert elapsed < TIMEOUT


def test_routes_session_background_thread_and_cache(
    make_app: Callable[..., Flask], example: Any, pg_url: str
) -> None:
    app = make_app(pg_url, REDIS_URL=REDIS_URL)
    client = app.test_client()
    assert client.get("/tenants").json == []
    created = client.post("/tenants", json={"name": "Acme", "slug": "acme"})
    assert created.status_code == 201
    assert [t["slug"] for t in client.get("/tenants").json] == ["acme"]

    alert = client.post("/alerts", json={"title": "p95 above 2 s", "severity": "critical"})
    assert alert.status_code == 201
    assert alert.json["status"] == "active"  # the server default
    assert client.post("/alerts", json={}).status_code == 400

    accepted = client.post("/alerts/background", json={"title": "nightly report late"})
    assert accepted.status_code == 202
    for thread in app.extensions["example_background_threads"]:
        thread.join(5)
        assert not thread.is_alive()
    titles = [a["title"] for a in client.get("/alerts").json]
    assert titles == ["p95 above 2 s", "nightly report late"]

    summary = client.get("/summary").json
    assert summary["tenants"] == 1
    assert summary["external"] is None  # EXTERNAL_API_URL unset: the feature is off
    assert summary["cache_backend"] == "redis"


def test_non_critical_external_api_switches_its_feature_off(
    make_app: Callable[..., Flask], pg_url: str
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        port = listener.getsockname()[1]
        up = make_app(pg_url, EXTERNAL_API_URL=f"http://127.0.0.1:{port}/v1").test_client()
        assert up.get("/health").json["services"]["external_api"]["status"] == "healthy"
        assert up.get("/summary").json["external"] == {"source": f"http://127.0.0.1:{port}/v1"}
    finally:
        listener.close()

    down = make_app(pg_url, EXTERNAL_API_URL="http://127.0.0.1:1/v1").test_client()
    status, body, elapsed = timed_get(down, "/health")
    assert status == 200  # non-critical: degraded, not unavailable
    assert body["status"] == "degraded"
    assert body["services"]["external_api"]["status"] == "unhealthy"
    assert "Connection refused" in body["services"]["external_api"]["error"]
    assert elapsed < TIMEOUT + MARGIN
    summary = down.get("/summary")
    assert summary.status_code == 200
    assert summary.json["external"] is None
    assert "unavailable" in summary.json["notice"]


# -- Redis down --------------------------------------------------------------------------------


def test_redis_at_a_closed_port_is_fallback_and_still_200(
    make_app: Callable[..., Flask], example: Any, pg_url: str
) -> None:
    app = make_app(pg_url, REDIS_URL=CLOSED_PORT_REDIS_URL)
    status, body, elapsed = timed_get(app.test_client(), "/health")
    logger.info("%s: %.3f s", "redis_closed_port_seconds", elapsed)
    assert status == 200, body
    assert body["status"] == "degraded"
    redis = body["services"]["redis"]
    assert redis["status"] == "fallback"
    assert "in-process cache" in redis["error"]
    assert elapsed < TIMEOUT + MARGIN
    with app.app_context():
        cache = example.schema.cache
        cache.set("greeting", {"hello": "world"})
        assert cache.get("greeting") == {"hello": "world"}
        assert cache.backend == "memory"
    assert app.test_client().get("/summary").json["cache_backend"] == "memory"


# -- PostgreSQL taken away mid-run ---------------------------------------------------------------


def wait_for_status(
    client: FlaskClient, expected: int, within: float
) -> tuple[int, dict[str, Any], float]:
    start = time.monotonic()
    while True:
        status, body, _ = timed_get(client, "/health")
        elapsed = time.monotonic() - start
        if status == expected or elapsed > within:
            return status, body, elapsed
        time.sleep(0.1)


def test_database_renamed_mid_run_is_503_then_recovers(
    make_app: Callable[..., Flask], pg_url: str
) -> None:
    client = make_app(pg_url, REDIS_URL=REDIS_URL).test_client()
    assert client.get("/health").status_code == 200
    assert client.post("/tenants", json={"name": "Before", "slug": "before"}).status_code == 201

    with database_renamed(pg_url):
        status, body, elapsed = timed_get(client, "/health")
        logger.info("%s: %.3f s", "database_renamed_seconds", elapsed)
        assert status == 503, body
        assert elapsed < TIMEOUT + MARGIN
        assert body["status"] == "unhealthy"
        database = body["services"]["database"]
        assert database["status"] == "unhealthy"
        assert "does not exist" in database["error"]
        assert body["services"]["redis"]["status"] == "healthy"
        # A request that needs the database fails; /health kept answering.
        assert client.get("/tenants").status_code == 500

    status, body, elapsed = wait_for_status(client, 200, within=TIMEOUT * 3)
    logger.info("%s: %.3f s", "database_recovery_seconds", elapsed)
    assert status == 200, body
    assert body["status"] == "healthy"
    assert [t["slug"] for t in client.get("/tenants").json] == ["before"]


# -- PostgreSQL that stops answering ---------------------------------------------------------------


class StallingProxy:
    """TCP proxy to PostgreSQL that can stop forwarding: the server seems to hang.

    While stalled, bytes already sent by the client are swallowed and new connections are
    accepted but never answered, as with a server that froze or a network that drops packets.
    :meth:`resume` resets every connection made so far (what a restarted server does) and
    forwards again.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.stalled = threading.Event()
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _track(self, *socks: socket.socket) -> None:
        with self.lock:
            self.sockets.extend(socks)

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self._track(client)
            if self.stalled.is_set():
                continue  # accepted, never answered
            upstream = socket.create_connection(self.target)
            self._track(upstream)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data or self.stalled.is_set():
                    if not data:
                        break
                    continue  # swallowed
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def stall(self) -> None:
        self.stalled.set()

    def resume(self) -> None:
        # Forward first, then reset: a reconnect racing with the reset must not be held.
        self.stalled.clear()
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        self.resume()


def test_postgresql_that_stops_answering_is_503_within_the_timeout(
    make_app: Callable[..., Flask], pg_url: str
) -> None:
    parsed = make_url(pg_url)
    proxy = StallingProxy((parsed.host or "127.0.0.1", parsed.port or 5432))
    try:
        proxied = parsed.set(port=proxy.port).render_as_string(hide_password=False)
        client = make_app(proxied, REDIS_URL=REDIS_URL).test_client()
        assert client.get("/health").status_code == 200

        proxy.stall()
        status, body, elapsed = timed_get(client, "/health")
        logger.info("%s: %.3f s", "database_stalled_seconds", elapsed)
        assert status == 503, body
        assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + MARGIN
        assert body["services"]["database"]["status"] == "unhealthy"
        assert f"no answer within {TIMEOUT:g} s" in body["services"]["database"]["error"]
        # Asked again while the first probe still hangs: it is shared, not duplicated.
        status, body, elapsed = timed_get(client, "/health")
        assert status == 503
        assert elapsed < TIMEOUT + MARGIN

        proxy.resume()
        status, body, elapsed = wait_for_status(client, 200, within=TIMEOUT * 3)
        logger.info("%s: %.3f s", "database_stall_recovery_seconds", elapsed)
        assert status == 200, body
        assert body["services"]["database"]["status"] == "healthy"
    finally:
        proxy.close()
