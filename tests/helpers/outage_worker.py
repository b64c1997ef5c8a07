"""One process of a fleet during a database outage; used by tests/test_fleet_logs.py.

    python outage_worker.py URL LOG_FILE SECONDS

Builds an application with the extension against ``URL`` (a PostgreSQL server that is down),
started anyway (``SCHEMA_STARTUP=off``) with the background health monitor checking every
second, as a worker of a fleet would run, and keeps it running for ``SECONDS``. Every log
record of the process, at INFO and above, is one JSON line in ``LOG_FILE`` (so that a message
with a newline is still one record). Prints ``{"rounds": N}``, the monitor rounds completed.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from flask import Flask

from ai_secretary_schema import SchemaExtension


class JSONLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": record.created,
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


def main(url: str, log_file: str, seconds: float) -> int:
    handler = logging.FileHandler(log_file)
    handler.setFormatter(JSONLines())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    app = Flask("outage_worker")
    schema = SchemaExtension(
        app,
        database_url=url,
        schema_startup="off",
        # One connection attempt: a process that starts during an outage then writes the
        # connection manager's one failure line, not its retries (they are its own key).
        database_connect_deadline=0,
        health_monitoring=True,
        health_check_interval=1,
    )
    time.sleep(seconds)
    health = schema.state(app).health
    rounds = health.rounds_completed
    schema.close(app)
    sys.stdout.write(json.dumps({"rounds": rounds}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
