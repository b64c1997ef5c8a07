"""``/health``: the overall and per-service health as JSON, 503 when the database is unhealthy.

Body::

    {"status": "healthy" | "degraded" | "unhealthy",
     "checked_at": "2025-01-01T00:00:00+00:00",
     "services": {"database": {"status": "healthy", "critical": true,
                               "last_check": "...", "response_time_ms": 1.2, "error": null},
                  "redis": {...}, ...}}

Where the answer comes from: while the background monitor runs, the results of its latest round
are served as long as every service was checked within ``HEALTH_CHECK_INTERVAL`` +
``HEALTH_CHECK_TIMEOUT`` seconds (a load balancer polling every second then costs the database
nothing). Otherwise — no monitor, or stale results — every check runs on the request,
concurrently, each bounded by its timeout, so the endpoint answers within about
``HEALTH_CHECK_TIMEOUT`` even when PostgreSQL or Redis stops answering. ``max_age`` overrides
the freshness bound (``0``: always check on request).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ai_secretary_schema.health import ServiceHealthManager

__all__ = ["create_health_blueprint"]


def create_health_blueprint(
    manager: ServiceHealthManager,
    url_prefix_or_path: str = "/health",
    *,
    name: str = "ai_secretary_health",
    max_age: float | None = None,
) -> Blueprint:
    """A blueprint serving ``manager``'s health at ``url_prefix_or_path`` (GET and HEAD).

    Register it with ``app.register_blueprint(create_health_blueprint(manager))``. ``name`` must
    differ if the blueprint is registered more than once on an application.
    """
    path = "/" + url_prefix_or_path.strip("/") if url_prefix_or_path.strip("/") else "/"
    blueprint = Blueprint(name, __name__)

    @blueprint.get(path)
    def health() -> Response:
        report = None
        if max_age is None:
            if manager.monitoring:
                report = manager.latest_report(manager.interval + manager.timeout)
        elif max_age > 0:
            report = manager.latest_report(max_age)
        if report is None:
            report = manager.check_all()
        response = jsonify(report.to_dict())
        response.status_code = report.http_status
        response.headers["Cache-Control"] = "no-store"
        return response

    return blueprint
