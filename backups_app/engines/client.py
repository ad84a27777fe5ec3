"""What the MySQL and PostgreSQL engines share: driving a server family's client tools safely.

Running a tool is ``process.run_tool`` (argv lists, never a shell; its own process group killed on
timeout or error; bounded, redacted stderr). On top of it this module finds the tools (in a
configured folder or on PATH), writes the password into a 0600 file removed in a ``finally``, opens
driver connections from the DATABASES entry for the SQL the tools cannot do (row counts, scratch
databases), and holds ``ClientToolEngine``, the flow both engines share.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from secrets import token_hex
from typing import IO, Any, ClassVar

from django.db import DatabaseError as DjangoDatabaseError
from django.db.utils import load_backend
from django.utils.translation import gettext as _

from backups_app.conf import app_settings

from ..exceptions import BackupError, DumpFailed, RestoreFailed
from .base import DumpEngine
from .process import redact, run_tool, tool_environment

logger = logging.getLogger(__name__)

#: Size of the chunks copied between a stream and a tool.
CHUNK_BYTES = 1024 * 1024
#: `--version` and `--help` answer at once; anything slower is a broken tool.
PROBE_TIMEOUT_SECONDS = 30


class ToolNotFound(BackupError):
    """None of the candidate client tools is installed where the engine looks for them."""


def find_tool(candidates: Sequence[str], bin_dir: str = "") -> str:
    """Absolute path of the first candidate found in ``bin_dir`` (or on PATH when it is empty).

    ``bin_dir`` (BACKUP_MYSQL_BIN_DIR, BACKUP_POSTGRESQL_BIN_DIR) pins the client version, which
    matters for pg_dump: it must not be older than the server.
    """
    for name in candidates:
        path = shutil.which(name, path=bin_dir or None)
        if path:
            return path
    where = bin_dir or os.environ.get("PATH", "")
    raise ToolNotFound(
        _("None of %(tools)s was found in %(where)s. Install the database client tools or set the "
          "engine's BIN_DIR setting.") % {"tools": ", ".join(candidates), "where": where}
    )


@lru_cache(maxsize=32)
def tool_output(path: str, *arguments: str) -> str:
    """stdout of a quick informational call (``--version``, ``--help``), cached per tool path."""
    try:
        completed = subprocess.run(
            [path, *arguments], stdin=subprocess.DEVNULL, capture_output=True, env=tool_environment(),
            timeout=PROBE_TIMEOUT_SECONDS, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return completed.stdout.decode("utf-8", "replace")


def first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""


@contextmanager
def private_file(content: str, *, prefix: str, suffix: str = "") -> Iterator[str]:
    """A path to a file only this user can read, holding ``content``, gone whatever happens.

    On Linux the file lives in memory (memfd, mode 0600) and the tools open it through
    ``/proc/<our pid>/fd/<n>``: it never touches a disk and vanishes with our process even after a
    ``kill -9``, when no ``finally`` runs. Elsewhere it is a mkstemp file, created 0600 before
    anything is written and removed in ``finally``.
    """
    if hasattr(os, "memfd_create"):
        descriptor = os.memfd_create(f"{prefix}credentials", os.MFD_CLOEXEC)
        try:
            os.fchmod(descriptor, 0o600)  # MySQL ignores world-writable option files; libpq too
            os.write(descriptor, content.encode("utf-8"))
            yield f"/proc/{os.getpid()}/fd/{descriptor}"
        finally:
            os.close(descriptor)
        return
    descriptor, path = tempfile.mkstemp(prefix=prefix, suffix=suffix)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(content)
        yield path
    finally:
        Path(path).unlink(missing_ok=True)


def child_environment(*, passthrough: Iterable[str] = (), set_: Mapping[str, str] | None = None) -> dict[str, str]:
    """The tool's environment: an allow-list of ours (process.tool_environment) plus `set_`."""
    return tool_environment(passthrough=passthrough, set_=set_)


