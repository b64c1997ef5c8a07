"""An example host application with tables and migrations of its own beside the package's.

It keeps its notes in ``notes``, whose ``user_id`` references the package's ``users``. Its
revisions live in ``examples/host_app/migrations/versions``; the package's stay in the package.
Both histories share one ``alembic_version`` table, and one ``flask db`` group covers both::

    export DATABASE_URL=sqlite:///host.db
    flask --app examples.host_app:create_app db upgrade   # the package's tables, then notes
    flask --app examples.host_app:create_app db current   # one line per history
    flask --app examples.host_app:create_app run

See examples/README.md, "A host application with its own migrations".
"""

from examples.host_app.app import MIGRATIONS, Note, create_app, db, schema

__all__ = ["MIGRATIONS", "Note", "create_app", "db", "schema"]
