"""The interface every database engine implements.

An engine knows one database family's client tools and nothing else: it turns a database into a
stream of plain dump bytes and a stream of plain dump bytes back into a database. Compression,
hashing, storage, locking and records belong to the services (backups_app.services), so that every
engine gets them the same way.

Rules every engine follows:
- subprocesses get an argv list, never a shell;
- passwords never reach a command line, a log or an exception message: they go through a 0600
  option file or passfile that is removed in a ``finally``;
- the connection settings come from the Django DATABASES entry passed to the constructor
  (host, port, socket, user, SSL options).

`backups_app.engines.process.run_tool()` does the subprocess part right for every engine: argv
list, own process group (a timeout or an aborted backup kills the tool and its children), bounded
stderr capture, exit-status check, secrets redacted from the error; read `settings.BACKUP_DUMP_TIMEOUT`
for the timeout. How the services call an engine, in order, for a backup:
`tool_versions()`; `with dump() as stream:` (read to EOF by the pipeline, which checks the tail with
`is_complete()`); `table_row_counts()` once the dump's context exited without error. For a restore:
`restore(stream, before_target_change=...)` after the file was checked completely (the stream is the
plain, decompressed dump).

All or nothing: a restore either leaves the target as it was or as in the backup (docs/FAULTS.md,
"restore killed at any byte"). An engine that cannot promise that for some step calls
``before_target_change()`` right before the first change to the target that a crash could leave
half-done; the services then mark the database dirty until a restore completes. PostgreSQL (one
transaction) and SQLite (one online-backup copy) never call it; MySQL calls it before it swaps its
staging database in. The stream may raise (``ChecksumMismatch`` at EOF): an engine commits nothing
before the stream has returned EOF without raising.
"""
from __future__ import annotations

import abc
from contextlib import AbstractContextManager
from collections.abc import Callable
from typing import Any, BinaryIO, ClassVar


class DumpEngine(abc.ABC):
    """Dump and restore one database given its Django DATABASES entry."""

    #: Short name stored on BackupRecord.engine ("mysql", "postgresql", "sqlite").
    vendor: ClassVar[str]
    #: Extension of the uncompressed dump (".sql"); compression adds ".gz" or ".zst".
    file_extension: ClassVar[str] = ".sql"
    #: Bytes the dump tool writes at the very end of a complete dump; None when the format has none.
    completion_marker: ClassVar[bytes | None] = None
    #: Tables whose structure is dumped but not their rows. `get_engine` sets it for opsdesk's own
    #: database: its live sessions would let whoever holds a copy log in as their owners.
    tables_without_data: tuple[str, ...] = ()

    def __init__(self, alias: str, settings_dict: dict[str, Any]) -> None:
        self.alias = alias
        self.settings_dict = settings_dict

    @property
    def database_name(self) -> str:
        return str(self.settings_dict["NAME"])

    @abc.abstractmethod
    def dump(self) -> AbstractContextManager[BinaryIO]:
        """Start the dump and return a context manager yielding its output as a readable stream.

        Leaving the context waits for the tool; it raises ``DumpFailed`` (with the tool's message,
        passwords redacted) when the tool exited non-zero, timed out or was killed.
        """

    @abc.abstractmethod
    def restore(self, stream: BinaryIO, *, before_target_change: Callable[[], None] = lambda: None) -> None:
        """Replace the database's whole content with the plain dump read from ``stream``.

        Objects created after the backup are gone afterwards. Raises ``RestoreFailed`` (or what the
        stream raised). ``before_target_change`` is called, at most once, before a step that a crash
        could leave half-done in the target; an engine whose restore is atomic never calls it.
        """

    @abc.abstractmethod
    def tool_versions(self) -> dict[str, str]:
        """Versions of the client tools and server, recorded on each backup."""

    def table_row_counts(self) -> dict[str, int]:
        """Exact row count per table, used to check a test restore against the source.

        Called right after a successful dump; an engine that can count inside the dump's own
        snapshot (SQLite does) returns those counts. Raise (anything) when counting is not cheap or
        not exact: the backup is kept, with no counts.
        """
        raise NotImplementedError

    def scratch_engine(self) -> AbstractContextManager[DumpEngine]:
        """Create an empty temporary database beside this one and yield an engine bound to it.

        Used to verify a backup by test restore. The scratch database is dropped on exit, whatever
        happened inside.
        """
        raise NotImplementedError

    def counts_as_dumped(self, counts: dict[str, int]) -> dict[str, int]:
        """`counts` with the tables in `tables_without_data` at 0 rows, as a restore will have them.

        Keys are "table" or "schema.table" depending on the engine.
        """
        return {
            table: 0 if table.rsplit(".", 1)[-1] in self.tables_without_data else count
            for table, count in counts.items()
        }

    def snapshot_binlog_coordinates(self) -> dict[str, object] | None:
        """Right after ``dump()``: where the dump's snapshot sits in the server's change log.

        ``{"file": ..., "position": ..., "gtid": ...}`` for engines whose server keeps a binary log
        that point-in-time recovery replays from there; None otherwise (the default).
        """
        return None

    def is_complete(self, tail: bytes) -> bool:
        """Whether the last bytes of a dump end with the tool's completion marker line.

        The marker must start the dump's last non-empty line, and that line must be complete
        (newline-terminated): a dump that died inside a row whose text holds the marker is refused,
        where a search anywhere in the tail would accept it (docs/FAULTS.md: truncated dump).
        """
        if self.completion_marker is None:
            return True
        lines = final_lines(tail, 1)
        return bool(lines) and lines[-1].startswith(self.completion_marker)


def final_lines(tail: bytes, count: int) -> list[bytes]:
    """The last `count` non-empty, newline-terminated lines of `tail` (fewer when there are none).

    Empty when `tail` does not end with a newline: the dump stopped in the middle of a line.
    """
    if not tail.endswith(b"\n"):
        return []
    lines = [line.rstrip(b"\r") for line in tail.split(b"\n")[:-1]]
    # The first piece may be a line cut by the tail's window; never count it as a whole line.
    lines = [line for line in lines[1:] if line.strip()]
    return lines[-count:]
