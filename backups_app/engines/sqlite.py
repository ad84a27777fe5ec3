"""SQLite: a consistent SQL-text dump while writers keep working, and an exact restore.

Why `iterdump()` inside one read transaction (rather than the online-backup API to a temporary file
followed by a dump of that copy): a read transaction is a snapshot, so every table is dumped as of the
same instant; in WAL mode (opsdesk's settings turn WAL on for every SQLite database) writers carry on
meanwhile, and nothing but the compressed dump is ever written to disk. The stream is SQL text like
every other engine's, so checksums, verification and `sqlite3 db < dump.sql` work the same way.
(With a rollback journal, writers wait on their busy timeout while the dump runs.)

Restore builds the dump into a temporary database next to the target, then copies it over the target
with the online-backup API in one step: the target ends up exactly the backup's content (tables
created since are gone), and a dump that fails half-way never touches the target.
"""
from __future__ import annotations

import io
import os
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from django.utils.translation import gettext as _

from backups_app.conf import app_settings
from backups_app.exceptions import DumpFailed, RestoreFailed

from .base import DumpEngine, final_lines

COMPLETION_MARKER = b"-- opsdesk SQLite dump completed"


class _GeneratorReader(io.RawIOBase):
    """A readable binary stream over an iterator of byte strings."""

    def __init__(self, parts: Iterator[bytes]) -> None:
        self._parts = parts
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            try:
                self._pending = next(self._parts)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


_ROW_INSERT = 'INSERT INTO "'


def _identifier_end(statement: str, start: int) -> int:
    """Index just past the double-quoted identifier that starts at `start` ("" is an escaped ")."""
    position = start
    while True:
        position = statement.index('"', position)
        if statement.startswith('""', position):
            position += 2
            continue
        return position + 1


def _on_one_line(statement: str) -> str:
    """A row's INSERT with the line breaks of its text values spelled char(10) / char(13).

    iterdump() writes text values as they are, line breaks included, so a row could carry lines
    that look like the dump's own ending (`COMMIT;`, the marker); on one line, only the real ending
    can be the dump's last lines (the sqlite3 shell's .dump does the same). After the quoted table
    name a row's INSERT holds nothing but quote()d literals, so every line break is inside a string.
    """
    if not statement.startswith(_ROW_INSERT) or "\n" not in statement:
        return statement
    end = _identifier_end(statement, len(_ROW_INSERT))
    values = statement[end:].replace("\r", "'||char(13)||'").replace("\n", "'||char(10)||'")
    return statement[:end] + values


def _batched(lines: Iterator[str], batch_bytes: int = 1 << 20) -> Iterator[bytes]:
    """Join dump lines into ~1 MiB blocks: one Python call per line would dominate the cost.

    Row INSERTs holding line breaks are put on one line (`_on_one_line`) on the way.
    """
    parts: list[str] = []
    size = 0
    for line in lines:
        if "\n" in line:  # rare: the call is made only for rows that span lines
            line = _on_one_line(line)
        parts.append(line)
        parts.append("\n")
        size += len(line) + 1
        if size >= batch_bytes:
            yield "".join(parts).encode("utf-8")
            parts, size = [], 0
    if parts:
        yield "".join(parts).encode("utf-8")


