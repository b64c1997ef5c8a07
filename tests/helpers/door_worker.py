"""Run one door into the migrations once, as one process of a crowd; used by tests/test_doors.py.

    python door_worker.py --barrier DIR alembic ARG...   # alembic.config.main(argv=ARG...)
    python door_worker.py --barrier DIR cli ARG...       # ai-secretary-schema ARG...
    python door_worker.py --barrier DIR flask ARG...     # flask ARG... (flask db upgrade)

The worker imports everything the door needs first, writes ``DIR/ready-<pid>``, then waits for
``DIR/go`` before entering the door, so that every process of the crowd reaches the database at
the same moment (the startup hook has the same barrier in startup_worker.py). The exit status is
the door's own: 0 on success, non-zero (with the error on stderr) on failure.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import alembic.config
import flask.cli

from ai_secretary_schema import cli


def wait_for_go(barrier: Path) -> None:
    (barrier / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 120
    while not (barrier / "go").exists():
        if time.monotonic() > deadline:
            sys.stderr.write("never got the go signal\n")
            sys.exit(2)
        time.sleep(0.01)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] != "--barrier" or argv[2] not in ("alembic", "cli", "flask"):
        sys.stderr.write(__doc__ or "")
        return 2
    barrier, door, args = Path(argv[1]), argv[2], argv[3:]
    wait_for_go(barrier)
    if door == "cli":
        return cli.main(args)
    if door == "flask":
        # Exits (SystemExit) with the command's status, as the flask command does.
        flask.cli.cli.main(args=args, prog_name="flask")
    # alembic.config.main exits (SystemExit) on a CommandError and lets any other error
    # propagate (a traceback and status 1): either way the status says whether it worked.
    alembic.config.main(argv=args, prog="alembic")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
