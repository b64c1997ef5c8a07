"""Test-only Alembic script directories: the real revisions plus revisions that count, fail or
block, built in ``tmp_path`` so the shipped migrations are never touched."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

from ai_secretary_schema.history import heads, migrations_directory, script_directory

#: The head of the shipped migrations. Test-only revisions are numbered from 0101 and build on
#: it, so a revision shipped later never collides with one of theirs.
HEAD: str = heads()[0]
#: The shipped revisions, oldest first.
SHIPPED: tuple[str, ...] = tuple(
    reversed([script.revision for script in script_directory().walk_revisions()])
)
#: The shipped revision before the head.
BEFORE_HEAD: str = str(script_directory().get_revision(HEAD).down_revision)

_HEADER = '''"""{doc}

Revision ID: {revision}
Revises: {down}
"""

import os
import time
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = {down!r}
branch_labels = None
depends_on = None

'''

#: Creates ``migration_runs`` and records one row per run: more than one row means it ran twice.
COUNT = """
def upgrade():
    op.create_table(
        "migration_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("pid", sa.Integer(), nullable=False),
    )
    # Widen the window in which an unserialised second run would collide with this one.
    time.sleep(0.2)
    op.execute(f"INSERT INTO migration_runs (pid) VALUES ({os.getpid()})")


def downgrade():
    op.drop_table("migration_runs")
"""

#: Creates a table, writes a row, then fails: nothing of it may remain.
FAIL = """
def upgrade():
    op.create_table("half_done", sa.Column("id", sa.Integer(), primary_key=True))
    op.execute("INSERT INTO half_done (id) VALUES (1)")
    raise RuntimeError("deliberate failure in the middle of revision 0101")


def downgrade():
    op.drop_table("half_done")
"""

#: Creates a table, then (when ``AIS_TEST_MARKER`` is set) says so and blocks, to be killed.
BLOCK = """
def upgrade():
    op.create_table("half_done", sa.Column("id", sa.Integer(), primary_key=True))
    marker = os.environ.get("AIS_TEST_MARKER")
    if marker:
        Path(marker).write_text("inside revision 0101")
        time.sleep(300)


def downgrade():
    op.drop_table("half_done")
"""

#: Drops a column the models have: the head no longer matches the models.
DROP_ENDPOINT = """
def upgrade():
    with op.batch_alter_table("performance_alerts") as batch:
        batch.drop_column("endpoint")


def downgrade():
    with op.batch_alter_table("performance_alerts") as batch:
        batch.add_column(sa.Column("endpoint", sa.String(length=200), nullable=True))
"""

#: Does nothing; used to make a second head.
NOOP = """
def upgrade():
    pass


def downgrade():
    pass
"""


def revision_file(revision: str, down: str | None, body: str, doc: str = "Test revision.") -> str:
    return _HEADER.format(doc=doc, revision=revision, down=down) + textwrap.dedent(body)


def make_script_dir(root: Path, extra: dict[str, tuple[str | None, str]] | None = None) -> Path:
    """Copy the real script directory under ``root`` and add ``extra`` revisions.

    ``extra`` maps a revision id to ``(down_revision, body)``.
    """
    source = migrations_directory()
    target = root / "migrations"
    (target / "versions").mkdir(parents=True)
    for name in ("env.py", "script.py.mako"):
        shutil.copy(source / name, target / name)
    for path in sorted((source / "versions").glob("[0-9]*.py")):
        shutil.copy(path, target / "versions" / path.name)
    for revision, (down, body) in (extra or {}).items():
        (target / "versions" / f"{revision}_test.py").write_text(
            revision_file(revision, down, body)
        )
    return target
