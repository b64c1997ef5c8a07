"""An example AI Secretary application built on ai-secretary-schema's Flask extension.

Run it (from the repository root)::

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/ai_secretary \\
    REDIS_URL=redis://127.0.0.1:6379/0 flask --app examples.app:create_app run

    flask --app examples.app:create_app db upgrade     # or: db current, history, check …

What it shows:

* ``GET /tenants``, ``POST /tenants``: the extension's session, scoped to the request.
* ``POST /alerts``, ``GET /alerts``: the design's ``performance_alerts`` table.
* ``POST /alerts/background``: a plain thread that writes an alert through a function decorated
  with ``ensure_context`` (it gets an application context and a session of its own).
* ``GET /summary``: a feature that depends on a non-critical "external API"; it asks
  ``is_available("external_api")`` and switches itself off instead of failing the request.
  The API's health check is registered with ``register_check`` (``EXTERNAL_API_URL``; unset:
  the service is ``disabled``).
* ``GET /health``: the extension's health endpoint (database, Redis, schema, external API).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Flask, Response, abort, current_app, jsonify, request

from ai_secretary_schema.flask import SchemaExtension
from ai_secretary_schema.flask.health import CheckResult, HealthStatus
from ai_secretary_schema.models import PerformanceAlert, Tenant

schema = SchemaExtension()

EXTERNAL_API = "external_api"


def external_api_check(url: str | None, timeout: float = 1.0) -> CheckResult:
    """A TCP connection to the external API's host and port; ``disabled`` without a URL."""
    if not url:
        return CheckResult(HealthStatus.DISABLED, "EXTERNAL_API_URL is not set")
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
        pass
    return CheckResult(HealthStatus.HEALTHY)


def _alert_json(alert: PerformanceAlert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "alert_type": alert.alert_type,
        "severity": alert.severity,
        "title": alert.title,
        "status": alert.status,
    }


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The application factory; ``config`` overrides ``app.config`` (tests pass URLs here)."""
    app = Flask(__name__)
    app.config.update(config or {})
    app.config.setdefault("EXTERNAL_API_URL", os.environ.get("EXTERNAL_API_URL"))
    schema.init_app(app)

    state = schema.state(app)
    api_url = app.config["EXTERNAL_API_URL"]
    state.health.register_check(EXTERNAL_API, lambda: external_api_check(api_url), critical=False)
    background: list[threading.Thread] = []
    app.extensions["example_background_threads"] = background

    @state.context.ensure_context
    def record_alert(title: str, severity: str) -> None:
        # Runs in a plain thread: ensure_context pushed an application context for it, so the
        # session below is this thread's own and is removed when the context ends.
        session = schema.session()
        session.add(PerformanceAlert(alert_type="background", severity=severity, title=title))
        session.commit()
        current_app.logger.info("background alert %r recorded", title)

    @app.get("/tenants")
    def list_tenants() -> Response:
        tenants = schema.session.scalars(sa.select(Tenant).order_by(Tenant.id)).all()
        return jsonify([{"id": t.id, "name": t.name, "slug": t.slug} for t in tenants])

    @app.post("/tenants")
    def create_tenant() -> tuple[Response, int]:
        data = request.get_json(force=True)
        tenant = Tenant(name=data["name"], slug=data["slug"])
        schema.session.add(tenant)
        schema.session.commit()
        return jsonify({"id": tenant.id, "name": tenant.name, "slug": tenant.slug}), 201

    @app.get("/alerts")
    def list_alerts() -> Response:
        alerts = schema.session.scalars(sa.select(PerformanceAlert).order_by(PerformanceAlert.id))
        return jsonify([_alert_json(alert) for alert in alerts])

    @app.post("/alerts")
    def create_alert() -> tuple[Response, int]:
        data = request.get_json(force=True)
        if not data.get("title"):
            abort(400, "title is required")
        alert = PerformanceAlert(
            alert_type=data.get("alert_type", "manual"),
            severity=data.get("severity", "warning"),
            title=data["title"],
            description=data.get("description"),
        )
        schema.session.add(alert)
        schema.session.commit()
        return jsonify(_alert_json(alert)), 201

    @app.post("/alerts/background")
    def create_alert_in_background() -> tuple[Response, int]:
        data = request.get_json(force=True)
        thread = threading.Thread(
            target=record_alert,
            args=(data["title"], data.get("severity", "info")),
            name="example-background-alert",
            daemon=True,
        )
        background.append(thread)
        thread.start()
        return jsonify({"accepted": True, "thread": thread.name}), 202

    @app.get("/summary")
    def summary() -> Response:
        count = schema.session.scalar(sa.select(sa.func.count()).select_from(Tenant))
        body: dict[str, Any] = {"tenants": count}
        if schema.is_available(EXTERNAL_API):
            # The cache is Redis while it answers and the in-process cache otherwise.
            cached = schema.cache.get("summary:external")
            if cached is None:
                cached = {"source": api_url}
                schema.cache.set("summary:external", cached, ttl=30)
            body["external"] = cached
        else:
            body["external"] = None
            body["notice"] = "the external API is unavailable; summary without it"
        body["cache_backend"] = schema.cache.backend
        return jsonify(body)

    return app