class SQLiteDumpEngine(DumpEngine):
    """Dump and restore a SQLite database file with Python's sqlite3 module (no client tool)."""

    vendor = "sqlite"
    completion_marker = COMPLETION_MARKER

    def __init__(self, alias, settings_dict) -> None:
        super().__init__(alias, settings_dict)
        self._snapshot_row_counts: dict[str, int] | None = None

    @property
    def _is_memory(self) -> bool:
        return self.database_name == ":memory:" or "mode=memory" in self.database_name

    def _connect(self) -> sqlite3.Connection:
        name = self.database_name
        if not self._is_memory and not name.startswith("file:") and not Path(name).is_file():
            # sqlite3.connect would silently create an empty database and "back it up".
            raise DumpFailed(_("SQLite database file %(name)s does not exist") % {"name": name})
        connection = sqlite3.connect(
            name, uri=name.startswith("file:"), isolation_level=None, check_same_thread=False,
            timeout=30,
        )
        return connection

    @staticmethod
    def _tables(connection: sqlite3.Connection) -> list[str]:
        rows = connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
            " ORDER BY name"
        )
        return [row[0] for row in rows]

    @staticmethod
    def _count(connection: sqlite3.Connection, tables: list[str]) -> dict[str, int]:
        return {
            table: connection.execute('SELECT count(*) FROM "{}"'.format(table.replace('"', '""'))).fetchone()[0]
            for table in tables
        }

    @contextmanager
    def dump(self) -> Iterator[BinaryIO]:
        connection = self._connect()
        timeout = app_settings.BACKUP_DUMP_TIMEOUT
        timed_out = threading.Event()

        def on_timeout() -> None:
            timed_out.set()
            connection.interrupt()

        timer = threading.Timer(timeout, on_timeout) if timeout else None
        try:
            # One read transaction: every table is read from the same snapshot.
            connection.execute("BEGIN")
            tables = self._tables(connection)
            try:
                self._snapshot_row_counts = self._count(connection, tables)
            except sqlite3.Error:
                self._snapshot_row_counts = None

            def parts() -> Iterator[bytes]:
                yield f"-- opsdesk SQLite dump of database alias {self.alias}\n".encode()
                yield from _batched(self._statements(connection))
                yield COMPLETION_MARKER + b"\n"

            if timer:
                timer.daemon = True
                timer.start()
            yield io.BufferedReader(_GeneratorReader(parts()), buffer_size=1 << 20)
        except sqlite3.Error as error:
            if timed_out.is_set():
                raise DumpFailed(_("SQLite dump timed out after %(seconds)g seconds") % {"seconds": timeout}) from None
            raise DumpFailed(f"SQLite: {error}") from None
        finally:
            if timer:
                timer.cancel()
            connection.close()

    def _statements(self, connection: sqlite3.Connection) -> Iterator[str]:
        """iterdump()'s statements without the rows of `tables_without_data` (one item per statement)."""
        skipped = tuple('INSERT INTO "{}" '.format(table.replace('"', '""')) for table in self.tables_without_data)
        for statement in connection.iterdump():
            if not (skipped and statement.startswith(skipped)):
                yield statement

    def is_complete(self, tail: bytes) -> bool:
        """The dump's transaction is closed (`COMMIT;`) and the marker is the very last line.

        Rows never span lines (`_on_one_line`), so no row's text can end the dump this way.
        """
        return final_lines(tail, 2) == [b"COMMIT;", COMPLETION_MARKER]

    def table_row_counts(self) -> dict[str, int]:
        """Counts taken inside the last dump's snapshot (exact for that dump), else counted now."""
        if self._snapshot_row_counts is not None:
            return dict(self._snapshot_row_counts)
        connection = self._connect()
        try:
            return self._count(connection, self._tables(connection))
        finally:
            connection.close()

    def tool_versions(self) -> dict[str, str]:
        return {"sqlite": sqlite3.sqlite_version}

    def _scratch_directory(self) -> str | None:
        """Beside the database: the system temporary folder may be too small for a copy of it."""
        if self._is_memory:
            return None
        return str(Path(self.database_name.removeprefix("file:").split("?")[0]).resolve().parent)

    @contextmanager
    def scratch_engine(self) -> Iterator[SQLiteDumpEngine]:
        """An empty temporary database file beside this one, removed on exit whatever happened."""
        handle, scratch_path = tempfile.mkstemp(
            prefix=".opsdesk-verify-", suffix=".sqlite3", dir=self._scratch_directory()
        )
        os.close(handle)
        try:
            yield type(self)(f"{self.alias}__verify", {**self.settings_dict, "NAME": scratch_path})
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(scratch_path + suffix).unlink(missing_ok=True)

    def restore(self, stream: BinaryIO, *, before_target_change: Callable[[], None] = lambda: None) -> None:
        # Atomic: the target is written in one online-backup copy, never half (no dirty mark needed).
        handle, scratch_path = tempfile.mkstemp(
            prefix=".opsdesk-restore-", suffix=".sqlite3", dir=self._scratch_directory()
        )
        os.close(handle)
        try:
            scratch = sqlite3.connect(scratch_path, isolation_level=None)
            try:
                # A throw-away build: no journal or fsync needed, the copy below is what counts.
                scratch.execute("PRAGMA journal_mode = OFF")
                scratch.execute("PRAGMA synchronous = OFF")
                self._replay(scratch, stream)
                target = self._connect()
                try:
                    scratch.backup(target)
                finally:
                    target.close()
            finally:
                scratch.close()
        except sqlite3.Error as error:
            raise RestoreFailed(f"SQLite: {error}") from None
        except UnicodeDecodeError:
            raise RestoreFailed(_("SQLite: the dump is not valid UTF-8 text")) from None
        finally:
            Path(scratch_path).unlink(missing_ok=True)

    @staticmethod
    def _authorize(action: int, *args) -> int:
        # A dump is SQL for one database: ATTACH/DETACH would read or create other files, so a
        # crafted dump could not use them even if it got past the checksum
        # (docs/FAULTS.md: client-commands-in-dump).
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    @classmethod
    def _replay(cls, connection: sqlite3.Connection, stream: BinaryIO) -> None:
        """Execute the dump statement by statement, in one transaction, in bounded memory."""
        connection.set_authorizer(cls._authorize)
        connection.execute("BEGIN")
        statement = ""
        for raw_line in iter(stream.readline, b""):
            line = raw_line.decode("utf-8")
            if not statement and (not line.strip() or line.startswith("--")):
                continue
            statement += line
            if sqlite3.complete_statement(statement):
                text = statement.strip()
                statement = ""
                # The dump's own transaction control: the replay runs in its own transaction.
                if text in ("BEGIN TRANSACTION;", "COMMIT;"):
                    continue
                connection.execute(text)
        if statement.strip():
            raise sqlite3.OperationalError(_("the dump ends in the middle of a statement"))
        connection.execute("COMMIT")
