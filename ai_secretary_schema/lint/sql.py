"""Reading the SQL Alembic emits: statements, and what each one does to which table.

The input is Alembic's offline output (or the statements an in-memory SQLite upgrade executed):
generated, regular SQL, one operation per statement, identifiers quoted only where PostgreSQL
needs it. :func:`split` cuts it into statements with a small tokenizer that knows PostgreSQL's
string, quoted-identifier, dollar-quote and comment syntax, so a ``;`` or a keyword inside a
literal (``DEFAULT 'DROP TABLE x'``) is never mistaken for SQL. :func:`operations` then reads
each statement's tokens into typed operations (:class:`AddColumn`, :class:`CreateIndex` …). It
reads only the statements whose lock behaviour the rules care about; everything else (``INSERT``,
``UPDATE``, ``COMMENT ON``, functions …) yields nothing. Nothing here knows the rules.

Names are compared without their schema: the package's tables live in the connection's default
schema.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import NamedTuple

__all__ = [
    "VOLATILE_FUNCTIONS",
    "AddColumn",
    "AddConstraint",
    "AlterColumnType",
    "Begin",
    "CreateIndex",
    "CreateTable",
    "DropColumn",
    "DropConstraint",
    "DropIndex",
    "DropTable",
    "End",
    "Operation",
    "RenameColumn",
    "RenameTable",
    "SetNotNull",
    "Statement",
    "ValidateConstraint",
    "operations",
    "split",
]

#: Functions PostgreSQL marks VOLATILE that a column default plausibly calls: a default that
#: calls one is evaluated per row, so ``ADD COLUMN`` rewrites the table (a constant or STABLE
#: default such as ``now()`` is stored once, without a rewrite, since PostgreSQL 11).
VOLATILE_FUNCTIONS = frozenset(
    {
        "clock_timestamp",
        "gen_random_bytes",
        "gen_random_uuid",
        "nextval",
        "random",
        "random_normal",
        "timeofday",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "uuidv4",
        "uuidv7",
    }
)
#: Column types that are an integer with a ``nextval()`` default.
SERIAL_TYPES = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    |(?P<comment>--[^\n]*|/\*.*?\*/)
    |(?P<estring>[Ee]'(?:[^'\\]|\\.|'')*')
    |(?P<string>(?:[BbXxNn]|[Uu]&)?'(?:[^']|'')*')
    |(?P<ident>"(?:[^"]|"")*")
    |(?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z_0-9]*|)\$.*?\$(?P=tag)\$)
    |(?P<word>[A-Za-z_][A-Za-z_0-9$]*)
    |(?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)
    |(?P<punct>::|.)
    """,
    re.DOTALL | re.VERBOSE,
)
_SKIPPED = ("space", "comment")


class Token(NamedTuple):
    kind: str  #: word, ident (a quoted identifier), a literal kind, or punct
    text: str
    start: int  #: offset in the text that was split

    @property
    def keyword(self) -> str:
        """The upper-cased word, or the punctuation itself; ``""`` for anything else."""
        if self.kind == "word":
            return self.text.upper()
        return self.text if self.kind == "punct" else ""

    @property
    def name(self) -> str | None:
        """The identifier this token spells (unquoted ones fold to lower case), else ``None``."""
        if self.kind == "word":
            return self.text.lower()
        if self.kind == "ident":
            return self.text[1:-1].replace('""', '"')
        return None


@dataclass(frozen=True)
class Statement:
    """One statement: its text as emitted (comments and the final ``;`` left out)."""

    text: str
    start: int  #: offset of its first token in the text that was split
    tokens: tuple[Token, ...]

    @property
    def one_line(self) -> str:
        """The text with its whitespace collapsed, for reports."""
        return " ".join(self.text.split())


def split(sql: str) -> list[Statement]:
    """The statements of ``sql``, in order; a ``;`` inside a literal or comment is not an end."""
    statements: list[Statement] = []
    current: list[Token] = []

    def close() -> None:
        if current:
            first, last = current[0], current[-1]
            text = sql[first.start : last.start + len(last.text)]
            statements.append(Statement(text, first.start, tuple(current)))
            current.clear()

    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup  # the outermost group: "dollar", never its "tag"
        assert kind is not None
        if kind in _SKIPPED:
            continue
        if kind == "punct" and match.group() == ";":
            close()
            continue
        current.append(Token(kind, match.group(), match.start()))
    close()
    return statements


# -- operations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Begin:
    """``BEGIN``: a transaction starts."""


