"""The application's database role (PostgreSQL): owns nothing, cannot bypass row-level security.

Row-level security does not apply to superusers nor to roles with ``BYPASSRLS``, and the table
owner is subject to it only because the migrations force it; so the application connects as a
role of its own, and the migrations run as the owner. :func:`grant_app_role` creates that role
if it is missing (``LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION``) and
grants it the least it needs on the package's tables: ``CONNECT`` on the database, ``USAGE``
on the schema, ``SELECT, INSERT, UPDATE, DELETE`` on the tables, ``USAGE`` on their sequences,
and ``SELECT`` on ``alembic_version`` (the schema health check reads the revision). It is
idempotent: run it again after an upgrade that adds a table. A role that exists and could
bypass row-level security, or owns one of the tables, is refused rather than used. Run it as a
superuser, or as the tables' owner with ``CREATEROLE``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from ai_secretary_schema.errors import AppRoleError

__all__ = ["AppRoleGrant", "grant_app_role"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"


@dataclass(frozen=True)
class AppRoleGrant:
    """What :func:`grant_app_role` did (never a password)."""

    role: str
    created: bool
    password_set: bool
    tables: tuple[str, ...]
    sequences: tuple[str, ...]

    def describe(self) -> str:
        what = "created" if self.created else "exists"
        password = ", password set" if self.password_set else ""
        return (
            f"role {self.role} ({what}{password}): {_PRIVILEGES} on {', '.join(self.tables)}; "
            f"USAGE on {', '.join(self.sequences) or 'no sequence'}; SELECT on alembic_version; "
            "NOSUPERUSER NOBYPASSRLS, owns none of them"
        )


def _format(connection: Connection, template: str, *values: str) -> str:
    """``format(template, values…)`` on the server: ``%I`` and ``%L`` are quoted by PostgreSQL
    itself (DDL takes no bound parameters)."""
    placeholders = ", ".join(f":v{i}" for i in range(len(values)))
    statement = sa.text(f"SELECT format(:template, {placeholders})")
    params = {"template": template, **{f"v{i}": value for i, value in enumerate(values)}}
    return str(connection.execute(statement, params).scalar_one())


def grant_app_role(
    engine: Engine,
    name: str,
    tables: Sequence[str],
    *,
    password: str | None = None,
) -> AppRoleGrant:
    """Create (if missing) and grant the application role ``name`` on ``tables`` (those that
    exist in the current schema), in one transaction, connected as a superuser or as the tables'
    owner with ``CREATEROLE``.

    Raises :class:`AppRoleError` for a name that is not a plain lower-case identifier, on a
    dialect other than PostgreSQL, or when the role exists but is a superuser, has
    ``BYPASSRLS`` or owns one of the tables.
    """
    if not _NAME.fullmatch(name) or name.startswith("pg_"):
        raise AppRoleError(
            f"{name!r} is not a usable role name: use lower-case letters, digits and _ "
            "(starting with a letter or _, at most 63 characters, not pg_…), e.g. ais_app",
            role=name,
        )
    if engine.dialect.name != "postgresql":
        raise AppRoleError(
            f"the application role is a PostgreSQL role; {engine.dialect.name} has no roles "
            "(there the ORM's tenant criterion is the isolation): pass a PostgreSQL --url",
            role=name,
        )
    try:
        return _grant(engine, name, tables, password)
    except DBAPIError as exc:
        # The statement may carry the password: only the server's first line is shown.
        reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else "?"
        raise AppRoleError(
            f"cannot create or grant role {name}: {reason}. Run grant-app-role as a superuser, "
            "or as the tables' owner with CREATEROLE",
            role=name,
        ) from None


def _grant(engine: Engine, name: str, tables: Sequence[str], password: str | None) -> AppRoleGrant:
    with engine.begin() as connection:
        role = connection.execute(
            sa.text("SELECT rolsuper, rolbypassrls FROM pg_catalog.pg_roles WHERE rolname = :name"),
            {"name": name},
        ).one_or_none()
        if role is not None and (role.rolsuper or role.rolbypassrls):
            raise AppRoleError(
                f"role {name} exists and bypasses row-level security (superuser or BYPASSRLS): "
                f"choose another name, or `ALTER ROLE {name} NOSUPERUSER NOBYPASSRLS` first",
                role=name,
            )
        created = role is None
        if created:
            connection.exec_driver_sql(
                _format(
                    connection,
                    "CREATE ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE "
                    "NOREPLICATION",
                    name,
                )
            )
        if password is not None:
            # Formatted and run on the server; the statement text is never logged here.
            connection.exec_driver_sql(
                _format(connection, "ALTER ROLE %I PASSWORD %L", name, password)
            )
        present = connection.execute(
            sa.text(
                "SELECT c.relname, pg_get_userbyid(c.relowner) = :name AS owned "
                "FROM pg_catalog.pg_class AS c "
                "JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') "
                "AND c.relname IN :tables"
            ).bindparams(sa.bindparam("tables", expanding=True)),
            {"name": name, "tables": [*tables, "alembic_version"]},
        ).all()
        owned = sorted(row.relname for row in present if row.owned)
        if owned:
            raise AppRoleError(
                f"role {name} owns {', '.join(owned)}: an owner is not isolated by the "
                "application's policy; connect the application as another role",
                role=name,
            )
        names = sorted(row.relname for row in present if row.relname != "alembic_version")
        connection.exec_driver_sql(
            _format(
                connection,
                "GRANT CONNECT ON DATABASE %I TO %I",
                _current_database(connection),
                name,
            )
        )
        connection.exec_driver_sql(
            _format(connection, "GRANT USAGE ON SCHEMA %I TO %I", _schema(connection), name)
        )
        for table in names:
            connection.exec_driver_sql(
                _format(connection, f"GRANT {_PRIVILEGES} ON TABLE %I TO %I", table, name)
            )
        if any(row.relname == "alembic_version" for row in present):
            connection.exec_driver_sql(
                _format(connection, "GRANT SELECT ON TABLE alembic_version TO %I", name)
            )
        sequences = sorted(
            sequence
            for table in names
            for sequence in connection.execute(
                sa.text(
                    "SELECT pg_get_serial_sequence(quote_ident(:table), a.attname) "
                    "FROM pg_catalog.pg_attribute AS a "
                    "WHERE a.attrelid = to_regclass(quote_ident(:table)) AND a.attnum > 0 "
                    "AND NOT a.attisdropped"
                ),
                {"table": table},
            ).scalars()
            if sequence is not None
        )
        for sequence in sequences:
            # pg_get_serial_sequence returns the name quoted as needed (schema included).
            connection.exec_driver_sql(
                _format(
                    connection, f"GRANT USAGE ON SEQUENCE {sequence.replace('%', '%%')} TO %I", name
                )
            )
    grant = AppRoleGrant(name, created, password is not None, tuple(names), tuple(sequences))
    logger.info("%s", grant.describe())
    return grant


def _current_database(connection: Connection) -> str:
    return str(connection.execute(sa.text("SELECT current_database()")).scalar_one())


def _schema(connection: Connection) -> str:
    return str(connection.execute(sa.text("SELECT current_schema()")).scalar_one())
