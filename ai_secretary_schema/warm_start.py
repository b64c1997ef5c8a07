"""The warm-start check: is the database already at head, with the schema head describes?

A worker that starts against a database which is already migrated should pay little more than
connecting and looking. Plain Alembic cannot know the head without importing every revision file
(about 0.35 ms each, plus 0.3-0.5 s to import ``alembic`` itself), and a full autogenerate
comparison costs tens of milliseconds more. :func:`quick_check` answers the same question from two
cheap facts and never imports Alembic when the answer is yes:

1. **The head, from a cache keyed by the script directory's fingerprint.** The fingerprint hashes
   the name, size and ``mtime_ns`` of every entry of ``versions/`` (one ``os.scandir``, no file is
   read). Adding, removing, renaming or editing a revision file changes it, and the head is then
   recomputed the slow way (Alembic's ``ScriptDirectory``) and the cache rewritten. As in Git's
   "racy clean" problem, a file modified within :data:`RACY_WINDOW_NS` of the check could be
   modified again within the same timestamp tick, so such a fingerprint is used but never stored.
   A history with more than one head never passes.
2. **The schema, from a reflected signature.** The columns (name, type family with the details
   that reflect reliably, nullability), primary keys, foreign keys, indexes and unique
   constraints of the package's tables are reflected with SQLAlchemy's inspector (one catalog
   query per kind on PostgreSQL) on every call and compared with the same signature computed
   from ``Base.metadata``. That expected signature is itself cached per dialect, keyed by the
   size and mtime of ``models.py`` and of this module and by the SQLAlchemy version, so that a
   hit does not import the ORM either (:func:`models_signature`).

Anything unexpected is a miss, never a hit: the caller then takes the full path (lock, upgrade,
full Alembic comparison). The head cache only ever maps a fingerprint to the heads Alembic itself
computed for exactly those files, so a new revision cannot go unapplied; the database is
reflected on every call, so a difference the signature compares cannot pass.

What the signature does not compare, because it does not reflect the same way on SQLite and
PostgreSQL (the full comparison of the startup hook and ``ai-secretary-schema check`` do):
server defaults, CHECK constraints, comments, ``Float`` precision (PostgreSQL reflects
``DOUBLE PRECISION``, SQLite ``FLOAT``), and on SQLite the time zone of ``DateTime`` (SQLite
reflects ``DATETIME`` either way; on PostgreSQL ``TIMESTAMP`` with and without time zone differ).
Tables an application adds to ``Base.metadata`` are not the package's and are not compared.

Where the caches live: ``__pycache__/`` of the script directory (the head) and of the package
(the models' signature) when writable, else ``$XDG_CACHE_HOME/ai-secretary-schema/`` (default
``~/.cache/ai-secretary-schema/``); with ``AI_SECRETARY_SCHEMA_CACHE_DIR`` set, that directory
only. A cache that cannot be written anywhere only costs speed: the
check still answers, after loading the revision files. A container started from a fresh image
each time pays that on its first start unless the caches were written into the image (call
:func:`prime_caches` at build time) or live on a volume.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, MetaData
from sqlalchemy.types import TypeEngine

__all__ = [
    "CACHE_DIR_ENV",
    "CACHE_FILE_NAME",
    "RACY_WINDOW_NS",
    "VERSION_TABLE",
    "ColumnSignature",
    "Signature",
    "TableSignature",
    "WarmCheck",
    "cache_paths",
    "cached_heads",
    "compare_signatures",
    "default_script_location",
    "expected_signature",
    "models_cache_paths",
    "models_signature",
    "prime_caches",
    "quick_check",
    "reflected_signature",
    "versions_fingerprint",
    "warm_check",
]

logger = logging.getLogger(__name__)

#: Alembic's version table (the package's env.py keeps Alembic's default name and schema).
VERSION_TABLE = "alembic_version"

#: Name of the head cache file, in ``<script_location>/__pycache__/`` or the user cache directory.
CACHE_FILE_NAME = "ai-secretary-schema-head.json"

#: When set, the only directory the caches are read from and written to (e.g. a volume).
CACHE_DIR_ENV = "AI_SECRETARY_SCHEMA_CACHE_DIR"

#: A fingerprint whose newest file is younger than this is not stored (see the module docstring).
RACY_WINDOW_NS = 2_000_000_000

_CACHE_FORMAT = 1
_CACHE_APP_DIR = "ai-secretary-schema"


# --------------------------------------------------------------------------------------------
# The head, cached
# --------------------------------------------------------------------------------------------


def default_script_location() -> Path:
    """The package's own script directory, found without importing Alembic.

    The same directory as :func:`ai_secretary_schema.alembic_config.migrations_directory`, which
    cannot be used here because its module imports Alembic.
    """
    from ai_secretary_schema import migrations

    return Path(migrations.__file__).resolve().parent


def _script_path(script_location: str | Path | None) -> Path:
    if script_location is None:
        return default_script_location()
    return Path(script_location).resolve()


@dataclass(frozen=True)
class _Fingerprint:
    digest: str
    #: True when a file is too recent for its timestamp to prove it unchanged later.
    racy: bool


def versions_fingerprint(script_location: str | Path | None = None) -> str:
    """The fingerprint of ``<script_location>/versions``: changes whenever a revision file does."""
    return _fingerprint(_script_path(script_location)).digest


def _fingerprint(script_dir: Path) -> _Fingerprint:
    versions = script_dir / "versions"
    with os.scandir(versions) as scan:
        entries = [(entry.name, entry.stat()) for entry in scan if entry.name != "__pycache__"]
    return _digest(str(versions), entries)


def _digest(header: str, entries: Sequence[tuple[str, os.stat_result]]) -> _Fingerprint:
    """Hash names, sizes and mtimes (sorted); racy when one mtime is about now."""
    now = time.time_ns()
    lines = sorted(f"{name}\0{st.st_size}\0{st.st_mtime_ns}" for name, st in entries)
    racy = any(abs(now - st.st_mtime_ns) < RACY_WINDOW_NS for _name, st in entries)
    digest = hashlib.sha256(f"{_CACHE_FORMAT}\0{header}\n".encode("utf-8", "surrogateescape"))
    for line in lines:
        digest.update(line.encode("utf-8", "surrogateescape"))
        digest.update(b"\n")
    return _Fingerprint(digest.hexdigest(), racy)


def _user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / _CACHE_APP_DIR


def _path_key(path: Path) -> str:
    return hashlib.sha256(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def cache_paths(script_location: str | Path | None = None) -> tuple[Path, ...]:
    """Where the head cache of ``script_location`` is looked for and written, in that order."""
    script_dir = _script_path(script_location)
    name = f"head-{_path_key(script_dir)}.json"
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return (Path(configured) / name,)
    return (script_dir / "__pycache__" / CACHE_FILE_NAME, _user_cache_dir() / name)


def _read_json(paths: Iterable[Path], digest: str) -> dict[str, Any] | None:
    """The first cache file of ``paths`` written for ``digest``, or None."""
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (
            isinstance(data, dict)
            and data.get("format") == _CACHE_FORMAT
            and data.get("fingerprint") == digest
        ):
            return data
    return None


def _write_json(paths: Sequence[Path], payload: Mapping[str, Any]) -> None:
    """Write ``payload`` to the first of ``paths`` that can be written."""
    text = json.dumps({"format": _CACHE_FORMAT, **payload})
    for path in paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write-then-rename: a worker reading concurrently sees the old file or the new one.
            fd, tmp = tempfile.mkstemp(prefix=".cache-", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(text)
                # mkstemp makes the file 0600: a cache written while building an image as root
                # must stay readable by the user the workers run as.
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            logger.debug("cannot write the warm-start cache %s: %s", path, exc)
            continue
        return
    logger.info(
        "the warm-start cache could not be written anywhere (tried %s); every start will "
        "take the slow path",
        ", ".join(str(path) for path in paths),
    )


def _compute_heads(script_dir: Path) -> tuple[str, ...]:
    """The heads the slow way: Alembic imports every revision file."""
    from alembic.script import ScriptDirectory

    return tuple(ScriptDirectory(str(script_dir)).get_heads())


def cached_heads(script_location: str | Path | None = None) -> tuple[str, ...]:
    """The head revision(s) of ``script_location`` (default: the package's migrations).

    Read from the cache when the versions directory is unchanged since it was written (no Alembic
    import, no revision file read); otherwise computed by Alembic and cached. Errors of the slow
    path (a broken revision file, a missing directory) propagate.
    """
    script_dir = _script_path(script_location)
    fingerprint = _fingerprint(script_dir)
    paths = cache_paths(script_dir)
    data = _read_json(paths, fingerprint.digest)
    if data is not None:
        cached = data.get("heads")
        if isinstance(cached, list) and all(isinstance(head, str) for head in cached):
            return tuple(cached)
    heads = _compute_heads(script_dir)
    if fingerprint.racy:
        logger.debug("revision files changed moments ago: the head is not cached this time")
    # Alembic read the files after the fingerprint was taken: if one changed in between, the
    # next call sees a different fingerprint than the one stored here and recomputes.
    elif _fingerprint(script_dir).digest == fingerprint.digest:
        _write_json(
            paths,
            {
                "script_location": str(script_dir),
                "fingerprint": fingerprint.digest,
                "heads": list(heads),
            },
        )
    return heads


# --------------------------------------------------------------------------------------------
# The schema signature
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class ColumnSignature:
    """What is compared of a column: the type family, its reliable details, nullability."""

    type: str
    nullable: bool

    def describe(self) -> str:
        return f"{self.type} {'NULL' if self.nullable else 'NOT NULL'}"


@dataclass(frozen=True)
class TableSignature:
    """What is compared of a table."""

    columns: Mapping[str, ColumnSignature]
    primary_key: tuple[str, ...]
    #: ``(name, columns, unique)``
    indexes: frozenset[tuple[str, tuple[str, ...], bool]]
    #: ``(name, columns)``
    unique_constraints: frozenset[tuple[str, tuple[str, ...]]]
    #: ``(name, columns, referred table, referred columns, ondelete)``
    foreign_keys: frozenset[tuple[str, tuple[str, ...], str, tuple[str, ...], str]]


#: Table name -> signature.
Signature = Mapping[str, TableSignature]


def _type_signature(type_: TypeEngine[Any], dialect_name: str) -> str:
    """The part of a type that reflects the same way it was declared, on ``dialect_name``.

    The order of the checks matters: ``Boolean``, ``BigInteger`` and ``Text`` are subclasses of
    more general types.
    """
    if isinstance(type_, sa.Boolean):
        return "boolean"
    if isinstance(type_, sa.BigInteger):
        return "biginteger"
    if isinstance(type_, sa.SmallInteger):
        return "smallinteger"
    if isinstance(type_, sa.Integer):
        return "integer"
    if isinstance(type_, sa.Float):
        # Float() is DOUBLE PRECISION on PostgreSQL, FLOAT on SQLite: the family only.
        return "float"
    if isinstance(type_, sa.Numeric):
        return f"numeric({type_.precision},{type_.scale})"
    if isinstance(type_, sa.DateTime):
        if dialect_name == "postgresql":
            return "datetime(timezone)" if type_.timezone else "datetime"
        return "datetime"
    if isinstance(type_, sa.Date):
        return "date"
    if isinstance(type_, sa.Time):
        return "time"
    if isinstance(type_, sa.Text):
        return "text"
    if isinstance(type_, sa.String):
        return f"string({type_.length})"
    if isinstance(type_, sa.LargeBinary):
        return "binary"
    # Anything else must at least be the same class (NullType, what reflection gives for an
    # unknown type, matches nothing the models declare).
    return type(type_).__name__.lower()


def expected_signature(
    metadata: MetaData, dialect_name: str, tables: Iterable[str] | None = None
) -> dict[str, TableSignature]:
    """The signature of the ``tables`` of ``metadata`` (default: all) on ``dialect_name``."""
    signature: dict[str, TableSignature] = {}
    names = metadata.tables.keys() if tables is None else tables
    for table in (metadata.tables[name] for name in names):
        indexes = frozenset(
            (str(index.name), tuple(column.name for column in index.columns), bool(index.unique))
            for index in table.indexes
        )
        uniques = frozenset(
            (str(constraint.name), tuple(column.name for column in constraint.columns))
            for constraint in table.constraints
            if isinstance(constraint, sa.UniqueConstraint)
        )
        foreign_keys = frozenset(
            (
                str(constraint.name),
                tuple(constraint.column_keys),
                constraint.referred_table.name,
                tuple(element.column.name for element in constraint.elements),
                (constraint.ondelete or "").upper(),
            )
            for constraint in table.foreign_key_constraints
        )
        signature[table.name] = TableSignature(
            columns={
                column.name: ColumnSignature(
                    _type_signature(column.type, dialect_name), bool(column.nullable)
                )
                for column in table.columns
            },
            primary_key=tuple(column.name for column in table.primary_key.columns),
            indexes=indexes,
            unique_constraints=uniques,
            foreign_keys=foreign_keys,
        )
    return signature


def reflected_signature(
    connection: Connection,
    tables: Iterable[str],
    *,
    inspector: sa.Inspector | None = None,
    columns: Mapping[str, Any] | None = None,
) -> dict[str, TableSignature]:
    """The signature of those of ``tables`` that exist in the database of ``connection``.

    One query per kind of object for all the tables at once where the dialect supports it
    (PostgreSQL); a table that does not exist is absent from the result. ``columns`` is the
    result of ``get_multi_columns`` (by table name) when the caller already has it.
    """
    names = list(tables)
    inspector = inspector if inspector is not None else sa.inspect(connection)
    dialect_name = connection.dialect.name
    if columns is None:
        columns = _by_table(inspector.get_multi_columns(filter_names=names))
    present = [name for name in names if name in columns]
    if not present:
        return {}
    pks = _by_table(inspector.get_multi_pk_constraint(filter_names=present))
    indexes = _by_table(inspector.get_multi_indexes(filter_names=present))
    uniques = _by_table(inspector.get_multi_unique_constraints(filter_names=present))
    fks = _by_table(inspector.get_multi_foreign_keys(filter_names=present))
    signature: dict[str, TableSignature] = {}
    for name in present:
        pk = pks.get(name) or {}
        signature[name] = TableSignature(
            columns={
                column["name"]: ColumnSignature(
                    _type_signature(column["type"], dialect_name), bool(column["nullable"])
                )
                for column in columns[name]
            },
            primary_key=tuple(pk.get("constrained_columns") or ()),
            indexes=frozenset(
                (
                    str(index["name"]),
                    tuple(str(c) for c in index["column_names"]),
                    bool(index["unique"]),
                )
                for index in indexes.get(name, ())
                # PostgreSQL also lists the index behind each unique constraint.
                if not index.get("duplicates_constraint")
            ),
            unique_constraints=frozenset(
                (str(unique["name"]), tuple(unique["column_names"]))
                for unique in uniques.get(name, ())
            ),
            foreign_keys=frozenset(
                (
                    str(fk["name"]),
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    tuple(fk["referred_columns"]),
                    str((fk.get("options") or {}).get("ondelete") or "").upper(),
                )
                for fk in fks.get(name, ())
            ),
        )
    return signature


def _by_table(reflected: Mapping[tuple[str | None, str], Any]) -> dict[str, Any]:
    return {table: value for (_schema, table), value in reflected.items()}


def compare_signatures(expected: Signature, reflected: Signature) -> list[str]:
    """Every difference between the two signatures, one line each (empty: they agree)."""
    differences: list[str] = []
    for table, want in sorted(expected.items()):
        have = reflected.get(table)
        if have is None:
            differences.append(f"table {table}: missing")
            continue
        for column in sorted(want.columns.keys() - have.columns.keys()):
            differences.append(f"{table}.{column}: missing column")
        for column in sorted(have.columns.keys() - want.columns.keys()):
            differences.append(f"{table}.{column}: column not in the models")
        for column in sorted(want.columns.keys() & have.columns.keys()):
            if want.columns[column] != have.columns[column]:
                differences.append(
                    f"{table}.{column}: {want.columns[column].describe()} in the models, "
                    f"{have.columns[column].describe()} in the database"
                )
        if want.primary_key != have.primary_key:
            differences.append(
                f"{table}: primary key {want.primary_key} in the models, "
                f"{have.primary_key} in the database"
            )
        for kind, want_set, have_set in (
            ("index", want.indexes, have.indexes),
            ("unique constraint", want.unique_constraints, have.unique_constraints),
            ("foreign key", want.foreign_keys, have.foreign_keys),
        ):
            for item in sorted(want_set - have_set):
                differences.append(f"{table}: {kind} {item} missing or different")
            for item in sorted(have_set - want_set):
                differences.append(f"{table}: {kind} {item} not in the models")
    return differences


# --------------------------------------------------------------------------------------------
# The models' signature, cached
# --------------------------------------------------------------------------------------------

_MODELS_MODULE = "ai_secretary_schema.models"


def _models_files() -> list[Path]:
    """The files the models' signature is computed from: the models and this module."""
    spec = importlib.util.find_spec(_MODELS_MODULE)
    if spec is None or spec.origin is None:  # pragma: no cover - the package is broken
        raise ImportError(f"cannot find {_MODELS_MODULE}")
    return [Path(spec.origin), Path(__file__)]


def models_cache_paths(dialect_name: str) -> tuple[Path, ...]:
    """Where the models' signature for ``dialect_name`` is cached, in order of preference."""
    package_dir = Path(__file__).resolve().parent
    name = f"models-{_path_key(package_dir)}-{dialect_name}.json"
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return (Path(configured) / name,)
    return (
        package_dir / "__pycache__" / f"ai-secretary-schema-models-{dialect_name}.json",
        _user_cache_dir() / name,
    )


def models_signature(dialect_name: str) -> dict[str, TableSignature]:
    """The signature of the package's tables (``REQUIRED_TABLES``) on ``dialect_name``.

    The same as ``expected_signature(Base.metadata, dialect_name, REQUIRED_TABLES)``, but read
    from a cache while ``models.py``, this module and the SQLAlchemy version are unchanged, so
    that a warm start does not import the ORM (about 45 ms) just to learn what it declares.
    """
    files = _models_files()
    fingerprint = _digest(
        f"models\0{dialect_name}\0{sa.__version__}\0{sys.version_info[:2]}\0{files[0]}",
        [(str(path), path.stat()) for path in files],
    )
    paths = models_cache_paths(dialect_name)
    data = _read_json(paths, fingerprint.digest)
    if data is not None:
        try:
            return _signature_from_json(data["signature"])
        except (KeyError, TypeError, ValueError) as exc:
            logger.debug("ignoring a malformed models signature cache: %r", exc)
    from ai_secretary_schema.models import REQUIRED_TABLES, Base

    signature = expected_signature(Base.metadata, dialect_name, REQUIRED_TABLES)
    if not fingerprint.racy:
        _write_json(
            paths,
            {"fingerprint": fingerprint.digest, "signature": _signature_to_json(signature)},
        )
    return signature


def _signature_to_json(signature: Signature) -> dict[str, Any]:
    return {
        name: {
            "columns": {column: [sig.type, sig.nullable] for column, sig in table.columns.items()},
            "primary_key": list(table.primary_key),
            "indexes": sorted([name, list(cols), unique] for name, cols, unique in table.indexes),
            "unique_constraints": sorted(
                [name, list(cols)] for name, cols in table.unique_constraints
            ),
            "foreign_keys": sorted(
                [name, list(cols), referred, list(referred_cols), ondelete]
                for name, cols, referred, referred_cols, ondelete in table.foreign_keys
            ),
        }
        for name, table in signature.items()
    }


def _signature_from_json(data: Mapping[str, Any]) -> dict[str, TableSignature]:
    return {
        name: TableSignature(
            columns={
                column: ColumnSignature(str(type_), bool(nullable))
                for column, (type_, nullable) in table["columns"].items()
            },
            primary_key=tuple(table["primary_key"]),
            indexes=frozenset(
                (str(name), tuple(cols), bool(unique)) for name, cols, unique in table["indexes"]
            ),
            unique_constraints=frozenset(
                (str(name), tuple(cols)) for name, cols in table["unique_constraints"]
            ),
            foreign_keys=frozenset(
                (str(name), tuple(cols), str(referred), tuple(referred_cols), str(ondelete))
                for name, cols, referred, referred_cols, ondelete in table["foreign_keys"]
            ),
        )
        for name, table in data.items()
    }


def prime_caches(
    script_location: str | Path | None = None,
    dialects: Iterable[str] = ("sqlite", "postgresql"),
) -> tuple[str, ...]:
    """Write the head and models' signature caches now (e.g. while building an image).

    Needs no database. Returns the heads. The files must not change afterwards (a changed
    mtime is a miss), and a file written less than :data:`RACY_WINDOW_NS` ago is not cached.
    """
    heads = cached_heads(script_location)
    for dialect_name in dialects:
        models_signature(dialect_name)
    return heads


# --------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WarmCheck:
    """The outcome of :func:`warm_check`: ``hit`` or why not."""

    hit: bool
    reason: str
    heads: tuple[str, ...] = ()
    current: tuple[str, ...] = ()
    differences: tuple[str, ...] = field(default_factory=tuple)


def warm_check(
    connection: Connection,
    script_location: str | Path | None = None,
    *,
    metadata: MetaData | None = None,
) -> WarmCheck:
    """Whether the database of ``connection`` is at the single head with the models' schema.

    ``metadata`` replaces the package's models (all its tables are then compared); by default
    the package's tables are compared with :func:`models_signature`. Database errors
    propagate. A transaction this function begins on ``connection`` is rolled back before it
    returns; one the caller had begun is left open.
    """
    heads = cached_heads(script_location)
    if len(heads) != 1:
        return WarmCheck(False, f"the migration history has {len(heads)} heads", heads)
    dialect_name = connection.dialect.name
    if metadata is None:
        expected = models_signature(dialect_name)
    else:
        expected = expected_signature(metadata, dialect_name)
    began = not connection.in_transaction()
    try:
        return _check_database(connection, heads, expected)
    finally:
        if began and connection.in_transaction():
            connection.rollback()


def _check_database(
    connection: Connection, heads: tuple[str, ...], expected: Signature
) -> WarmCheck:
    inspector = sa.inspect(connection)
    # Asking for the version table's columns too tells, in the same query, whether it exists:
    # selecting from a missing table would abort the caller's transaction on PostgreSQL.
    found = _by_table(inspector.get_multi_columns(filter_names=[VERSION_TABLE, *expected]))
    if VERSION_TABLE not in found:
        return WarmCheck(False, f"no {VERSION_TABLE} table", heads)
    current = tuple(
        sorted(connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())
    )
    if current != heads:
        where = ", ".join(current) or "no revision"
        return WarmCheck(False, f"database at {where}, head is {heads[0]}", heads, current)
    differences = compare_signatures(
        expected, reflected_signature(connection, expected, inspector=inspector, columns=found)
    )
    if differences:
        return WarmCheck(
            False, "the schema differs from the models", heads, current, tuple(differences)
        )
    return WarmCheck(True, "at head, schema matches the models", heads, current)


def quick_check(connection: Connection, script_location: str | Path | None = None) -> bool:
    """True when the database is at head and its schema matches the models: nothing to do.

    False means "take the full path" (lock, upgrade, full comparison), not "broken". Imports
    Alembic only when the revision files changed since the head was last cached. See
    :func:`warm_check` for the reason of a miss.
    """
    result = warm_check(connection, script_location)
    if not result.hit:
        logger.debug("warm start check missed: %s %s", result.reason, list(result.differences))
    return result.hit
