"""The smallest application of the package's Flask extension, for ``flask db`` crowds in
tests/test_doors.py: ``flask --app tests/helpers/flask_door_app.py:create_app db upgrade``,
with the database in ``DATABASE_URL``."""

from __future__ import annotations

from flask import Flask

from ai_secretary_schema import SchemaExtension


def create_app() -> Flask:
    app = Flask(__name__)
    SchemaExtension(app, health_path=None)
    return app
