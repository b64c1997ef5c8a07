"""The migrated schema, checked against the design document and the models on both dialects."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers.db import DESIGN_DDL, ID_COLUMN
from helpers.scripts import HEAD
from sqlalchemy import Engine, make_url

from ai_secretary_schema import migrator
from ai_secretary_schema.engine import create_engine

# The design document's DDL for performance_alerts, column for column:
# (name, generic type, length, nullable, what the server default renders as).
DESIGN_PERFORMANCE_ALERTS = [
    ("id", sa.Integer, None, False, None),
    ("alert_type", sa.String, 50, False, None),
    ("severity", sa.String, 20, False, None),
    ("title", sa.String, 200, False, None),
    ("description", sa.Text, None, True, None),
    ("endpoint", sa.String, 200, True, None),
    ("service_name", sa.String, 100, True, None),
    ("metric_value", sa.Float, None, True, None),
    ("threshold_value", sa.Float, None, True, None),
    ("status", sa.String, 20, True, "'active'"),
    ("acknowledged_by", sa.String, 100, True, None),
    ("acknowledged_at", sa.DateTime, None, True, None),
    ("resolved_at", sa.DateTime, None, True, None),
    ("first_occurrence", sa.DateTime, None, True, "CURRENT_TIMESTAMP"),
    ("last_occurrence", sa.DateTime, None, True, "CURRENT_TIMESTAMP"),
    ("occurrence_count", sa.Integer, None, True, "1"),
    ("alert_metadata", sa.Text, None, True, None),
    ("created_at", sa.DateTime, None, True, "CURRENT_TIMESTAMP"),
    ("updated_at", sa.DateTime, None, True, "CURRENT_TIMESTAMP"),
]


@pytest.fixture
def migrated(db_url: str) -> Iterator[Engine]:
    """An engine on a database upgraded to head."""
    migrator.upgrade(db_url)
    engine = create_engine(make_url(db_url), pooled=False)
    yield engine
    engine.dispose()


def _columns(engine: Engine, table: str) -> dict[str, dict[str, object]]:
    return {column["name"]: dict(column) for column in sa.inspect(engine).get_columns(table)}


def test_performance_alerts_has_exactly_the_design_columns_in_order(migrated: Engine) -> None:
    names = [column["name"] for column in sa.inspect(migrated).get_columns("performance_alerts")]
    assert names == [row[0] for row in DESIGN_PERFORMANCE_ALERTS]


@pytest.mark.parametrize(
    ("name", "generic", "length", "nullable", "default"),
    DESIGN_PERFORMANCE_ALERTS,
    ids=[row[0] for row in DESIGN_PERFORMANCE_ALERTS],
)
def test_performance_alerts_column_matches_the_design(
    migrated: Engine,
    name: str,
    generic: type[sa.types.TypeEngine[object]],
    length: int | None,
    nullable: bool,
    default: str | None,
) -> None:
    column = _columns(migrated, "performance_alerts")[name]
    column_type = column["type"]
    reflected_default = column["default"]
    observed = (
        isinstance(column_type, generic)
        and not (generic is sa.String and isinstance(column_type, sa.Text)),
        getattr(column_type, "length", None) if generic is sa.String else None,
        bool(column["nullable"]),
        None if name == "id" or reflected_default is None else default,
        getattr(column_type, "timezone", False),
    )
    assert observed == (True, length, nullable, default, False)
    if default is not None:
        assert default.lower() in str(reflected_default).lower()


def test_design_ddl_and_migration_reflect_identically_on_sqlite(tmp_path: Path) -> None:
    design = sa.create_engine(f"sqlite:///{tmp_path / 'design.db'}")
    with design.begin() as connection:
        connection.exec_driver_sql(DESIGN_DDL.format(id=ID_COLUMN["sqlite"]))
    migrated_url = f"sqlite:///{tmp_path / 'migrated.db'}"
    migrator.upgrade(migrated_url)
    migrated = sa.create_engine(migrated_url)

    def shape(engine: Engine) -> list[tuple[object, ...]]:
        # SQLite reports an INTEGER PRIMARY KEY declared without NOT NULL as nullable, though
        # it can never hold NULL; the primary key's nullability is therefore left out.
        return [
            (c["name"], str(c["type"]), c["name"] == "id" or c["nullable"], c["default"])
            for c in sa.inspect(engine).get_columns("performance_alerts")
        ]

    assert shape(design) == shape(migrated)
    design.dispose()
    migrated.dispose()


def test_raw_sql_insert_gets_every_server_default(migrated: Engine) -> None:
    with migrated.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO performance_alerts (alert_type, severity, title) "
                "VALUES ('latency', 'high', 'Slow /api/messages')"
            )
        )
        row = connection.execute(
            sa.text(
                "SELECT status, occurrence_count, first_occurrence, last_occurrence, "
                "created_at, updated_at FROM performance_alerts"
            )
        ).one()
    assert (row[0], row[1], all(value is not None for value in row[2:])) == ("active", 1, True)


@pytest.mark.parametrize(
    ("sql", "outcome"),
    [
        ("INSERT INTO tenants (name, slug) VALUES ('Acme', 'acme')", "ok"),
        ("INSERT INTO tenants (name) VALUES ('No slug')", "integrity"),
        (
            "INSERT INTO tenants (name, slug) VALUES ('A', 'dup'); "
            "INSERT INTO tenants (name, slug) VALUES ('B', 'dup')",
            "integrity",
        ),
        (
            "INSERT INTO users (tenant_id, email, password_hash) VALUES (999, 'a@b.c', 'h')",
            "integrity",
        ),
        (
            "INSERT INTO tenants (id, name, slug) VALUES (1, 'T', 't'); "
            "INSERT INTO users (tenant_id, email, password_hash) VALUES (1, 'a@b.c', 'h'); "
            "INSERT INTO users (tenant_id, email, password_hash) VALUES (1, 'a@b.c', 'h')",
            "integrity",
        ),
        (
            "INSERT INTO tenants (id, name, slug) VALUES (1, 'T', 't'); "
            "INSERT INTO tenants (id, name, slug) VALUES (2, 'U', 'u'); "
            "INSERT INTO users (tenant_id, email, password_hash) VALUES (1, 'a@b.c', 'h'); "
            "INSERT INTO users (tenant_id, email, password_hash) VALUES (2, 'a@b.c', 'h')",
            "ok",
        ),
    ],
    ids=[
        "tenant",
        "tenant-without-slug",
        "duplicate-slug",
        "user-of-missing-tenant",
        "same-email-twice-in-a-tenant",
        "same-email-in-two-tenants",
    ],
)
def test_tenant_and_user_constraints(migrated: Engine, sql: str, outcome: str) -> None:
    try:
        with migrated.begin() as connection:
            for statement in sql.split("; "):
                connection.execute(sa.text(statement))
    except sa.exc.IntegrityError:
        result = "integrity"
    else:
        result = "ok"
    assert result == outcome


def test_deleting_a_tenant_deletes_its_users(migrated: Engine) -> None:
    with migrated.begin() as connection:
        connection.execute(sa.text("INSERT INTO tenants (id, name, slug) VALUES (1, 'T', 't')"))
        connection.execute(
            sa.text("INSERT INTO users (tenant_id, email, password_hash) VALUES (1, 'a@b.c', 'h')")
        )
    with migrated.begin() as connection:
        connection.execute(sa.text("DELETE FROM tenants WHERE id = 1"))
        remaining = connection.execute(sa.text("SELECT count(*) FROM users")).scalar_one()
    assert remaining == 0


def test_every_constraint_and_index_has_a_conventional_name(migrated: Engine) -> None:
    inspector = sa.inspect(migrated)
    names = {
        "tenants.uq": [u["name"] for u in inspector.get_unique_constraints("tenants")],
        "users.uq": [u["name"] for u in inspector.get_unique_constraints("users")],
        "users.fk": [f["name"] for f in inspector.get_foreign_keys("users")],
        "performance_alerts.ix": sorted(
            i["name"] for i in inspector.get_indexes("performance_alerts")
        ),
    }
    assert names == {
        "tenants.uq": ["uq_tenants_slug"],
        "users.uq": ["uq_users_tenant_id_email"],
        "users.fk": ["fk_users_tenant_id_tenants"],
        "performance_alerts.ix": [
            "ix_performance_alerts_alert_type",
            "ix_performance_alerts_last_occurrence",
            "ix_performance_alerts_status_severity",
        ],
    }


def test_round_trip_base_head_base_head(db_url: str) -> None:
    states = [
        migrator.upgrade(db_url).current,
        migrator.downgrade(db_url, "base").current,
        migrator.upgrade(db_url).current,
    ]
    assert states == [(HEAD,), (), (HEAD,)]


def test_downgrade_one_step_keeps_the_rows_of_earlier_tables(db_url: str) -> None:
    migrator.upgrade(db_url)
    engine = create_engine(make_url(db_url), pooled=False)
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO tenants (id, name, slug) VALUES (1, 'T', 't')"))
        connection.execute(
            sa.text("INSERT INTO users (tenant_id, email, password_hash) VALUES (1, 'a@b.c', 'h')")
        )
    migrator.downgrade(db_url, "0001")
    migrator.upgrade(db_url)
    with engine.connect() as connection:
        users = connection.execute(sa.text("SELECT count(*) FROM users")).scalar_one()
    engine.dispose()
    assert users == 1