def copy_stream(source: IO[bytes] | Iterable[bytes], target: IO[bytes]) -> None:
    """Feed chunks (or a readable stream) into a tool's stdin.

    A BrokenPipeError means the tool died; its exit status and stderr (checked by ``run_tool``) say
    why, so it is not raised from here.
    """
    chunks: Iterable[bytes]
    if hasattr(source, "read"):
        chunks = iter(lambda: source.read(CHUNK_BYTES), b"")
    else:
        chunks = source
    try:
        for chunk in chunks:
            if chunk:
                target.write(chunk)
        target.flush()
    except BrokenPipeError:
        pass


def configured_bin_dir(setting_name: str) -> str:
    return str(getattr(app_settings, setting_name) or "")


def configured_timeout() -> float | None:
    timeout = app_settings.BACKUP_DUMP_TIMEOUT
    return float(timeout) if timeout else None


@contextmanager
def driver_connection(settings_dict: Mapping[str, Any], *, name: str | None | type[Ellipsis] = ...) -> Iterator[Any]:
    """A DB-API connection built by Django's own backend from a DATABASES entry.

    Going through the backend's DatabaseWrapper means every option Django understands (sockets, SSL,
    option files, services) reaches this connection exactly as it reaches the application's.
    ``name=None`` connects to the server without a database (MySQL) or to the maintenance database
    (PostgreSQL), for CREATE/DROP DATABASE.
    """
    connection_settings = dict(settings_dict)
    if name is not ...:
        connection_settings["NAME"] = name
    for key, default in (
        ("OPTIONS", {}), ("TIME_ZONE", None), ("AUTOCOMMIT", True), ("CONN_MAX_AGE", 0),
        ("CONN_HEALTH_CHECKS", False), ("ATOMIC_REQUESTS", False), ("TEST", {}),
        ("HOST", ""), ("PORT", ""), ("USER", ""), ("PASSWORD", ""),
    ):
        connection_settings.setdefault(key, default)
    backend = load_backend(connection_settings["ENGINE"])
    wrapper = backend.DatabaseWrapper(connection_settings, alias="opsdesk_engine")
    try:
        wrapper.ensure_connection()
        yield wrapper.connection
    finally:
        wrapper.close()


def database_errors(settings_dict: Mapping[str, Any]) -> tuple[type[BaseException], ...]:
    """The exceptions a driver connection can raise: Django's wrapped ones and the driver's own."""
    backend = load_backend(settings_dict["ENGINE"])
    return (DjangoDatabaseError, backend.Database.Error)


class _SnapshotRowCounter(threading.Thread):
    """Counts rows in a snapshot taken as the dump starts, while the dump runs.

    Counting after the dump would add its time to every backup and count rows written meanwhile;
    counting beside it costs (almost) nothing on the wall clock and describes the dump's own data.
    PostgreSQL's dump even imports this very snapshot (``pg_dump --snapshot``), so its counts are
    exact; the transaction stays open until the dump ends, as an exported snapshot requires.
    """

    def __init__(self, engine: ClientToolEngine) -> None:
        super().__init__(daemon=True, name="opsdesk-row-counts")
        self.engine = engine
        self.ready = threading.Event()
        self.release = threading.Event()
        self.snapshot_id: str | None = None
        self.counts: dict[str, int] | None = None

    def run(self) -> None:
        try:
            with driver_connection(self.engine.settings_dict) as connection:
                self.snapshot_id = self.engine.begin_snapshot(connection)
                self.ready.set()
                self.counts = self.engine.count_rows(connection)
                self.release.wait()
        except Exception:  # noqa: BLE001 - counts are a help; table_row_counts() counts afresh
            logger.warning("Could not count rows beside the dump of %s", self.engine.alias, exc_info=True)
            self.counts = None
        finally:
            self.ready.set()


