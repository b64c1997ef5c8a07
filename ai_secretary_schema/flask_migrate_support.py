"""Flask-Migrate wired to the package's migrations, so ``flask db …`` works on the extension's URL.

Two traps are avoided here (see TRAPS.md): ``Migrate(app, None)`` registers no ``flask db``
commands, so Flask-Migrate gets a small stand-in for a Flask-SQLAlchemy ``db`` that exposes the
package's ``metadata`` and engine; and a URL with ``%`` in it (an encoded password) breaks
Alembic's ConfigParser, so the URL is escaped before it becomes the ``sqlalchemy.url`` option.

Every ``flask db`` command builds its Alembic config through :meth:`Migrate.get_config`, which
calls the configure callbacks registered here: they set ``sqlalchemy.url`` to the engine's
(normalised) URL and mark the run as in-process, so ``migrations/env.py`` leaves the host's
logging alone. ``-x url=…`` on the command line still wins over the extension's URL.
"""

from __future__ import annotations

from collections.abc import Callable

from alembic.config import Config
from flask import Flask
from flask_migrate import Migrate  # type: ignore[import-untyped]
from sqlalchemy import MetaData
from sqlalchemy.engine import Engine

from ai_secretary_schema.alembic_config import escape_for_configparser, migrations_directory
from ai_secretary_schema.errors import ExtensionAlreadyRegisteredError
from ai_secretary_schema.migration_env import IN_PROCESS
from ai_secretary_schema.models import Base

__all__ = ["MigrationTarget", "register_migrate"]


class MigrationTarget:
    """What Flask-Migrate expects of its ``db`` argument: ``metadata`` and the engine(s)."""

    def __init__(self, engine_provider: Callable[[], Engine], metadata: MetaData) -> None:
        self._engine_provider = engine_provider
        self.metadata = metadata

    @property
    def engine(self) -> Engine:
        return self._engine_provider()

    @property
    def engines(self) -> dict[str | None, Engine]:
        return {None: self._engine_provider()}

    def get_engine(self, bind_key: str | None = None) -> Engine:
        """Flask-Migrate's own env.py template calls this; the package's env.py does not."""
        return self._engine_provider()


def register_migrate(app: Flask, engine_provider: Callable[[], Engine], command: str) -> Migrate:
    """Register Flask-Migrate on ``app`` as the ``command`` group (``flask db``)."""
    if "migrate" in app.extensions:
        raise ExtensionAlreadyRegisteredError(
            f"Flask-Migrate is already registered on application {app.name!r}; "
            "SchemaExtension registers its own for the package's migrations. Pass "
            "migrate_command=None to SchemaExtension to keep yours, or drop your Migrate(app, …)."
        )
    migrate = Migrate(directory=str(migrations_directory()), command=command)

    def _configure(config: Config) -> Config:
        url = engine_provider().url.render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", escape_for_configparser(url))
        config.attributes[IN_PROCESS] = True
        return config

    migrate.configure(_configure)
    migrate.init_app(app, MigrationTarget(engine_provider, Base.metadata))
    return migrate
