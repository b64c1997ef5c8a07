"""The warm start: skip the startup work only when it is proven that nothing changed.

A worker that starts against a database already at head should pay little more than connecting
and looking. The full path (import Alembic, read every revision file, run ``compare_metadata``)
costs far more than that, so its answer is remembered, and a later start reuses it only when
everything that answer depended on is provably the same:

* **the database**, by :func:`catalog_fingerprint`: one query returns everything the comparison
  looks at for the package's tables (columns with their types, nullability, server defaults,
  identity, collation and comments; indexes; primary key, unique, foreign-key and check
  constraints; on PostgreSQL row-level security, forced or not, and every policy) plus the rows
  of ``alembic_version``, and that text is hashed. No rule about
  what "matches" is written here: a fingerprint only ever hits if that exact catalog once passed
  Alembic's own comparison, so the warm start can never be more lenient than the full path.
* **the code that compared it**, by a package key: the name, size and ``mtime_ns`` of every file
  of the installed package and of the script directory, the installed SQLAlchemy and Alembic
  installations (which files, of what size and age: not their metadata, whose import alone
  costs 15 ms), the script directory's path and the table names. A new revision, an edited model or
  an upgraded library is a new key, with nothing remembered under it yet.

:class:`WarmStart` keeps, per package key, the fingerprints that passed (a bounded list: one
installation may serve several databases) in a JSON file under the user's cache directory,
``$AI_SECRETARY_SCHEMA_CACHE_DIR``, else ``$XDG_CACHE_HOME/ai-secretary-schema``, else
``~/.cache/ai-secretary-schema``; nothing is ever written inside the installed package. A cache
that cannot be read or written only costs speed. As in Git's "racy clean" problem, a file
modified within :data:`RACY_WINDOW_NS` of the moment the key is taken could change again within
the same timestamp tick without changing its size or mtime, so such a key is used for look-ups but
nothing is stored under it.

Only the SQLAlchemy core and the standard library are imported: a warm start that hits never
loads Alembic, the ORM, the models or Flask.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import sys
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import sqlalchemy as sa
from sqlalchemy import Connection, MetaData
from sqlalchemy.engine import Dialect

import ai_secretary_schema

__all__ = [
    "CACHE_DIR_ENV",
    "MAX_REMEMBERED",
    "RACY_WINDOW_NS",
    "WarmCheck",
    "WarmStart",
    "cache_directory",
    "catalog_fingerprint",
]

logger = logging.getLogger(__name__)

#: When set, the directory the warm-start cache files are read from and written to.
CACHE_DIR_ENV = "AI_SECRETARY_SCHEMA_CACHE_DIR"

#: A package key taken while one of its files is younger than this is never stored under.
RACY_WINDOW_NS = 2_000_000_000

#: How many passing fingerprints one package key remembers (the most recent are kept).
MAX_REMEMBERED = 32

#: Cache files of other package keys not rewritten for this long are deleted when one is written.
STALE_AFTER_S = 30 * 86_400

# Bumped whenever what is hashed (here or in the queries) changes meaning, so that an old cache
# file can never vouch for a fingerprint computed a new way.
_FORMAT = 2
_CACHE_APP_DIR = "ai-secretary-schema"
_CACHE_PREFIX = "warm-"

# One round trip for the whole catalog of the given tables. Every part is rendered through
# quote_nullable so that concat_ws, which skips NULLs, cannot make two different rows read the
# same; the lines are sorted in the "C" collation so that their order does not depend on the
# database's locale. Nothing that changes on its own (statistics, sequence positions) is read,
# or every start would miss.
_PG_CATALOG = """\
WITH rel AS (
    SELECT c.oid, c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity, c.relowner
    FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname = current_schema() AND c.relname IN :tables
),
lines AS (
    SELECT concat_ws(' ', 'table', quote_nullable(r.relname), quote_nullable(r.relkind::text),
                     quote_nullable(d.description),
                     -- Row-level security and the owner its cross-tenant policy names are
                     -- compared by the schema report: a change there is a change here.
                     r.relrowsecurity::text, r.relforcerowsecurity::text,
                     quote_nullable(pg_get_userbyid(r.relowner)::text)) AS line
    FROM rel AS r
    LEFT JOIN pg_catalog.pg_description AS d
        ON d.objoid = r.oid AND d.classoid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0
    UNION ALL
    SELECT concat_ws(' ', 'column', quote_nullable(r.relname), a.attnum::text,
                     quote_nullable(a.attname::text),
                     quote_nullable(format_type(a.atttypid, a.atttypmod)),
                     a.attnotnull::text,
                     quote_nullable(pg_get_expr(ad.adbin, ad.adrelid)),
                     quote_nullable(a.attidentity::text),
                     quote_nullable(a.attgenerated::text),
                     quote_nullable(coll.collname::text),
                     quote_nullable(d.description),
                     quote_nullable(t.typtype::text),
                     -- SQLAlchemy reflects a domain as its base type, with its NOT NULL and
                     -- default, and an enum with its labels: a change there is a change here.
                     quote_nullable(CASE WHEN t.typtype = 'd' THEN concat_ws(' ',
                         format_type(t.typbasetype, t.typtypmod), t.typnotnull::text,
                         quote_nullable(t.typdefault)) END),
                     quote_nullable((SELECT string_agg(e.enumlabel::text, ','
                                                       ORDER BY e.enumsortorder)
                                     FROM pg_catalog.pg_enum AS e
                                     WHERE e.enumtypid = a.atttypid))) AS line
    FROM rel AS r
    JOIN pg_catalog.pg_attribute AS a
        ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_catalog.pg_attrdef AS ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    LEFT JOIN pg_catalog.pg_collation AS coll ON coll.oid = a.attcollation
    LEFT JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
    LEFT JOIN pg_catalog.pg_description AS d
        ON d.objoid = r.oid AND d.classoid = 'pg_catalog.pg_class'::regclass
        AND d.objsubid = a.attnum
    UNION ALL
    SELECT concat_ws(' ', 'index', quote_nullable(r.relname),
                     quote_nullable(pg_get_indexdef(i.indexrelid)),
                     i.indisvalid::text, i.indisready::text) AS line
    FROM rel AS r
    JOIN pg_catalog.pg_index AS i ON i.indrelid = r.oid
    UNION ALL
    SELECT concat_ws(' ', 'constraint', quote_nullable(r.relname),
                     quote_nullable(co.conname::text), quote_nullable(co.contype::text),
                     quote_nullable(pg_get_constraintdef(co.oid))) AS line
    FROM rel AS r
    JOIN pg_catalog.pg_constraint AS co ON co.conrelid = r.oid
    UNION ALL
    SELECT concat_ws(' ', 'policy', quote_nullable(r.relname), quote_nullable(p.polname::text),
                     quote_nullable(p.polcmd::text), p.polpermissive::text,
                     quote_nullable((SELECT string_agg(CASE WHEN role.oid = 0 THEN 'public'
                                                       ELSE pg_get_userbyid(role.oid)::text END,
                                                       ',' ORDER BY role.oid)
                                     FROM unnest(p.polroles) AS role(oid))),
                     quote_nullable(pg_get_expr(p.polqual, p.polrelid)),
                     quote_nullable(pg_get_expr(p.polwithcheck, p.polrelid))) AS line
    FROM rel AS r
    JOIN pg_catalog.pg_policy AS p ON p.polrelid = r.oid
    UNION ALL
    -- Identity options are reflected and compared; the sequence's position is not read.
    SELECT concat_ws(' ', 'sequence', quote_nullable(r.relname),
                     quote_nullable(a.attname::text), dep.deptype::text,
                     format_type(s.seqtypid, NULL), s.seqstart::text, s.seqincrement::text,
                     s.seqmin::text, s.seqmax::text, s.seqcache::text, s.seqcycle::text) AS line
    FROM rel AS r
    JOIN pg_catalog.pg_depend AS dep
        ON dep.refobjid = r.oid AND dep.refclassid = 'pg_catalog.pg_class'::regclass
        AND dep.classid = 'pg_catalog.pg_class'::regclass AND dep.deptype IN ('a', 'i')
    JOIN pg_catalog.pg_sequence AS s ON s.seqrelid = dep.objid
    JOIN pg_catalog.pg_attribute AS a
        ON a.attrelid = r.oid AND a.attnum = dep.refobjsubid
)
SELECT current_setting('server_version_num') AS server_version,
       ARRAY(SELECT v.version_num::text FROM alembic_version AS v) AS versions,
       (SELECT string_agg(l.line, E'\\n' ORDER BY l.line COLLATE "C") FROM lines AS l)
           AS catalog
