"""Every setting the package reads, declared once and resolved in one place.

Each setting is one field of :class:`SchemaSettings`, declared with :func:`_setting`: its name,
type, default, converter and documentation. Everything else is derived from that declaration:
the ``app.config`` key and the environment variable (the field name in upper case), the keyword
argument of :class:`SchemaSettings.resolve` and of the Flask extension (the field name), the
validation, and the documentation table (:func:`settings_table`, which the README shows).

Configuration flows one way: an explicit argument wins, then the Flask ``app.config`` key, then
the environment variable, then the default. Values are validated when the settings are built, so
a typo fails at start with a message that names the key and shows a correct value.

The database URL is parsed here, once (:attr:`SchemaSettings.database`): every door (the CLI's
``--url``, ``-x url=``, ``sqlalchemy.url``, ``app.config``, ``DATABASE_URL``) resolves it
through :meth:`SchemaSettings.resolve`. An explicitly empty URL (``--url ''``) is an error; an
unset or empty ``DATABASE_URL`` means the default file, ``sqlite:///ai_secretary.db``. Which URL
migrations use is decided in one place too, :meth:`SchemaSettings.for_migrations`:
``SCHEMA_MIGRATION_URL`` when it is set (a direct connection beside a pooled ``DATABASE_URL``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields, replace
from functools import cached_property
from typing import Any, Literal, TypeVar, cast

from sqlalchemy.engine import URL

from ai_secretary_schema.errors import DatabaseConfigError
from ai_secretary_schema.redaction import redact_url
from ai_secretary_schema.url import SQLITE_EXAMPLE, DatabaseConfig, DatabaseURLParser

logger = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///ai_secretary.db"

StartupMode = Literal["upgrade", "validate", "off"]
STARTUP_MODES: tuple[StartupMode, ...] = ("upgrade", "validate", "off")
HostMigrationsMode = Literal["startup", "release"]
HOST_MIGRATIONS_MODES: tuple[HostMigrationsMode, ...] = ("startup", "release")

_T = TypeVar("_T")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

Converter = Callable[[str, object], Any]


def _as_bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise DatabaseConfigError(
        f"{key}={value!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off "
        f"(for example {key}=1)."
    )


def _as_number(kind: Callable[[str], _T], minimum: float) -> Callable[[str, object], _T]:
    def convert(key: str, value: object) -> _T:
        try:
            number = kind(str(value).strip())
        except ValueError:
            number = None
        if number is None or cast(float, number) < minimum:
            raise DatabaseConfigError(
                f"{key}={value!r} is not a valid {kind.__name__} >= {minimum:g}; "
                f"for example {key}={max(int(minimum), 1)}."
            )
        return number

    return convert


def _as_choice(what: str, choices: tuple[str, ...]) -> Converter:
    def convert(key: str, value: object) -> str:
        mode = str(value).strip().lower()
        if mode not in choices:
            raise DatabaseConfigError(
                f"{key}={value!r} is not {what}; use one of "
                f"{', '.join(choices)} (for example {key}={choices[0]})."
            )
        return mode

    return convert


_as_startup_mode = _as_choice("a startup mode", STARTUP_MODES)


def _as_optional_text(key: str, value: object) -> str | None:
    text = str(value).strip()
    return text or None


def _as_url(key: str, value: object) -> str:
    if isinstance(value, URL):
        return value.render_as_string(hide_password=False)
    return str(value)


def _as_optional_url(key: str, value: object) -> str | None:
    text = _as_url(key, value).strip()
    return text or None


def _setting(default: Any, convert: Converter, doc: str, *, secret: bool = False) -> Any:
    """Declare one setting: its default, how a raw value becomes a typed one, what it means."""
    return field(default=default, repr=not secret, metadata={"convert": convert, "doc": doc})


@dataclass(frozen=True)
class Setting:
    """One declared setting, as the documentation and the resolver see it."""

    name: str  #: the keyword argument
    key: str  #: the ``app.config`` key and the environment variable
    default: Any
    doc: str
    convert: Converter


@dataclass(frozen=True)
class SchemaSettings:
    """The resolved settings; build it with :meth:`resolve` (or :meth:`override`)."""

    database_url: str | None = _setting(
        None,
        _as_url,
        "SQLAlchemy URL of the database; unset or empty: `sqlite:///ai_secretary.db`",
        secret=True,
    )
    schema_migration_url: str | None = _setting(
        None,
        _as_optional_url,
        "SQLAlchemy URL the migrations, the migration lock and the startup hook's validation use "
        "instead of `DATABASE_URL` (a direct connection when the application goes through a "
        "pooler); unset: `DATABASE_URL`",
        secret=True,
    )
    database_strict: bool = _setting(
        False, _as_bool, "an invalid URL is an error instead of a logged fallback to SQLite"
    )
    schema_startup: StartupMode = _setting(
        "upgrade",
        _as_startup_mode,
        "what the startup hook does: `upgrade`, `validate` or `off`",
    )
    schema_host_migrations: HostMigrationsMode = _setting(
        "startup",
        _as_choice("a host migrations mode", HOST_MIGRATIONS_MODES),
        "with the application's own migrations beside the package's (`directory=`): "
        "`startup` (the startup hook upgrades, or validates, both histories) or `release` "
        "(the application migrates its own in a release step; the hook leaves them alone)",
    )
    schema_lock_timeout: float = _setting(
        300.0, _as_number(float, 0), "seconds to wait for another process's migration lock"
    )
    schema_ddl_lock_timeout: float = _setting(
        5.0,
        _as_number(float, 0),
        "PostgreSQL: seconds a statement of a revision may wait for a lock (`SET LOCAL "
        "lock_timeout`) before the revision is rolled back and retried; `0`: no limit",
    )
    schema_ddl_statement_timeout: float = _setting(
        0.0,
        _as_number(float, 0),
        "PostgreSQL: seconds a statement of a revision may run (`SET LOCAL statement_timeout`); "
        "`0`: no limit",
    )
    schema_ddl_retries: int = _setting(
        5,
        _as_number(int, 0),
        "PostgreSQL: retries of a revision that hit the lock timeout (backoff with jitter, the "
        "migration lock held), then `MigrationBlockedError`",
    )
    schema_accept_unsafe_server: bool = _setting(
        False,
        _as_bool,
        "migrate a server that speaks PostgreSQL but whose advisory locks or transactional DDL "
        "cannot be trusted (CockroachDB, YugabyteDB) anyway",
    )
    database_pool_size: int = _setting(
        5, _as_number(int, 1), "PostgreSQL pool size (never sent to SQLite)"
    )
    database_max_overflow: int = _setting(
        10, _as_number(int, 0), "PostgreSQL connections allowed beyond the pool size"
    )
    database_pool_recycle: int = _setting(
        1800, _as_number(int, -1), "seconds after which a pooled connection is replaced"
    )
    database_pool_timeout: float = _setting(
        30.0, _as_number(float, 0), "seconds to wait for a connection from the pool"
    )
    database_pool_pre_ping: bool = _setting(
        True, _as_bool, "test a pooled connection before handing it out"
    )
    database_require_tls: bool = _setting(
        False,
        _as_bool,
        "a PostgreSQL URL to a remote host without `sslmode=require` or stronger is an error "
        "instead of a warning",
    )
    database_connect_timeout: float = _setting(
        5.0, _as_number(float, 0.1), "seconds one connection attempt may take"
    )
    database_connect_deadline: float = _setting(
        15.0, _as_number(float, 0), "seconds all retries of a failed connection may take together"
    )
    redis_url: str | None = _setting(
        None,
        _as_optional_text,
        "Redis of the cache; unset or blank: the in-process cache (health: `disabled`)",
        secret=True,
    )
    health_check_interval: float = _setting(
        30.0, _as_number(float, 0.01), "seconds between background health rounds"
    )
    health_check_timeout: float = _setting(
        3.0, _as_number(float, 0.01), "seconds one health check may take"
    )
    health_monitoring: bool = _setting(
        False, _as_bool, "the Flask extension starts the background health monitor"
    )
    #: Where each value came from (``argument``, ``app.config``, ``environment``, ``default``).
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __repr__(self) -> str:
        shown = {s.name: getattr(self, s.name) for s in declared_settings()}
        shown["database_url"] = redact_url(self.database_url) if self.database_url else None
        shown["schema_migration_url"] = (
            redact_url(self.schema_migration_url) if self.schema_migration_url else None
        )
        shown["redis_url"] = redact_url(self.redis_url) if self.redis_url else None
        return f"SchemaSettings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    # -- the database URL, parsed once -------------------------------------------------------

    @cached_property
    def database(self) -> DatabaseConfig:
        """The parsed ``database_url`` (the default file when unset); may be invalid."""
        return DatabaseURLParser().parse_url(self.database_url or DEFAULT_DATABASE_URL)

    @property
    def url(self) -> URL:
        """The normalised URL; raises :class:`DatabaseConfigError` when it is invalid."""
        return self.database.url

    def for_migrations(self) -> SchemaSettings:
        """The settings migrations run with: ``database_url`` is ``schema_migration_url`` when
        one is set (the migrations, the migration lock and the startup hook's validation then
        go there, while the application's engine keeps ``DATABASE_URL``).

        The one place that decides, for every door (:class:`~ai_secretary_schema.migrator.
        Migrator`, env.py). A database URL given as an argument (``--url``, ``url=``,
        ``database_url=``) names the database to migrate and wins over a migration URL that
        was not itself given as an argument (from ``app.config`` or the environment); that is
        logged. The result has no ``schema_migration_url``, so applying this twice changes
        nothing.
        """
        migration_url = self.schema_migration_url
        if migration_url is None:
            return self
        sources = dict(self.sources)
        origin = sources.get("schema_migration_url", "argument")
        sources["schema_migration_url"] = "default"
        if sources.get("database_url") == "argument" and origin != "argument":
            logger.info(
                "migrating %s, the database URL given as an argument; SCHEMA_MIGRATION_URL "
                "(%s, %s) is not used",
                self.database.redacted,
                origin,
                redact_url(migration_url),
            )
            kept = replace(self, schema_migration_url=None, sources=sources)
            if "database" in self.__dict__:
                kept.__dict__["database"] = self.database
            return kept
        sources["database_url"] = f"{origin} (SCHEMA_MIGRATION_URL)"
        return replace(self, database_url=migration_url, schema_migration_url=None, sources=sources)

    # -- building ----------------------------------------------------------------------------

    @classmethod
    def resolve(
        cls,
        app_config: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        **explicit: Any,
    ) -> SchemaSettings:
        """Resolve every setting: ``explicit`` → ``app_config`` → ``environ`` → default.

        ``explicit`` takes the field names (``database_url=…``); ``None`` means "not given".
        ``app_config`` and ``environ`` use the upper-case keys. An explicit empty
        ``database_url`` is an error (a script whose variable is unset must never migrate a
        local file); an empty ``DATABASE_URL`` in ``app_config`` or the environment means unset.
        """
        declared = {s.name: s for s in declared_settings()}
        unknown = set(explicit) - set(declared)
        if unknown:
            raise TypeError(
                f"unknown setting(s): {', '.join(sorted(unknown))}; the settings are "
                f"{', '.join(declared)}"
            )
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name, setting in declared.items():
            sources[name] = "default"
            for source, mapping, lookup in (
                ("argument", explicit, name),
                ("app.config", app_config or {}, setting.key),
                ("environment", env, setting.key),
            ):
                raw = mapping.get(lookup)
                if raw is None:
                    continue
                if source == "argument":
                    values[name] = _convert_explicit(setting, raw)
                elif name == "database_url" and not _as_url(setting.key, raw).strip():
                    sources[name] = f"{source} (empty)"
                    continue
                else:
                    values[name] = setting.convert(setting.key, raw)
                sources[name] = source
                break
        return cls(**values, sources=sources)

    def override(self, **explicit: Any) -> SchemaSettings:
        """These settings with ``explicit`` ones (field names, ``None``: keep) taking over."""
        declared = {s.name: s for s in declared_settings()}
        changes: dict[str, Any] = {}
        sources = dict(self.sources)
        for name, raw in explicit.items():
            if name not in declared:
                raise TypeError(f"unknown setting {name!r}")
            if raw is None:
                continue
            changes[name] = _convert_explicit(declared[name], raw)
            sources[name] = "argument"
        if not changes:
            return self
        updated = replace(self, **changes, sources=sources)
        if "database_url" not in changes and "database" in self.__dict__:
            # The URL did not change: keep its parse (cached_property stores it in __dict__).
            updated.__dict__["database"] = self.database
        return updated


def _convert_explicit(setting: Setting, raw: object) -> Any:
    """An explicitly given value, converted: an explicit empty URL is an error, never "unset"
    (a script whose variable is unset must not migrate a local file)."""
    if setting.name == "database_url" and not _as_url(setting.key, raw).strip():
        raise _empty_url_error()
    return setting.convert(setting.key, raw)


def _empty_url_error() -> DatabaseConfigError:
    return DatabaseConfigError(
        "The database URL given is empty (for example `--url ''` from an unset shell "
        "variable); nothing was done. Pass a URL, such as --url "
        f"{SQLITE_EXAMPLE} or --url postgresql://user:password@host:5432/ai_secretary, or "
        "leave --url out to use DATABASE_URL.",
        example=SQLITE_EXAMPLE,
    )


def declared_settings() -> tuple[Setting, ...]:
    """Every setting, in declaration order."""
    return tuple(_setting_of(f) for f in fields(SchemaSettings) if "convert" in f.metadata)


def _setting_of(f: Field[Any]) -> Setting:
    return Setting(
        name=f.name,
        key=f.name.upper(),
        default=f.default,
        doc=str(f.metadata["doc"]),
        convert=f.metadata["convert"],
    )


def settings_table() -> str:
    """The settings as a Markdown table (key / argument, default, meaning) for the README."""
    lines = [
        "| `app.config` key / environment variable | argument | default | meaning |",
        "|---|---|---|---|",
    ]
    for s in declared_settings():
        default = "unset" if s.default is None else f"`{str(s.default).lower()}`"
        if isinstance(s.default, bool):
            default = "`1`" if s.default else "`0`"
        elif isinstance(s.default, (int, float)):
            default = f"`{s.default:g}`"
        lines.append(f"| `{s.key}` | `{s.name}` | {default} | {s.doc} |")
    return "\n".join(lines)
