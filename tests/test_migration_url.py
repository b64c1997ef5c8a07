"""SCHEMA_MIGRATION_URL: migrations, the migration lock and the validation go to a direct URL
while the application's engine keeps DATABASE_URL (Prisma's ``directUrl``).

The scene: the application reaches the database through a real PgBouncer as a role that may
read and write rows but not create tables (PostgreSQL 15 grants no CREATE on ``public``), so
any DDL sent through DATABASE_URL fails with "permission denied". The migration URL is a direct
connection as ``postgres``. Every door migrates through it (the Flask startup hook, ``flask db
upgrade``, the CLI, ``alembic``), and the same doors without it fail: the proof that the test
would see DDL go through the application's URL.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from helpers.db import admin_connection, versions
from helpers.pgbouncer import PgBouncer
from helpers.scripts import HEAD
from psycopg2 import sql
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from ai_secretary_schema import Tenant
from ai_secretary_schema.alembic_config import make_alembic_config
from ai_secretary_schema.errors import SchemaError
from ai_secretary_schema.migration_env import run_settings
from ai_secretary_schema.migrator import Migrator
from ai_secretary_schema.settings import SchemaSettings

if TYPE_CHECKING:
    from conftest import MakeSchemaApp

ROOT = Path(__file__).resolve().parents[1]
FLASK_APP = Path(__file__).parent / "helpers" / "flask_door_app.py"
SECRET = "hunter2-migrate"


@pytest.fixture
def app_role(pg_url: str) -> Iterator[str]:
    """A login role that may use the test's tables (default privileges) but create none."""
    role = f"ais_app_{uuid.uuid4().hex[:8]}"
    admin = admin_connection()
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    database = sa.create_engine(pg_url, poolclass=NullPool)
    try:
        with database.begin() as connection:
            connection.exec_driver_sql(
                f"ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT SELECT, "
                f'INSERT, UPDATE, DELETE ON TABLES TO "{role}"'
            )
            connection.exec_driver_sql(
                f"ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT USAGE "
                f'ON SEQUENCES TO "{role}"'
            )
        yield role
    finally:
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
        with database.begin() as connection:
            connection.exec_driver_sql(f'DROP OWNED BY "{role}"')
        database.dispose()
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        admin.close()


@pytest.fixture
def urls(pgbouncer: PgBouncer, pg_url: str, app_role: str) -> tuple[str, str]:
    """(DATABASE_URL: the pooler, as the role that cannot create tables; the direct URL)."""
    pgbouncer.add_user(app_role)
    return pgbouncer.url(str(make_url(pg_url).database), user=app_role), pg_url


def table_owner(url: str, table: str) -> object:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return connection.execute(
                sa.text("SELECT tableowner FROM pg_tables WHERE tablename = :t"), {"t": table}
            ).scalar()
    finally:
        engine.dispose()


# -- the Flask startup hook ------------------------------------------------------------------------


@pytest.mark.postgresql
def test_the_startup_hook_migrates_direct_while_the_app_goes_through_the_pooler(
    urls: tuple[str, str], pgbouncer: PgBouncer, make_schema_app: MakeSchemaApp
) -> None:
    app_url, direct_url = urls
    app, schema = make_schema_app(database_url=app_url, schema_migration_url=direct_url)

    assert schema.schema_report is not None
    assert schema.schema_report.ok
    assert versions(direct_url) == [HEAD]
    assert table_owner(direct_url, "tenants") == "postgres"
    # The application's engine is the pooler's, as the role, and works there.
    assert schema.engine.url.port == pgbouncer.port
    assert schema.engine.url.username == make_url(app_url).username
    with app.app_context():
        schema.session.add(Tenant(name="Acme", slug="acme"))
        schema.session.commit()
        assert schema.session.query(Tenant).count() == 1
    # The pooler served the application only: no client of the migrating role went through it.
    clients = pgbouncer.admin("SHOW CLIENTS")
    assert {row[1] for row in clients if row[2] != "pgbouncer"} == {make_url(app_url).username}


@pytest.mark.postgresql
def test_the_proof_without_a_migration_url_the_startup_hook_fails_on_the_pooler(
    urls: tuple[str, str], make_schema_app: MakeSchemaApp
) -> None:
    app_url, direct_url = urls
    with pytest.raises(SchemaError, match="permission denied for schema public"):
        make_schema_app(database_url=app_url)
    assert table_owner(direct_url, "alembic_version") is None


# -- the doors as processes ------------------------------------------------------------------------


def door(name: str, tmp_path: Path) -> list[str]:
    bin_dir = Path(sys.executable).parent
    if name == "flask":
        return [str(bin_dir / "flask"), "--app", f"{FLASK_APP}:create_app", "db", "upgrade"]
    if name == "cli":
        return [str(bin_dir / "ai-secretary-schema"), "upgrade"]
    return [str(bin_dir / "alembic"), "-c", str(ROOT / "alembic.ini"), "upgrade", "head"]


