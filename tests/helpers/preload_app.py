"""The application tests/test_fork.py serves with ``gunicorn --preload``.

    DATABASE_URL=postgresql+psycopg2://… gunicorn --preload -w 4 helpers.preload_app:app

``--preload`` imports this module, and so runs ``init_app`` (connect, startup hook, health
monitor), once in gunicorn's master, which then forks the workers: exactly how a new user
deploys it. ``GET /tenants/<id>`` reads one tenant through the extension's session, so each
answer can be checked against the rows the test wrote.
"""

from __future__ import annotations

from flask import Flask, Response, abort, jsonify

from ai_secretary_schema import SchemaExtension
from ai_secretary_schema.models import Tenant

schema = SchemaExtension()


def create_app() -> Flask:
    app = Flask(__name__)
    schema.init_app(app)  # every setting from the environment

    @app.get("/tenants/<int:tenant_id>")
    def tenant(tenant_id: int) -> Response:
        found = schema.session.get(Tenant, tenant_id)
        if found is None:
            abort(404)
        return jsonify(id=found.id, slug=found.slug, name=found.name)

    return app


app = create_app()