@dataclass(frozen=True)
class End:
    """``COMMIT`` or ``ROLLBACK``: the transaction ends (what follows runs in autocommit)."""


@dataclass(frozen=True)
class CreateTable:
    table: str


@dataclass(frozen=True)
class DropTable:
    table: str


@dataclass(frozen=True)
class RenameTable:
    table: str
    new_name: str


@dataclass(frozen=True)
class CreateIndex:
    index: str | None
    table: str
    concurrently: bool
    unique: bool


@dataclass(frozen=True)
class DropIndex:
    index: str
    concurrently: bool


@dataclass(frozen=True)
class AddColumn:
    """``ALTER TABLE … ADD COLUMN``, with what its definition implies."""

    table: str
    column: str
    not_null: bool
    #: The default's text, ``None`` without one (``DEFAULT NULL`` counts as none).
    default: str | None
    #: Why every row gets its own value (a volatile default, a serial or identity type, a stored
    #: generated column): the table is rewritten. ``None`` when it is not.
    rewrite: str | None
    references: bool  #: an inline ``REFERENCES`` (a foreign key, validated)
    unique: bool  #: an inline ``UNIQUE`` or ``PRIMARY KEY``
    check: bool  #: an inline ``CHECK``


@dataclass(frozen=True)
class DropColumn:
    table: str
    column: str


@dataclass(frozen=True)
class RenameColumn:
    table: str
    column: str
    new_name: str


@dataclass(frozen=True)
class AlterColumnType:
    table: str
    column: str
    type: str


@dataclass(frozen=True)
class SetNotNull:
    table: str
    column: str


@dataclass(frozen=True)
class AddConstraint:
    table: str
    name: str | None
    kind: str  #: FOREIGN KEY, CHECK, UNIQUE, PRIMARY KEY or EXCLUDE
    not_valid: bool
    using_index: bool  #: ``UNIQUE USING INDEX``: promotes an index built beforehand
    #: For ``CHECK (column IS NOT NULL)``: the column it proves not null once validated.
    not_null_column: str | None


@dataclass(frozen=True)
class ValidateConstraint:
    table: str
    name: str


@dataclass(frozen=True)
class DropConstraint:
    table: str
    name: str


Operation = (
    Begin
    | End
    | CreateTable
    | DropTable
    | RenameTable
    | CreateIndex
    | DropIndex
    | AddColumn
    | DropColumn
    | RenameColumn
    | AlterColumnType
    | SetNotNull
    | AddConstraint
    | ValidateConstraint
    | DropConstraint
)


class _Cursor:
    """A position in a statement's tokens, with the few moves the grammar below needs."""

    def __init__(self, statement: Statement, tokens: tuple[Token, ...] | list[Token]) -> None:
        self.statement = statement
        self.tokens = tokens
        self.at = 0

    def peek(self, ahead: int = 0) -> str:
        index = self.at + ahead
        return self.tokens[index].keyword if index < len(self.tokens) else ""

    def accept(self, *keywords: str) -> bool:
        """Move past ``keywords`` if the next tokens are exactly those."""
        if all(self.peek(n) == word for n, word in enumerate(keywords)):
            self.at += len(keywords)
            return True
        return False

    def name(self) -> str | None:
        """Read a possibly schema-qualified name; its last part."""
        found = None
        while self.at < len(self.tokens):
            part = self.tokens[self.at].name
            if part is None:
                break
            found = part
            self.at += 1
            if not self.accept("."):
                break
        return found

    def rest(self) -> list[Token]:
        return list(self.tokens[self.at :])

    def text(self, tokens: list[Token]) -> str:
        """The statement's own text of ``tokens`` (a run of its tokens), as emitted."""
        if not tokens:
            return ""
        offset = self.statement.start
        end = tokens[-1].start + len(tokens[-1].text)
        return self.statement.text[tokens[0].start - offset : end - offset]


def _top_level(tokens: list[Token], separator: str = ",") -> Iterator[list[Token]]:
    """``tokens`` cut at each ``separator`` outside parentheses."""
    depth = 0
    part: list[Token] = []
    for token in tokens:
        if token.keyword == "(":
            depth += 1
        elif token.keyword == ")":
            depth -= 1
        elif depth == 0 and token.keyword == separator:
            yield part
            part = []
            continue
        part.append(token)
    yield part


