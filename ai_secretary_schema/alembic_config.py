"""Build the Alembic :class:`~alembic.config.Config` for the package's own migrations."""

from __future__ import annotations

import io
from importlib.util import find_spec
from pathlib import Path
from typing import TextIO

from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.engine import URL

from ai_secretary_schema.errors import MigrationError
from ai_secretary_schema.migration_env import IN_PROCESS

MIGRATIONS_PACKAGE = "ai_secretary_schema.migrations"


def migrations_directory() -> Path:
    """The Alembic script directory shipped with the package (``migrations/`` in a checkout)."""
    # The directory is mapped into the package at build time (pyproject.toml), so it is found
    # through the import system rather than relative to this file.
    spec = find_spec(MIGRATIONS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MigrationError(
            f"the migrations ({MIGRATIONS_PACKAGE}) are not installed with the package; "
            "reinstall ai-secretary-schema (pip install --force-reinstall ai-secretary-schema)"
        )
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def escape_for_configparser(value: str) -> str:
    """Alembic's ConfigParser treats ``%`` as interpolation; a URL-encoded password has them."""
    return value.replace("%", "%%")


def make_alembic_config(
    url: URL | None = None,
    *,
    connection: Connection | None = None,
    script_location: str | Path | None = None,
    output: TextIO | None = None,
) -> Config:
    """A Config for the package's migrations, for use in-process.

    ``url`` (already parsed and normalised) or ``connection`` says where to migrate; with
    neither, env.py resolves ``DATABASE_URL``. ``script_location`` replaces the shipped
    migrations (tests use a scratch directory). ``output`` receives offline SQL.
    """
    config = Config(output_buffer=output if output is not None else io.StringIO())
    config.set_main_option("script_location", str(script_location or migrations_directory()))
    if url is not None:
        config.set_main_option(
            "sqlalchemy.url", escape_for_configparser(url.render_as_string(hide_password=False))
        )
    if connection is not None:
        config.attributes["connection"] = connection
    config.attributes[IN_PROCESS] = True
    return config
