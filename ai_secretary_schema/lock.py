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
2. **PostgreSQL: a transaction-scoped advisory lock held in an open transaction on a connection
   of its own.** ``pg_try_advisory_xact_lock(key)`` is taken in a transaction that stays open
   (idle) for the whole migration, on a dedicated connection (its own engine, no pool); the
   migration runs on another connection, whose per-revision commits and ``autocommit_block()``
   therefore never touch it. The lock ends with that transaction: a rollback when the
   migration ends, or the server ending the transaction when the process or its connection
   dies (``kill -9`` included), so no stale lock is ever left. ``SET LOCAL
   idle_in_transaction_session_timeout = 0`` in that transaction keeps a server-wide setting
   from killing it half-way, and it is READ COMMITTED whatever the server's default, so that
   idle it holds no snapshot: ``CREATE INDEX CONCURRENTLY`` in the migration waits for every
   older snapshot, and would otherwise wait for its own migrator's lock forever.

   This is what makes the lock survive a **connection pooler in transaction mode** (PgBouncer
   ``pool_mode = transaction``): the pooler pins a server connection to a client for exactly
   as long as the client's transaction is open, so the lock and its transaction stay on one
   server connection, and nothing outlives the transaction to leak to the pooler's next client
   (a *session* advisory lock would: taken on one server connection and "released" on another,
   it serialises nothing). Waiters never block in the server: each poll is a short transaction
   (``pg_try_advisory_xact_lock``, then rollback) followed by a sleep with exponential backoff
   and jitter, capped at :data:`POLL_CAP` seconds, so a waiter holds a pooler slot only for a
   moment and a crowd cannot exhaust a small pool while the holder needs it. The same code runs
   on a direct connection: one lock implementation for PostgreSQL.

   Advisory lock keys are cluster-wide, so the key is derived from the database's name as the
   server reports it (``current_database()``, the same behind a pooler alias): migrations of
   two databases on one server do not wait for each other. When ``SCHEMA_LOCK_TIMEOUT``
   expires, :class:`~ai_secretary_schema.errors.MigrationLockTimeout` names the process holding
   the lock and how to find and end it. Before polling, the server's ``version()`` is checked:
   a server that only looks like PostgreSQL (CockroachDB, YugabyteDB), whose advisory locks lock
   nothing, is refused (:mod:`ai_secretary_schema.server`).

   The pooler must let a transaction stay idle for the length of a migration (PgBouncer's
   ``idle_transaction_timeout``, default 0: off) and must pass ``current_database()`` through
   unchanged (it does).
3. **SQLite file: an exclusive** ``flock`` on a sidecar file ``<database>.migrate.lock`` next to
   the database. The kernel drops an ``flock`` when the process holding it dies, ``kill -9``
   included, so a crashed upgrade never leaves a stale lock behind (a lock *file* whose mere
   existence meant "locked" would). The sidecar file is left in place on purpose: deleting it
   while another process waits on it would let a third process lock a new file beside it. An
   in-memory database is private to its process and needs only the process-wide lock.

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
import random
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError

from ai_secretary_schema.connection import RetryPolicy, classify_connection_error
from ai_secretary_schema.engine import create_engine, sqlite_file_path
from ai_secretary_schema.errors import DatabaseConnectionError, MigrationLockTimeout
from ai_secretary_schema.redaction import redact_text, redact_url, url_password
from ai_secretary_schema.server import VERSION_QUERY, refuse_unsafe_server
from ai_secretary_schema.settings import SchemaSettings

logger = logging.getLogger(__name__)

#: Serialises the migrations of one process (Alembic's command API is not thread-safe).
PROCESS_LOCK = threading.RLock()

#: Suffix of the sidecar file locked while a SQLite database is migrated.
SQLITE_LOCK_SUFFIX = ".migrate.lock"

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
    module's documentation for what the lock is on each dialect, and why it holds behind a
    pooler in transaction mode on PostgreSQL.
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