def _depth_zero(tokens: list[Token]) -> list[str]:
    """The keywords of ``tokens`` outside parentheses (``""`` for names and literals there)."""
    depth = 0
    words = []
    for token in tokens:
        if token.keyword == "(":
            depth += 1
        elif token.keyword == ")":
            depth -= 1
        elif depth == 0:
            words.append(token.keyword)
    return words


def _contains(words: list[str], *sequence: str) -> bool:
    size = len(sequence)
    return any(tuple(words[i : i + size]) == sequence for i in range(len(words) - size + 1))


def operations(statement: Statement) -> list[Operation]:
    """What ``statement`` does, as far as the lock rules are concerned (often nothing)."""
    cursor = _Cursor(statement, statement.tokens)
    first = cursor.peek()
    if first in ("BEGIN", "START"):
        return [Begin()]
    if first in ("COMMIT", "END", "ROLLBACK", "ABORT"):
        return [End()]
    if cursor.accept("ALTER", "TABLE"):
        return _alter_table(cursor)
    if cursor.accept("CREATE"):
        return _create(cursor)
    if cursor.accept("DROP", "TABLE"):
        cursor.accept("IF", "EXISTS")
        return [DropTable(name) for name in _names(cursor)]
    if cursor.accept("DROP", "INDEX"):
        concurrently = cursor.accept("CONCURRENTLY")
        cursor.accept("IF", "EXISTS")
        return [DropIndex(name, concurrently) for name in _names(cursor)]
    return []


def _names(cursor: _Cursor) -> list[str]:
    """A comma-separated list of names (``DROP TABLE a, b``)."""
    names = []
    while (name := cursor.name()) is not None:
        names.append(name)
        if not cursor.accept(","):
            break
    return names


def _create(cursor: _Cursor) -> list[Operation]:
    cursor.accept("OR", "REPLACE")
    unique = cursor.accept("UNIQUE")
    if cursor.accept("INDEX"):
        concurrently = cursor.accept("CONCURRENTLY")
        cursor.accept("IF", "NOT", "EXISTS")
        index = None if cursor.peek() == "ON" else cursor.name()
        if not cursor.accept("ON"):
            return []
        cursor.accept("ONLY")
        table = cursor.name()
        return [] if table is None else [CreateIndex(index, table, concurrently, unique)]
    for modifier in ("GLOBAL", "LOCAL", "TEMPORARY", "TEMP", "UNLOGGED"):
        cursor.accept(modifier)
    if cursor.accept("TABLE"):
        cursor.accept("IF", "NOT", "EXISTS")
        table = cursor.name()
        return [] if table is None else [CreateTable(table)]
    return []


def _alter_table(cursor: _Cursor) -> list[Operation]:
    cursor.accept("IF", "EXISTS")
    cursor.accept("ONLY")
    table = cursor.name()
    if table is None:
        return []
    cursor.accept("*")
    found: list[Operation] = []
    for action in _top_level(cursor.rest()):
        found += _action(table, _Cursor(cursor.statement, action))
    return found


def _action(table: str, cursor: _Cursor) -> list[Operation]:
    if cursor.accept("RENAME"):
        if cursor.accept("TO"):
            new_name = cursor.name()
            return [] if new_name is None else [RenameTable(table, new_name)]
        if cursor.accept("CONSTRAINT"):
            return []
        cursor.accept("COLUMN")
        column = cursor.name()
        new_name = cursor.name() if cursor.accept("TO") else None
        if column is None or new_name is None:
            return []
        return [RenameColumn(table, column, new_name)]
    if cursor.accept("VALIDATE", "CONSTRAINT"):
        name = cursor.name()
        return [] if name is None else [ValidateConstraint(table, name)]
    if cursor.accept("DROP", "CONSTRAINT"):
        cursor.accept("IF", "EXISTS")
        name = cursor.name()
        return [] if name is None else [DropConstraint(table, name)]
    if cursor.accept("DROP"):
        cursor.accept("COLUMN")
        cursor.accept("IF", "EXISTS")
        column = cursor.name()
        return [] if column is None else [DropColumn(table, column)]
    if cursor.accept("ALTER"):
        return _alter_column(table, cursor)
    if cursor.accept("ADD"):
        if cursor.peek() in ("CONSTRAINT", "FOREIGN", "CHECK", "UNIQUE", "PRIMARY", "EXCLUDE"):
            return _add_constraint(table, cursor)
        cursor.accept("COLUMN")
        cursor.accept("IF", "NOT", "EXISTS")
        return _add_column(table, cursor)
    return []