"""

# SQLAlchemy reflects a SQLite table from its CREATE statements (PRAGMA table_xinfo, index_list
# and foreign_key_list all derive from them), so those texts are the whole catalog.
_SQLITE_CATALOG = """\
SELECT 'object', type, name, tbl_name, sql FROM sqlite_master WHERE tbl_name IN :tables
UNION ALL
SELECT 'version', version_num, NULL, NULL, NULL FROM alembic_version
UNION ALL
SELECT 'sqlite', sqlite_version(), NULL, NULL, NULL
"""


@dataclass(frozen=True)
class _Catalog:
    text: str
    current: tuple[str, ...]


def _table_names(tables: Collection[str]) -> list[str]:
    # A str is a Collection[str]: "users" would silently fingerprint the tables "u", "s", ...
    if isinstance(tables, str):
        raise TypeError(f"tables must be a collection of table names, not the string {tables!r}")
    return sorted(set(tables))


def _read_catalog(connection: Connection, tables: Collection[str]) -> _Catalog:
    names = _table_names(tables)
    dialect = connection.dialect
    head: list[Any] = [_FORMAT, dialect.name, dialect.driver, names]
    if dialect.name == "postgresql":
        statement = sa.text(_PG_CATALOG).bindparams(sa.bindparam("tables", expanding=True))
        row = connection.execute(statement, {"tables": names}).one()
        current = tuple(sorted(row.versions))
        body: Any = [row.server_version, list(current), row.catalog]
    elif dialect.name == "sqlite":
        statement = sa.text(_SQLITE_CATALOG).bindparams(sa.bindparam("tables", expanding=True))
        rows = [list(row) for row in connection.execute(statement, {"tables": names})]
        current = tuple(sorted(str(row[1]) for row in rows if row[0] == "version"))
        # json.dumps keeps NULL and '' apart, and sorting makes the rows' order irrelevant.
        body = sorted(json.dumps(row, ensure_ascii=False) for row in rows)
    else:
        raise NotImplementedError(
            f"no catalog fingerprint for the {dialect.name} dialect: every start takes the "
            "full path"
        )
    return _Catalog(json.dumps([*head, body], ensure_ascii=False), current)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def catalog_fingerprint(connection: Connection, tables: Collection[str]) -> str:
    """One query. A hex digest of everything Alembic's comparison looks at for ``tables``.

    That is: the tables, columns, types, nullability, server defaults, identity and collation,
    comments, indexes, primary-key, unique, foreign-key and check constraints, and (PostgreSQL)
    row-level security, forced or not, the owner and every policy of those of
    ``tables`` that exist in the default schema, plus the rows of ``alembic_version``, the
    dialect and driver names and the server's version. A table that does not exist simply
    contributes nothing, so dropping one changes the digest.

    Raises SQLAlchemy's errors as they come (e.g. there is no ``alembic_version`` table): the
    caller treats any exception as a miss and must roll back its transaction. Raises
    :class:`NotImplementedError` for a dialect other than PostgreSQL and SQLite.
    """
    return _digest(_read_catalog(connection, tables).text)


@dataclass(frozen=True)
class WarmCheck:
    """The outcome of :meth:`WarmStart.check`."""

    hit: bool
    #: The rows of ``alembic_version`` when the query succeeded.
    current: tuple[str, ...]
    #: The heads remembered with the fingerprint, on a hit.
    heads: tuple[str, ...]
    #: Why it missed (or what hit), for a debug log line.
    reason: str
    #: The fingerprint computed, or None if the query failed.
    fingerprint: str | None


@dataclass(frozen=True)
class _PackageKey:
    digest: str
    #: A file is too recent for its timestamp to prove, later, that it has not changed since.
    racy: bool


def cache_directory() -> Path:
    """Where the warm-start cache files are kept (see the module's documentation)."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / _CACHE_APP_DIR


def _package_dir() -> Path:
    origin = ai_secretary_schema.__file__
    if origin is None:  # pragma: no cover - a namespace package, not an installed one
        raise OSError("the ai_secretary_schema package has no __file__ to find its files by")
    return Path(origin).resolve().parent


def _files(root: Path) -> list[tuple[str, int, int]]:
    """(path relative to ``root``, size, mtime_ns) of every file below it, bytecode excepted."""

    def fail(error: OSError) -> None:
        raise error

    found: list[tuple[str, int, int]] = []
    # os.walk swallows errors unless told otherwise; an unreadable directory must not be
    # fingerprinted as an empty one.
    for directory, subdirectories, files in os.walk(root, onerror=fail):
        subdirectories[:] = [name for name in subdirectories if name != "__pycache__"]
        for name in files:
            path = os.path.join(directory, name)
            stat = os.stat(path)
            found.append((os.path.relpath(path, root), stat.st_size, stat.st_mtime_ns))
    return sorted(found)


def _installed_library(module: str) -> str:
    """Which installation of ``module`` this is, without importing it: its ``__init__.py``'s
    path, size and mtime (an upgrade or reinstall rewrites it). Cheaper than importlib.metadata,
    whose import alone costs a warm start about 15 ms."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return "not installed"
    try:
        stat = os.stat(spec.origin)
    except OSError:
        return f"{spec.origin}: unreadable"
    return f"{spec.origin}:{stat.st_size}:{stat.st_mtime_ns}"


def metadata_digest(metadata: MetaData | None, dialect: Dialect) -> str:
    """A digest of the DDL ``metadata`` describes in ``dialect``: it changes with any model."""
    from sqlalchemy.schema import CreateIndex, CreateTable

    if metadata is None:
        return ""
    parts = []
    for table in metadata.sorted_tables:
        parts.append(str(CreateTable(table).compile(dialect=dialect)))
        parts.extend(
            str(CreateIndex(index).compile(dialect=dialect))
            for index in sorted(table.indexes, key=lambda index: str(index.name))
        )
    return _digest("\n".join(parts))


class WarmStart:
    """Remembers which catalog fingerprints passed a full comparison, per package key.

    ``script_location`` is the Alembic script directory the comparison's heads come from;
    ``tables`` the tables fingerprinted (the package's own). The package key is computed once per
    instance, on first use: the Migrator builds one instance per start, checks, and after a full
    comparison that passed, remembers.
    """

    def __init__(
        self,
        script_location: str | Path,
        tables: Collection[str],
        *,
        extra_roots: Sequence[Path] = (),
        extra_key: str = "",
    ) -> None:
        self.script_location = Path(script_location).resolve()
        self.tables: tuple[str, ...] = tuple(_table_names(tables))
        #: More directories whose files are part of the key (the host application's revisions).
        self.extra_roots = tuple(Path(root).resolve() for root in extra_roots)
        #: More text the key covers (the host's models, as :func:`metadata_digest`).
        self.extra_key = extra_key
        self._key: _PackageKey | None = None

    # -- the package key -------------------------------------------------------------------

    def _compute_key(self) -> _PackageKey:
        now = time.time_ns()
        # In an installed wheel the script directory lies inside the package and is listed
        # twice: that only costs a few stat calls.
        roots = (_package_dir(), self.script_location, *self.extra_roots)
        trees = [(str(root), _files(root)) for root in roots]
        racy = any(
            abs(now - mtime_ns) < RACY_WINDOW_NS
            for _root, files in trees
            for _name, _size, mtime_ns in files
        )
        described = {
            "format": _FORMAT,
            "python": list(sys.version_info[:2]),
            "sqlalchemy": [sa.__version__, _installed_library("sqlalchemy")],
            "alembic": _installed_library("alembic"),
            "script_location": str(self.script_location),
            "tables": list(self.tables),
            "files": trees,
            "extra": self.extra_key,
        }
        return _PackageKey(_digest(json.dumps(described, ensure_ascii=False)), racy)

    def _package_key(self) -> _PackageKey:
        if self._key is None:
            self._key = self._compute_key()
        return self._key

    @property
    def cache_path(self) -> Path:
        """The cache file of this package key (computing the key if not done yet)."""
        return cache_directory() / f"{_CACHE_PREFIX}{self._package_key().digest[:32]}.json"

    # -- the cache file --------------------------------------------------------------------

    def _load(self, key: _PackageKey) -> tuple[dict[str, Any] | None, str]:
        """The cache file's content when it is a well-formed file for ``key``, else None and
        why not."""
        path = self.cache_path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None, "no cache entry"
        except (OSError, ValueError) as exc:
            logger.debug("ignoring the unreadable warm-start cache %s: %s", path, exc)
            return None, f"cache file unreadable: {exc}"
        if not _well_formed(data, key.digest):
            logger.debug("ignoring the malformed warm-start cache %s", path)
            return None, "cache file malformed"
        return data, ""

    def _write(self, data: dict[str, Any]) -> None:
        # Imported here: only the slow path writes, and a hit should not pay for tempfile.
        import tempfile

        path = self.cache_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write-then-rename: a worker reading concurrently sees the old file or the new one,
            # never half of one. Two writers at once: the last one wins, which is only a miss.
            fd, tmp = tempfile.mkstemp(prefix=".warm-", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(data, handle, ensure_ascii=False)
                # mkstemp makes the file 0600: a cache written by root at image build time must
                # stay readable by the user the workers run as.
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            logger.debug("cannot write the warm-start cache %s: %s", path, exc)
            return
        _prune(path)

    # -- the interface ---------------------------------------------------------------------

    def check(self, connection: Connection) -> WarmCheck:
        """Compute the catalog fingerprint; hit iff it is one remembered for this package key.

        A transaction this method begins on ``connection`` is rolled back before it returns,
        including after a failed query; one the caller had begun is left as it is (after a
        failed query on PostgreSQL the caller must roll it back).
        """
        try:
            key = self._package_key()
        except OSError as exc:
            return WarmCheck(False, (), (), f"cannot list the package files: {exc}", None)
        began = not connection.in_transaction()
        try:
            catalog = _read_catalog(connection, self.tables)
        except (sa.exc.SQLAlchemyError, NotImplementedError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return WarmCheck(
                False, (), (), f"query failed: {type(exc).__name__}: {first_line}", None
            )
        finally:
            if began and connection.in_transaction():
                connection.rollback()
        fingerprint = _digest(catalog.text)
        data, why_not = self._load(key)
        if data is None:
            return WarmCheck(False, catalog.current, (), why_not, fingerprint)
        heads = tuple(data["heads"])
        entry = next((e for e in data["passed"] if e["fingerprint"] == fingerprint), None)
        if entry is None:
            return WarmCheck(False, catalog.current, (), "fingerprint not known", fingerprint)
        current = tuple(entry["current"])
        recorded = tuple(entry.get("recorded", current))
        # Both follow from the fingerprint and from remember(); a hand-edited cache file must
        # still not let a database that is not at head pass.
        if recorded != catalog.current or sorted(heads) != sorted(current):
            return WarmCheck(False, catalog.current, (), "cache entry inconsistent", fingerprint)
        return WarmCheck(True, current, heads, "fingerprint passed before", fingerprint)

    def remember(
        self,
        fingerprint: str,
        heads: tuple[str, ...],
        current: tuple[str, ...],
        *,
        recorded: tuple[str, ...] | None = None,
    ) -> None:
        """Record that ``fingerprint`` passed a full comparison at ``heads``.

        ``recorded`` are the rows of the version table when they differ from ``current``
        (with the host application's history, a package revision a host revision depends on
        is recorded only through it).

        Called after ``build_schema_report(...).ok``, with the fingerprint taken before and after
        the comparison equal. Nothing is stored when a package or script file changed since this
        instance first computed the package key (the comparison may have read the new files or
        the old), or when one is too recent to vouch for (:data:`RACY_WINDOW_NS`). Raises
        :class:`ValueError` when ``current`` is not ``heads``: only a database at head passes.
        """
        if not heads or sorted(current) != sorted(heads):
            raise ValueError(
                f"only a database at head can be remembered: at {list(current)}, "
                f"heads {list(heads)}"
            )
        try:
            before = self._package_key()
            after = self._compute_key()
        except OSError as exc:
            logger.debug("cannot list the package files, nothing remembered: %s", exc)
            return
        if after.digest != before.digest:
            logger.debug("package or script files changed during the comparison: not remembered")
            self._key = after
            return
        if after.racy:
            logger.debug("package or script files changed moments ago: not remembered yet")
            return
        data, _why_not = self._load(before)
        passed: list[dict[str, Any]] = []
        if data is not None and tuple(data["heads"]) == tuple(heads):
            passed = [entry for entry in data["passed"] if entry["fingerprint"] != fingerprint]
        entry: dict[str, Any] = {"fingerprint": fingerprint, "current": sorted(current)}
        if recorded is not None and sorted(recorded) != sorted(current):
            entry["recorded"] = sorted(recorded)
        passed.append(entry)
        self._write(
            {
                "format": _FORMAT,
                "key": before.digest,
                "script_location": str(self.script_location),
                "tables": list(self.tables),
                "heads": list(heads),
                "passed": passed[-MAX_REMEMBERED:],
            }
        )


def _well_formed(data: Any, key: str) -> TypeGuard[dict[str, Any]]:
    if not (
        isinstance(data, dict)
        and data.get("format") == _FORMAT
        and data.get("key") == key
        and _strings(data.get("heads"))
        and isinstance(data.get("passed"), list)
    ):
        return False
    return all(
        isinstance(entry, dict)
        and isinstance(entry.get("fingerprint"), str)
        and _strings(entry.get("current"))
        and _strings(entry.get("recorded", []))
        for entry in data["passed"]
    )


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _prune(keep: Path) -> None:
    """Delete the cache files of package keys nobody wrote to in :data:`STALE_AFTER_S`.

    Every edit of a package or revision file makes a new key: without this, a developer's cache
    directory would grow by a file per edit.
    """
    cutoff = time.time() - STALE_AFTER_S
    try:
        stale = [
            path
            for path in keep.parent.glob(f"{_CACHE_PREFIX}*.json")
            if path != keep and path.stat().st_mtime < cutoff
        ]
        for path in stale:
            path.unlink(missing_ok=True)
    except OSError as exc:
        logger.debug("cannot prune the warm-start cache directory %s: %s", keep.parent, exc)
