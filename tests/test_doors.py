"""Every door into the migrations meets the same lock, the same URL and the same engine settings.

The doors: ``alembic`` (with an alembic.ini of the user's own), the package's CLI
``ai-secretary-schema``, and the startup hook. Each is a real process on a real database of the
test's own, on SQLite and PostgreSQL.

* **One lock.** The migration lock is taken in ``migrations/env.py`` for every online run that
  writes the version table, so a crowd of processes released together on a fresh database, through
  one door or a mix of them, all succeed and apply each revision exactly once.
* **One URL.** An explicitly empty ``--url ''`` (an unset shell variable) is an error in every
  command, which creates nothing: neither the default file in the working directory nor the
  ``DATABASE_URL`` file.
* **One engine.** ``DATABASE_CONNECT_TIMEOUT`` reaches the engine of every door: against a server
  that accepts connections and never answers, each door fails after about that long.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers.crowd import release
from helpers.db import versions
from helpers.scripts import COUNT, HEAD, make_script_dir
from helpers.scripts import SHIPPED as SHIPPED_REVISIONS
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parents[1]
HELPERS = Path(__file__).parent / "helpers"
DOOR_WORKER = HELPERS / "door_worker.py"
STARTUP_WORKER = HELPERS / "startup_worker.py"

CROWD = 8
ROUNDS = 3

# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def counting_scripts(tmp_path: Path) -> Path:
    """The real revisions plus ``0101``, which records each run in ``migration_runs``."""
    return make_script_dir(tmp_path, {"0101": (HEAD, COUNT)})


@pytest.fixture
def alembic_ini(tmp_path: Path, counting_scripts: Path) -> Path:
    """The repository's alembic.ini with ``script_location`` pointing at the test's scripts:
    how a user with an alembic.ini of their own runs ``alembic`` on the package's env.py."""
    text = (ROOT / "alembic.ini").read_text()
    text, replaced = re.subn(
        r"^script_location = .*$", f"script_location = {counting_scripts}", text, flags=re.M
    )
    assert replaced == 1
    ini = tmp_path / "alembic.ini"
    ini.write_text(text)
    return ini


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The processes' working directory: a default ``ai_secretary.db`` would land here."""
    path = tmp_path / "cwd"
    path.mkdir()
    return path


def base_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}


