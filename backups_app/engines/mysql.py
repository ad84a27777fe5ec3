"""MariaDB and MySQL: `mariadb-dump` (or `mysqldump`) out, the `mariadb` (or `mysql`) client back in.

Dump choices, each for a reason:
- ``--single-transaction --skip-lock-tables``: a consistent InnoDB snapshot without blocking writers
  (MyISAM tables have no snapshot: they are read as they are at that moment).
- ``--quick``: rows are streamed, not buffered in the tool, so memory stays flat whatever the size.
- ``--routines --triggers --events``: the schema objects are part of the database's state.
- ``--hex-blob``: binary columns survive any client character set.
- ``--default-character-set=utf8mb4``: emoji and every other 4-byte character survive.
- ``--no-tablespaces``: tablespace statements need the PROCESS privilege and are meaningless on
  another server.
- The database name is given alone (no ``--databases``), so the dump carries no ``CREATE DATABASE``
  or ``USE``: it can be restored into any database, a scratch one for verification included.

Restore replays the dump with ``--binary-mode`` (binary data is not mangled and client commands such
as ``\\!`` are not parsed) and, where the client has it, ``--sandbox`` (MariaDB refuses every command
that touches the file system or the shell), stopping at the first error and never reconnecting to
carry on. MySQL DDL is not transactional, so the dump is replayed into a staging database and only a
complete load is swapped in, with one ``RENAME TABLE`` (backups_app.engines.mysql_staging): a
restore that fails or is killed while loading leaves the target untouched, and objects created
after the backup are gone afterwards. Only the short swap can leave the target half-changed; the
services mark it dirty for that window.

The load itself (``restore_into``) goes over ``BACKUP_RESTORE_PARALLELISM`` connections when it is
above 1 (the default on a machine with 2 or more cores): ``mysql_parallel.load_parallel`` splits
the dump into statements and spreads each table's rows over the connections; nothing in the dump is
a client command there at all. With 1, one ``mariadb`` client replays it as described above.

Known limit: mariadb-dump 10.11 cannot dump the events of a database whose name holds a quote; it
fails loudly ("Unknown database"), never silently.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, ClassVar

from django.utils.translation import gettext as _

from backups_app.conf import app_settings

from ..exceptions import DumpFailed, RestoreFailed
from . import mysql_staging as staging
from .base import final_lines
from .mysql_staging import quote_identifier
from .client import (
    ClientToolEngine,
    database_errors,
    driver_connection,
    first_line,
    tool_output,
)
from .mysql_parallel import default_connections, load_parallel
from .process import redact

logger = logging.getLogger(__name__)
#: ER_DBACCESS_DENIED_ERROR, ER_TABLEACCESS_DENIED_ERROR, ER_SPECIFIC_ACCESS_DENIED_ERROR.
_ACCESS_DENIED = (1044, 1142, 1227)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_]+$")
#: What `--master-data=2` writes near the top of the dump, inside the dump's own transaction.
_COORDINATES = re.compile(rb"^-- CHANGE MASTER TO MASTER_LOG_FILE='([^']+)', MASTER_LOG_POS=(\d+);", re.MULTILINE)
#: The coordinates comment comes before the first table; no need to look further.
_COORDINATES_SCAN_BYTES = 64 * 1024


class _CoordinatesTap:
    """Passes a dump stream through unchanged, noting the binlog coordinates in its first bytes."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.head = b""
        self.coordinates: tuple[str, int] | None = None

    def read(self, size: int = -1) -> bytes:
        chunk = self.stream.read(size)
        if self.coordinates is None and len(self.head) < _COORDINATES_SCAN_BYTES:
            self.head += chunk[: _COORDINATES_SCAN_BYTES - len(self.head)]
            match = _COORDINATES.search(self.head)
            if match:
                self.coordinates = (match.group(1).decode("utf-8", "replace"), int(match.group(2)))
        return chunk


def option_file_value(value: str) -> str:
    """A value for a MySQL option file, double-quoted with the escapes the client understands.

    Unquoted, a ``#`` would start a comment and leading or trailing spaces would be lost.
    """
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"')
        .replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )
    return f'"{escaped}"'


