"""Every setting the package reads, resolved in one place.

Configuration flows one way: an explicit argument wins, then the Flask ``app.config`` key of the
same name, then the environment variable of the same name, then the default. Values are
validated when the :class:`SchemaSettings` is built, so a typo fails at start with a message that
names the key and shows a correct value, never later in a request.

Keys (``app.config`` / environment):

``DATABASE_URL``
    SQLAlchemy URL of the database. Default ``sqlite:///ai_secretary.db``.
``DATABASE_STRICT``
    ``1``/``true``: an invalid URL is an error instead of a logged fallback to SQLite.
``SCHEMA_STARTUP``
    What the startup hook does: ``upgrade`` (default), ``validate`` or ``off``.
``SCHEMA_LOCK_TIMEOUT``
    Seconds to wait for another process's migration lock (default 300).
``DATABASE_POOL_SIZE``, ``DATABASE_MAX_OVERFLOW``, ``DATABASE_POOL_RECYCLE``,
``DATABASE_POOL_TIMEOUT``, ``DATABASE_POOL_PRE_PING``
    PostgreSQL pool settings (defaults 5, 10, 1800 s, 30 s, true). Never sent to SQLite.
``DATABASE_CONNECT_TIMEOUT``
    Seconds one connection attempt may take (default 5).
``DATABASE_CONNECT_DEADLINE``
    Seconds all retries of a failed connection may take together (default 15).
``REDIS_URL``
    Redis for the cache; unset or blank means the in-process cache (health: ``disabled``).
``HEALTH_CHECK_INTERVAL``
    Seconds between background health rounds (default 30).
``HEALTH_CHECK_TIMEOUT``
    Seconds one health check may take before its service is reported unhealthy (default 3).
``HEALTH_MONITORING``
    ``1``/``true``: the Flask extension starts the background health monitor (default off).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar, cast

from ai_secretary_schema.errors import DatabaseConfigError
from ai_secretary_schema.redaction import redact_url

DEFAULT_DATABASE_URL = "sqlite:///ai_secretary.db"

StartupMode = Literal["upgrade", "validate", "off"]
STARTUP_MODES: tuple[StartupMode, ...] = ("upgrade", "validate", "off")

_T = TypeVar("_T")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


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


def _as_startup_mode(key: str, value: object) -> StartupMode:
    mode = str(value).strip().lower()
    if mode not in STARTUP_MODES:
        raise DatabaseConfigError(
            f"{key}={value!r} is not a startup mode; use one of "
            f"{', '.join(STARTUP_MODES)} (for example {key}=upgrade)."
        )
    return mode


def _as_optional_text(key: str, value: object) -> str | None:
    text = str(value).strip()
    return text or None


def _as_text(key: str, value: object) -> str:
    return str(value)


_CONVERTERS: dict[str, Callable[[str, object], Any]] = {
    "database_url": _as_text,
    "database_strict": _as_bool,
    "schema_startup": _as_startup_mode,
    "schema_lock_timeout": _as_number(float, 0),
    "database_pool_size": _as_number(int, 1),
    "database_max_overflow": _as_number(int, 0),
    "database_pool_recycle": _as_number(int, -1),
    "database_pool_timeout": _as_number(float, 0),
    "database_pool_pre_ping": _as_bool,
    "database_connect_timeout": _as_number(float, 0.1),
    "database_connect_deadline": _as_number(float, 0),
    "redis_url": _as_optional_text,
    "health_check_interval": _as_number(float, 0.01),
    "health_check_timeout": _as_number(float, 0.01),
    "health_monitoring": _as_bool,
}


@dataclass(frozen=True)
class SchemaSettings:
    """The resolved settings; build it with :meth:`resolve`, not by hand."""

    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)
    database_strict: bool = False
    schema_startup: StartupMode = "upgrade"
    schema_lock_timeout: float = 300.0
    database_pool_size: int = 5
    database_max_overflow: int = 10
    database_pool_recycle: int = 1800
    database_pool_timeout: float = 30.0
    database_pool_pre_ping: bool = True
    database_connect_timeout: float = 5.0
    database_connect_deadline: float = 15.0
    redis_url: str | None = field(default=None, repr=False)
    health_check_interval: float = 30.0
    health_check_timeout: float = 3.0
    health_monitoring: bool = False
    #: Where each value came from (``argument``, ``app.config``, ``environment``, ``default``).
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __repr__(self) -> str:
        shown = {
            f.name: getattr(self, f.name) for f in fields(self) if f.repr and f.name != "sources"
        }
        shown["database_url"] = redact_url(self.database_url)
        shown["redis_url"] = redact_url(self.redis_url) if self.redis_url else None
        return f"SchemaSettings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @classmethod
    def resolve(
        cls,
        app_config: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        **explicit: Any,
    ) -> SchemaSettings:
        """Resolve every setting: ``explicit`` → ``app_config`` → ``environ`` → default.

        ``explicit`` takes the lower-case field names (``database_url=…``); ``None`` means "not
        given". ``app_config`` and ``environ`` use the upper-case keys of the module docstring.
        """
        names = {f.name for f in fields(cls)} - {"sources"}
        unknown = set(explicit) - names
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name in sorted(names):
            key = name.upper()
            for source, mapping in (
                ("argument", explicit),
                ("app.config", app_config or {}),
                ("environment", env),
            ):
                lookup = name if source == "argument" else key
                raw = mapping.get(lookup)
                if raw is None:
                    continue
                if source == "environment" and name == "database_url" and not str(raw).strip():
                    # An empty DATABASE_URL= line in a .env file means "not set".
                    continue
                values[name] = _CONVERTERS[name](key, raw)
                sources[name] = source
                break
            else:
                sources[name] = "default"
        return cls(**values, sources=sources)
