"""ai-secretary-schema: the database layer of the AI Secretary.

Models, versioned Alembic migrations for SQLite and PostgreSQL, URL parsing, connection
management, the startup hook, health checks and the Flask glue.

The names below are what an application needs; everything else stays importable from its
module. They are imported on first use (PEP 562), so that a process which only needs the models
or a warm start does not pay for importing Alembic or Flask.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    # models
    "Base": "models",
    "PerformanceAlert": "models",
    "Tenant": "models",
    "User": "models",
    # tenant isolation
    "TenantScoped": "tenancy",
    "cross_tenant": "tenancy",
    "current_tenant": "tenancy",
    "set_tenant": "tenancy",
    "tenant_isolation_sql": "tenancy",
    "tenant_scope": "tenancy",
    "tenant_scoped_tables": "tenancy",
    "policy_differences": "tenancy",
    "grant_app_role": "roles",
    # errors
    "AdoptionError": "errors",
    "AppRoleError": "errors",
    "CrossTenantWriteError": "errors",
    "TenantRequiredError": "errors",
    "ConnectionErrorKind": "errors",
    "DatabaseConfigError": "errors",
    "DatabaseConnectionError": "errors",
    "DriverMissingError": "errors",
    "ExtensionAlreadyRegisteredError": "errors",
    "ExtensionNotRegisteredError": "errors",
    "MigrationError": "errors",
    "MigrationLockTimeout": "errors",
    "UnsafeServerError": "errors",
    "MigrationBlockedError": "errors",
    "MultipleHeadsError": "errors",
    "SchemaDriftError": "errors",
    "SchemaError": "errors",
    "SchemaValidationError": "errors",
    # configuration, URLs, connections
    "SchemaSettings": "settings",
    "DatabaseConfig": "url",
    "DatabaseType": "url",
    "DatabaseURLParser": "url",
    "ValidationResult": "url",
    "redact_url": "redaction",
    "ConnectionResult": "connection",
    "SmartConnectionManager": "connection",
    "ErrorRateLimiter": "rate_limit",
    # migrations and the startup hook
    "Migrator": "migrator",
    "RevisionState": "migrator",
    "check": "migrator",
    "current": "migrator",
    "downgrade": "migrator",
    "stamp": "migrator",
    "upgrade": "migrator",
    "validate": "migrator",
    "MigrationManager": "migration_manager",
    "SchemaReport": "schema_report",
    # Flask
    "SchemaExtension": "flask",
    "ApplicationContextManager": "flask.context",
    "FallbackCache": "flask.cache",
    "CheckResult": "flask.health",
    "HealthReport": "flask.health",
    "HealthStatus": "flask.health",
    "ServiceHealth": "flask.health",
    "ServiceHealthManager": "flask.health",
}

# Kept literal for type checkers; a test checks it names exactly the table's keys.
__all__ = [
    "AdoptionError",
    "AppRoleError",
    "ApplicationContextManager",
    "Base",
    "CheckResult",
    "ConnectionErrorKind",
    "ConnectionResult",
    "CrossTenantWriteError",
    "DatabaseConfig",
    "DatabaseConfigError",
    "DatabaseConnectionError",
    "DatabaseType",
    "DatabaseURLParser",
    "DriverMissingError",
    "ErrorRateLimiter",
    "ExtensionAlreadyRegisteredError",
    "ExtensionNotRegisteredError",
    "FallbackCache",
    "HealthReport",
    "HealthStatus",
    "MigrationBlockedError",
    "MigrationError",
    "MigrationLockTimeout",
    "MigrationManager",
    "Migrator",
    "MultipleHeadsError",
    "PerformanceAlert",
    "RevisionState",
    "SchemaDriftError",
    "SchemaError",
    "SchemaExtension",
    "SchemaReport",
    "SchemaSettings",
    "SchemaValidationError",
    "ServiceHealth",
    "ServiceHealthManager",
    "SmartConnectionManager",
    "Tenant",
    "TenantRequiredError",
    "TenantScoped",
    "UnsafeServerError",
    "User",
    "ValidationResult",
    "__version__",
    "check",
    "cross_tenant",
    "current",
    "current_tenant",
    "downgrade",
    "grant_app_role",
    "policy_differences",
    "redact_url",
    "set_tenant",
    "stamp",
    "tenant_isolation_sql",
    "tenant_scope",
    "tenant_scoped_tables",
    "upgrade",
    "validate",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from ai_secretary_schema.connection import ConnectionResult, SmartConnectionManager
    from ai_secretary_schema.errors import (
        AdoptionError,
        AppRoleError,
        ConnectionErrorKind,
        CrossTenantWriteError,
        DatabaseConfigError,
        DatabaseConnectionError,
        DriverMissingError,
        ExtensionAlreadyRegisteredError,
        ExtensionNotRegisteredError,
        MigrationBlockedError,
        MigrationError,
        MigrationLockTimeout,
        MultipleHeadsError,
        SchemaDriftError,
        SchemaError,
        SchemaValidationError,
        TenantRequiredError,
        UnsafeServerError,
    )
    from ai_secretary_schema.flask import SchemaExtension
    from ai_secretary_schema.flask.cache import FallbackCache
    from ai_secretary_schema.flask.context import ApplicationContextManager
    from ai_secretary_schema.flask.health import (
        CheckResult,
        HealthReport,
        HealthStatus,
        ServiceHealth,
        ServiceHealthManager,
    )
    from ai_secretary_schema.migration_manager import MigrationManager
    from ai_secretary_schema.migrator import (
        Migrator,
        RevisionState,
        check,
        current,
        downgrade,
        stamp,
        upgrade,
        validate,
    )
    from ai_secretary_schema.models import Base, PerformanceAlert, Tenant, User
    from ai_secretary_schema.rate_limit import ErrorRateLimiter
    from ai_secretary_schema.redaction import redact_url
    from ai_secretary_schema.roles import grant_app_role
    from ai_secretary_schema.schema_report import SchemaReport
    from ai_secretary_schema.settings import SchemaSettings
    from ai_secretary_schema.tenancy import (
        TenantScoped,
        cross_tenant,
        current_tenant,
        policy_differences,
        set_tenant,
        tenant_isolation_sql,
        tenant_scope,
        tenant_scoped_tables,
    )
    from ai_secretary_schema.url import (
        DatabaseConfig,
        DatabaseType,
        DatabaseURLParser,
        ValidationResult,
    )
