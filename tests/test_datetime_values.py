"""The same datetime values on both dialects: time-zone columns read back aware UTC, the
design's naive TIMESTAMP columns hold UTC (an aware value is converted before its zone goes)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic.autogenerate import produce_migrations, render_python_code
from alembic.runtime.migration import MigrationContext
from sqlalchemy.orm import Session

from ai_secretary_schema.engine import create_engine
from ai_secretary_schema.migration_env import render_item
from ai_secretary_schema.migrator import upgrade
from ai_secretary_schema.models import PerformanceAlert, Tenant, User, UTCDateTime, UTCTimestamp
from ai_secretary_schema.settings import SchemaSettings
from ai_secretary_schema.tenancy import tenant_scope

UTC = dt.timezone.utc
PLUS_TWO = dt.timezone(dt.timedelta(hours=2))
MINUS_FIVE = dt.timezone(dt.timedelta(hours=-5))


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    upgrade(db_url)
    settings = SchemaSettings.resolve(environ={}, database_url=db_url)
    engine = create_engine(settings.url, settings)
    with Session(engine) as session:
        yield session
    engine.dispose()


#: written -> read back, for a ``TIMESTAMP WITH TIME ZONE`` column (users.last_login_at)
AWARE_COLUMN = {
    "aware-plus-two": (
        dt.datetime(2024, 1, 1, 12, tzinfo=PLUS_TWO),
        dt.datetime(2024, 1, 1, 10, tzinfo=UTC),
    ),
    "aware-minus-five": (
        dt.datetime(2024, 1, 1, 22, tzinfo=MINUS_FIVE),
        dt.datetime(2024, 1, 2, 3, tzinfo=UTC),
    ),
    "aware-utc": (dt.datetime(2024, 1, 1, 12, tzinfo=UTC), dt.datetime(2024, 1, 1, 12, tzinfo=UTC)),
    "naive-taken-as-utc": (dt.datetime(2024, 1, 1, 12), dt.datetime(2024, 1, 1, 12, tzinfo=UTC)),
    "none": (None, None),
}

#: written -> read back, for the design's naive ``TIMESTAMP`` (performance_alerts.acknowledged_at)
NAIVE_COLUMN = {
    "aware-plus-two": (dt.datetime(2024, 1, 1, 12, tzinfo=PLUS_TWO), dt.datetime(2024, 1, 1, 10)),
    "aware-minus-five": (
        dt.datetime(2024, 1, 1, 22, tzinfo=MINUS_FIVE),
        dt.datetime(2024, 1, 2, 3),
    ),
    "naive-kept": (dt.datetime(2024, 1, 1, 12, 30, 15), dt.datetime(2024, 1, 1, 12, 30, 15)),
    "none": (None, None),
}


def _tenant(session: Session) -> Tenant:
    tenant = Tenant(name="Acme", slug="acme")
    session.add(tenant)
    session.flush()
    return tenant


@pytest.mark.parametrize(("written", "expected"), AWARE_COLUMN.values(), ids=AWARE_COLUMN.keys())
def test_a_time_zone_column_reads_back_aware_utc(
    session: Session, written: dt.datetime | None, expected: dt.datetime | None
) -> None:
    tenant = _tenant(session)
    # users is tenant-scoped: written and read back as its tenant.
    with tenant_scope(tenant.id):
        user = User(tenant=tenant, email="a@example.com", password_hash="x", last_login_at=written)
        session.add(user)
        session.commit()
        session.expire_all()

        assert (user.last_login_at, getattr(user.last_login_at, "tzinfo", None)) == (
            expected,
            None if expected is None else UTC,
        )


def test_a_server_default_time_reads_back_aware_utc(session: Session) -> None:
    tenant = _tenant(session)
    session.commit()
    session.expire_all()

    assert tenant.created_at.tzinfo is UTC
    assert abs(tenant.created_at - dt.datetime.now(UTC)) < dt.timedelta(minutes=5)


@pytest.mark.parametrize(("written", "expected"), NAIVE_COLUMN.values(), ids=NAIVE_COLUMN.keys())
def test_a_naive_timestamp_column_stores_utc(
    session: Session, written: dt.datetime | None, expected: dt.datetime | None
) -> None:
    alert = PerformanceAlert(
        alert_type="latency", severity="high", title="t", acknowledged_at=written
    )
    session.add(alert)
    session.commit()
    session.expire_all()

    assert alert.acknowledged_at == expected


def test_a_naive_timestamp_is_stored_as_utc_in_the_database_itself(session: Session) -> None:
    session.add(
        PerformanceAlert(
            alert_type="latency",
            severity="high",
            title="t",
            acknowledged_at=dt.datetime(2024, 1, 1, 12, tzinfo=PLUS_TWO),
        )
    )
    session.commit()

    stored = session.execute(sa.text("SELECT acknowledged_at FROM performance_alerts")).scalar()

    assert str(stored).startswith("2024-01-01 10:00:00")


@pytest.mark.parametrize(
    ("decorator", "rendered"),
    [(UTCDateTime(), "sa.DateTime(timezone=True)"), (UTCTimestamp(), "sa.TIMESTAMP()")],
    ids=["UTCDateTime", "UTCTimestamp"],
)
def test_autogenerate_renders_a_decorator_as_its_plain_type(
    sqlite_url: str, decorator: sa.types.TypeEngine[dt.datetime], rendered: str
) -> None:
    metadata = sa.MetaData()
    sa.Table(
        "events",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", decorator),
    )
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"target_metadata": metadata})
        code = render_python_code(
            produce_migrations(context, metadata).upgrade_ops, render_item=render_item
        )
    engine.dispose()

    assert f"sa.Column('at', {rendered}" in code
    assert "ai_secretary_schema" not in code
