"""ai-secretary-schema: the database layer of the AI Secretary.

Models, versioned Alembic migrations for SQLite and PostgreSQL, URL parsing, connection
management, the startup hook, health checks and the Flask glue.

Names are imported on first use (PEP 562), so that a process which only needs the models or the
URL parser does not pay for importing Alembic or Flask.
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
    # configuration, URLs, secrets
    "SchemaSettings": "settings",
    "DatabaseConfig": "url",
    "DatabaseType": "url",
    "DatabaseURLParser": "url",
    "ValidationResult": "url",
    "redact_url": "redaction",
    "create_engine": "engine",
    # migrations
    "RevisionState": "commands",
    "downgrade": "commands",
    "upgrade": "commands",
    "make_alembic_config": "alembic_config",
    "migrations_directory": "alembic_config",
}

__all__ = [
    "NAMING_CONVENTION",
    "REQUIRED_TABLES",
    "AdoptionError",
    "Base",
    "ConnectionErrorKind",
    "DatabaseConfig",
    "DatabaseConfigError",
    "DatabaseConnectionError",
    "DatabaseType",
    "DatabaseURLParser",
    "DriverMissingError",
    "ExtensionAlreadyRegisteredError",
    "MigrationError",
    "MigrationLockTimeout",
    "MultipleHeadsError",
    "PerformanceAlert",
    "RevisionState",
    "SchemaDriftError",
    "SchemaError",
    "SchemaSettings",
    "SchemaValidationError",
    "Tenant",
    "User",
    "ValidationResult",
    "__version__",
    "create_engine",
    "downgrade",
    "make_alembic_config",
    "migrations_directory",
    "redact_url",
    "upgrade",
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
    from ai_secretary_schema.commands import RevisionState, downgrade, upgrade
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
    from ai_secretary_schema.models import (
        NAMING_CONVENTION,
        REQUIRED_TABLES,
        Base,
        PerformanceAlert,
        Tenant,
        User,
    )
    from ai_secretary_schema.redaction import redact_url
    from ai_secretary_schema.settings import SchemaSettings
    from ai_secretary_schema.url import (
        DatabaseConfig,
        DatabaseType,
        DatabaseURLParser,
        ValidationResult,
    )