class ClientToolEngine(DumpEngine):
    """Base of the engines that drive a server family's own client tools (MySQL, PostgreSQL).

    It owns the flow every such engine shares: find the tool, write the password file, run the
    tool with a deadline in its own process group, copy bytes, check the exit status, remove the
    password file. Subclasses say which tools, which arguments and which environment, and how to
    empty a database before a restore and create or drop a scratch database.
    """

    #: Setting naming the folder the client tools are taken from ("" means PATH).
    bin_dir_setting: ClassVar[str]
    #: Extension of the password file where it must be a disk file (platforms without memfd).
    credentials_suffix: ClassVar[str] = ""
    #: True for an engine bound to a brand-new scratch database (verification): nothing to protect.
    scratch: bool = False
    #: Candidate names of the dump tool and of the client that replays a dump, best first.
    dump_tools: ClassVar[tuple[str, ...]]
    restore_tools: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        alias: str,
        settings_dict: dict[str, Any],
        *,
        bin_dir: str | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__(alias, settings_dict)
        self.bin_dir = configured_bin_dir(self.bin_dir_setting) if bin_dir is None else bin_dir
        self.timeout = configured_timeout() if timeout is None else timeout
        self._dump_row_counts: dict[str, int] | None = None

    def __repr__(self) -> str:
        # Never the settings dict: it holds the password.
        return f"<{type(self).__name__} alias={self.alias!r} database={self.database_name!r}>"

    @property
    def password(self) -> str:
        return str(self.settings_dict.get("PASSWORD") or "")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.settings_dict.get("OPTIONS") or {})

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never appear in a message: the password and its escaped forms."""
        return (self.password,)

    # --- What subclasses provide ------------------------------------------------------------------

    def credentials_content(self) -> str | None:
        """Content of the 0600 password file, or None when no file is needed."""
        raise NotImplementedError

    def dump_argv(self, tool: str, credentials: str | None, snapshot_id: str | None = None) -> list[str]:
        raise NotImplementedError

    def begin_snapshot(self, connection: Any) -> str | None:
        """Open a read-only snapshot on a driver connection; its id when the dump tool can share it."""
        raise NotImplementedError

    def count_rows(self, connection: Any) -> dict[str, int]:
        """Exact COUNT(*) of every base table, on an open driver connection."""
        raise NotImplementedError

    def restore_argv(self, tool: str, credentials: str | None) -> list[str]:
        raise NotImplementedError

    #: Variables of our environment the tools may read besides PATH, HOME, LANG, LC_*, TZ, TMPDIR.
    environment_passthrough: ClassVar[tuple[str, ...]] = ()

    def tool_environment(self, credentials: str | None) -> dict[str, str]:
        return child_environment(passthrough=self.environment_passthrough)

    def restore_input(self, stream: IO[bytes], tool: str) -> IO[bytes] | Iterable[bytes]:
        """What is fed to the restore client: the dump itself unless the engine must filter it."""
        return stream

    def prepare_restore(self) -> None:
        """Run before the restore client starts (MySQL empties the database here)."""

    def server_version(self, connection: Any) -> str:
        raise NotImplementedError

    def create_scratch_database(self, name: str) -> None:
        """Create an empty database `name` on this server (driver errors are translated by the caller)."""
        raise NotImplementedError

    def drop_scratch_database(self, name: str) -> None:
        """Drop the database `name` if it exists (driver errors are translated by the caller)."""
        raise NotImplementedError

    # --- The shared flow --------------------------------------------------------------------------

    def find(self, candidates: Sequence[str], error_class: type[BackupError]) -> str:
        try:
            return find_tool(candidates, self.bin_dir)
        except ToolNotFound as error:
            raise error_class(str(error)) from None

    @contextmanager
    def credentials(self, error_class: type[BackupError]) -> Iterator[str | None]:
        try:
            content = self.credentials_content()
        except ValueError as error:
            raise error_class(str(error)) from None
        if content is None:
            yield None
            return
        with private_file(content, prefix=f"opsdesk-{self.vendor}-", suffix=self.credentials_suffix) as path:
            yield path

    @contextmanager
    def dump(self) -> Iterator[IO[bytes]]:
        tool = self.find(self.dump_tools, DumpFailed)
        self._dump_row_counts = None
        counter = _SnapshotRowCounter(self)
        counter.start()
        counter.ready.wait(timeout=60)
        try:
            with self.credentials(DumpFailed) as credentials, run_tool(
                self.dump_argv(tool, credentials, counter.snapshot_id), env=self.tool_environment(credentials),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, timeout=self.timeout,
                secrets=self.secrets(), error_class=DumpFailed,
            ) as process:
                yield process.stdout
        except BaseException:
            counter.release.set()  # the counter finishes and closes its connection on its own
            raise
        counter.release.set()
        counter.join(timeout=self.timeout)
        self._dump_row_counts = counter.counts

    def tool_versions(self) -> dict[str, str]:
        versions: dict[str, str] = {}
        for candidates in (self.dump_tools, self.restore_tools):
            try:
                path = find_tool(candidates, self.bin_dir)
            except ToolNotFound:
                continue  # the dump itself reports the missing tool, with the place it looked
            versions[Path(path).name] = first_line(tool_output(path, "--version"))
        try:
            with driver_connection(self.settings_dict) as connection:
                versions["server"] = self.server_version(connection)
        except database_errors(self.settings_dict):
            pass  # unreachable server: the dump fails next, with the tool's message
        return versions

    def table_row_counts(self) -> dict[str, int]:
        """Exact rows per table. Right after ``dump()``: the counts taken in the dump's snapshot."""
        if self._dump_row_counts is not None:
            counts, self._dump_row_counts = self._dump_row_counts, None
            return counts
        try:
            with driver_connection(self.settings_dict) as connection:
                return self.count_rows(connection)
        except database_errors(self.settings_dict) as error:
            raise self.database_error(
                BackupError, _("Could not count the rows of %(name)s") % {"name": self.database_name}, error
            ) from None

    def restore(self, stream: IO[bytes], *, before_target_change: Callable[[], None] = lambda: None) -> None:
        """Empty the database, then feed the dump into it: not atomic, so the target is marked first.

        Engines that can do better (PostgreSQL's one transaction, MySQL's staging database) override it.
        """
        before_target_change()
        self.prepare_restore()
        self.restore_into(stream, self.database_name)

    def restore_into(self, stream: IO[bytes], database_name: str) -> None:
        """Feed the plain dump read from ``stream`` into the database ``database_name`` of this server.

        Only the feeding step: the client tool replays the stream as it comes, with the engine's
        filters (``restore_input``); emptying, staging and swapping are the caller's business.
        Raises ``RestoreFailed`` when the tool fails, or whatever the stream raised (the tool is then
        killed before it has read the end of the input).
        """
        engine = self if database_name == self.database_name else self.bound_to(database_name)
        tool = engine.find(engine.restore_tools, RestoreFailed)
        with engine.credentials(RestoreFailed) as credentials, run_tool(
            engine.restore_argv(tool, credentials), env=engine.tool_environment(credentials),
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, timeout=engine.timeout,
            secrets=engine.secrets(), error_class=RestoreFailed,
        ) as process:
            copy_stream(engine.restore_input(stream, tool), process.stdin)

    def bound_to(self, database_name: str, alias_suffix: str = "") -> ClientToolEngine:
        """The same engine and server, bound to another database (scratch or staging)."""
        return type(self)(
            f"{self.alias}{alias_suffix}", {**self.settings_dict, "NAME": database_name},
            bin_dir=self.bin_dir, timeout=self.timeout,
        )

    @contextmanager
    def scratch_engine(self) -> Iterator[ClientToolEngine]:
        name = f"opsdesk_verify_{token_hex(6)}"
        self._scratch_call(self.create_scratch_database, name, _("Could not create the scratch database %(name)s"))
        try:
            engine = self.bound_to(name, "__verify")
            engine.scratch = True
            yield engine
        finally:
            self._scratch_call(self.drop_scratch_database, name, _("Could not drop the scratch database %(name)s"))

    def _scratch_call(self, operation, name: str, message: str) -> None:
        try:
            operation(name)
        except database_errors(self.settings_dict) as error:
            raise self.database_error(RestoreFailed, message % {"name": name}, error) from None

    def database_error(self, error_class: type[BackupError], message: str, error: BaseException) -> BackupError:
        """An app error for a failed driver call, with the driver's text redacted."""
        return error_class(f"{message}: {redact(str(error), self.secrets())}")
