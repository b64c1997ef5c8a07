"""A real PgBouncer of the test's own, in front of the PostgreSQL on 127.0.0.1:5432.

Debian's ``pgbouncer`` (``.ci/run`` installs it), started on a free loopback port in
``pool_mode = transaction`` with a small pool (``default_pool_size = 3``), ``auth_type = trust``
(the server trusts 127.0.0.1 too) and its log and pid files in a directory of its own. PgBouncer
refuses to run as root, so as root it is started with ``-u postgres``; pytest's ``tmp_path``
is private to root (mode 0700 up the tree), so the directory is a ``mkdtemp`` of its own,
handed to postgres, and the log is copied into ``tmp_path`` when it stops.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
RUN_AS = "postgres"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PgBouncer:
    """One PgBouncer process; :meth:`start` it, :meth:`stop` it."""

    def __init__(self, keep_log_in: Path, *, pool_size: int = 3, pool_mode: str = "transaction"):
        self.keep_log_in = keep_log_in
        self.pool_size = pool_size
        self.pool_mode = pool_mode
        self.users = ["postgres"]
        self.port = 0
        self.directory = Path(tempfile.mkdtemp(prefix="ais-pgbouncer-"))
        self.process: subprocess.Popen[bytes] | None = None

    # -- files -----------------------------------------------------------------------------------

    @property
    def log(self) -> Path:
        return self.directory / "pgbouncer.log"

    def _write_files(self) -> Path:
        auth = self.directory / "userlist.txt"
        auth.write_text("".join(f'"{user}" ""\n' for user in self.users))
        ini = self.directory / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            "* = host=127.0.0.1 port=5432\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {auth}\n"
            f"pool_mode = {self.pool_mode}\n"
            f"default_pool_size = {self.pool_size}\n"
            "reserve_pool_size = 0\n"
            "max_client_conn = 500\n"
            "admin_users = postgres\n"
            f"logfile = {self.log}\n"
            f"pidfile = {self.directory / 'pgbouncer.pid'}\n"
        )
        if os.geteuid() == 0:
            record = pwd.getpwnam(RUN_AS)
            os.chmod(self.directory, 0o755)
            for path in (self.directory, *self.directory.iterdir()):
                os.chown(path, record.pw_uid, record.pw_gid)
        return ini

    # -- process ---------------------------------------------------------------------------------

    def start(self) -> PgBouncer:
        for _ in range(5):  # another process may take the free port first
            self.port = free_port()
            ini = self._write_files()
            user = ["-u", RUN_AS] if os.geteuid() == 0 else []
            self.process = subprocess.Popen(
                [PGBOUNCER, *user, str(ini)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_until_listening():
                return self
            self.process.kill()
            self.process.wait()
        raise RuntimeError(f"PgBouncer did not start: {self._log_tail()}")

    def _wait_until_listening(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                self.admin("SHOW VERSION")
            except psycopg2.OperationalError:
                time.sleep(0.05)
                continue
            return True
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log.exists():
            shutil.copy(self.log, self.keep_log_in / "pgbouncer.log")
        shutil.rmtree(self.directory, ignore_errors=True)

    def _log_tail(self) -> str:
        return self.log.read_text()[-2000:] if self.log.exists() else "(no log)"

    # -- use -------------------------------------------------------------------------------------

    def url(
        self, dbname: str, *, driver: str = "postgresql+psycopg2", user: str = "postgres"
    ) -> str:
        """The URL of ``dbname`` through this PgBouncer."""
        return f"{driver}://{user}@127.0.0.1:{self.port}/{dbname}"

    def admin(self, command: str) -> list[tuple[Any, ...]]:
        """Run ``command`` (``SHOW CLIENTS``, ``RELOAD`` …) on the admin console."""
        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="pgbouncer", connect_timeout=2
        )
        connection.autocommit = True  # the console has no transactions
        try:
            with connection.cursor() as cursor:
                cursor.execute(command)
                return list(cursor.fetchall()) if cursor.description else []
        finally:
            connection.close()

    def add_user(self, name: str) -> None:
        """Let role ``name`` log in through PgBouncer (trust: it only has to be listed)."""
        self.users.append(name)
        self._write_files()
        self.admin("RELOAD")
