"""The README's promises hold: every Python block runs as written, the settings table is the
one the settings declare, and nothing points outside the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ai_secretary_schema.settings import settings_table

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def _block_id(block: str) -> str:
    line = README[: README.index(block)].count("\n") + 1
    return f"line-{line}"


def test_the_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("block", BLOCKS, ids=[_block_id(b) for b in BLOCKS])
def test_every_python_block_runs_as_written(block: str, tmp_path: Path) -> None:
    # A fresh process in an empty directory, configured only by what the block says.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["AI_SECRETARY_SCHEMA_CACHE_DIR"] = str(tmp_path / "cache")
    result = subprocess.run(
        [sys.executable, "-c", block],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-3000:]


def test_the_settings_table_is_the_declared_one() -> None:
    assert settings_table() in README


TRACKED = [
    ROOT / name
    for name in subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    if name.endswith((".py", ".md", ".toml", ".ini", ".mako"))
]
# "[/]" so that this line does not match itself.
OUTSIDE = re.compile(r"\.\./shared|TRAPS\.md|shared[/]design|\bissue \d+\b")


@pytest.mark.parametrize("path", TRACKED, ids=[str(p.relative_to(ROOT)) for p in TRACKED])
def test_nothing_points_outside_the_repository(path: Path) -> None:
    assert OUTSIDE.findall(path.read_text()) == []
