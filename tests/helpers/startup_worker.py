"""Run the startup hook once, as one worker of a fleet would; used by the concurrency and kill
tests.

    python startup_worker.py URL [--script-location DIR] [--barrier DIR] [--lock-timeout S]

With ``--barrier``, the worker writes ``DIR/ready-<pid>`` once its imports are done and waits for
``DIR/go`` before starting, so that every worker reaches the database at the same moment. Prints
the schema report as JSON; on a package error prints it to stderr and exits 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from ai_secretary_schema.errors import SchemaError
from ai_secretary_schema.migration_manager import MigrationManager
from ai_secretary_schema.settings import SchemaSettings


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--script-location")
    parser.add_argument("--barrier")
    parser.add_argument("--lock-timeout", type=float, default=120.0)
    args = parser.parse_args()
    # Each revision the hook runs is logged at INFO (on stderr): the crowd tests count them.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("ai_secretary_schema.progress").setLevel(logging.INFO)
    settings = SchemaSettings.resolve(
        database_url=args.url, schema_lock_timeout=args.lock_timeout, schema_startup="upgrade"
    )
    if args.barrier:
        barrier = Path(args.barrier)
        (barrier / f"ready-{os.getpid()}").touch()
        deadline = time.monotonic() + 120
        while not (barrier / "go").exists():
            if time.monotonic() > deadline:
                sys.stderr.write("never got the go signal\n")
                return 2
            time.sleep(0.01)
    try:
        with MigrationManager(settings=settings, script_location=args.script_location) as manager:
            report = manager.run_startup()
    except SchemaError as exc:
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        return 1
    sys.stdout.write(report.to_json() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
