"""The built wheel, installed into a new virtual environment, carries the migrations.

Installed as a user would (``pip install <wheel>``, not editable), then run from a directory
outside the checkout. The new environment gets only the declared dependencies, so it has
psycopg2-binary and not psycopg 3: the case where a plain ``postgresql://`` URL breaks with
SQLAlchemy 2.1's default driver.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from helpers.scripts import HEAD

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` directory of a new virtual environment with the wheel installed."""
    base = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(base / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (base / "dist").glob("ai_secretary_schema-*.whl")
    venv.create(base / "venv", with_pip=True)
    bin_dir = base / "venv" / "bin"
    # Without PYTHONPATH, as a user installs: a checkout on it (with the egg-info the wheel build
    # leaves there) would make pip think the package is already installed and skip it.
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheel)],
        check=True,
        capture_output=True,
        env=env,
    )
    return bin_dir


def _run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "ai-secretary-schema"), *args],
        cwd=cwd,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(cwd)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_wheel_contains_every_revision(wheel_env: Path, tmp_path: Path) -> None:
    assert _run(wheel_env, "history", cwd=tmp_path).stdout.splitlines() == [
        "0002 -> 0003 (head), Row-level security on users: each tenant sees and writes its own "
        "rows only.",
        "0001 -> 0002, Add performance_alerts.",
        "<base> -> 0001, Create tenants and users.",
    ]


def test_the_installed_command_upgrades_a_new_sqlite_database_to_head(
    wheel_env: Path, tmp_path: Path
) -> None:
    result = _run(wheel_env, "upgrade", cwd=tmp_path)
    assert (
        result.returncode,
        result.stdout.splitlines()[-1],
        (tmp_path / "ai_secretary.db").is_file(),
    ) == (
        0,
        f"sqlite:///ai_secretary.db: revision {HEAD} (at head)",
        True,
    )


def test_the_wheel_contains_every_public_module(wheel_env: Path, tmp_path: Path) -> None:
    # Every public name resolves, the Flask layer's included (a sub-package the wheel must list).
    probe = subprocess.run(
        [
            str(wheel_env / "python"),
            "-c",
            "import ai_secretary_schema as a; [getattr(a, n) for n in a.__all__]",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr


def test_the_new_environment_has_no_psycopg3(wheel_env: Path) -> None:
    probe = subprocess.run(
        [str(wheel_env / "python"), "-c", "import psycopg"], capture_output=True, check=False
    )
    assert probe.returncode != 0


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_plain_postgresql_url_works_with_only_psycopg2_installed(
    wheel_env: Path, tmp_path: Path, pg_url: str, scheme: str
) -> None:
    plain = pg_url.replace("postgresql+psycopg2://", f"{scheme}://")
    result = _run(wheel_env, "upgrade", "--url", plain, cwd=tmp_path)
    assert (result.returncode, result.stdout.strip().endswith(f"revision {HEAD} (at head)")) == (
        0,
        True,
    ), result.stderr
