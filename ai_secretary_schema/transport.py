"""Is a database connection protected in transit? Warn, or refuse, when it is not.

A PostgreSQL URL whose host is neither loopback nor a Unix socket travels over a network; without
``sslmode=require`` (or the stronger ``verify-ca``/``verify-full``) libpq may send the password
and every row in clear text (its default, ``prefer``, silently falls back to no TLS). Such a URL
gets one WARNING per process naming the host and the fix; with ``DATABASE_REQUIRE_TLS=1`` it is a
:class:`~ai_secretary_schema.errors.DatabaseConfigError` instead, before anything connects.
Loopback hosts, Unix sockets and SQLite stay quiet.
"""

from __future__ import annotations

import ipaddress
import logging
import threading

from sqlalchemy.engine import URL

from ai_secretary_schema.errors import DatabaseConfigError
from ai_secretary_schema.redaction import redact_url
from ai_secretary_schema.settings import SchemaSettings

logger = logging.getLogger(__name__)

#: ``sslmode`` values that refuse to connect without TLS.
SECURE_SSLMODES = frozenset({"require", "verify-ca", "verify-full"})

# One warning per process and URL: every engine of a process (the application's, the migration
# lock's) would otherwise repeat it.
_warned: set[str] = set()
_warned_lock = threading.Lock()


def _is_local(host: str | None, socket_dir: object) -> bool:
    if not host:
        # No host: libpq uses the default Unix socket, or the ?host= query names a directory.
        return socket_dir is None or str(socket_dir).startswith("/")
    if host.startswith("/") or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def insecure_transport(url: URL) -> str | None:
    """Why ``url`` may travel unencrypted, or ``None`` when it cannot (or stays on this host)."""
    if url.get_backend_name() != "postgresql":
        return None
    socket_dir = url.query.get("host")
    if _is_local(url.host, socket_dir):
        return None
    sslmode = url.query.get("sslmode")
    if isinstance(sslmode, str) and sslmode in SECURE_SSLMODES:
        return None
    how = "has no sslmode" if sslmode is None else f"has sslmode={sslmode}"
    return (
        f"the PostgreSQL URL {redact_url(url)} reaches {url.host} over the network and {how}, "
        "so the password and the data may travel unencrypted; add "
        "?sslmode=verify-full&sslrootcert=/path/to/root.crt (or at least sslmode=require) "
        "to DATABASE_URL"
    )


def check_transport(url: URL, settings: SchemaSettings) -> None:
    """Warn once per process about an unprotected remote URL, or raise with
    ``DATABASE_REQUIRE_TLS``."""
    problem = insecure_transport(url)
    if problem is None:
        return
    if settings.database_require_tls:
        raise DatabaseConfigError(
            f"DATABASE_REQUIRE_TLS is set and {problem}.",
            url=redact_url(url),
            example="postgresql://user:password@db.example.com:5432/ai_secretary"
            "?sslmode=verify-full&sslrootcert=/etc/ssl/certs/db-root.crt",
        )
    key = redact_url(url)
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    logger.warning(
        "Insecure database connection: %s (DATABASE_REQUIRE_TLS=1 makes this an error).", problem
    )