def _alter_column(table: str, cursor: _Cursor) -> list[Operation]:
    cursor.accept("COLUMN")
    column = cursor.name()
    if column is None:
        return []
    if cursor.accept("SET", "NOT", "NULL"):
        return [SetNotNull(table, column)]
    if cursor.accept("SET", "DATA", "TYPE") or cursor.accept("TYPE"):
        new_type = next(_top_level(cursor.rest(), "USING"))
        return [AlterColumnType(table, column, cursor.text(new_type))]
    return []


def _add_constraint(table: str, cursor: _Cursor) -> list[Operation]:
    name = cursor.name() if cursor.accept("CONSTRAINT") else None
    kind = cursor.peek()
    if kind in ("FOREIGN", "PRIMARY"):
        kind += " KEY"
    rest = cursor.rest()
    words = _depth_zero(rest)
    not_null_column = None
    if kind == "CHECK":
        not_null_column = _not_null_check(rest[1:])
    return [
        AddConstraint(
            table,
            name,
            kind,
            not_valid=_contains(words, "NOT", "VALID"),
            using_index=_contains(words, "USING", "INDEX"),
            not_null_column=not_null_column,
        )
    ]


def _not_null_check(tokens: list[Token]) -> str | None:
    """The column of a check ``(column IS NOT NULL)`` (in any number of parentheses)."""
    inner = [token for token in _parenthesised(tokens) if token.keyword not in ("(", ")")]
    if len(inner) == 4 and [t.keyword for t in inner[1:]] == ["IS", "NOT", "NULL"]:
        return inner[0].name
    return None


def _parenthesised(tokens: list[Token]) -> list[Token]:
    """The tokens inside the first parenthesised group of ``tokens``."""
    depth = 0
    inside: list[Token] = []
    for token in tokens:
        if token.keyword == ")":
            depth -= 1
            if depth == 0:
                break
        if depth > 0:
            inside.append(token)
        if token.keyword == "(":
            depth += 1
    return inside


#: Keywords that end a column's type and start its constraints.
_COLUMN_CONSTRAINTS = frozenset(
    {
        "CONSTRAINT",
        "NOT",
        "NULL",
        "DEFAULT",
        "CHECK",
        "UNIQUE",
        "PRIMARY",
        "REFERENCES",
        "GENERATED",
        "COLLATE",
    }
)


def _add_column(table: str, cursor: _Cursor) -> list[Operation]:
    column = cursor.name()
    if column is None:
        return []
    definition = cursor.rest()
    words = _depth_zero(definition)
    type_name = definition[0].name if definition else None
    default = _default(definition)
    rewrite = None
    if type_name in SERIAL_TYPES:
        rewrite = f"{type_name} fills every row from a sequence"
    elif _contains(words, "GENERATED") and _contains(words, "IDENTITY"):
        rewrite = "an identity column fills every row from a sequence"
    elif _contains(words, "GENERATED") and _contains(words, "STORED"):
        rewrite = "a stored generated column is computed for every row"
    elif default is not None:
        volatile = _volatile_call(default)
        if volatile is not None:
            rewrite = f"the default calls {volatile}(), which is volatile"
    return [
        AddColumn(
            table,
            column,
            not_null=_contains(words, "NOT", "NULL") or _contains(words, "PRIMARY", "KEY"),
            default=None if default is None else cursor.text(default),
            rewrite=rewrite,
            references="REFERENCES" in words,
            unique="UNIQUE" in words or _contains(words, "PRIMARY", "KEY"),
            check="CHECK" in words,
        )
    ]


def _default(definition: list[Token]) -> list[Token] | None:
    """The tokens of the ``DEFAULT`` expression, ``None`` without one or for ``DEFAULT NULL``."""
    depth = 0
    expression: list[Token] | None = None
    for token in definition:
        keyword = token.keyword
        if expression is not None and depth == 0 and keyword in _COLUMN_CONSTRAINTS:
            break
        if keyword == "(":
            depth += 1
        elif keyword == ")":
            depth -= 1
        if expression is not None:
            expression.append(token)
        elif depth == 0 and keyword == "DEFAULT":
            expression = []
    if not expression or [t.keyword for t in expression] == ["NULL"]:
        return None
    return expression


def _volatile_call(expression: list[Token]) -> str | None:
    """The first volatile function ``expression`` calls, if any."""
    for token, following in pairwise(expression):
        if token.name in VOLATILE_FUNCTIONS and following.keyword == "(":
            return token.name
    return None
