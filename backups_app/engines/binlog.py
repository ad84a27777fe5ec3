"""MariaDB/MySQL binary logs: stream them off the server, and replay them into a database.

Both run `mariadb-binlog` (or `mysqlbinlog`) the way every engine runs its tools (argv lists, own
process group, redacted errors) and authenticate exactly as the dumps do: the password sits in the
engine's in-memory 0600 option file, never on a command line or in a child's environment.

- ``stream()``: ``--read-from-remote-server --raw --stop-never`` writes the server's binlog files,
  byte for byte and event by event as they arrive, into a folder. It connects as a replica, so it
  needs a server id of its own (derived from the alias) and the REPLICATION SLAVE privilege.
- ``replay()``: decodes local binlog files from a start position up to a stop time, position or
  GTID and pipes the SQL into the `mariadb` client with ``--binary-mode`` (row images and client
  commands left alone). Only the database's own events are replayed (``--database``), renamed when
  the target is another database (``--rewrite-db``: verification into a scratch database).
"""
from __future__ import annotations

import re
import subprocess
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, ClassVar

from django.utils.translation import gettext as _

from ..exceptions import BackupError, DumpFailed, RestoreFailed
from .client import copy_stream, database_errors, driver_connection
from .mysql import MySQLDumpEngine
from .process import run_tool

#: Replayed transactions must get new GTIDs from the server: re-using the archived sequence numbers
#: would write duplicate GTIDs into the binlog (and fail outright under gtid_strict_mode).
_GTID_SEQUENCE_LINE = re.compile(rb"^/\*M!100001 SET @@session\.gtid_seq_no=\d+\*//\*!\*/;\r?\n?$")


class BinlogUnavailable(BackupError):
    """The server does not keep a binary log usable for point-in-time recovery."""


@dataclass(frozen=True)
class BinlogSettings:
    log_bin: bool
    binlog_format: str
    server_id: int
    files: tuple[tuple[str, int], ...]  # SHOW BINARY LOGS: (name, size), oldest first

    @property
    def usable(self) -> bool:
        return self.log_bin and self.binlog_format.upper() == "ROW"


def filter_gtid_sequence(lines: Iterable[bytes]) -> Iterator[bytes]:
    for line in lines:
        if not _GTID_SEQUENCE_LINE.match(line):
            yield line


class MySQLBinlogTools:
    """The binlog side of one MySQL/MariaDB database alias (wraps its dump engine)."""

    binlog_tools: ClassVar[tuple[str, ...]] = ("mariadb-binlog", "mysqlbinlog")

    def __init__(self, engine: MySQLDumpEngine) -> None:
        if not isinstance(engine, MySQLDumpEngine):
            raise BinlogUnavailable(
                _("Point-in-time recovery is available for MariaDB/MySQL databases only (%(alias)s is %(vendor)s).")
                % {"alias": engine.alias, "vendor": engine.vendor}
            )
        self.engine = engine

    @property
    def replica_server_id(self) -> int:
        """A server id for the streaming connection, stable per alias, away from usual small ids."""
        return 0x40000000 + zlib.crc32(self.engine.alias.encode()) % 0x10000000

    def server_settings(self) -> BinlogSettings:
        """log_bin, binlog_format, server_id and the binlog files the server still has."""
        try:
            with driver_connection(self.engine.settings_dict) as connection:
                cursor = connection.cursor()
                cursor.execute("SELECT @@GLOBAL.log_bin, @@GLOBAL.binlog_format, @@GLOBAL.server_id")
                log_bin, binlog_format, server_id = cursor.fetchone()
                files: list[tuple[str, int]] = []
                if int(log_bin or 0):
                    cursor.execute("SHOW BINARY LOGS")
                    files = [(str(row[0]), int(row[1])) for row in cursor.fetchall()]
        except database_errors(self.engine.settings_dict) as error:
            raise self.engine.database_error(
                BinlogUnavailable, _("Could not read the binary log settings of %(alias)s") % {"alias": self.engine.alias},
                error,
            ) from None
        return BinlogSettings(bool(int(log_bin or 0)), str(binlog_format or ""), int(server_id or 0), tuple(files))

    # --- Streaming --------------------------------------------------------------------------------

    def stream_argv(self, tool: str, credentials: str | None, *, first_file: str, directory: Path) -> list[str]:
        return [
            tool, f"--defaults-extra-file={credentials}", *self.engine.connection_arguments(tool),
            "--read-from-remote-server", "--raw", "--stop-never",
            f"--stop-never-slave-server-id={self.replica_server_id}",
            # A prefix: each server file lands as <directory>/<its own name>.
            f"--result-file={directory}/",
            "--", first_file,
        ]

    @contextmanager
    def stream(self, *, first_file: str, directory: Path) -> Iterator[subprocess.Popen]:
        """Run the streaming client while the block runs; leaving the block stops it.

        Raises DumpFailed (with the tool's message) when it exits on its own: server gone, binlog
        purged, wrong password.
        """
        tool = self.engine.find(self.binlog_tools, DumpFailed)
        with self.engine.credentials(DumpFailed) as credentials, run_tool(
            self.stream_argv(tool, credentials, first_file=first_file, directory=directory),
            env=self.engine.tool_environment(credentials), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, timeout=None, secrets=self.engine.secrets(), error_class=DumpFailed,
        ) as process:
            yield process

    # --- Replay -----------------------------------------------------------------------------------

    def replay_argv(
        self, tool: str, *, files: list[Path], start_position: int, source_database: str,
        stop_datetime: datetime | None = None, stop_position: int | None = None,
    ) -> list[str]:
        argv = [tool, "--no-defaults", f"--start-position={start_position}", f"--database={source_database}"]
        if self.engine.database_name != source_database:
            argv.append(f"--rewrite-db={source_database}->{self.engine.database_name}")
        if stop_datetime is not None:
            # Interpreted in the tool's local time zone: the child runs with TZ=UTC.
            argv.append(f"--stop-datetime={stop_datetime.astimezone(UTC):%Y-%m-%d %H:%M:%S}")
        if stop_position is not None:
            argv.append(f"--stop-position={stop_position}")  # applies to the last file given
        return [*argv, "--", *map(str, files)]

    def replay(
        self, *, files: list[Path], start_position: int, source_database: str,
        stop_datetime: datetime | None = None, stop_position: int | None = None,
    ) -> None:
        """Apply the events of `files` (in order) to this engine's database. Raises RestoreFailed."""
        engine = self.engine
        reader_tool = engine.find(self.binlog_tools, RestoreFailed)
        client_tool = engine.find(engine.restore_tools, RestoreFailed)
        reader_env = {**engine.tool_environment(None), "TZ": "UTC"}
        reader_argv = self.replay_argv(
            reader_tool, files=files, start_position=start_position, source_database=source_database,
            stop_datetime=stop_datetime, stop_position=stop_position,
        )
        with run_tool(reader_argv, env=reader_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                      timeout=engine.timeout, error_class=RestoreFailed) as reader:
            with engine.credentials(RestoreFailed) as credentials, run_tool(
                engine.restore_argv(client_tool, credentials), env=engine.tool_environment(credentials),
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, timeout=engine.timeout,
                secrets=engine.secrets(), error_class=RestoreFailed,
            ) as client:
                copy_stream(filter_gtid_sequence(_lines(reader.stdout)), client.stdin)


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    return iter(stream.readline, b"")
