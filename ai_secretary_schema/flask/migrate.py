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

**With the application's own migrations** (``SchemaExtension(app, db=db, directory=…)``), the
one ``flask db`` group covers both histories: every command runs the package's env.py over the
package's revisions and the application's (``directory/versions``; ``flask db -d DIR`` names
another). ``init`` makes that directory ready for both
(:func:`~ai_secretary_schema.host_directory.init_host_directory`); ``migrate`` and ``revision``
write the application's revisions only (:mod:`ai_secretary_schema.host_revisions`);
``upgrade`` and ``stamp`` go to every head by default (``heads``), ``downgrade`` steps back the
application's history (``app@-1``); ``current`` says which history each revision belongs to,
as ``history`` and ``heads`` do through the branch labels.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from alembic.config import Config
from flask import Flask, g
from flask.cli import with_appcontext
from flask_migrate import Migrate  # type: ignore[import-untyped]
from flask_migrate.cli import db as flask_migrate_group  # type: ignore[import-untyped]
from sqlalchemy import MetaData
from sqlalchemy.engine import Engine

from ai_secretary_schema.alembic_config import configure_in_process, point_at
from ai_secretary_schema.errors import ExtensionAlreadyRegisteredError, SchemaError
from ai_secretary_schema.history import (
    Histories,
    describe_current,
    migrations_directory,
    step_back,
)
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
    host = state.host
    directory = host.directory if host is not None else migrations_directory()
    migrate = Migrate(directory=str(directory), command=command)

    def configure(config: Config) -> Config:
        # Flask-Migrate made the script location the directory it was asked for (the
        # extension's, or `flask db -d DIR`); the package's env.py runs over both histories.
        point_at(config, histories_for(state, config.get_main_option("script_location")))
        # flask db is a command line: it reports each revision on stdout, as alembic does.
        return configure_in_process(
            config, state.settings, connection=state.engine, progress=sys.stdout
        )

    migrate.configure(configure)
    migrate.init_app(app, MigrationTarget(state))
    if host is not None:
        app.cli.add_command(_two_history_group(state, migrate), command)
    return migrate


def histories_for(state: SchemaExtensionState, asked: str | None) -> Histories:
    """The histories of a ``flask db`` command run on the directory ``asked``.

    With the application's own history (``directory=``), ``asked`` is that history's
    directory (``flask db -d`` names another); without, it is the package's script directory
    (``-d`` names a copy of it, as with plain Flask-Migrate).
    """
    package = migrations_directory()
    if asked is None or Path(asked).resolve() == package:
        return Histories(package, state.host)
    if state.host is None:
        return Histories(Path(asked).resolve())
    return Histories(package, replace(state.host, directory=Path(asked).resolve()))


def _with_default(command: click.Command, param: str, default: Any) -> click.Command:
    """``command`` with another default for its parameter ``param`` (Flask-Migrate's own
    command, options and help otherwise)."""
    clone = copy.copy(command)
    clone.params = []
    for each in command.params:
        if each.name == param:
            each = copy.copy(each)
            each.default = default
        clone.params.append(each)
    return clone


def _two_history_group(state: SchemaExtensionState, migrate: Migrate) -> click.Group:
    """Flask-Migrate's ``db`` group, with the defaults and output two histories need."""

    @click.command("init")
    @click.option("-d", "--directory", default=None, help="Migrations directory to create")
    @with_appcontext
    def init(directory: str | None) -> None:
        """Create the application's migrations directory, ready for both histories."""
        from ai_secretary_schema.host_directory import init_host_directory

        target = directory or g.directory or migrate.directory
        try:
            created = init_host_directory(target)
        except SchemaError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"Created {created}: the application's revisions go to {created / 'versions'}")

    @click.command("current")
    @click.option("-d", "--directory", default=None, help="Migrations directory")
    @click.option("-v", "--verbose", is_flag=True, help="Accepted for Flask-Migrate's sake")
    @with_appcontext
    def current(directory: str | None, verbose: bool) -> None:
        """Show each history's current revision, and which history it belongs to."""
        from ai_secretary_schema.history import current_revisions, managed_current

        found = histories_for(state, directory or g.directory or migrate.directory)
        with state.engine.connect() as connection:
            recorded = current_revisions(connection)
        for line in describe_current(managed_current(recorded, found), found):
            click.echo(line)

    commands = dict(flask_migrate_group.commands)
    commands.update(
        init=init,
        current=current,
        upgrade=_with_default(commands["upgrade"], "revision", "heads"),
        stamp=_with_default(commands["stamp"], "revision", "heads"),
        # One step back in the application's history (what `flask db downgrade` undoes in a
        # project with one history); the package's is named: ai_secretary_schema@base …
        downgrade=_with_default(
            commands["downgrade"], "revision", lambda: step_back(state.histories, host=True)
        ),
    )
    group: click.Group = copy.copy(flask_migrate_group)
    group.commands = commands
    return group
