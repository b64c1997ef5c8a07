"""Processes started together: a crowd released at once, a victim stopped at a known point.

Workers (door_worker.py, host_worker.py, startup_worker.py …) write ``ready-<pid>`` in the
barrier directory once their imports are done, then wait for ``go``: released together, they
reach the database within milliseconds of each other.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest


def release(processes: list[subprocess.Popen[str]], barrier: Path, timeout: float = 120) -> None:
    """Wait until every process is ready, then let them all go at once. Fails when one dies
    before the start (with its stderr) or they are not all ready within ``timeout``."""
    deadline = time.monotonic() + timeout
    while len(list(barrier.glob("ready-*"))) < len(processes):
        assert time.monotonic() < deadline, "the processes did not get ready in time"
        for process in processes:
            if process.poll() is not None:
                _, err = process.communicate()
                pytest.fail(f"a process died before the start: {err}")
        time.sleep(0.02)
    (barrier / "go").touch()


def wait_for_marker(
    process: subprocess.Popen[bytes], marker: Path, where: str, timeout: float = 60
) -> None:
    """Wait until ``process`` writes ``marker`` (it is then inside ``where``, and blocks)."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert process.poll() is None, f"the worker ended before reaching {where}"
        assert time.monotonic() < deadline, f"the worker never reached {where}"
        time.sleep(0.02)
