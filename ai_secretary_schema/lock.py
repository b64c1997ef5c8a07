"""The migration lock: one upgrade at a time per database, across threads, processes and hosts.

:func:`migration_lock` is taken by env.py for every online run that writes the version table
(:func:`ai_secretary_schema.migration_env.lock_if_writing`), so ``alembic``, ``flask db``, the
CLI, the Python API and the startup hook all serialise on it, and a fleet of workers that all
start at once migrate the database exactly once: the first one to get the lock
upgrades, the others wait, then find the database at head and do nothing.

Three layers, taken in this order:

1. **A process-wide lock** (:data:`PROCESS_LOCK`). Alembic's command API keeps module-level state
   (``alembic.context``, ``alembic.op`` are proxies bound for the duration of a run), so two
   threads of one process must never migrate at the same time, whatever database they target.
   It is reentrant for the thread that holds it, and a thread already holding the lock of a
   database does not take that database's lock again (a nested call would otherwise wait for
   itself on PostgreSQL).
2. **PostgreSQL: a session-level advisory lock** (``pg_advisory_lock``) on a connection of its
   own (its own engine, no pool, autocommit), held for the whole upgrade. A *transaction*-level
   lock (``pg_advisory_xact_lock``) would not do: Alembic commits after each revision
   (``transaction_per_migration``) and ``autocommit_block()`` commits too, each of which would
   release it half-way. Advisory lock keys are cluster-wide, so the key is derived from the
   database name (:func:`advisory_lock_key`): migrations of two databases on one server do not
   wait for each other. Waiting is bounded by ``SET lock_timeout``; when it expires,
   :class:`~ai_secretary_schema.errors.MigrationLockTimeout` names the process holding the lock.
   The lock is released (``pg_advisory_unlock``, then the connection is closed) however the
   upgrade ends; if the process dies, the server ends its session and the lock goes with it.
3. **SQLite file: an exclusive** ``flock`` on a sidecar file ``<database>.migrate.lock`` next to
   the database. The kernel drops an ``flock`` when the process holding it dies, ``kill -9``
   included, so a crashed upgrade never leaves a stale lock behind (a lock *file* whose mere
   existence meant "locked" would). The sidecar file is left in place on purpose: deleting it
   while another process waits on it would let a third process lock a new file beside it. An
   in-memory database is private to its process and needs only the process-wide lock.

Connection poolers in transaction mode (PgBouncer ``pool_mode = transaction``)
    A session-level advisory lock belongs to a *server* connection. Behind a pooler in
    transaction mode, consecutive statements of one client connection may run on different server
    connections: ``pg_advisory_lock`` is taken on one server connection and
    ``pg_advisory_unlock`` may run on another (where it does nothing), so the lock leaks to
    whichever client gets that server connection next, and meanwhile other workers can take it
    through other server connections. The lock then serialises nothing. With such a pooler,
    either run migrations over a direct connection to PostgreSQL (or a pooler database in
    *session* mode): pass that URL to the migration step, e.g. ``ai-secretary-schema upgrade
    --url "$SCHEMA_MIGRATION_URL"`` in a release step; or start the workers with
    ``SCHEMA_STARTUP=validate`` (they only check the schema, never migrate) and upgrade once, in
    a release/deploy step, over a direct connection. The same applies to any proxy that
    multiplexes sessions (e.g. AWS RDS Proxy with pinning disabled).

Limits on SQLite
    ``flock`` works between processes of one host on a local file system. It does not reliably
    lock across hosts on NFS or other network file systems; SQLite itself is not safe there
    either (see https://www.sqlite.org/howtocorrupt.html). Windows has no ``flock``: there the
    lock uses ``msvcrt.locking`` on the sidecar file, which the system also releases when the
    process dies.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError

from ai_secretary_schema.engine import create_engine, sqlite_file_path
from ai_secretary_schema.errors import DatabaseConnectionError, MigrationLockTimeout
from ai_secretary_schema.redaction import redact_text, redact_url, url_password
from ai_secretary_schema.settings import SchemaSettings

logger = logging.getLogger(__name__)

#: Serialises the migrations of one process (Alembic's command API is not thread-safe).
PROCESS_LOCK = threading.RLock()

#: Suffix of the sidecar file locked while a SQLite database is migrated.
SQLITE_LOCK_SUFFIX = ".migrate.lock"

#: SQLSTATE of ``lock_timeout`` expiring (``lock_not_available``).
_LOCK_NOT_AVAILABLE = "55P03"

_held = threading.local()


def advisory_lock_key(database: str) -> int:
    """The advisory lock key of ``database``: a stable signed 64-bit hash of its name.

    Stable across processes, hosts and Python versions (unlike :func:`hash`), and distinct per
    database because advisory lock keys are shared by every database of the cluster.
    """
    digest = hashlib.blake2b(f"ai_secretary_schema:{database}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def sqlite_lock_path(database: Path) -> Path:
    """The sidecar file locked while the SQLite database at ``database`` is migrated."""
    return database.with_name(database.name + SQLITE_LOCK_SUFFIX)


def _lock_identity(url: URL) -> str:
    if url.get_backend_name() == "postgresql":
        return f"postgresql://{url.host}:{url.port or 5432}/{url.database}"
    path = sqlite_file_path(url)
    return f"sqlite:{path.resolve() if path is not None else ':memory:'}"


def _held_keys() -> set[str]:
    keys: set[str] | None = getattr(_held, "keys", None)
    if keys is None:
        keys = set()
        _held.keys = keys
    return keys


@contextmanager
def migration_lock(
    engine_or_url: Engine | URL,
    settings: SchemaSettings | None = None,
    *,
    timeout: float | None = None,
) -> Iterator[None]:
    """Hold the migration lock of a database for the duration of the ``with`` block.

    ``engine_or_url`` names the database (only its URL is used: the lock takes a connection of
    its own, made with ``settings``' connect timeout). ``timeout`` is how many seconds to wait
    for another thread or process holding it (default ``SCHEMA_LOCK_TIMEOUT``; ``0``: do not
    wait); then :class:`~ai_secretary_schema.errors.MigrationLockTimeout` is raised. See the
    module's documentation for what the lock is on each dialect, and why a pooler in
    transaction mode defeats it on PostgreSQL.
    """
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else engine_or_url
    settings = settings if settings is not None else SchemaSettings()
    if timeout is None:
        timeout = settings.schema_lock_timeout
    identity = _lock_identity(url)
    held = _held_keys()
    if identity in held:
        # This thread already holds it: a nested call (e.g. upgrade_to_head inside run_startup).
        yield
        return
    deadline = time.monotonic() + timeout
    if not PROCESS_LOCK.acquire(timeout=timeout if timeout > 0 else -1):
        raise MigrationLockTimeout(
            f"another thread of this process has been migrating for more than {timeout:g} s "
            f"(waiting for {redact_url(url)}); raise SCHEMA_LOCK_TIMEOUT if migrations are slow",
            timeout=timeout,
        )
    try:
        backend = url.get_backend_name()
        held.add(identity)
        try:
            if backend == "postgresql":
                with _postgresql_lock(url, settings, timeout, deadline):
                    yield
            elif backend == "sqlite" and sqlite_file_path(url) is not None:
                path = sqlite_file_path(url)
                assert path is not None
                with _sqlite_file_lock(path, timeout, deadline):
                    yield
            else:
                yield
        finally:
            held.discard(identity)
    finally:
        PROCESS_LOCK.release()


# -- PostgreSQL ------------------------------------------------------------------------------


def _lock_holders(connection: Connection, key: int) -> list[int]:
    # A bigint advisory key is stored as classid (high 32 bits) and objid (low 32 bits),
    # objsubid = 1; pg_locks shows them as oid (unsigned) values.
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    rows = connection.execute(
        sa.text(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = CAST(:high AS oid) AND objid = CAST(:low AS oid) AND objsubid = 1 "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        {"high": unsigned >> 32, "low": unsigned & 0xFFFFFFFF},
    )
    return [int(row[0]) for row in rows]


def _timeout_message(url: URL, key: int, timeout: float, holders: list[int]) -> str:
    who = f"PostgreSQL backend pid {', '.join(map(str, holders))}" if holders else "another session"
    return (
        f"could not take the migration lock of {redact_url(url)} within {timeout:g} s: "
        f"{who} holds it (another worker is migrating, or a session is stuck). Find it with "
        f"SELECT pid, application_name, client_addr, state, query_start FROM pg_stat_activity "
        f"WHERE pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted); "
        f"if it is stuck, end it with SELECT pg_terminate_backend(<pid>). Raise "
        f"SCHEMA_LOCK_TIMEOUT if migrations legitimately take longer (lock key {key})."
    )


@contextmanager
def _postgresql_lock(
    url: URL, settings: SchemaSettings, timeout: float, deadline: float
) -> Iterator[None]:
    key = advisory_lock_key(url.database or "")
    engine = create_engine(url, settings, pooled=False)
    try:
        try:
            connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except DBAPIError as error:
            # Imported here: the connection module is not needed on the lock's happy path.
            from ai_secretary_schema.connection import classify_connection_error

            raise DatabaseConnectionError(
                f"cannot connect to {redact_url(url)} to take the migration lock: "
                f"{redact_text(str(error.orig), [url_password(url)])}",
                kind=classify_connection_error(error).kind,
                url=redact_url(url),
            ) from None
        try:
            _acquire_advisory_lock(connection, url, key, timeout, deadline)
            logger.info("took the migration lock of %s (advisory key %d)", redact_url(url), key)
            try:
                yield
            finally:
                _release_advisory_lock(connection, key)
        finally:
            # Closing the session releases the lock even if the unlock above could not run.
            connection.close()
    finally:
        engine.dispose()


def _acquire_advisory_lock(
    connection: Connection, url: URL, key: int, timeout: float, deadline: float
) -> None:
    got = connection.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
    if got:
        return
    remaining = deadline - time.monotonic()
    logger.info(
        "waiting up to %.1f s for the migration lock of %s (held by pid %s)",
        max(remaining, 0),
        redact_url(url),
        ", ".join(map(str, _lock_holders(connection, key))) or "?",
    )
    if remaining <= 0:
        raise MigrationLockTimeout(
            _timeout_message(url, key, timeout, _lock_holders(connection, key)), timeout=timeout
        )
    # lock_timeout bounds the blocking wait; a waiter is woken the moment the lock is freed
    # (polling pg_try_advisory_lock would add up to one poll interval per waiter).
    connection.execute(sa.text(f"SET lock_timeout = {max(1, int(remaining * 1000))}"))
    try:
        connection.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
    except DBAPIError as error:
        if getattr(error.orig, "pgcode", None) != _LOCK_NOT_AVAILABLE:
            raise
        raise MigrationLockTimeout(
            _timeout_message(url, key, timeout, _lock_holders(connection, key)), timeout=timeout
        ) from None
    finally:
        if not connection.invalidated:
            connection.execute(sa.text("RESET lock_timeout"))


def _release_advisory_lock(connection: Connection, key: int) -> None:
    try:
        connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    except DBAPIError:
        # The session is gone (server restart, network): the server released the lock with it.
        logger.warning("could not unlock the migration lock (key %d); its session ended", key)


# -- SQLite ----------------------------------------------------------------------------------


@contextmanager
def _sqlite_file_lock(database: Path, timeout: float, deadline: float) -> Iterator[None]:
    path = sqlite_lock_path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        delay = 0.005
        while not _try_lock_file(fd):
            if time.monotonic() >= deadline:
                raise MigrationLockTimeout(
                    f"could not take the migration lock of the SQLite database {database} "
                    f"within {timeout:g} s: another process holds {path} (list it with "
                    f"`fuser {path}` or `lsof {path}`). The lock goes away when that process "
                    f"ends; raise SCHEMA_LOCK_TIMEOUT if migrations legitimately take longer.",
                    timeout=timeout,
                )
            time.sleep(min(delay, max(deadline - time.monotonic(), 0)))
            delay = min(delay * 2, 0.1)
        logger.info("took the migration lock %s", path)
        try:
            yield
        finally:
            _unlock_file(fd)
    finally:
        os.close(fd)


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock_file(fd: int) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock_file(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock_file(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock_file(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