#: The longest sleep between two polls of a waiter (seconds): a freed lock is taken within it.
POLL_CAP = 0.5
#: Backoff between polls: 10 ms, doubling, up to :data:`POLL_CAP`, each scaled by a random
#: factor in [0.5, 1] so that a crowd of waiters does not poll in step.
POLL_BACKOFF = RetryPolicy(initial_delay=0.01, multiplier=2.0, max_delay=POLL_CAP, jitter=0.5)


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
        f"SELECT pid, application_name, client_addr, state, xact_start FROM pg_stat_activity "
        f"WHERE pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted); "
        f"if it is stuck, end it with SELECT pg_terminate_backend(<pid>). Raise "
        f"SCHEMA_LOCK_TIMEOUT if migrations legitimately take longer (lock key {key})."
    )


@contextmanager
def _postgresql_lock(
    url: URL, settings: SchemaSettings, timeout: float, deadline: float
) -> Iterator[None]:
    """Hold the advisory lock of ``url``'s database in an open transaction of a connection of
    its own for the ``with`` block (see the module's documentation)."""
    engine = create_engine(url, settings, pooled=False)
    try:
        try:
            # READ COMMITTED whatever the server's default: between statements its idle
            # transaction then holds no snapshot, so CREATE INDEX CONCURRENTLY in the migration
            # (which waits for older snapshots) and VACUUM never wait for the lock's holder.
            connection = engine.connect().execution_options(isolation_level="READ COMMITTED")
        except DBAPIError as error:
            raise DatabaseConnectionError(
                f"cannot connect to {redact_url(url)} to take the migration lock: "
                f"{redact_text(str(error.orig), [url_password(url)])}",
                kind=classify_connection_error(error).kind,
                url=redact_url(url),
            ) from None
        try:
            key = _check_server(connection, url, settings)
            _acquire_xact_lock(connection, url, key, timeout, deadline)
            logger.info("took the migration lock of %s (advisory key %d)", redact_url(url), key)
            try:
                yield
            finally:
                _release_xact_lock(connection, key)
        finally:
            connection.close()
    finally:
        engine.dispose()


def _check_server(connection: Connection, url: URL, settings: SchemaSettings) -> int:
    """Refuse a look-alike server; return the lock key of the database the server reports."""
    version, database = connection.execute(sa.text(f"{VERSION_QUERY}, current_database()")).one()
    connection.rollback()
    refuse_unsafe_server(str(version), url, settings)
    return advisory_lock_key(str(database))


def _acquire_xact_lock(
    connection: Connection, url: URL, key: int, timeout: float, deadline: float
) -> None:
    """Poll until the lock is taken; on return the transaction that holds it is open."""
    rng = random.Random()
    attempt = 0
    while True:
        attempt += 1
        # One statement: the transaction is made immune to a server-wide
        # idle_in_transaction_session_timeout (it idles for the whole migration) and the lock
        # is tried; pg_try_* never waits in the server, so a waiter never pins a pooler slot.
        got = connection.execute(
            sa.text(
                "SELECT set_config('idle_in_transaction_session_timeout', '0', true), "
                "pg_try_advisory_xact_lock(:key)"
            ),
            {"key": key},
        ).one()[1]
        if got:
            return
        remaining = deadline - time.monotonic()
        if attempt == 1 or remaining <= 0:
            holders = _lock_holders(connection, key)
            if remaining <= 0:
                connection.rollback()
                raise MigrationLockTimeout(
                    _timeout_message(url, key, timeout, holders), timeout=timeout
                )
            logger.info(
                "waiting up to %.1f s for the migration lock of %s (held by pid %s)",
                remaining,
                redact_url(url),
                ", ".join(map(str, holders)) or "?",
            )
        # End the short transaction before sleeping: behind a pooler in transaction mode this
        # hands the server connection back to the pool.
        connection.rollback()
        time.sleep(min(POLL_BACKOFF.delay(attempt, rng), max(remaining, 0.0)))


def _release_xact_lock(connection: Connection, key: int) -> None:
    try:
        # Ending the transaction releases a transaction-scoped advisory lock.
        connection.rollback()
    except DBAPIError:
        # The connection is gone (server restart, network): the server ended the transaction
        # and released the lock with it, possibly before the migration ended.
        logger.warning(
            "the migration lock's connection ended before the migration did (advisory key %d): "
            "another process may have taken the lock meanwhile; check the database's revision",
            key,
        )


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
