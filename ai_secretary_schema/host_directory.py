"""A host application's migrations directory, made ready for both histories (``flask db init``).

What it holds: ``versions/`` for the application's revisions; the package's env.py and
``script.py.mako`` (so ``alembic`` run from there migrates both histories under the migration
lock, as ``flask db`` does); an alembic.ini whose ``version_locations`` list the package's
revisions beside the application's, and which names the application's models for the
``alembic`` command line (``ai_secretary_schema.host_metadata``).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ai_secretary_schema.errors import MigrationError
from ai_secretary_schema.history import MIGRATIONS_PACKAGE, migrations_directory

logger = logging.getLogger(__name__)

_ALEMBIC_INI = """\
# Alembic configuration of the application's own migrations, kept beside ai-secretary-schema's
# in one version table (each history is a branch of its own). `flask db …` does not need this
# file; `alembic …` run from this directory does. The database URL is not kept here: it comes
# from `-x url=…`, else DATABASE_URL.

[alembic]
script_location = %(here)s
file_template = %%(rev)s_%%(slug)s
prepend_sys_path = .
path_separator = newline
# The application's revisions, then the package's (found through the installed package).
version_locations =
    %(here)s/versions
    {package_versions}
# So that `alembic check` and `alembic revision --autogenerate` see the application's models
# beside the package's, name them as module:attribute, e.g.
# ai_secretary_schema.host_metadata = myapp.models:db.metadata

[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
datefmt = %H:%M:%S
"""

_README = """\
The application's own migrations, beside ai-secretary-schema's in one database.

`flask db migrate` writes the application's revisions into versions/ (never a change to the
package's tables); `flask db upgrade` brings both histories to their heads, in the order their
dependencies give. See the ai-secretary-schema README, "Your own tables".
"""


def init_host_directory(directory: str | Path) -> Path:
    """Create ``directory`` ready for the application's history beside the package's.

    Refuses a directory that exists and is not empty (nothing in it is changed).
    """
    target = Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise MigrationError(
            f"{target} already exists and is not empty; `flask db init` makes a new migrations "
            "directory. To keep an existing one, pass it as SchemaExtension(app, db=db, "
            f"directory={str(target)!r}): its revisions join the package's as they are"
        )
    source = migrations_directory()
    (target / "versions").mkdir(parents=True)
    for name in ("env.py", "script.py.mako"):
        shutil.copy(source / name, target / name)
    (target / "alembic.ini").write_text(
        _ALEMBIC_INI.format(package_versions=f"{MIGRATIONS_PACKAGE}:versions"), encoding="utf-8"
    )
    (target / "README").write_text(_README, encoding="utf-8")
    logger.info("created the application's migrations directory %s", target)
    return target