@pytest.mark.slow
@pytest.mark.postgresql
@pytest.mark.parametrize("name", ["flask", "cli", "alembic"])
@pytest.mark.parametrize("migration_url", [True, False], ids=["direct", "proof-without"])
def test_every_door_migrates_through_the_migration_url(
    name: str, migration_url: bool, urls: tuple[str, str], tmp_path: Path
) -> None:
    app_url, direct_url = urls
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMA_")}
    environment["DATABASE_URL"] = app_url
    if migration_url:
        environment["SCHEMA_MIGRATION_URL"] = direct_url
    result = subprocess.run(
        door(name, tmp_path),
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if migration_url:
        assert result.returncode == 0, result.stderr
        assert versions(direct_url) == [HEAD]
        assert table_owner(direct_url, "tenants") == "postgres"
    else:
        assert result.returncode != 0
        assert "permission denied for schema public" in result.stderr


# -- one place decides -------------------------------------------------------------------------

DIRECT = f"postgresql://migrator:{SECRET}@127.0.0.1:5432/app"
POOLED = "postgresql://app:pw@127.0.0.1:6432/app"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"environ": {"DATABASE_URL": POOLED}}, POOLED),
        ({"environ": {"DATABASE_URL": POOLED, "SCHEMA_MIGRATION_URL": DIRECT}}, DIRECT),
        ({"app_config": {"DATABASE_URL": POOLED, "SCHEMA_MIGRATION_URL": DIRECT}}, DIRECT),
        (
            {"app_config": {"DATABASE_URL": POOLED}, "environ": {"SCHEMA_MIGRATION_URL": DIRECT}},
            DIRECT,
        ),
        ({"database_url": POOLED, "schema_migration_url": DIRECT}, DIRECT),
        # --url / url= / -x url= name the database to migrate: a migration URL from the
        # environment does not redirect them.
        ({"database_url": POOLED, "environ": {"SCHEMA_MIGRATION_URL": DIRECT}}, POOLED),
        ({"environ": {"DATABASE_URL": POOLED, "SCHEMA_MIGRATION_URL": "  "}}, POOLED),
    ],
)
def test_for_migrations_decides_which_url_migrations_use(
    given: dict[str, Any], expected: str
) -> None:
    given = dict(given)
    settings = SchemaSettings.resolve(
        given.pop("app_config", None), given.pop("environ", {}), **given
    )
    migrating = settings.for_migrations()

    assert migrating.url == make_url(expected).set(drivername=migrating.url.drivername)
    assert migrating.schema_migration_url is None
    assert migrating.for_migrations() is migrating
    assert settings.url == make_url(POOLED).set(drivername=settings.url.drivername)


def test_the_migration_url_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ai_secretary_schema.settings")
    settings = SchemaSettings.resolve({}, {"SCHEMA_MIGRATION_URL": DIRECT}, database_url=POOLED)
    settings.for_migrations()  # logs that the migration URL is not used
    migrating = SchemaSettings.resolve({}, {"SCHEMA_MIGRATION_URL": DIRECT}).for_migrations()
    shown = repr(settings) + repr(migrating) + caplog.text + repr(migrating.sources)
    assert SECRET not in shown
    assert "migrator:***@127.0.0.1:5432/app" in repr(settings)
    assert "SCHEMA_MIGRATION_URL" in caplog.text


def test_the_migrator_does_not_use_the_applications_engine_with_a_migration_url(
    tmp_path: Path,
) -> None:
    app_engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    direct = f"sqlite:///{tmp_path / 'direct.db'}"
    try:
        plain = Migrator(
            SchemaSettings.resolve(database_url=f"sqlite:///{tmp_path / 'app.db'}"), app_engine
        )
        assert plain.engine is app_engine
        with Migrator(
            SchemaSettings.resolve(
                database_url=f"sqlite:///{tmp_path / 'app.db'}", schema_migration_url=direct
            ),
            app_engine,
        ) as migrating:
            assert migrating.engine is not app_engine
            assert migrating.upgrade().at_head
        assert versions(direct) == [HEAD]
        assert not (tmp_path / "app.db").exists()
    finally:
        app_engine.dispose()


def test_env_py_drops_the_handed_connection_for_the_migration_url(tmp_path: Path) -> None:
    app_engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    direct = f"sqlite:///{tmp_path / 'direct.db'}"
    config = make_alembic_config(
        SchemaSettings.resolve(
            database_url=f"sqlite:///{tmp_path / 'app.db'}", schema_migration_url=direct
        ),
        connection=app_engine,
    )
    settings = run_settings(config, {})
    assert "connection" not in config.attributes
    assert settings.url.database == str(tmp_path / "direct.db")
    assert re.search("SCHEMA_MIGRATION_URL", settings.sources["database_url"])
    app_engine.dispose()
