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

from ai_secretary_schema.history import ScriptLocation, script_path
from ai_secretary_schema.settings import SchemaSettings

#: ``config.attributes`` key of the resolved settings; its presence also means "in-process":
#: env.py then leaves the host application's logging alone: fileConfig would disable its loggers.
SETTINGS = "ai_secretary_schema.settings"
#: ``config.attributes`` key of a callback run after each revision (``on_version_apply``).
ON_VERSION_APPLY = "ai_secretary_schema.on_version_apply"
#: ``config.attributes`` key of the stream each revision is reported to (``None``: the log).
PROGRESS = "ai_secretary_schema.progress"

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
    (tests use a scratch directory). ``output`` receives offline SQL.
    """
    config = Config(output_buffer=output if output is not None else io.StringIO())
    config.set_main_option("script_location", str(script_path(script_location)))
    config.attributes.update(attributes)
    return configure_in_process(
        config,
        settings if settings is not None else SchemaSettings.resolve(),
        connection=connection,
        on_version_apply=on_version_apply,
        progress=progress,
    )
