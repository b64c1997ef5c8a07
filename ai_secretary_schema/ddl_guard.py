"""Migrations that never stall a live PostgreSQL: a lock timeout per revision, whole-revision retry.

Why
    ``ALTER TABLE users …`` needs an ACCESS EXCLUSIVE lock. While it waits for it behind one long
    read, every query that arrives after it queues behind the ALTER: a 5-second report stalls all
    traffic on ``users`` for 5 s, while the previous release still serves it (the startup hook
    migrates then). Neither Alembic nor Flask-Migrate does anything about it.

What
    For every online run that writes the version table on PostgreSQL (upgrade, downgrade, from
    every door: env.py runs the migrations through :func:`run_migrations`):

    1. Each revision's transaction starts with ``SET LOCAL lock_timeout``
       (``SCHEMA_DDL_LOCK_TIMEOUT``, default 5 s) and, when configured, ``SET LOCAL
       statement_timeout`` (``SCHEMA_DDL_STATEMENT_TIMEOUT``, default none), sent as
       ``set_config(name, value, true)``, which is ``SET LOCAL``. Local: they end with the
       revision's transaction, so nothing leaks to the session, or behind a pooler to the
       pooler's next client.
    2. A statement that waits longer fails with SQLSTATE 55P03 (``lock_not_available``), and
       the waiting queries behind it proceed. The revision's transaction is rolled back whole
       (env.py runs each revision in a transaction of its own), so the database is at the
       revision before it; the revision is retried after an exponential backoff with jitter,
       up to ``SCHEMA_DDL_RETRIES`` times (default 5), the migration lock held throughout.
       Alembic reads the database's revision afresh each time the migrations are run, so a
       retry continues where the failure left off.
    3. While a revision runs, a watcher asks from another connection, every half lock timeout,
       who blocks the migration's backend (``pg_blocking_pids`` joined to ``pg_stat_activity``:
       once the statement has failed, nothing waits any more and there is nobody left to ask
       about). Each retry logs them once, at WARNING: pid, application name, state, age and the
       first characters of the query with every literal left out (:func:`strip_literals`).
    4. Retries spent: :class:`~ai_secretary_schema.errors.MigrationBlockedError`, naming the
       revision, the blockers and the revision the database was left at.

    A retry is refused, with the same error and a message saying why, when the blocked revision
    had already committed part of its work (an ``autocommit_block()``: it cannot be rolled back
    whole), and when an earlier revision of the run has committed and the destination is
    relative (``+1``, ``-1``: retrying would overshoot; use an absolute revision).

Per revision
    A revision module may set its own values (read when the run starts)::

        ddl_lock_timeout = 30  # seconds for this revision; None: the server's own setting
        ddl_statement_timeout = 600  # seconds; None or 0: no limit
        ddl_retries = 0  # never retry this revision

``CREATE INDEX CONCURRENTLY`` and ``op.get_context().autocommit_block()``
    The block commits the revision's transaction so far (its ``SET LOCAL`` values end with it)
    and runs its statements outside any transaction, where no ``SET LOCAL`` can apply: inside the
    block the session's own ``lock_timeout`` applies (the server's default, normally none). That
    is on purpose: ``CREATE INDEX CONCURRENTLY`` takes a SHARE UPDATE EXCLUSIVE lock, which
    queues no reads or writes, and one interrupted by a timeout leaves an INVALID index behind.
    After the block, the revision continues in a new transaction, which gets the revision's
    ``SET LOCAL`` values again. A revision with such a block is retried only when it is blocked
    before the block commits.

Never for
    Offline ``--sql`` runs and read-only runs (current, check, autogenerate): nothing is set or
    watched. SQLite has no lock timeout: the settings are ignored there, with a DEBUG line.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any, TextIO

import sqlalchemy as sa
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ai_secretary_schema.connection import RetryPolicy
from ai_secretary_schema.engine import create_engine
from ai_secretary_schema.errors import MigrationBlockedError, MigrationError
from ai_secretary_schema.redaction import redact_url
from ai_secretary_schema.settings import SchemaSettings

logger = logging.getLogger(__name__)

#: SQLSTATE ``lock_not_available``: a lock wait ran out of ``lock_timeout`` (or met ``NOWAIT``).
LOCK_NOT_AVAILABLE = "55P03"
#: Characters of a blocker's query shown, after its literals are left out.
QUERY_PREVIEW = 120
#: Backoff before retry n of a blocked revision: 0.5 s, doubling, at most 8 s, each scaled by a
#: random factor in [0.5, 1] so that the retries of several migrators do not fall in step.
RETRY_BACKOFF = RetryPolicy(initial_delay=0.5, multiplier=2.0, max_delay=8.0, jitter=0.5)
#: Milliseconds the watcher's own query may take (it must never hang a migration).
WATCH_QUERY_TIMEOUT_MS = 2000
#: The watcher asks at most this often (seconds), however short the lock timeout.
MIN_WATCH_INTERVAL = 0.05

#: The revision attributes that override the settings, with the settings they override.
REVISION_ATTRIBUTES = {
    "ddl_lock_timeout": "SCHEMA_DDL_LOCK_TIMEOUT",
    "ddl_statement_timeout": "SCHEMA_DDL_STATEMENT_TIMEOUT",
    "ddl_retries": "SCHEMA_DDL_RETRIES",
}

_BLOCKERS_SQL = sa.text(
    "SELECT a.pid, COALESCE(a.application_name, ''), COALESCE(a.state, ''), "
    "EXTRACT(EPOCH FROM clock_timestamp() - "
    "COALESCE(a.xact_start, a.query_start, a.backend_start)), COALESCE(a.query, '') "
    "FROM pg_stat_activity AS a WHERE a.pid = ANY (pg_blocking_pids(:pid)) "
    "ORDER BY COALESCE(a.xact_start, a.query_start, a.backend_start)"
)

# -- blockers ------------------------------------------------------------------------------------

# What may hold a secret in a query's text: every literal and every comment. Double-quoted
# identifiers are matched first, and kept, so that a quote inside one does not start a string.
# Anything cut short (pg_stat_activity truncates long queries) is stripped to the end: when in
# doubt, more is left out, never less.
_LITERAL = re.compile(
    r"""
    (?P<identifier>"(?:[^"]|"")*")
  | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
  | \$(?P<tag>(?:[A-Za-z_][A-Za-z_0-9]*)?)\$.*?(?:\$(?P=tag)\$|\Z)
  | (?:[EeBbXxNn]|[Uu]&)?'(?:''|\\.|[^'\\])*(?:'|\Z)
  | (?<![\w$])(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?
    """,
    re.VERBOSE | re.DOTALL,
)


def strip_literals(query: str, limit: int = QUERY_PREVIEW) -> str:
    """``query`` with every literal (quoted, dollar-quoted, numeric) replaced by ``?`` and its
    comments left out, on one line, cut to ``limit`` characters."""

    def replace_match(match: re.Match[str]) -> str:
        if match.group("identifier") is not None:
            return match.group(0)
        return " " if match.group("comment") is not None else "?"

    text = " ".join(_LITERAL.sub(replace_match, query).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Blocker:
    """A session holding a lock the migration waited for, as ``pg_stat_activity`` showed it."""

    pid: int
    application_name: str
    state: str
    #: Seconds since its transaction (else its query, else its session) started.
    age: float | None
    #: The first characters of its query, literals left out.
    query: str

    def describe(self) -> str:
        age = "?" if self.age is None else f"{self.age:.1f} s"
        return (
            f"pid {self.pid} (application {self.application_name or '-'!r}, "
            f"{self.state or 'state unknown'}, age {age}, query {self.query!r})"
        )


def blockers_of(connection: Connection, pid: int) -> tuple[Blocker, ...]:
    """The sessions that block backend ``pid`` now (none when it waits for nothing)."""
    with connection.begin():
        connection.execute(
            sa.text("SELECT set_config('statement_timeout', :timeout, true)"),
            {"timeout": f"{WATCH_QUERY_TIMEOUT_MS}ms"},
        )
        rows = connection.execute(_BLOCKERS_SQL, {"pid": pid}).all()
    return tuple(
        Blocker(
            pid=int(row[0]),
            application_name=str(row[1])[:64],
            state=str(row[2]),
            age=None if row[3] is None else float(row[3]),
            query=strip_literals(str(row[4])),
        )
        for row in rows
    )


def describe_blockers(blockers: tuple[Blocker, ...]) -> str:
    if not blockers:
        return "a session the watcher did not see (the wait ended before it asked)"
    return "; ".join(blocker.describe() for blocker in blockers)


# -- the policy of one revision ----------------------------------------------------------------


@dataclass(frozen=True)
class DdlPolicy:
    """A revision's lock and statement timeouts (seconds; ``None``: not set) and retries."""

    lock_timeout: float | None
    statement_timeout: float | None
    retries: int

    @classmethod
    def from_settings(cls, settings: SchemaSettings) -> DdlPolicy:
        return cls(
            lock_timeout=settings.schema_ddl_lock_timeout or None,
            statement_timeout=settings.schema_ddl_statement_timeout or None,
            retries=settings.schema_ddl_retries,
        )

    def for_revision(self, module: ModuleType, revision: str) -> DdlPolicy:
        """This policy with the revision module's own ``ddl_*`` attributes taking over."""
        changes: dict[str, Any] = {}
        for attribute, setting in REVISION_ATTRIBUTES.items():
            if not hasattr(module, attribute):
                continue
            value = getattr(module, attribute)
            retries = attribute == "ddl_retries"
            valid_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if retries and isinstance(value, int) and valid_number and value >= 0:
                changes["retries"] = value
            elif not retries and value is None:
                changes[attribute.removeprefix("ddl_")] = None
            elif not retries and valid_number and value >= 0:
                changes[attribute.removeprefix("ddl_")] = float(value) or None
            else:
                example = "0" if retries else "30 (seconds) or None"
                raise MigrationError(
                    f"revision {revision}: {attribute} = {value!r} is not valid; it overrides "
                    f"{setting} for this revision: write, for example, {attribute} = {example}",
                    failed_revision=revision,
                )
        return replace(self, **changes) if changes else self


# -- the guard ---------------------------------------------------------------------------------


@dataclass
class _Step:
    """One run of one revision's migration function."""

    revision: str
    direction: str
    policy: DdlPolicy
    #: A transaction of the revision was committed before it ended (an autocommit_block()).
    committed: bool = False
    blockers: tuple[Blocker, ...] = field(default_factory=tuple)


class _Watch:
    """Asks, every ``interval`` seconds until stopped, who blocks backend ``pid``; keeps the
    last non-empty answer."""

    def __init__(self, connect: Callable[[], Connection], interval: float, pid: int) -> None:
        self.pid = pid
        self._connect = connect
        self._interval = interval
        self._done = threading.Event()
        self._seen: tuple[Blocker, ...] = ()
        self._thread = threading.Thread(target=self._run, name="ais-ddl-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        connection: Connection | None = None
        try:
            while not self._done.wait(self._interval):
                try:
                    if connection is None:
                        connection = self._connect()
                    found = blockers_of(connection, self.pid)
                except SQLAlchemyError as error:
                    logger.debug("could not ask who blocks pid %d: %s", self.pid, error)
                    if connection is not None:
                        connection.invalidate()
                        connection = None
                    continue
                if found:
                    self._seen = found
        finally:
            if connection is not None:
                connection.close()

    def stop(self) -> tuple[Blocker, ...]:
        self._done.set()
        # A watcher stuck on a slow connect must not hold the migration up; it ends on its own.
        self._thread.join(timeout=2.0)
        return self._seen


class DdlGuard:
    """Runs one online migration run on PostgreSQL under the lock timeout and retries (see the
    module's documentation). ``progress`` is the stream each revision is reported to, if any: a
    retry ends its line there."""

    def __init__(
        self,
        env: EnvironmentContext,
        settings: SchemaSettings,
        *,
        progress: TextIO | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.env = env
        self.context: MigrationContext = env.get_context()
        connection = self.context.connection
        assert connection is not None
        self.connection = connection
        self.settings = settings
        self.policy = DdlPolicy.from_settings(settings)
        self.where = redact_url(connection.engine.url)
        self.progress = progress
        self._rng = rng or random.Random()
        self._step: _Step | None = None
        self._watch_engine: Engine | None = None
        self._lock = threading.Lock()

    # -- running ------------------------------------------------------------------------------

    def run(self) -> None:
        originals = self._wrap_revisions()
        try:
            self._run_with_retries()
        finally:
            for module, name, original in originals:
                setattr(module, name, original)
            if self._watch_engine is not None:
                self._watch_engine.dispose()

    def _run_with_retries(self) -> None:
        retried: dict[tuple[str, str], int] = {}
        destination = str(self.context.opts.get("destination_rev"))
        while True:
            before = tuple(self.context.get_current_heads())
            self._step = None
            try:
                self.env.run_migrations()
                return
            except DBAPIError as error:
                step = self._step
                if step is None or _sqlstate(error) != LOCK_NOT_AVAILABLE:
                    raise
                reached = tuple(self.context.get_current_heads())
                key = (step.revision, step.direction)
                done = retried.get(key, 0)
                if step.committed:
                    raise self._blocked(step, reached, done + 1, "partial") from error
                if reached != before and _relative(destination):
                    raise self._blocked(step, reached, done + 1, "relative") from error
                if done >= step.policy.retries:
                    raise self._blocked(step, reached, done + 1, "spent") from error
                retried[key] = done + 1
                delay = RETRY_BACKOFF.delay(done + 1, self._rng)
                self._log_retry(step, done + 1, delay)
                time.sleep(delay)

    def _log_retry(self, step: _Step, retry: int, delay: float) -> None:
        if self.progress is not None:
            # The revision's "Running …" line is open on the progress stream: close it.
            self.progress.write("blocked by a lock, rolled back; retrying\n")
            self.progress.flush()
        logger.warning(
            "revision %s (%s) of %s waited longer than %s for a lock and was rolled back; "
            "retry %d of %d in %.2f s, the migration lock held. Blocked by %s",
            step.revision,
            step.direction,
            self.where,
            _limit(step.policy),
            retry,
            step.policy.retries,
            delay,
            describe_blockers(step.blockers),
        )

    def _blocked(
        self, step: _Step, reached: tuple[str, ...], attempts: int, reason: str
    ) -> MigrationBlockedError:
        left = ", ".join(reached) or "base"
        pids = ", ".join(str(blocker.pid) for blocker in step.blockers)
        what = f"revision {step.revision} ({step.direction}) of {self.where}"
        if reason == "partial":
            head = (
                f"{what} was blocked by a lock after it had committed part of its work (an "
                f"autocommit_block()), so it cannot be retried whole"
            )
            fix = (
                f"alembic_version says {left}, but part of revision {step.revision} is "
                f"applied: finish or undo that part by hand (an interrupted CREATE INDEX "
                f"CONCURRENTLY leaves an INVALID index: SELECT indexrelid::regclass FROM "
                f"pg_index WHERE NOT indisvalid; DROP INDEX CONCURRENTLY it), then migrate again."
            )
        elif reason == "relative":
            head = (
                f"{what} was blocked by a lock after earlier revisions of this run had "
                f"committed; retrying it would overshoot the relative destination "
                f"{self.context.opts.get('destination_rev')!r}"
            )
            fix = (
                f"The database was left at revision {left}: migrate again, to an absolute "
                f"revision (an id, head or base)."
            )
        else:
            head = (
                f"{what} could not get its locks within {_limit(step.policy)} in {attempts} "
                f"attempt(s)"
            )
            end = f" (SELECT pg_terminate_backend({pids}) ends it)" if pids else ""
            fix = (
                f"The database was left at revision {left} (the revision was rolled back "
                f"whole). Wait for the blocking session or end it{end}, "
                f"migrate when traffic is lower, or give the revision more time: "
                f"SCHEMA_DDL_LOCK_TIMEOUT and SCHEMA_DDL_RETRIES, or ddl_lock_timeout and "
                f"ddl_retries in the revision."
            )
        return MigrationBlockedError(
            f"{head}; blocked by {describe_blockers(step.blockers)}. {fix}",
            revision=", ".join(reached) or None,
            failed_revision=step.revision,
            blockers=step.blockers,
            attempts=attempts,
        )

    # -- each revision's transaction ----------------------------------------------------------

    def _wrap_revisions(self) -> list[tuple[ModuleType, str, Any]]:
        """Wrap each revision module's ``upgrade``/``downgrade`` so that it runs under its
        policy; returns what to put back. Alembic looks the function up on the module each time
        it builds a step (``RevisionStep.migration_fn``), after this."""
        script = self.env.script
        originals: list[tuple[ModuleType, str, Any]] = []
        for revision in script.walk_revisions():
            module = revision.module
            policy = self.policy.for_revision(module, revision.revision)
            for name in ("upgrade", "downgrade"):
                original = getattr(module, name, None)
                if original is None or getattr(original, "__ais_ddl_guard__", False):
                    continue
                originals.append((module, name, original))
                setattr(module, name, self._guarded(revision.revision, name, policy, original))
        return originals

    def _guarded(
        self, revision: str, direction: str, policy: DdlPolicy, body: Callable[..., Any]
    ) -> Callable[..., Any]:
        @functools.wraps(body)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            step = _Step(revision, direction, policy)
            self._step = step
            with self._guarding(step):
                return body(*args, **kwargs)

        guarded.__ais_ddl_guard__ = True  # type: ignore[attr-defined]
        return guarded

    @contextmanager
    def _guarding(self, step: _Step) -> Iterator[None]:
        connection = self.context.connection
        assert connection is not None
        policy = step.policy
        pid = _apply(connection, policy)
        # Every half lock timeout: any wait that runs out is seen at least once.
        watch = (
            _Watch(self._watch_connection, max(policy.lock_timeout / 2, MIN_WATCH_INTERVAL), pid)
            if policy.lock_timeout is not None
            else None
        )

        def on_begin(conn: Connection) -> None:
            # After an autocommit_block() the revision goes on in a new transaction: give it the
            # revision's values again (and follow its backend: behind a pooler it may change).
            # Inside the block there is no transaction to scope a SET LOCAL to.
            if _autocommit(conn):
                return
            new_pid = _apply(conn, policy)
            if watch is not None:
                watch.pid = new_pid

        def on_commit(conn: Connection) -> None:
            step.committed = True

        event.listen(connection, "begin", on_begin)
        event.listen(connection, "commit", on_commit)
        try:
            yield
        finally:
            event.remove(connection, "begin", on_begin)
            event.remove(connection, "commit", on_commit)
            if watch is not None:
                step.blockers = watch.stop()

    def _watch_connection(self) -> Connection:
        with self._lock:
            if self._watch_engine is None:
                self._watch_engine = create_engine(
                    self.connection.engine.url, self.settings, pooled=False
                )
            engine = self._watch_engine
        return engine.connect()


def _apply(connection: Connection, policy: DdlPolicy) -> int:
    """Set the policy's timeouts in the connection's current transaction (``set_config(…,
    true)`` is ``SET LOCAL``); return the backend's pid, for the watcher."""
    columns = ["pg_backend_pid()"]
    params: dict[str, str] = {}
    for name, seconds in (
        ("lock_timeout", policy.lock_timeout),
        ("statement_timeout", policy.statement_timeout),
    ):
        if seconds is not None:
            # Whole milliseconds, at least 1: 0 would mean "no limit".
            params[name] = f"{max(1, round(seconds * 1000))}ms"
            columns.append(f"set_config('{name}', :{name}, true)")
    row = connection.execute(sa.text(f"SELECT {', '.join(columns)}"), params).one()
    return int(row[0])


def _autocommit(connection: Connection) -> bool:
    if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return True
    return bool(getattr(connection.connection.dbapi_connection, "autocommit", False))


def _sqlstate(error: DBAPIError) -> str | None:
    original = error.orig
    code = getattr(original, "pgcode", None) or getattr(original, "sqlstate", None)
    return code if isinstance(code, str) else None


def _relative(destination: str) -> bool:
    """``+1``, ``-2``, ``ae10+1``, ``heads-1``: a destination counted from where the run is."""
    return re.search(r"[+-]\d+$", destination) is not None


def _limit(policy: DdlPolicy) -> str:
    if policy.lock_timeout is None:
        return "the server's lock_timeout"
    return f"lock_timeout {policy.lock_timeout:g} s"


# -- the entry point -----------------------------------------------------------------------------


def run_migrations(
    env: EnvironmentContext, settings: SchemaSettings, progress: TextIO | None = None
) -> None:
    """Run the migrations of a run that writes the version table: under :class:`DdlGuard` on
    PostgreSQL, as they are elsewhere (``progress``: the stream revisions are reported to)."""
    connection = env.get_context().connection
    dialect = connection.dialect.name if connection is not None else "none"
    if dialect != "postgresql":
        logger.debug(
            "%s has no lock timeout: SCHEMA_DDL_LOCK_TIMEOUT, SCHEMA_DDL_STATEMENT_TIMEOUT and "
            "SCHEMA_DDL_RETRIES apply to PostgreSQL only and are ignored",
            dialect,
        )
        env.run_migrations()
        return
    DdlGuard(env, settings, progress=progress).run()
