"""What the MySQL and PostgreSQL engines share: running a database client tool safely.

Both engines drive command-line client tools (mariadb-dump/mariadb, pg_dump/psql) and must do it
the same careful way:

- argv lists, never a shell, so that a database or user name such as ``; rm -rf /`` or ``$(id)`` is
  only ever a string handed to the tool;
- every tool runs in its own session (``start_new_session=True``), so that a timeout or an error
  kills the whole process group, including any helper the tool (or a wrapper script) started;
- stderr is read by a thread into a bounded buffer (the start and the end of it), so a chatty tool
  can neither fill a pipe and hang nor fill memory, and the message is redacted before it reaches an
  exception;
- the password goes through a 0600 file created here and removed in a ``finally``.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from secrets import token_hex
from typing import IO, Any, ClassVar

from django.conf import settings
from django.db import DatabaseError as DjangoDatabaseError
from django.db.utils import load_backend
from django.utils.translation import gettext as _

from ..exceptions import BackupError, DumpFailed, RestoreFailed
from .base import DumpEngine

REDACTED = "********"
#: Bytes of stderr kept from the start and from the end of a tool's output.
STDERR_HEAD_BYTES = 8 * 1024
STDERR_TAIL_BYTES = 8 * 1024
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
            [path, *arguments], stdin=subprocess.DEVNULL, capture_output=True,
            timeout=PROBE_TIMEOUT_SECONDS, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return completed.stdout.decode("utf-8", "replace")


def first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty secret replaced, longest first (one may contain another)."""
    for secret in sorted((secret for secret in secrets if secret), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


@contextmanager
def private_file(content: str, *, prefix: str) -> Iterator[str]:
    """A file readable by this user only, holding ``content``, removed whatever happens.

    mkstemp creates it with mode 0600 before anything is written, so there is no moment at which the
    secret sits in a file others can read.
    """
    descriptor, path = tempfile.mkstemp(prefix=prefix, suffix=".cnf")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(content)
        yield path
    finally:
        Path(path).unlink(missing_ok=True)


class _BoundedReader(threading.Thread):
    """Drains a pipe, keeping its first and last few kilobytes."""

    def __init__(self, pipe: IO[bytes]) -> None:
        super().__init__(daemon=True, name="opsdesk-stderr")
        self.pipe = pipe
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = False

    def run(self) -> None:
        try:
            while chunk := self.pipe.read1(64 * 1024):
                room = STDERR_HEAD_BYTES - len(self.head)
                if room > 0:
                    self.head += chunk[:room]
                    chunk = chunk[room:]
                if chunk:
                    self.tail += chunk
                    if len(self.tail) > STDERR_TAIL_BYTES:
                        del self.tail[: len(self.tail) - STDERR_TAIL_BYTES]
                        self.dropped = True
        except (OSError, ValueError):
            pass  # the pipe was closed under us after a kill; what was read is enough
        finally:
            self.pipe.close()

    def text(self) -> str:
        separator = b"\n[...]\n" if self.dropped else b""
        return (bytes(self.head) + separator + bytes(self.tail)).decode("utf-8", "replace").strip()


class ClientProcess:
    """One client tool run: its own process group, a deadline, bounded and redacted stderr."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        stdin: int | IO[Any] | None,
        stdout: int | IO[Any] | None,
        timeout: float | None,
        secrets: Iterable[str],
        error_class: type[BackupError],
    ) -> None:
        self.tool = Path(argv[0]).name
        self.timeout = timeout
        self.secrets = tuple(secret for secret in secrets if secret)
        self.error_class = error_class
        self.timed_out = False
        try:
            self.process = subprocess.Popen(
                list(argv), stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=dict(env),
                start_new_session=True, close_fds=True,
            )
        except OSError as error:
            raise error_class(
                _("Could not start %(tool)s: %(error)s") % {"tool": self.tool, "error": self.redact(str(error))}
            ) from None
        self._stderr = _BoundedReader(self.process.stderr)
        self._stderr.start()
        self._timer: threading.Timer | None = None
        if timeout:
            self._timer = threading.Timer(timeout, self._on_timeout)
            self._timer.daemon = True
            self._timer.start()

    @property
    def stdin(self) -> IO[bytes]:
        return self.process.stdin

    @property
    def stdout(self) -> IO[bytes]:
        return self.process.stdout

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def _on_timeout(self) -> None:
        self.timed_out = True
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole process group: the tool and whatever it started."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def abort(self, error: BaseException) -> None:
        """Stop the run because the caller failed, then let the right exception propagate.

        If the tool had already failed (a wrong password gives an empty dump, which the caller may
        notice first), the tool's own message is the one worth reporting, so it is raised instead.
        """
        try:
            exited_with = self.process.wait(timeout=1) if isinstance(error, Exception) else None
        except subprocess.TimeoutExpired:
            exited_with = None
        self.kill()
        self._close_pipes()
        self.process.wait()
        if exited_with:
            self.finish()  # raises error_class with the tool's message
        self._cleanup()

    def finish(self) -> str:
        """Wait for the tool; raise ``error_class`` unless it exited 0 in time. Returns its stderr."""
        self._close_pipes()
        returncode = self.process.wait()
        self._cleanup()
        message = self.redact(self._stderr.text())
        if self.timed_out:
            raise self.error_class(
                _("%(tool)s did not finish within %(seconds)s seconds and was killed "
                  "(with every process it started). %(stderr)s")
                % {"tool": self.tool, "seconds": f"{self.timeout:g}", "stderr": message}
            )
        if returncode < 0:
            try:
                signal_name = signal.Signals(-returncode).name
            except ValueError:
                signal_name = str(-returncode)
            raise self.error_class(
                _("%(tool)s was killed by %(signal)s. %(stderr)s")
                % {"tool": self.tool, "signal": signal_name, "stderr": message}
            )
        if returncode:
            raise self.error_class(
                _("%(tool)s exited with status %(code)s: %(stderr)s")
                % {"tool": self.tool, "code": returncode, "stderr": message or _("(no message)")}
            )
        return message

    def _close_pipes(self) -> None:
        # Closing our end of stdout first means a tool still writing gets SIGPIPE instead of
        # blocking forever on a reader that has gone away.
        for pipe in (self.process.stdout, self.process.stdin):
            if pipe is not None and not pipe.closed:
                try:
                    pipe.close()
                except OSError:
                    pass  # BrokenPipe while flushing stdin: the exit status tells why

    def _cleanup(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        # A wrapper may leave children behind in the group (a backgrounded helper): none outlives us.
        self.kill()
        self._stderr.join(timeout=5)


def child_environment(*, remove: Iterable[str] = (), set_: Mapping[str, str] | None = None) -> dict[str, str]:
    """The tool's environment: ours, minus variables that would override the DATABASES entry."""
    environment = {name: value for name, value in os.environ.items() if name not in set(remove)}
    environment.update(set_ or {})
    # Messages in English whatever the server's locale, so that operators can search for them.
    environment["LC_MESSAGES"] = "C"
    return environment


def copy_stream(source: IO[bytes] | Iterable[bytes], process: ClientProcess) -> None:
    """Feed chunks (or a readable stream) into the tool's stdin.

    A BrokenPipeError means the tool died; its exit status and stderr (read by ``finish``) say why,
    so it is not raised from here.
    """
    chunks: Iterable[bytes]
    if hasattr(source, "read"):
        chunks = iter(lambda: source.read(CHUNK_BYTES), b"")
    else:
        chunks = source
    try:
        for chunk in chunks:
            if chunk:
                process.stdin.write(chunk)
        process.stdin.flush()
    except BrokenPipeError:
        pass


def configured_bin_dir(setting_name: str) -> str:
    return str(getattr(settings, setting_name, "") or "")


def configured_timeout() -> float | None:
    timeout = getattr(settings, "BACKUP_DUMP_TIMEOUT", None)
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


class ClientToolEngine(DumpEngine):
    """Base of the engines that drive a server family's own client tools (MySQL, PostgreSQL).

    It owns the flow every such engine shares: find the tool, write the password file, run the
    tool with a deadline in its own process group, copy bytes, check the exit status, remove the
    password file. Subclasses say which tools, which arguments and which environment, and how to
    empty a database before a restore and create or drop a scratch database.
    """

    #: Setting naming the folder the client tools are taken from ("" means PATH).
    bin_dir_setting: ClassVar[str]
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

    def dump_argv(self, tool: str, credentials: str | None) -> list[str]:
        raise NotImplementedError

    def restore_argv(self, tool: str, credentials: str | None) -> list[str]:
        raise NotImplementedError

    def tool_environment(self, credentials: str | None) -> dict[str, str]:
        return child_environment()

    def restore_input(self, stream: IO[bytes], tool: str) -> IO[bytes] | Iterable[bytes]:
        """What is fed to the restore client: the dump itself unless the engine must filter it."""
        return stream

    def prepare_restore(self) -> None:
        """Run before the restore client starts (MySQL empties the database here)."""

    def create_scratch_database(self, name: str) -> None:
        raise NotImplementedError

    def drop_scratch_database(self, name: str) -> None:
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
        with private_file(content, prefix=f"opsdesk-{self.vendor}-") as path:
            yield path

    @contextmanager
    def dump(self) -> Iterator[IO[bytes]]:
        tool = self.find(self.dump_tools, DumpFailed)
        with self.credentials(DumpFailed) as credentials:
            process = ClientProcess(
                self.dump_argv(tool, credentials), env=self.tool_environment(credentials),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, timeout=self.timeout,
                secrets=self.secrets(), error_class=DumpFailed,
            )
            try:
                yield process.stdout
            except BaseException as error:
                process.abort(error)
                raise
            process.finish()

    def restore(self, stream: IO[bytes]) -> None:
        tool = self.find(self.restore_tools, RestoreFailed)
        with self.credentials(RestoreFailed) as credentials:
            self.prepare_restore()
            process = ClientProcess(
                self.restore_argv(tool, credentials), env=self.tool_environment(credentials),
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, timeout=self.timeout,
                secrets=self.secrets(), error_class=RestoreFailed,
            )
            try:
                copy_stream(self.restore_input(stream, tool), process)
            except BaseException as error:
                process.abort(error)
                raise
            process.finish()

    @contextmanager
    def scratch_engine(self) -> Iterator[ClientToolEngine]:
        name = f"opsdesk_verify_{token_hex(6)}"
        self.create_scratch_database(name)
        try:
            yield type(self)(
                f"{self.alias}__verify", {**self.settings_dict, "NAME": name},
                bin_dir=self.bin_dir, timeout=self.timeout,
            )
        finally:
            self.drop_scratch_database(name)

    def database_error(self, error_class: type[BackupError], message: str, error: BaseException) -> BackupError:
        """An app error for a failed driver call, with the driver's text redacted."""
        return error_class(f"{message}: {redact(str(error), self.secrets())}")
