"""startup_worker.py, with the PostgreSQL migration lock swapped for a test-only implementation
when ``AIS_TEST_LOCK=session`` (see session_lock.py); used by tests/test_pgbouncer.py.

    python fleet_worker.py URL [--script-location DIR] [--barrier DIR] [--lock-timeout S]
"""

from __future__ import annotations

import os
import sys

import session_lock
import startup_worker

if __name__ == "__main__":
    if os.environ.get("AIS_TEST_LOCK") == "session":
        session_lock.install()
    sys.exit(startup_worker.main())
