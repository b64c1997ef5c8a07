"""Build the Alembic :class:`~alembic.config.Config` an in-process migration run uses.

Every in-process door (the migrator, hence the CLI, the Python API and the startup hook; the
Flask extension's ``flask db``) hands env.py the same things through ``config.attributes``: the
resolved :class:`~ai_secretary_schema.settings.SchemaSettings` and, when it has one, the live
connection or engine to migrate over. env.py then resolves nothing again.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, TextIO

from alembic.config import Config
from sqlalchemy import Connection, Engine

from ai_secretary_schema.history import ScriptLocation, histories
from ai_secretary_schema.settings import SchemaSettings

#: ``config.attributes`` key of the resolved settings; its presence also means "in-process":
#: env.py then leaves the host application's logging alone: fileConfig would disable its loggers.
SETTINGS = "ai_secretary_schema.settings"
#: ``config.attributes`` key of a callback run after each revision (``on_version_apply``).
ON_VERSION_APPLY = "ai_secretary_schema.on_version_apply"
#: ``config.attributes`` key of the stream each revision is reported to (``None``: the log).
PROGRESS = "ai_secretary_schema.progress"
#: ``config.attributes`` key of the histories the run reads
#: (:class:`~ai_secretary_schema.history.Histories`: the package's, and the host's if any).
HISTORIES = "ai_secretary_schema.histories"

VersionCallback = Callable[..., None]


def configure_in_process(
    config: Config,
    settings: SchemaSettings,
    *,
    connection: Connection | Engine | None = None,
    on_version_apply: VersionCallback | None = None,
    progress: TextIO | None = None,
) -> Config:
    """Mark ``config`` as an in-process run of these ``settings`` (and this connection).

    ``progress`` is where each revision is reported as it runs (a command line passes
    ``sys.stdout``); ``None`` logs it at INFO instead.
    """
    config.attributes[SETTINGS] = settings
    config.attributes[PROGRESS] = progress
    if connection is not None:
        config.attributes["connection"] = connection
    if on_version_apply is not None:
        config.attributes[ON_VERSION_APPLY] = on_version_apply
    return config


def point_at(config: Config, script_location: ScriptLocation) -> Config:
    """Make ``config`` run the package's env.py over the package's revisions and, when
    ``script_location`` has one, the host application's (every door: the migrator, ``flask db``).

    Paths go through ConfigParser, whose interpolation would read a ``%`` in one: escaped.
    """
    found = histories(script_location)
    config.set_main_option("script_location", _escaped(found.package))
    config.set_main_option("path_separator", "newline")
    config.set_main_option(
        "version_locations", "\n".join(_escaped(path) for path in found.version_locations)
    )
    config.attributes[HISTORIES] = found
    if found.host is not None:
        # env.py places the host's new revisions (``flask db revision`` too, not only
        # ``migrate``): Alembic runs it for a plain revision only when asked to.
        config.set_main_option("revision_environment", "true")
    return config


def _escaped(path: object) -> str:
    return str(path).replace("%", "%%")


def make_alembic_config(
    settings: SchemaSettings | None = None,
    *,
    connection: Connection | Engine | None = None,
    script_location: ScriptLocation = None,
    output: TextIO | None = None,
    on_version_apply: VersionCallback | None = None,
    progress: TextIO | None = None,
    **attributes: Any,
) -> Config:
    """A Config for the package's migrations, for use in-process.

    ``settings`` say where to migrate (default: resolved from the environment) unless a
    ``connection`` (or engine) is given. ``script_location`` replaces the shipped migrations
    (tests use a scratch directory) or adds the host application's
    (:class:`~ai_secretary_schema.history.Histories`). ``output`` receives offline SQL.
    """
    config = point_at(
        Config(output_buffer=output if output is not None else io.StringIO()), script_location
    )
    config.attributes.update(attributes)
    return configure_in_process(
        config,
        settings if settings is not None else SchemaSettings.resolve(),
        connection=connection,
        on_version_apply=on_version_apply,
        progress=progress,
    )
