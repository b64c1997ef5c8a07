"""Servers that speak PostgreSQL's protocol without PostgreSQL's guarantees, refused for migrations.

The package's migrations lean on two guarantees of PostgreSQL: an advisory lock serialises the
migrators of a database (:mod:`ai_secretary_schema.lock`), and DDL is transactional, so a
revision that fails is rolled back whole (env.py runs each revision in its own transaction). A
server that accepts the same SQL but keeps neither would make a fleet of workers that migrate at
start race each other with nothing to tell them so: false safety. Such servers are recognised
from their ``version()`` banner when the migration lock is taken, and refused
(:class:`~ai_secretary_schema.errors.UnsafeServerError`) unless
``SCHEMA_ACCEPT_UNSAFE_SERVER=1`` says the operator accepts the risk (for instance because one
process migrates, in a release step, and the workers only validate).

``version()`` is asked unqualified, as a client would, so that a test can stand a function of
its own in front of ``pg_catalog.version()`` through the search path.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from sqlalchemy.engine import URL

from ai_secretary_schema.errors import UnsafeServerError
from ai_secretary_schema.redaction import redact_url
from ai_secretary_schema.settings import SchemaSettings

logger = logging.getLogger(__name__)

#: The query whose answer :func:`refuse_unsafe_server` judges.
VERSION_QUERY = "SELECT version()"


@dataclass(frozen=True)
class LookAlike:
    """A server family that speaks PostgreSQL's protocol, and why migrating it is unsafe."""

    name: str
    banner: re.Pattern[str]
    why: str


LOOK_ALIKES: tuple[LookAlike, ...] = (
    LookAlike(
        "CockroachDB",
        re.compile(r"\bCockroachDB\b", re.IGNORECASE),
        "its advisory lock functions lock nothing (compatibility stubs, or unsupported, "
        "depending on the release), so the migration lock serialises no one; and its schema "
        "changes run asynchronously after the transaction commits, so a failed revision is "
        "not rolled back whole",
    ),
    LookAlike(
        "YugabyteDB",
        re.compile(r"-YB-|\bYugabyte", re.IGNORECASE),
        "its advisory locks are unsupported or a preview feature (off by default) in its "
        "releases, so the migration lock serialises no one; and its DDL is not transactional "
        "by default, so a failed revision is not rolled back whole",
    ),
)


def recognise(version: str) -> LookAlike | None:
    """The look-alike whose banner ``version`` is, or ``None`` for PostgreSQL itself."""
    for look_alike in LOOK_ALIKES:
        if look_alike.banner.search(version):
            return look_alike
    return None


def refuse_unsafe_server(version: str, url: URL, settings: SchemaSettings) -> None:
    """Raise :class:`UnsafeServerError` when ``version`` (the answer of ``SELECT version()``)
    is a look-alike's, unless ``settings.schema_accept_unsafe_server``; then log a warning."""
    found = recognise(version)
    if found is None:
        return
    banner = " ".join(version.split())[:100]
    if settings.schema_accept_unsafe_server:
        logger.warning(
            "migrating %s, a %s server (%s), because SCHEMA_ACCEPT_UNSAFE_SERVER is set: %s. "
            "Only one process may migrate it at a time, and a failed revision may leave it "
            "half-changed.",
            redact_url(url),
            found.name,
            banner,
            found.why,
        )
        return
    raise UnsafeServerError(
        f"refusing to migrate {redact_url(url)}: it is {found.name} ({banner}), not PostgreSQL; "
        f"{found.why}. Migrate it from exactly one process, in a release step "
        f"(`ai-secretary-schema upgrade --url …` once per deploy), start the application "
        f"with SCHEMA_STARTUP=validate, and set SCHEMA_ACCEPT_UNSAFE_SERVER=1 for that one "
        f"migrating process to accept the risk.",
        server=found.name,
        version=banner,
    )
