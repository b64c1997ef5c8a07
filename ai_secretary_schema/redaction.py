"""Keep passwords out of every string the package produces.

:func:`redact_url` is what logs, exception messages, reprs, health reports and the CLI use to
show a URL. :func:`redact_text` scrubs free text that may quote a URL or a password, such as a
driver's exception message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, unquote

from sqlalchemy.engine import URL, make_url

MASK = "***"
#: Secrets shorter than this are masked only as whole words (see :func:`redact_text`).
SHORT_SECRET = 4

# Only used to *hide* credentials in text that is not a URL we could parse; never to parse one.
# The password part is greedy up to the last "@" of the token: an unencoded "@" or "/" in a
# password must not leave its tail visible.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>\S*)@")
_PASSWORD_OPTION = re.compile(r"(?i)\b(password|passwd|pwd)=(?:'[^']*'|\"[^\"]*\"|[^\s&;]*)")


def redact_url(url: str | URL | None) -> str:
    """Return ``url`` as a string with its password (if any) replaced by ``***``."""
    if url is None:
        return ""
    if isinstance(url, URL):
        return redact_text(url.render_as_string(hide_password=True))
    try:
        parsed = make_url(url.strip())
    except Exception:  # anything unparsable is still shown, masked as text
        return redact_unparsable(url)
    rendered = parsed.render_as_string(hide_password=True)
    return redact_text(rendered)


def redact_unparsable(text: str) -> str:
    """A value that could not be read as a URL, masked up to its last ``@``.

    With no URL structure to go by, everything between the scheme (if any) and the last ``@``
    may be (part of) a password: ``app:pw@localhost/db`` becomes ``***@localhost/db``.
    """
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    if "@" in rest:
        text = f"{scheme}{sep}{MASK}@{rest.rsplit('@', 1)[1]}"
    return redact_text(text)


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Mask credentials in ``text``: URL userinfo, ``password=`` options and each of ``secrets``.

    ``secrets`` are matched as given, URL-decoded and URL-encoded, longest first, so a password
    is caught in whichever spelling a message quotes it.
    """
    result = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    result = _PASSWORD_OPTION.sub(lambda m: f"{m[1]}={MASK}", result)
    variants: set[str] = set()
    for secret in secrets:
        if secret:
            variants.update({secret, unquote(secret), quote(secret, safe="")})
    for variant in sorted(variants, key=len, reverse=True):
        if not variant or variant == MASK:
            continue
        if len(variant) < SHORT_SECRET:
            # A short password is also a common fragment of words ("p" in "port"): mask it only
            # where it stands alone, not inside a word.
            pattern = rf"(?<![A-Za-z0-9]){re.escape(variant)}(?![A-Za-z0-9])"
            result = re.sub(pattern, MASK, result)
        else:
            result = result.replace(variant, MASK)
    return result


def url_password(url: str | URL | None) -> str | None:
    """The password of ``url``, or ``None``; used to scrub it from third-party messages."""
    if url is None:
        return None
    try:
        parsed = url if isinstance(url, URL) else make_url(url.strip())
    except Exception:  # an unparsable URL has no password we can name
        return None
    password = parsed.password
    return None if password is None else str(password)