def tool_flavor(version_text: str) -> tuple[str, int]:
    """("mariadb" or "mysql", major version) from a client's ``--version`` line."""
    flavor = "mariadb" if "mariadb" in version_text.lower() else "mysql"
    match = re.search(r"Distrib (\d+)\.", version_text) or re.search(r"Ver (\d+)\.", version_text)
    return flavor, int(match.group(1)) if match else 0


class MySQLDumpEngine(ClientToolEngine):
    """Dump and restore a MariaDB or MySQL database with the server's own client tools."""

    vendor = "mysql"
    completion_marker = b"-- Dump completed"
    credentials_suffix = ".cnf"
    bin_dir_setting = "BACKUP_MYSQL_BIN_DIR"
    dump_tools: ClassVar[tuple[str, ...]] = ("mariadb-dump", "mysqldump")
    restore_tools: ClassVar[tuple[str, ...]] = ("mariadb", "mysql")
    #: Where the client looks for its option files, when the deployment moves them.
    environment_passthrough: ClassVar[tuple[str, ...]] = ("MYSQL_HOME", "MARIADB_HOME")
    #: The whole last line of a complete dump (`--skip-dump-date` drops the date).
    completion_line = re.compile(rb"-- Dump completed( on \d{4}-\d\d-\d\d +\d{1,2}:\d\d:\d\d)?")

    def is_complete(self, tail: bytes) -> bool:
        """The dump's last non-empty line is exactly mysqldump's `-- Dump completed on <date>`."""
        lines = final_lines(tail, 1)
        return bool(lines) and self.completion_line.fullmatch(lines[-1].strip()) is not None

    def secrets(self) -> tuple[str, ...]:
        return (self.password, option_file_value(self.password)[1:-1])

    # --- Binary log coordinates (point-in-time recovery) ----------------------------------------

    def binary_logging(self) -> bool:
        """Whether the server writes a binary log (then each dump records its coordinates)."""
        try:
            with driver_connection(self.settings_dict) as connection:
                cursor = connection.cursor()
                cursor.execute("SELECT @@GLOBAL.log_bin")
                return bool(int(cursor.fetchone()[0] or 0))
        except database_errors(self.settings_dict):
            return False  # unreachable: the dump fails next with the tool's own message

    @contextmanager
    def dump(self) -> Iterator[IO[bytes]]:
        self._binlog_coordinates = None
        self._with_coordinates = self.binary_logging()
        with super().dump() as stream:
            tap = _CoordinatesTap(stream)
            yield tap
        if tap.coordinates:
            self._binlog_coordinates = {"file": tap.coordinates[0], "position": tap.coordinates[1], "gtid": ""}

    def snapshot_binlog_coordinates(self) -> dict[str, object] | None:
        coordinates, self._binlog_coordinates = getattr(self, "_binlog_coordinates", None), None
        if coordinates is None:
            return None
        try:
            with driver_connection(self.settings_dict) as connection:
                cursor = connection.cursor()
                # MariaDB maps a file/position to the GTID state there: the same snapshot's GTID.
                cursor.execute("SELECT BINLOG_GTID_POS(%s, %s)", [coordinates["file"], coordinates["position"]])
                row = cursor.fetchone()
                coordinates["gtid"] = str(row[0] or "") if row else ""
        except database_errors(self.settings_dict):
            pass  # Oracle MySQL has no BINLOG_GTID_POS; file and position are enough to replay
        return coordinates

    # --- Connection arguments ---------------------------------------------------------------------

    def credentials_content(self) -> str | None:
        lines = ["# Written by opsdesk for one run and removed when it ends."]
        read_default_file = self.options.get("read_default_file")
        if read_default_file:
            # The DATABASES entry may keep its settings in an option file (Django supports it):
            # include it, then let our own [client] group override it.
            lines.append(f"!include {read_default_file}")
        lines.append("[client]")
        # With an option file in play and no PASSWORD, the password comes from that file.
        if self.password or not read_default_file:
            lines.append(f"password={option_file_value(self.password)}")
        return "\n".join(lines) + "\n"

    def connection_arguments(self, tool: str) -> list[str]:
        host = str(self.settings_dict.get("HOST") or "")
        port = str(self.settings_dict.get("PORT") or "")
        user = str(self.settings_dict.get("USER") or "")
        options = self.options
        arguments = []
        # Same rule as Django's MySQL backend: a HOST that is a path is the server's socket.
        socket = options.get("unix_socket") or (host if host.startswith("/") else "")
        if socket:
            arguments.append(f"--socket={socket}")
        if host and not host.startswith("/"):
            arguments.append(f"--host={host}")
        if port:
            arguments.append(f"--port={port}")
        if user:
            # One argument with "=": a user name starting with "-" cannot be read as an option.
            arguments.append(f"--user={user}")
        arguments += self.ssl_arguments(tool)
        return arguments

    def ssl_arguments(self, tool: str) -> list[str]:
        """OPTIONS ``ssl`` (mysqlclient's dict) and ``ssl_mode`` in the client's own dialect."""
        options = self.options
        arguments = []
        ssl = options.get("ssl") or {}
        if isinstance(ssl, dict):
            for key in ("ca", "capath", "cert", "key", "cipher", "crl", "crlpath"):
                if ssl.get(key):
                    arguments.append(f"--ssl-{key}={ssl[key]}")
        mode = str(options.get("ssl_mode") or "").upper()
        flavor, _major = self.flavor(tool)
        if flavor == "mysql":
            if mode:
                arguments.append(f"--ssl-mode={mode}")
        elif mode == "DISABLED":
            arguments.append("--skip-ssl")
        elif mode == "REQUIRED":
            arguments.append("--ssl")
        elif mode in ("VERIFY_CA", "VERIFY_IDENTITY"):
            arguments += ["--ssl", "--ssl-verify-server-cert"]
        return arguments

    def flavor(self, tool: str) -> tuple[str, int]:
        return tool_flavor(first_line(tool_output(tool, "--version")))

    # --- Dump and restore -------------------------------------------------------------------------

    def dump_argv(self, tool: str, credentials: str | None, snapshot_id: str | None = None) -> list[str]:
        # The option file must be the very first argument: the client only honours it there.
        argv = [tool, f"--defaults-extra-file={credentials}", *self.connection_arguments(tool)]
        argv += [
            "--single-transaction",
            "--skip-lock-tables",
            "--quick",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            "--default-character-set=utf8mb4",
            "--no-tablespaces",
            # Large BLOB rows: the tool's own limit must not be the one that fails.
            "--max-allowed-packet=1G",
        ]
        flavor, major = self.flavor(tool)
        if flavor == "mysql" and major >= 8:
            # Oracle's mysqldump 8 would otherwise write GTID_PURGED (fails on restore without
            # SUPER) and query COLUMN_STATISTICS (missing on MariaDB servers).
            argv += ["--set-gtid-purged=OFF", "--column-statistics=0"]
        argv += self.table_data_arguments(flavor)
        if getattr(self, "_with_coordinates", False):
            # The binlog file/position of the dump's own consistent snapshot, as a comment (=2).
            argv.append("--source-data=2" if flavor == "mysql" and major >= 8 else "--master-data=2")
        # "--" ends the options: a database named "-x" or "--help" is a name, nothing else.
        return [*argv, "--", self.database_name]

    def table_data_arguments(self, flavor: str) -> list[str]:
        """Leave the rows of `tables_without_data` out, keeping their CREATE TABLE."""
        if not self.tables_without_data:
            return []
        if flavor != "mariadb":
            # Oracle's mysqldump has no --ignore-table-data: better no backup than one holding
            # live sessions.
            raise DumpFailed(
                _("Backing up %(alias)s needs MariaDB's mariadb-dump (--ignore-table-data), so that "
                  "the rows of %(tables)s stay out of the backup; set BACKUP_MYSQL_BIN_DIR.")
                % {"alias": self.alias, "tables": ", ".join(self.tables_without_data)}
            )
        return [f"--ignore-table-data={self.database_name}.{table}" for table in self.tables_without_data]

    def restore_argv(self, tool: str, credentials: str | None) -> list[str]:
        argv = [tool, f"--defaults-extra-file={credentials}", *self.connection_arguments(tool)]
        argv += [
            "--batch",
            # A dropped connection must end the restore, not resume mid-dump in a new session.
            "--skip-reconnect",
            # Binary data stays intact, and client commands (\!, system, source...) are not parsed.
            "--binary-mode",
            "--default-character-set=utf8mb4",
            "--max-allowed-packet=1G",
            # mysqldump sets this too; a dump from elsewhere may not, and table order must not matter.
            "--init-command=SET SESSION FOREIGN_KEY_CHECKS=0",
        ]
        if "--sandbox" in tool_output(tool, "--help"):
            argv.append("--sandbox")
        return [*argv, f"--database={self.database_name}"]

    def restore(self, stream: IO[bytes], *, before_target_change: Callable[[], None] = lambda: None) -> None:
        """Load into a staging database, check the load is complete, swap it in (mysql_staging)."""
        if self.scratch:
            # A brand-new scratch database (verification): nothing to protect, no staging needed.
            self.restore_into(stream, self.database_name)
            return
        target = self.database_name
        self._drop_work_databases(staging.leftover_work_databases, target)
        staging_name = staging.work_database_name(target, "staging")
        trash_name = staging.work_database_name(target, "trash")
        if not self._create_staging(staging_name):
            # A user with privileges on its own database only: restore in place, not atomic, so
            # the database is marked dirty for the whole restore instead of the swap alone.
            before_target_change()
            self.prepare_restore()
            self.restore_into(stream, target)
            return
        try:
            reader = staging.TailKeepingReader(stream)
            self.restore_into(reader, staging_name)
            if not (reader.at_end and self.is_complete(reader.tail)):
                raise RestoreFailed(_("The dump loaded into the staging database did not end with its "
                                      "completion marker; the database was not changed."))
            self._server_call(self.create_scratch_database, trash_name,
                              _("Could not create the trash database %(name)s"))
            self._server_call(
                lambda _name: self._swap(target, staging_name, trash_name, before_target_change), target,
                _("Could not swap the restored tables into %(name)s"),
            )
        finally:
            self._drop_work_databases(lambda _cursor, _target: [staging_name, trash_name], target)

    def restore_into(self, stream: IO[bytes], database_name: str) -> None:
        connections = int(app_settings.BACKUP_RESTORE_PARALLELISM or default_connections())
        if connections <= 1:
            super().restore_into(stream, database_name)  # one `mariadb --binary-mode --sandbox` client
            return
        try:
            load_parallel(
                stream, settings_dict=self.settings_dict, database=database_name,
                connections=connections, timeout=self.timeout,
            )
        except RestoreFailed as error:
            raise RestoreFailed(redact(str(error), self.secrets())) from None

    def _create_staging(self, name: str) -> bool:
        """Create the staging database; False when the server denies CREATE DATABASE to this user."""
        try:
            self.create_scratch_database(name)
        except database_errors(self.settings_dict) as error:
            code = error.args[0] if error.args else None
            if code in _ACCESS_DENIED:
                logger.warning(
                    "The user of %s may not create databases: restoring in place, without a staging "
                    "database (not atomic; the database is marked dirty while it runs).", self.alias)
                return False
            raise self.database_error(
                RestoreFailed, _("Could not create the staging database %(name)s") % {"name": name}, error
            ) from None
        return True

    def _swap(self, target: str, staging_name: str, trash_name: str, before_target_change) -> None:
        with driver_connection(self.settings_dict, name=None) as connection:
            staging.swap_in(connection, target=target, staging=staging_name, trash=trash_name,
                            before_target_change=before_target_change)

    def _server_call(self, operation, name: str, message: str) -> None:
        try:
            operation(name)
        except database_errors(self.settings_dict) as error:
            raise self.database_error(RestoreFailed, message % {"name": name}, error) from None

    def _drop_work_databases(self, names, target: str) -> None:
        """Drop work databases (this restore's, or those an interrupted one left); never raises."""
        try:
            with driver_connection(self.settings_dict, name=None) as connection:
                cursor = connection.cursor()
                for name in names(cursor, target):
                    cursor.execute(f"DROP DATABASE IF EXISTS {quote_identifier(name)}")
        except database_errors(self.settings_dict):
            logger.warning("Could not drop the work databases of %s", self.alias, exc_info=True)

    def prepare_restore(self) -> None:
        """Drop every object of the database, so that only what the dump creates exists afterwards.

        Objects are dropped rather than the database itself: that needs no CREATE privilege and
        keeps the database's character set, collation and grants.
        """
        schema = self.database_name
        qualified = lambda name: f"{quote_identifier(schema)}.{quote_identifier(name)}"  # noqa: E731
        try:
            with driver_connection(self.settings_dict) as connection:
                cursor = connection.cursor()
                cursor.execute("SET SESSION FOREIGN_KEY_CHECKS = 0")
                cursor.execute(
                    "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
                    [schema],
                )
                tables = cursor.fetchall()
                # Views first: they may depend on the tables.
                for name, table_type in sorted(tables, key=lambda row: row[1] != "VIEW"):
                    if table_type == "VIEW":
                        cursor.execute(f"DROP VIEW IF EXISTS {qualified(name)}")
                    elif table_type == "SEQUENCE":
                        cursor.execute(f"DROP SEQUENCE IF EXISTS {qualified(name)}")
                    elif table_type != "TEMPORARY":
                        cursor.execute(f"DROP TABLE IF EXISTS {qualified(name)}")
                cursor.execute(
                    "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES "
                    "WHERE ROUTINE_SCHEMA = %s AND ROUTINE_TYPE IN ('PROCEDURE', 'FUNCTION')",
                    [schema],
                )
                for name, routine_type in cursor.fetchall():
                    cursor.execute(f"DROP {routine_type} IF EXISTS {qualified(name)}")
                cursor.execute("SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s", [schema])
                for (name,) in cursor.fetchall():
                    cursor.execute(f"DROP EVENT IF EXISTS {qualified(name)}")
        except database_errors(self.settings_dict) as error:
            raise self.database_error(
                RestoreFailed, _("Could not empty database %(name)s before the restore") % {"name": schema}, error
            ) from None

    # --- Inspection -------------------------------------------------------------------------------

    def server_version(self, connection) -> str:
        cursor = connection.cursor()
        cursor.execute("SELECT VERSION()")
        return str(cursor.fetchone()[0])

    def begin_snapshot(self, connection) -> None:
        """A consistent InnoDB snapshot, started as mariadb-dump starts its own (no sharing)."""
        cursor = connection.cursor()
        # Django's MySQL backend defaults sessions to READ COMMITTED, which has no lasting snapshot.
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        return None

    def count_rows(self, connection) -> dict[str, int]:
        schema = self.database_name
        cursor = connection.cursor()
        cursor.execute(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
            "AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') ORDER BY TABLE_NAME",
            [schema],
        )
        counts = {}
        for (name,) in cursor.fetchall():
            cursor.execute(f"SELECT COUNT(*) FROM {quote_identifier(schema)}.{quote_identifier(name)}")
            counts[name] = int(cursor.fetchone()[0])
        return counts

    # --- Scratch databases ------------------------------------------------------------------------

    def create_scratch_database(self, name: str) -> None:
        with driver_connection(self.settings_dict, name=None) as connection:
            cursor = connection.cursor()
            cursor.execute(
                "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
                "WHERE SCHEMA_NAME = %s",
                [self.database_name],
            )
            row = cursor.fetchone()
            charset, collation = row if row else ("utf8mb4", "utf8mb4_unicode_ci")
            clauses = ""
            if _SAFE_NAME.match(charset) and _SAFE_NAME.match(collation):
                clauses = f" CHARACTER SET {charset} COLLATE {collation}"
            cursor.execute(f"CREATE DATABASE {quote_identifier(name)}{clauses}")

    def drop_scratch_database(self, name: str) -> None:
        with driver_connection(self.settings_dict, name=None) as connection:
            connection.cursor().execute(f"DROP DATABASE IF EXISTS {quote_identifier(name)}")
