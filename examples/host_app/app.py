"""The host application: Flask-SQLAlchemy models of its own, and their migrations.

``SchemaExtension(db=db, directory=MIGRATIONS)`` tells the package where the application's own
revisions are, so that

* ``flask db migrate`` writes the application's revisions into ``MIGRATIONS/versions`` (never a
  change to the package's tables), the first one depending on the package's head;
* ``flask db upgrade`` brings both histories to their heads, the package's revisions before the
  application's revisions that need them;
* the startup hook (``create_app()`` outside a ``flask`` command) does the same under the
  migration lock, then compares the database with both sets of models.

``SCHEMA_HOST_MIGRATIONS=release`` leaves the application's history to a release step of its
own (``flask db upgrade``): the startup hook then upgrades and checks the package's alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, abort, g, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ai_secretary_schema import SchemaExtension, User
from ai_secretary_schema.models import NAMING_CONVENTION

#: The application's migrations directory, absolute so that ``flask`` and the startup hook find
#: it from any working directory (a relative one is read against the working directory).
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class Base(DeclarativeBase):
    # The package's naming convention: on SQLite, Alembic's batch mode alters and drops
    # constraints by name, so every constraint needs one.
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)
schema = SchemaExtension()


class Note(db.Model):  # type: ignore[name-defined,misc]
    """A note a user of the package's ``users`` wrote."""

    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    # A Column object, not the string "users.id": ``users`` is in the package's MetaData, not
    # in ``db.metadata``, and a string would not resolve there.
    user_id: Mapped[int] = mapped_column(sa.ForeignKey(User.id, ondelete="CASCADE"), index=True)
    body: Mapped[str] = mapped_column(sa.Text)


def _note_json(note: Note) -> dict[str, Any]:
    return {"id": note.id, "user_id": note.user_id, "body": note.body}


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The application factory; ``config`` overrides ``app.config`` (``DATABASE_URL`` …)."""
    app = Flask(__name__)
    app.config.update(config or {})
    schema.init_app(app, db=db, directory=MIGRATIONS)

    @app.before_request
    def tenant_of_the_request() -> None:
        # The request's tenant goes where the package reads it, flask.g.tenant_id: every
        # transaction of db.session is then that tenant's (users is tenant-scoped). A real
        # application takes it from the authenticated session; the example from a header.
        tenant = request.headers.get("X-Tenant-Id", "")
        if not tenant.isdigit():
            abort(400, "send the tenant's id in the X-Tenant-Id header")
        g.tenant_id = int(tenant)

    @app.post("/users/<int:user_id>/notes")
    def create_note(user_id: int) -> tuple[Response, int]:
        if db.session.get(User, user_id) is None:
            abort(404, f"no user {user_id}")
        data = request.get_json(force=True)
        if not data.get("body"):
            abort(400, "body is required")
        note = Note(user_id=user_id, body=data["body"])
        db.session.add(note)
        db.session.commit()
        return jsonify(_note_json(note)), 201

    @app.get("/users/<int:user_id>/notes")
    def list_notes(user_id: int) -> Response:
        # notes has no tenant column: the user, looked up in the request's tenant, guards it.
        if db.session.get(User, user_id) is None:
            abort(404, f"no user {user_id}")
        notes = db.session.scalars(sa.select(Note).where(Note.user_id == user_id).order_by(Note.id))
        return jsonify([_note_json(note) for note in notes])

    return app
