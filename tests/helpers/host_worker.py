"""Start a host application of tests/helpers/host_apps.py in a process of its own, alone or as
one process of a crowd; used by tests/test_host_history.py.

    python host_worker.py [--barrier DIR] flask ARG...   # flask --app host_apps:create_app ARG...
    python host_worker.py [--barrier DIR] startup        # host_apps.create_app(): the startup hook

The application's settings are in the environment (``HOST_MIGRATIONS``, ``DATABASE_URL`` …).
With ``--barrier``, the worker writes ``DIR/ready-<pid>`` once its imports are done and waits for
``DIR/go``, so that every process of a crowd reaches the database at the same moment (as
door_worker.py does). The exit status is 0 on success; a failed start writes
``<error type>: <message>`` on stderr and exits 1, a failed ``flask`` command exits as ``flask``
does.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import flask.cli
import host_apps
from door_worker import wait_for_go

from ai_secretary_schema.errors import SchemaError

# Already imported under this name: flask finds it in sys.modules.
APP = "host_apps:create_app"


def main(argv: list[str]) -> int:
    barrier = None
    if argv[:1] == ["--barrier"] and len(argv) > 1:
        barrier, argv = Path(argv[1]), argv[2:]
    if not argv or argv[0] not in ("flask", "startup"):
        sys.stderr.write(__doc__ or "")
        return 2
    door, args = argv[0], argv[1:]
    if door == "startup":
        # The hook reports each revision it runs at INFO (on stderr): the tests count them.
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        logging.getLogger("ai_secretary_schema.progress").setLevel(logging.INFO)
    if barrier is not None:
        wait_for_go(barrier)
    if door == "startup":
        try:
            host_apps.create_app()
        except SchemaError as exc:
            sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
            return 1
        return 0
    # Exits (SystemExit) with the command's status, as the flask command does.
    flask.cli.cli.main(args=["--app", APP, *args], prog_name="flask")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
