"""A private MariaDB server with binary logging on, for point-in-time recovery tests and benchmarks.

The machine's shared MariaDB (3306) has binary logging off and must never be reconfigured, so the
tests that need a binlog start their own `mariadbd` on a free port with a temporary data directory
(`mariadb-install-db`, then `--log-bin --binlog-format=ROW --server-id=1`) and stop it afterwards.
Root has an empty password and real grants (no --skip-grant-tables): the archiver and the replay
authenticate exactly as they would against a production server.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

START_TIMEOUT_SECONDS = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tools_available() -> str | None:
    """None when the server binaries are installed, else what is missing."""
    missing = [tool for tool in ("mariadbd", "mariadb-install-db", "mariadb-binlog") if not _which(tool)]
    return ", ".join(missing) or None


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/local/sbin")


class BinlogServer:
    """`with BinlogServer() as server:` a running mariadbd with a binlog; stopped and deleted on exit."""

    def __init__(self, *, log_bin: bool = True, root: Path | None = None) -> None:
        self.log_bin = log_bin
        self.root = Path(root or tempfile.mkdtemp(prefix="opsdesk-binlog-server-"))
        self.datadir = self.root / "data"
        self.socket = self.root / "mariadb.sock"
        self.port = 0
        self.process: subprocess.Popen | None = None

    # --- Life cycle -------------------------------------------------------------------------------
    def __enter__(self) -> BinlogServer:
        self.install()
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def install(self) -> None:
        argv = [
            _which("mariadb-install-db"), "--no-defaults", f"--datadir={self.datadir}",
            "--auth-root-authentication-method=normal", "--skip-test-db",
        ]
        if os.geteuid() == 0:
            argv.append("--user=root")
        for _attempt in (1, 2):  # a machine busy with other servers can fail the bootstrap once
            completed = subprocess.run(argv, capture_output=True, timeout=START_TIMEOUT_SECONDS, check=False)
            if completed.returncode == 0:
                return
            shutil.rmtree(self.datadir, ignore_errors=True)
        output = (completed.stdout + completed.stderr).decode(errors="replace")[-2000:]
        raise RuntimeError(f"mariadb-install-db failed: {output}")

    def start(self) -> None:
        """Start (or restart, keeping the data directory) the server on a fresh free port."""
        self.port = free_port()
        argv = [
            _which("mariadbd"), "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
            "--bind-address=127.0.0.1", f"--socket={self.socket}", f"--pid-file={self.root / 'mariadb.pid'}",
            f"--log-error={self.root / 'error.log'}", "--innodb-buffer-pool-size=32M",
            "--innodb-log-file-size=16M", "--max-connections=50", "--skip-name-resolve",
        ]
        if self.log_bin:
            argv += [f"--log-bin={self.datadir / 'binlog'}", "--binlog-format=ROW", "--server-id=1"]
        if os.geteuid() == 0:
            argv.append("--user=root")
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited at start: {self.error_log_tail()}")
            try:
                self.connect().close()
                return
            except Exception:  # noqa: BLE001 - not accepting connections yet
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"mariadbd did not start within {START_TIMEOUT_SECONDS} s: {self.error_log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=START_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: the server dies the way a crashed machine's would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def error_log_tail(self) -> str:
        try:
            return (self.root / "error.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    # --- Using it ---------------------------------------------------------------------------------
    def connect(self, database: str | None = None):
        import MySQLdb

        arguments = {"host": "127.0.0.1", "port": self.port, "user": "root", "passwd": "", "autocommit": True}
        if database:
            arguments["db"] = database
        return MySQLdb.connect(**arguments, connect_timeout=2)

    def execute(self, *statements: str, database: str | None = None) -> list[tuple]:
        """Run statements on a fresh connection; the rows of the last one."""
        connection = self.connect(database)
        try:
            cursor = connection.cursor()
            for statement in statements:
                cursor.execute(statement)
            return list(cursor.fetchall() or [])
        finally:
            connection.close()

    def settings_dict(self, database: str) -> dict:
        """A Django DATABASES entry for `database` on this server."""
        return {
            "ENGINE": "django.db.backends.mysql", "NAME": database, "HOST": "127.0.0.1",
            "PORT": self.port, "USER": "root", "PASSWORD": "", "OPTIONS": {"charset": "utf8mb4"},
        }
