"""``flask`` run as a user runs it: a new process in the repository, with the test's settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FLASK = str(Path(sys.executable).with_name("flask"))
#: Settings the developer's shell may carry; each test sets what it needs.
SCRUBBED = frozenset(
    {
        "DATABASE_URL",
        "REDIS_URL",
        "SCHEMA_STARTUP",
        "SCHEMA_HOST_MIGRATIONS",
        "SCHEMA_MIGRATION_URL",
        "FLASK_APP",
        "HEALTH_MONITORING",
        "PYTHONPATH",
    }
)


def flask_env(database_url: str, **extra: str | Path) -> dict[str, str]:
    """The environment of a ``flask`` process: the test's database, and
    ``SCHEMA_STARTUP=validate``, so that a ``flask db`` process that ran the startup hook (which
    it must not) would fail on a database that is behind."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env.update({"DATABASE_URL": database_url, "SCHEMA_STARTUP": "validate"})
    env.update({key: str(value) for key, value in extra.items()})
    return env


def run_flask(
    *args: str, env: dict[str, str], app: str, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLASK, "--app", app, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a command that must have succeeded."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout
