"""Alembic environment of ai-secretary-schema.

One env.py for every door: the ``alembic`` CLI (with alembic.ini), ``flask db …`` through
Flask-Migrate, and the package's CLI, Python API and startup hook. What it does (the settings,
the migration lock, batch mode on SQLite, a transaction per revision) lives in
:mod:`ai_secretary_schema.migration_env`, where it is typed and tested.
"""

from __future__ import annotations

from alembic import context

from ai_secretary_schema import migration_env


def run_migrations_offline() -> None:
    """Emit the migrations as SQL (``--sql``) for the resolved URL's dialect; no lock, no
    connection."""
    settings = migration_env.run_settings(context.config, context.get_x_argument(True))
    context.configure(**migration_env.offline_options(settings, context.config))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations over the caller's connection or a new one, under the migration lock
    when the run writes the version table, reporting each revision as it runs; on PostgreSQL,
    each revision with a lock timeout and retried whole when it runs out."""
    with migration_env.migration_connection(context) as connection:
        progress = migration_env.progress_for(context.config)
        context.configure(
            connection=connection,
            **migration_env.online_options(connection, context.config, progress),
        )
        with (
            migration_env.lock_if_writing(context),
            progress.watching(),
            context.begin_transaction(),
        ):
            # On PostgreSQL, each revision under a lock timeout, retried whole when it runs out.
            migration_env.run_migrations(context, progress)


migration_env.configure_logging(context.config)
if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
