"""redact_url and redact_text: what they hide and what they leave readable."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from ai_secretary_schema.redaction import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p%40ss@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
        ("postgres://u:p@ss@h/db", "postgres://u:***@h/db"),
        ("postgresql://u:pa/ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("app:secret@localhost:5432/app", "***@localhost:5432/app"),
        ("postgresql://h/db?password=secret", "postgresql://h/db?password=***"),
        ("sqlite:///ai_secretary.db", "sqlite:///ai_secretary.db"),
        (None, ""),
    ],
    ids=[
        "password",
        "encoded-password",
        "unencoded-at",
        "unencoded-slash",
        "no-password",
        "no-scheme",
        "password-option",
        "sqlite",
        "none",
    ],
)
def test_redact_url(url: str | None, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_url_of_a_url_object_hides_a_password_option() -> None:
    assert redact_url(make_url("postgresql://h/db?password=secret")) == (
        "postgresql://h/db?password=***"
    )


@pytest.mark.parametrize(
    ("text", "secrets", "shown"),
    [
        ("auth failed for s3cr3t!", ["s3cr3t!"], "auth failed for ***"),
        ("auth failed for p%40ss", ["p@ss"], "auth failed for ***"),
        ("server at port 1 failed: accepting p", ["p"], "server at port 1 failed: accepting ***"),
        ("user=app password=x host=h", [], "user=app password=*** host=h"),
        ("nothing secret here", [None, ""], "nothing secret here"),
    ],
    ids=["long-secret", "encoded-secret", "short-secret-only-as-a-word", "option", "no-secret"],
)
def test_redact_text(text: str, secrets: list[str | None], shown: str) -> None:
    assert redact_text(text, secrets) == shown
