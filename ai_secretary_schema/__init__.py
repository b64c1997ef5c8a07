"""ai-secretary-schema: the database layer of the AI Secretary.

Models, versioned Alembic migrations for SQLite and PostgreSQL, URL parsing, connection
management, the startup hook, health checks and the Flask glue.

Names are imported on first use (PEP 562), so that a process which only needs the models or a
warm start does not pay for importing Alembic or Flask.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # models
    "Base": "models",
    "NAMING_CONVENTION": "models",
    "PerformanceAlert": "models",
    "REQUIRED_TABLES": "models",
    "Tenant": "models",
    "User": "models",
    # errors
    "AdoptionError": "errors",
    "ConnectionErrorKind": "errors",
    "DatabaseConfigError": "errors",
    "DatabaseConnectionError": "errors",
    "DriverMissingError": "errors",
    "ExtensionAlreadyRegisteredError": "errors",
    "MigrationError": "errors",
    "MigrationLockTimeout": "errors",
    "MultipleHeadsError": "errors",
    "SchemaDriftError": "errors",
    "SchemaError": "errors",
    "SchemaValidationError": "errors",
    # configuration, URLs, secrets, connections
    "SchemaSettings": "settings",
    "DatabaseConfig": "url",
    "DatabaseType": "url",
    "DatabaseURLParser": "url",
    "ValidationResult": "url",
    "redact_url": "redaction",
    "create_engine": "engine",
    "ConnectionResult": "connection",
    "PostgreSQLConnector": "connection",
    "RetryPolicy": "connection",
    "SQLiteConnector": "connection",
    "SmartConnectionManager": "connection",
    # migrations and the startup hook
    "RevisionState": "commands",
    "check": "commands",
    "current": "commands",
    "downgrade": "commands",
    "upgrade": "commands",
    "make_alembic_config": "alembic_config",
    "migrations_directory": "alembic_config",
    "MigrationManager": "migration_manager",
    "SchemaReport": "schema_report",
    "build_schema_report": "schema_report",
    "migration_lock": "lock",
    "prime_caches": "warm_start",
    "warm_check": "warm_start",
    # Flask: context, health, cache, logging
    "ErrorRateLimiter": "rate_limit",
    "RateLimitingFilter": "rate_limit",
    "ApplicationContextManager": "context",
    "FallbackCache": "cache",
    "InProcessCache": "cache",
    "HealthReport": "health",
    "HealthStatus": "health",
    "ServiceHealth": "health",
    "ServiceHealthManager": "health",
    "create_health_blueprint": "health_blueprint",
    "SchemaExtension": "flask",
}

__all__ = [
    "NAMING_CONVENTION",
    "REQUIRED_TABLES",
    "AdoptionError",
    "ApplicationContextManager",
    "Base",
    "ConnectionErrorKind",
    "ConnectionResult",
    "DatabaseConfig",
    "DatabaseConfigError",
    "DatabaseConnectionError",
    "DatabaseType",
    "DatabaseURLParser",
    "DriverMissingError",
    "ErrorRateLimiter",
    "ExtensionAlreadyRegisteredError",
    "FallbackCache",
    "HealthReport",
    "HealthStatus",
    "InProcessCache",
    "MigrationError",
    "MigrationLockTimeout",
    "MigrationManager",
    "MultipleHeadsError",
    "PerformanceAlert",
    "PostgreSQLConnector",
    "RateLimitingFilter",
    "RetryPolicy",
    "RevisionState",
    "SQLiteConnector",
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
    "User",
    "ValidationResult",
    "__version__",
    "build_schema_report",
    "check",
    "create_engine",
    "create_health_blueprint",
    "current",
    "downgrade",
    "make_alembic_config",
    "migration_lock",
    "migrations_directory",
    "prime_caches",
    "redact_url",
    "upgrade",
    "warm_check",
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
    from ai_secretary_schema.alembic_config import make_alembic_config, migrations_directory
    from ai_secretary_schema.cache import FallbackCache, InProcessCache
    from ai_secretary_schema.commands import RevisionState, check, current, downgrade, upgrade
    from ai_secretary_schema.connection import (
        ConnectionResult,
        PostgreSQLConnector,
        RetryPolicy,
        SmartConnectionManager,
        SQLiteConnector,
    )
    from ai_secretary_schema.context import ApplicationContextManager
    from ai_secretary_schema.engine import create_engine
    from ai_secretary_schema.errors import (
        AdoptionError,
        ConnectionErrorKind,
        DatabaseConfigError,
        DatabaseConnectionError,
        DriverMissingError,
        ExtensionAlreadyRegisteredError,
        MigrationError,
        MigrationLockTimeout,
        MultipleHeadsError,
        SchemaDriftError,
        SchemaError,
        SchemaValidationError,
    )
    from ai_secretary_schema.flask import SchemaExtension
    from ai_secretary_schema.health import (
        HealthReport,
        HealthStatus,
        ServiceHealth,
        ServiceHealthManager,
    )
    from ai_secretary_schema.health_blueprint import create_health_blueprint
    from ai_secretary_schema.lock import migration_lock
    from ai_secretary_schema.migration_manager import MigrationManager
    from ai_secretary_schema.models import (
        NAMING_CONVENTION,
        REQUIRED_TABLES,
        Base,
        PerformanceAlert,
        Tenant,
        User,
    )
    from ai_secretary_schema.rate_limit import ErrorRateLimiter, RateLimitingFilter
    from ai_secretary_schema.redaction import redact_url
    from ai_secretary_schema.schema_report import SchemaReport, build_schema_report
    from ai_secretary_schema.settings import SchemaSettings
    from ai_secretary_schema.url import (
        DatabaseConfig,
        DatabaseType,
        DatabaseURLParser,
        ValidationResult,
    )
    from ai_secretary_schema.warm_start import prime_caches, warm_check
