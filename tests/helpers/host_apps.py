"""Host applications for tests/test_host_history.py, run by ``flask`` and by host_worker.py.

``flask --app tests/helpers/host_apps.py:create_app …`` (or ``create_app(...)`` in a test) makes
an application of the package's extension whose own migrations are in ``HOST_MIGRATIONS`` (a
copy of the example's, in the test's ``tmp_path``: ``flask db migrate`` writes there). Which
models it has is ``HOST_MODELS``:

* ``example``: the example host application's (``examples.host_app``: ``notes``);
* ``titled``: the same ``notes`` with one column more (``title``), a model change;
* ``counted``: the same ``notes``, and the ``migration_runs`` of a counting host revision;
* ``legacy``: a ``notes`` of its own history made before it knew the package (no ``user_id``).

``HOST_HISTORY`` says how the application tells the extension about its migrations:
``handed-over`` (``SchemaExtension(app, db=db, directory=…)``: one ``flask db`` for both) or
``separate`` (plain Flask-Migrate on its own directory, ``SchemaExtension(…,
migrate_command=None)``: the package is not told, which is the layout the extension refuses).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ai_secretary_schema import SchemaExtension, User
from ai_secretary_schema.models import NAMING_CONVENTION
from examples.host_app import db as example_db


class TitledBase(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


titled_db = SQLAlchemy(model_class=TitledBase)


# The example's ``notes`` (examples/host_app/app.py) is spelled again in each variant: a mixin
# would copy the ForeignKey as the string "users.id", which the variant's MetaData cannot resolve.


class TitledNote(titled_db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey(User.id, ondelete="CASCADE"), index=True)
    body: Mapped[str] = mapped_column(sa.Text)
    title: Mapped[str | None] = mapped_column(sa.String(200))


class CountedBase(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


counted_db = SQLAlchemy(model_class=CountedBase)


class CountedNote(counted_db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey(User.id, ondelete="CASCADE"), index=True)
    body: Mapped[str] = mapped_column(sa.Text)


class MigrationRun(counted_db.Model):  # type: ignore[name-defined,misc]
    """The table of tests/helpers/scripts.py's ``COUNT`` revision: one row per run."""

    __tablename__ = "migration_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    pid: Mapped[int]


class LegacyBase(DeclarativeBase):
    pass


legacy_db = SQLAlchemy(model_class=LegacyBase)


class LegacyNote(legacy_db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(sa.Text)


MODELS = {
    "example": example_db,
    "titled": titled_db,
    "counted": counted_db,
    "legacy": legacy_db,
}


def create_app(
    config: Mapping[str, Any] | None = None,
    *,
    directory: str | os.PathLike[str] | None = None,
    models: str | None = None,
    history: str | None = None,
) -> Flask:
    """An application on ``directory`` (default ``HOST_MIGRATIONS``), with the models named
    ``models`` (``HOST_MODELS``, default ``example``), telling the extension about its history
    as ``history`` says (``HOST_HISTORY``, default ``handed-over``)."""
    directory = directory or os.environ["HOST_MIGRATIONS"]
    db = MODELS[models or os.environ.get("HOST_MODELS", "example")]
    history = history or os.environ.get("HOST_HISTORY", "handed-over")
    app = Flask(__name__)
    app.config.update(config or {})
    if history == "separate":
        Migrate(app, db, directory=str(directory))
        SchemaExtension(app, db=db, migrate_command=None, health_path=None)
    else:
        SchemaExtension(app, db=db, directory=directory, health_path=None)
    return app
