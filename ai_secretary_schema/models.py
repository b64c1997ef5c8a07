"""SQLAlchemy 2.0 declarative models of the AI Secretary.

Every server-side default is a *server* default so that rows written by raw SQL, other services
or the migrations themselves get it too. Datetimes mean the same on both dialects: time-zone
columns read back aware UTC values (:class:`UTCDateTime`), and the design's naive ``TIMESTAMP``
columns hold UTC (:class:`UTCTimestamp`). ``Base.metadata`` carries a naming convention for every
kind of constraint and index: SQLite batch migrations can only alter or drop what has a name.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    TIMESTAMP,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Importing tenancy installs its guard on every ORM session: no session can use a
# tenant-scoped model without it.
from ai_secretary_schema.tenancy import TenantScoped

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """``TIMESTAMP WITH TIME ZONE`` that reads back an aware UTC datetime on every dialect.

    PostgreSQL returns aware values in the session's time zone and SQLite (which has no time
    zone type) naive ones; both become UTC here, so application code compares and formats them
    the same way. A naive value written is taken to be UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        utc = (
            value.replace(tzinfo=dt.timezone.utc)
            if value.tzinfo is None
            else value.astimezone(dt.timezone.utc)
        )
        # SQLite stores the text it is given: keep it naive UTC, as CURRENT_TIMESTAMP writes it.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


class UTCTimestamp(TypeDecorator[dt.datetime]):
    """The design's naive ``TIMESTAMP``, holding UTC: an aware value is converted to UTC before
    its zone is dropped (PostgreSQL would otherwise drop the zone without converting, SQLite
    would keep the local wall time), so ``12:00+02:00`` is stored as ``10:00`` on both."""

    impl = TIMESTAMP
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None or value.tzinfo is None:
            return value
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    """Declarative base of every model; ``Base.metadata`` is the migrations' target."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Tenant(Base):
    """An organisation using the AI Secretary; every user belongs to exactly one.

    Not tenant-scoped: it is the tenant itself (signing in looks the tenant up by its slug
    before any tenant is known).

    ``slug`` is the tenant's stable, URL-safe identifier (unique across the installation);
    ``is_active`` switches a tenant off without deleting its data.
    """

    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=true())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime, server_default=func.now(), onupdate=func.now()
    )

    users: Mapped[list[User]] = relationship(
        back_populates="tenant", cascade="all, delete-orphan", passive_deletes=True
    )

    def __repr__(self) -> str:
        return f"Tenant(id={self.id!r}, slug={self.slug!r})"


class User(TenantScoped, Base):
    """A person who signs in to a tenant; tenant-scoped (:class:`TenantScoped`).

    An email address is unique within its tenant, not globally: the same person may belong to
    two tenants with two accounts. Deleting a tenant deletes its users (``ON DELETE CASCADE``).
    ``role`` is a free-form role name (``member`` by default; the application decides which
    exist); ``password_hash`` holds a hash, never a password.
    """

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("tenant_id", "email"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    password_hash: Mapped[str] = mapped_column(String(255))
    full_name: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(50), server_default=text("'member'"))
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=true())
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime, server_default=func.now(), onupdate=func.now()
    )

    tenant: Mapped[Tenant] = relationship(back_populates="users")

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, tenant_id={self.tenant_id!r}, email={self.email!r})"


class PerformanceAlert(Base):
    """An alert raised by performance monitoring, column for column the design document's DDL.

    Not tenant-scoped: it is system-wide monitoring of the service (the design's DDL has no
    tenant column), read by the operators, never by a tenant.

    The DDL's types are kept as written (``TIMESTAMP`` — without time zone — rather than
    SQLAlchemy's ``DateTime``, which SQLite would spell ``DATETIME``; ``FLOAT``, ``TEXT``
    holding JSON in ``alert_metadata``) and so is its nullability: only ``alert_type``,
    ``severity`` and ``title`` are ``NOT NULL``.
    """

    __tablename__ = "performance_alerts"
    __table_args__ = (
        # The "active alerts" dashboard filters on status and severity, newest first.
        Index("ix_performance_alerts_status_severity", "status", "severity"),
        Index("ix_performance_alerts_last_occurrence", "last_occurrence"),
        Index("ix_performance_alerts_alert_type", "alert_type"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_type: Mapped[str] = mapped_column(String(50))
    severity: Mapped[str] = mapped_column(String(20))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    endpoint: Mapped[str | None] = mapped_column(String(200))
    service_name: Mapped[str | None] = mapped_column(String(100))
    metric_value: Mapped[float | None] = mapped_column(Float)
    threshold_value: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str | None] = mapped_column(String(20), server_default=text("'active'"))
    acknowledged_by: Mapped[str | None] = mapped_column(String(100))
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(UTCTimestamp)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCTimestamp)
    first_occurrence: Mapped[dt.datetime | None] = mapped_column(
        UTCTimestamp, server_default=func.current_timestamp()
    )
    last_occurrence: Mapped[dt.datetime | None] = mapped_column(
        UTCTimestamp, server_default=func.current_timestamp()
    )
    occurrence_count: Mapped[int | None] = mapped_column(Integer, server_default=text("1"))
    alert_metadata: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime | None] = mapped_column(
        UTCTimestamp, server_default=func.current_timestamp()
    )
    updated_at: Mapped[dt.datetime | None] = mapped_column(
        UTCTimestamp, server_default=func.current_timestamp(), onupdate=func.current_timestamp()
    )

    def __repr__(self) -> str:
        return (
            f"PerformanceAlert(id={self.id!r}, alert_type={self.alert_type!r}, "
            f"severity={self.severity!r}, status={self.status!r})"
        )


#: The tables the application cannot run without, in dependency order.
REQUIRED_TABLES: tuple[str, ...] = ("tenants", "users", "performance_alerts")