def count_rows(url: str, table: str) -> int:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return int(connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


# -- one lock --------------------------------------------------------------------------------

Command = tuple[list[str], dict[str, str]]


def alembic_door(ini: Path, url: str, *, via_environment: bool = False) -> Command:
    """``alembic upgrade head``, the URL given with ``-x url=`` or in ``DATABASE_URL``."""
    args = ["alembic", "-c", str(ini)]
    if via_environment:
        return [*args, "upgrade", "head"], {"DATABASE_URL": url}
    return [*args, "-x", f"url={url}", "upgrade", "head"], {}


def cli_door(url: str, scripts: Path) -> Command:
    return ["cli", "upgrade", "--url", url, "--script-location", str(scripts)], {}


FLASK_APP = HELPERS / "flask_door_app.py"


def flask_door(url: str) -> Command:
    """``flask db upgrade`` of an application of the extension (the shipped migrations)."""
    return ["flask", "--app", f"{FLASK_APP}:create_app", "db", "upgrade"], {"DATABASE_URL": url}


def run_crowd(commands: list[Command], barrier: Path, cwd: Path) -> list[tuple[int, str]]:
    """Start every command, release them together once all are ready, and return each one's
    (exit status, stderr)."""
    barrier.mkdir()
    processes = []
    for args, env in commands:
        if args[0] == "startup":
            argv = [sys.executable, str(STARTUP_WORKER), *args[1:], "--barrier", str(barrier)]
        else:
            argv = [sys.executable, str(DOOR_WORKER), "--barrier", str(barrier), *args]
        processes.append(
            subprocess.Popen(
                argv,
                cwd=cwd,
                env={**base_environment(), **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    # Every process has done its imports (the slow part: ~1 s each) before it says it is ready;
    # from "go" on, each needs only a file check (10 ms poll) and a connect to reach the
    # database. Released together they all read an empty alembic_version within a few
    # milliseconds of each other, and the counting revision then sleeps 0.2 s between creating
    # its table and recording its run, so unserialised runs overlap for certain: this is the
    # crowd in which 8 unlocked `flask db upgrade`s failed 1 to 7 times per trial on these machines.
    release(processes, barrier)
    results = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        results.append((process.returncode, err + out))
    return results


def assert_migrated_once(url: str, results: list[tuple[int, str]]) -> None:
    failures = [err[-2000:] for status, err in results if status != 0]
    assert failures == []
    assert count_rows(url, "migration_runs") == 1
    assert versions(url) == ["0101"]


@pytest.mark.slow
def test_a_crowd_of_alembic_upgrades_on_a_fresh_database_migrates_once(
    make_url: Callable[[], str], alembic_ini: Path, tmp_path: Path, workdir: Path
) -> None:
    for round_ in range(ROUNDS):
        url = make_url()
        results = run_crowd(
            [alembic_door(alembic_ini, url) for _ in range(CROWD)],
            tmp_path / f"barrier{round_}",
            workdir,
        )
        assert_migrated_once(url, results)
        # Every revision run is reported (on stdout): each ran once in all.
        logged = "".join(err for _, err in results)
        ran = re.findall(r"Running upgrade (\w*) -> (\w+)", logged)
        assert sorted(ran) == [*SHIPPED, (HEAD, "0101")]
    assert list(workdir.iterdir()) == []


@pytest.mark.slow
def test_a_crowd_through_every_door_at_once_migrates_once(
    make_url: Callable[[], str],
    alembic_ini: Path,
    counting_scripts: Path,
    tmp_path: Path,
    workdir: Path,
) -> None:
    for round_ in range(ROUNDS):
        url = make_url()
        startup: Command = (["startup", url, "--script-location", str(counting_scripts)], {})
        commands = [
            *[cli_door(url, counting_scripts) for _ in range(3)],
            *[startup for _ in range(3)],
            alembic_door(alembic_ini, url),
            alembic_door(alembic_ini, url, via_environment=True),
        ]
        results = run_crowd(commands, tmp_path / f"barrier{round_}", workdir)
        assert_migrated_once(url, results)
    assert list(workdir.iterdir()) == []


def assert_each_revision_ran_once(
    results: list[tuple[int, str]], expected: list[tuple[str, str]]
) -> None:
    # Every revision run is reported (stdout for the command lines, the log for the hook).
    ran = re.findall(r"Running upgrade (\w*) -> (\w+)", "".join(out for _, out in results))
    assert sorted(ran) == expected


SHIPPED = list(zip(("", *SHIPPED_REVISIONS[:-1]), SHIPPED_REVISIONS, strict=True))


@pytest.mark.slow
def test_a_crowd_of_flask_db_upgrades_on_a_fresh_database_migrates_once(
    make_url: Callable[[], str], tmp_path: Path, workdir: Path
) -> None:
    for round_ in range(ROUNDS):
        url = make_url()
        results = run_crowd(
            [flask_door(url) for _ in range(CROWD)], tmp_path / f"barrier{round_}", workdir
        )
        assert [err[-2000:] for status, err in results if status != 0] == []
        assert versions(url) == [HEAD]
        assert_each_revision_ran_once(results, SHIPPED)


@pytest.mark.slow
def test_a_crowd_with_flask_db_among_every_door_migrates_once(
    make_url: Callable[[], str], tmp_path: Path, workdir: Path
) -> None:
    for round_ in range(ROUNDS):
        url = make_url()
        commands = [
            *[flask_door(url) for _ in range(3)],
            *[(["cli", "upgrade", "--url", url], {}) for _ in range(2)],
            *[(["startup", url], {}) for _ in range(2)],
            alembic_door(ROOT / "alembic.ini", url),
        ]
        results = run_crowd(commands, tmp_path / f"barrier{round_}", workdir)
        assert [err[-2000:] for status, err in results if status != 0] == []
        assert versions(url) == [HEAD]
        assert_each_revision_ran_once(results, SHIPPED)


# -- one URL: an empty --url is an error everywhere ---------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["upgrade"],
        ["downgrade", "base"],
        ["stamp", "head"],
        ["current"],
        ["history"],
        ["heads"],
        ["sql"],
        ["check"],
        ["validate"],
    ],
    ids=lambda command: "-".join(command),
)
@pytest.mark.parametrize("database_url", ["unset", "set"], ids=lambda s: f"DATABASE_URL-{s}")
def test_an_empty_url_is_an_error_in_every_command_and_creates_nothing(
    command: list[str], database_url: str, tmp_path: Path
) -> None:
    environment = base_environment()
    if database_url == "set":
        environment["DATABASE_URL"] = f"sqlite:///{tmp_path / 'from_env.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "ai_secretary_schema", *command, "--url", ""],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr.count("\n")) == (1, "", 1)
    assert result.stderr.startswith("ai-secretary-schema: error: The database URL given is empty")
    assert "--url sqlite:///ai_secretary.db" in result.stderr  # what a correct value looks like
    assert list(tmp_path.iterdir()) == []


# -- one engine: the connect timeout reaches every door ---------------------------------------

CONNECT_TIMEOUT = 1
#: The default connect timeout (5 s) plus the start of a Python process: a door whose engine
#: did not get DATABASE_CONNECT_TIMEOUT=1 cannot fail before this.
DEFAULT_BOUND = 5.0


@pytest.mark.postgresql
@pytest.mark.parametrize("door", ["alembic", "cli"])
def test_the_connect_timeout_reaches_the_engine_of_every_door(
    door: str, silent_port: int, workdir: Path
) -> None:
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{silent_port}/app"
    if door == "alembic":
        argv = ["alembic", "-c", str(ROOT / "alembic.ini"), "-x", f"url={url}", "upgrade", "head"]
    else:
        argv = ["ai-secretary-schema", "upgrade", "--url", url]
    bin_dir = Path(sys.executable).parent
    environment = {
        **base_environment(),
        "DATABASE_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
        # One attempt: the CLI's connection manager otherwise retries until this deadline
        # (15 s by default); the timeout of each attempt is what is under test.
        "DATABASE_CONNECT_DEADLINE": "0",
    }
    started = time.monotonic()
    result = subprocess.run(
        [str(bin_dir / argv[0]), *argv[1:]],
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,  # a hang would be caught here, as a TimeoutExpired error
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert "timeout expired" in result.stderr
    assert elapsed < DEFAULT_BOUND, f"took {elapsed:.1f} s"
    assert list(workdir.iterdir()) == []
