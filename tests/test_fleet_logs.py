"""A fleet writes a handful of lines a minute per process for one database outage.

Four processes, each an application with the background monitor checking every second against
a PostgreSQL server that is down (a closed port on 127.0.0.1), run for 65 s; each writes every
log record it makes (root logger at INFO, any logger) to a file of its own, one JSON line per
record. What is counted: every record of the process, from its start (the connection
manager's one failure line included) to its end. The rate limiter writes no separate
"suppressed" line: the first line after a quiet spell carries " [N similar messages
suppressed]", and is counted like any other.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

logger = logging.getLogger(__name__)

WORKER = Path(__file__).resolve().parent / "helpers" / "outage_worker.py"
PROCESSES = 4
SECONDS = 65
MINUTE = 60.0
#: Lines a process may write about one outage in any minute.
BUDGET = 5


def busiest_minute(records: list[dict[str, Any]]) -> int:
    """The most records in any 60 s window (every window that starts at a record)."""
    times = sorted(record["time"] for record in records)
    return max((sum(1 for t in times if start <= t < start + MINUTE) for start in times), default=0)


@pytest.mark.slow
@pytest.mark.postgresql
def test_a_fleet_writes_at_most_five_lines_a_minute_per_process_for_one_outage(
    tmp_path: Path, closed_port: int, record_property: pytest.RecordProperty
) -> None:
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{closed_port}/app"
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "SCHEMA_STARTUP", "HEALTH_CHECK_TIMEOUT")
    }
    logs = [tmp_path / f"process-{n}.jsonl" for n in range(PROCESSES)]
    processes = [
        subprocess.Popen(
            [sys.executable, str(WORKER), url, str(log), str(SECONDS)],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for log in logs
    ]
    outputs = [process.communicate(timeout=SECONDS + 60) for process in processes]
    failed = [
        (process.returncode, stderr)
        for process, (_, stderr) in zip(processes, outputs, strict=True)
        if process.returncode or stderr
    ]
    assert failed == []
    records = [[json.loads(line) for line in log.read_text().splitlines()] for log in logs]
    rounds = [json.loads(out)["rounds"] for out, _ in outputs]
    first_minute = [
        sum(1 for r in process if r["time"] < process[0]["time"] + MINUTE) for process in records
    ]
    busiest = [busiest_minute(process) for process in records]
    summary = (
        f"{PROCESSES} processes over {SECONDS} s: lines {[len(p) for p in records]} (first "
        f"minute {first_minute}, busiest minute {busiest}), monitor rounds {rounds}"
    )
    record_property("fleet_logs", summary)
    logger.info("%s", summary)
    assert min(rounds) >= SECONDS - 10  # every process checked the database all along
    assert all(any("'database'" in r["message"] for r in process) for process in records)
    assert max(busiest) <= BUDGET, "\n".join(
        f"{r['level']} {r['logger']}: {r['message'][:160]}"
        for r in records[busiest.index(max(busiest))]
    )
