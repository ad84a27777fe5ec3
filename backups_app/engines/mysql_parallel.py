"""Restore one mariadb-dump stream over several connections at once.

`load_parallel(stream, ...)` reads the plain dump once, as it is decompressed, and splits it into
statements (`sql_statements.StatementReader`, the `mariadb` client's rules). Then:

- each INSERT goes to the data connection with the shortest queue, so that one table's rows (90 %
  of the benchmark's data is in `messages`) load over every connection at once, and the next
  table's rows start while the last ones of the previous table are still running;
- SET statements (character set, time zone, sql_mode, FOREIGN_KEY_CHECKS=0, UNIQUE_CHECKS=0...) go
  to every session, in stream order, so each session replays the same session state the dump sets;
- DROP/CREATE TABLE and DISABLE KEYS run at once on a coordinating connection, after that table's
  own rows (if any) are done; ENABLE KEYS waits for the table's rows without stopping the reading;
- anything else (views, triggers, routines, events, whatever is not recognised) waits until every
  statement before it has finished, then runs on the coordinating connection: views, routines and
  triggers come after the tables they use, exactly as in one session;
- LOCK TABLES/UNLOCK TABLES are dropped: they would serialise the connections (mariadb-dump writes
  them to speed up MyISAM loads in one session; the keys are still disabled around the data).

Statements go through the driver (MySQLdb), never through the `mariadb` client: nothing in the dump
is a client command, so `\\!` or `system` reach the server as SQL and fail there, which is what the
client's --sandbox promises. Driver connections were measured faster than one `mariadb` client per
connection fed through pipes: the client parses every byte a second time in its own process.

Memory is bounded: each connection's queue holds at most QUEUE_DEPTH statements (mariadb-dump keeps
an INSERT near 1 MiB), plus the reader's buffer. The first error stops the load: nothing more is
sent, queued statements are dropped, and `RestoreFailed` carries that error's message. An error
raised by `stream.read()` (a checksum mismatch at the end of the stream) propagates unchanged,
after every connection stopped.
"""
from __future__ import annotations

import os
import queue
import re
import threading
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, BinaryIO

from django.utils.translation import gettext as _

from ..exceptions import RestoreFailed
from .client import database_errors, driver_connection
from .sql_statements import StatementReader

#: Statements waiting per data connection (about 1 MiB each).
QUEUE_DEPTH = 3
#: Seconds between checks of the stop flag while waiting on a full queue.
POLL_SECONDS = 0.2

_STOP = object()
# The first words of a statement once comments and the /*!NNNNN version prefix are skipped.
_HEAD = re.compile(
    rb"(?:\s|--[^\n]*\n|#[^\n]*\n|/\*(?![!]|M!)(?:[^*]|\*(?!/))*\*/|/\*M?!\d*)*"
    rb"(?P<words>[A-Za-z]+(?:\s+[A-Za-z]+){0,3})"
    rb"(?:\s+`(?P<table>(?:[^`]|``)+)`)?"
    rb"(?:\s+(?P<keys>DISABLE|ENABLE)\s+KEYS)?",
)
_SESSION_SETTINGS = {b"SET"}
_DROPPED = {b"LOCK TABLES", b"UNLOCK TABLES"}


def classify(statement: bytes) -> tuple[str, str | None]:
    """(kind, table) of a dump statement: "insert", "set", "skip", "table", "enable-keys" or "barrier"."""
    match = _HEAD.match(statement[:4096])
    if match is None:
        return "barrier", None
    words = b" ".join(match.group("words").upper().split())
    table = match.group("table")
    name = table.replace(b"``", b"`").decode("utf-8", "replace") if table else None
    if words.startswith((b"INSERT INTO", b"REPLACE INTO")) and name:
        return "insert", name
    if words.split()[0] in _SESSION_SETTINGS:
        return "set", None
    if words in _DROPPED or words.startswith(b"UNLOCK TABLES"):
        return "skip", None
    if name and words in (b"DROP TABLE IF EXISTS", b"CREATE TABLE"):
        return "table", name
    if name and words == b"ALTER TABLE" and match.group("keys"):
        return ("enable-keys" if match.group("keys").upper() == b"ENABLE" else "table"), name
    return "barrier", None


