"""Alembic environment of ai-secretary-schema.

One env.py for every entry point: the ``alembic`` CLI (with alembic.ini), ``flask db …`` through
Flask-Migrate, and the package's CLI and Python API. A caller may hand over a live connection in
``config.attributes["connection"]``; otherwise the URL is resolved by
:func:`ai_secretary_schema.migration_env.resolve_migration_url`. The dialect-specific choices
(batch mode on SQLite, a transaction per migration) live in that module, not here.
"""

from __future__ import annotations

from alembic import context

from ai_secretary_schema import migration_env


def run_migrations_offline() -> None:
    """Emit the migrations as SQL (``--sql``) for the resolved URL's dialect."""
    url = migration_env.resolve_migration_url(context.config, context.get_x_argument(True))
    context.configure(url=url, **migration_env.offline_options(url))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the caller's connection, or on one opened for the resolved URL."""
    with migration_env.migration_connection(
        context.config, context.get_x_argument(True)
    ) as connection:
        context.configure(connection=connection, **migration_env.online_options(connection))
        with context.begin_transaction():
            context.run_migrations()


migration_env.configure_logging(context.config)
if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
