"""Flask-Migrate wired to the package's migrations: ``flask db …`` on the extension's engine.

Two traps are avoided here. ``Migrate(app, None)`` registers no ``flask db``
commands, so Flask-Migrate gets :class:`MigrationTarget`, a small stand-in for a Flask-SQLAlchemy
``db`` that exposes the package's ``metadata`` and the extension's engine. And nothing is written
into Alembic's ConfigParser: every ``flask db`` command builds its Alembic config through
:meth:`Migrate.get_config`, whose configure callback (registered here) hands env.py the
extension's resolved settings and its engine through ``config.attributes``
(:func:`~ai_secretary_schema.alembic_config.configure_in_process`), so a ``%`` in an encoded
password never meets ConfigParser interpolation. env.py then migrates over that engine (one pool
per application, Flask-SQLAlchemy's when the extension shares it) under the migration lock, and
leaves the host's logging alone.

``-x url=…`` on the command line still names another database: env.py's settings take it over,
the extension's engine included (:func:`~ai_secretary_schema.migration_env.run_settings`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from alembic.config import Config
from flask import Flask
from flask_migrate import Migrate  # type: ignore[import-untyped]
from sqlalchemy import MetaData
from sqlalchemy.engine import Engine

from ai_secretary_schema.alembic_config import configure_in_process
from ai_secretary_schema.errors import ExtensionAlreadyRegisteredError
from ai_secretary_schema.history import migrations_directory
from ai_secretary_schema.models import Base

if TYPE_CHECKING:
    from ai_secretary_schema.flask import SchemaExtensionState

__all__ = ["MigrationTarget", "init_migrate"]


class MigrationTarget:
    """What Flask-Migrate expects of its ``db`` argument: ``metadata`` and the engine(s).

    The engine is read from the extension's state on each use, never copied.
    """

    def __init__(self, state: SchemaExtensionState, metadata: MetaData = Base.metadata) -> None:
        self._state = state
        self.metadata = metadata

    @property
    def engine(self) -> Engine:
        return self._state.engine

    @property
    def engines(self) -> dict[str | None, Engine]:
        return {None: self._state.engine}

    def get_engine(self, bind_key: str | None = None) -> Engine:
        """Flask-Migrate's own env.py template calls this; the package's env.py does not."""
        return self._state.engine


def init_migrate(app: Flask, state: SchemaExtensionState, command: str) -> Migrate:
    """Register Flask-Migrate on ``app`` as the ``command`` group (``flask db``), migrating the
    database of ``state`` (the extension's per-application state) over its engine."""
    if "migrate" in app.extensions:
        raise ExtensionAlreadyRegisteredError(
            f"Flask-Migrate is already registered on application {app.name!r}; "
            "SchemaExtension registers its own for the package's migrations. Pass "
            "migrate_command=None to SchemaExtension to keep yours, or drop your Migrate(app, …)."
        )
    migrate = Migrate(directory=str(migrations_directory()), command=command)

    def configure(config: Config) -> Config:
        # flask db is a command line: it reports each revision on stdout, as alembic does.
        return configure_in_process(
            config, state.settings, connection=state.engine, progress=sys.stdout
        )

    migrate.configure(configure)
    migrate.init_app(app, MigrationTarget(state))
    return migrate