def _error_text(error: BaseException) -> str:
    arguments = getattr(error, "args", ())
    if len(arguments) >= 2 and isinstance(arguments[0], int):
        return f"ERROR {arguments[0]}: {arguments[1]}"
    return str(error) or type(error).__name__


class _Load:
    """The shared state of one load: pending rows per table, deferred statements, the first error."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.pending: dict[str, int] = defaultdict(int)
        self.deferred: dict[str, list[bytes]] = defaultdict(list)
        self.error: str | None = None
        self.stopped = threading.Event()

    def fail(self, message: str) -> None:
        with self.condition:
            if self.error is None:
                self.error = message
            self.stopped.set()
            self.condition.notify_all()

    def busy(self, table: str | None) -> bool:
        if table is None:
            return any(self.pending.values()) or any(self.deferred.values())
        return bool(self.pending.get(table) or self.deferred.get(table))

    def wait_idle(self, table: str | None) -> None:
        """Wait until `table` (or every table, for None) has no rows or deferred statements left."""
        with self.condition:
            while self.busy(table) and not self.stopped.is_set():
                self.condition.wait(POLL_SECONDS)


class _Session:
    """One driver connection to the target database, with the checks a dump load turns off."""

    def __init__(self, settings_dict: Mapping[str, Any], database: str) -> None:
        self._context = driver_connection(settings_dict, name=database)
        self.connection = self._context.__enter__()
        self.thread_id = self.connection.thread_id()
        self.cursor = self.connection.cursor()
        # mariadb-dump sets both too; a session must not depend on the dump doing it.
        self.execute(b"SET SESSION FOREIGN_KEY_CHECKS = 0, UNIQUE_CHECKS = 0")

    def execute(self, statement: bytes) -> None:
        self.cursor.execute(statement)
        while self.cursor.nextset():
            pass

    def fetch_one(self, statement: bytes) -> Any:
        self.cursor.execute(statement)
        return self.cursor.fetchone()[0]

    def close(self) -> None:
        self._context.__exit__(None, None, None)


class _DataConnection(threading.Thread):
    """Runs the statements handed to it, in order, on its own session."""

    def __init__(self, load: _Load, settings_dict: Mapping[str, Any], database: str, number: int) -> None:
        super().__init__(daemon=True, name=f"restore-connection-{number}")
        self.load = load
        self.settings_dict = settings_dict
        self.database = database
        self.statements: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
        self.session: _Session | None = None
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            self.session = _Session(self.settings_dict, self.database)
        except Exception as error:  # noqa: BLE001 - reported as the load's error
            self.load.fail(_error_text(error))
        finally:
            self.ready.set()
        try:
            while (item := self.statements.get()) is not _STOP:
                if self.session is None or self.load.stopped.is_set():
                    continue  # drain, so that the reader never blocks on a full queue
                table, statement = item
                self._run(table, statement)
        finally:
            if self.session is not None:
                self.session.close()

    def _run(self, table: str | None, statement: bytes) -> None:
        try:
            self.session.execute(statement)
        except Exception as error:  # noqa: BLE001 - the first error ends the load
            self.load.fail(_error_text(error))
            return
        if table is None:
            return
        while True:
            with self.load.condition:
                # The table's last rows: run what waited for them (ENABLE KEYS) before the table
                # counts as done, so that a barrier never overtakes it.
                later = self.load.deferred.pop(table, []) if self.load.pending[table] == 1 else []
                if not later:
                    self.load.pending[table] -= 1
                    self.load.condition.notify_all()
                    return
            for deferred in later:
                try:
                    self.session.execute(deferred)
                except Exception as error:  # noqa: BLE001
                    self.load.fail(_error_text(error))
                    return

    def put(self, item) -> bool:
        while not self.load.stopped.is_set():
            try:
                self.statements.put(item, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False


class _Loader:
    def __init__(self, stream: BinaryIO, settings_dict: Mapping[str, Any], database: str, connections: int) -> None:
        self.reader = StatementReader(stream)
        self.settings_dict = settings_dict
        self.database = database
        self.load = _Load()
        self.workers = [_DataConnection(self.load, settings_dict, database, n) for n in range(connections)]
        self.coordinator: _Session | None = None

    def run(self) -> None:
        for worker in self.workers:
            worker.start()
        try:
            self.coordinator = _Session(self.settings_dict, self.database)
            for statement in self.reader:
                if self.load.stopped.is_set():
                    break
                self.dispatch(statement)
            self.load.wait_idle(None)
        except BaseException:
            self.load.stopped.set()  # queued statements are dropped, running ones finish
            raise
        finally:
            for worker in self.workers:
                # Unblock a worker waiting on its queue even when the load stopped.
                while True:
                    try:
                        worker.statements.put(_STOP, timeout=POLL_SECONDS)
                        break
                    except queue.Full:
                        self.load.stopped.set()
            for worker in self.workers:
                worker.join()
            if self.coordinator is not None:
                self.coordinator.close()
        if self.load.error is not None:
            raise RestoreFailed(self.load.error)

    def dispatch(self, statement: bytes) -> None:
        kind, table = classify(statement)
        if kind == "insert":
            with self.load.condition:
                self.load.pending[table] += 1
            worker = min(self.workers, key=lambda candidate: candidate.statements.qsize())
            worker.put((table, statement))
        elif kind == "set":
            self.execute(statement)
            for worker in self.workers:
                worker.put((None, statement))
        elif kind == "enable-keys":
            with self.load.condition:
                if self.load.pending.get(table):
                    self.load.deferred[table].append(statement)
                    return
            self.execute(statement)
        elif kind == "table":
            self.load.wait_idle(table)
            self.execute(statement)
        elif kind == "barrier":
            self.load.wait_idle(None)
            self.execute(statement)

    def execute(self, statement: bytes) -> None:
        if self.load.stopped.is_set():
            return
        try:
            self.coordinator.execute(statement)
            if b"sql_mode" in statement.lower():
                # As the client does from the server's status flags: with NO_BACKSLASH_ESCAPES a
                # backslash no longer escapes inside strings, which changes where statements end.
                mode = self.coordinator.fetch_one(b"SELECT @@SESSION.sql_mode")
                self.reader.backslash_escapes = b"NO_BACKSLASH_ESCAPES" not in _as_bytes(mode)
        except database_errors(self.settings_dict) as error:
            self.load.fail(_error_text(error))

    def kill(self) -> None:
        """Stop every running statement (the restore timed out)."""
        sessions = [worker.session for worker in self.workers] + [self.coordinator]
        try:
            with driver_connection(self.settings_dict, name=self.database) as connection:
                cursor = connection.cursor()
                for session in sessions:
                    if session is not None:
                        try:
                            cursor.execute(f"KILL QUERY {int(session.thread_id)}")
                        except database_errors(self.settings_dict):
                            pass
        except database_errors(self.settings_dict):
            pass


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def default_connections() -> int:
    """BACKUP_RESTORE_PARALLELISM when it is not set: the CPU cores, at least 2, at most 8."""
    return max(2, min(os.cpu_count() or 1, 8))


def load_parallel(
    stream: BinaryIO,
    *,
    settings_dict: Mapping[str, Any],
    database: str,
    connections: int,
    timeout: float | None = None,
) -> None:
    """Load the plain mariadb-dump `stream` into `database` over `connections` data connections.

    `settings_dict` is the Django DATABASES entry (host, port, user, password, options); `database`
    replaces its NAME, so a staging or scratch database can be the target. Returns once every
    statement ran; raises `RestoreFailed` with the first error's message (or "timed out"), or
    whatever `stream.read()` raised. One more connection coordinates (DDL, views, routines).
    """
    if connections < 1:
        raise ValueError("connections must be at least 1")
    loader = _Loader(stream, settings_dict, database, connections)
    timer = None
    if timeout:
        def on_timeout() -> None:
            loader.load.fail(_("timed out after %(seconds)g seconds") % {"seconds": timeout})
            loader.kill()

        timer = threading.Timer(timeout, on_timeout)
        timer.daemon = True
        timer.start()
    try:
        loader.run()
    except database_errors(settings_dict) as error:
        raise RestoreFailed(_error_text(error)) from None
    finally:
        if timer is not None:
            timer.cancel()
