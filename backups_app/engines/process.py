"""Running a client tool (mysqldump, pg_dump, psql, mysql...) the way every engine must.

`run_tool()` starts the tool from an argv list (never a shell) in its own process group, so that a
timeout or an aborted backup kills the tool *and* anything it spawned; it keeps only the last 64 KiB
of stderr (bounded memory whatever the tool prints); and when the tool exits non-zero, times out or is
killed it raises the given error class with the tool's own message, secrets redacted.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import IO

from backups_app.exceptions import BackupError, DumpFailed

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

STDERR_TAIL_BYTES = 64 * 1024
#: Capacity asked for the pipes carrying a dump or a restore (Linux's default is 64 KiB). A dump tool
#: writes in small pieces and blocks as soon as the pipe is full: with 64 KiB (well under a
#: millisecond of mariadb-dump's output) every moment our reader waits for a CPU or for the GIL
#: stalls the dump itself; with 1 MiB the tool runs on while the reader catches up, as it does
#: writing to a file. 1 MiB is also Linux's default ceiling for unprivileged processes
#: (/proc/sys/fs/pipe-max-size).
PIPE_CAPACITY_BYTES = 1 << 20
REDACTED = "********"
#: What a client tool may see of our environment. Everything else (SECRET_KEY, AWS_*, VAULT_*,
#: DATABASE_URL_* with passwords...) stays out of /proc/<pid>/environ of the child.
ENVIRONMENT_ALLOWED = frozenset({"PATH", "HOME", "LANG", "TZ", "TMPDIR"})
ENVIRONMENT_ALLOWED_PREFIXES = ("LC_",)


def tool_environment(
    *, passthrough: Iterable[str] = (), set_: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a child process: an allow-list of ours, never the whole of it.

    `passthrough` names the variables a tool needs beyond the basics (PGSSLMODE...); `set_` adds the
    values the engine computed (PGHOST, PGPASSFILE...).
    """
    allowed = ENVIRONMENT_ALLOWED | set(passthrough)
    environment = {
        name: value for name, value in os.environ.items()
        if name in allowed or name.startswith(ENVIRONMENT_ALLOWED_PREFIXES)
    }
    environment.update(set_ or {})
    # Messages in English whatever the server's locale, so that operators can search for them.
    environment["LC_MESSAGES"] = "C"
    return environment


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every non-empty secret replaced, longest first (a secret may contain another)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


class _TailCollector(threading.Thread):
    """Drains a pipe in the background so the tool never blocks on it, keeping only the tail."""

    def __init__(self, pipe: IO[bytes]) -> None:
        super().__init__(daemon=True, name="tool-stderr")
        self.pipe = pipe
        self.tail = bytearray()

    def run(self) -> None:
        while chunk := self.pipe.read1(65536) if hasattr(self.pipe, "read1") else self.pipe.read(65536):
            self.tail += chunk
            if len(self.tail) > STDERR_TAIL_BYTES:
                del self.tail[: len(self.tail) - STDERR_TAIL_BYTES]
        self.pipe.close()

    def text(self) -> str:
        return bytes(self.tail).decode("utf-8", "replace").strip()


def kill_process_group(process: subprocess.Popen) -> None:
    """SIGKILL the tool's whole process group (the tool and whatever it started)."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(process.pid, signal.SIGKILL)
        else:  # Windows: no process groups here; kill the tool itself
            process.kill()
    except (ProcessLookupError, PermissionError):
        pass


def enlarge_pipe(descriptor: int, capacity: int = PIPE_CAPACITY_BYTES) -> int | None:
    """Ask for a larger pipe buffer; the capacity granted, or None where the system says no.

    Only a help: platforms without F_SETPIPE_SZ (macOS, Windows), a lower pipe-max-size or a user
    over its pipe quota keep the default pipe, which works the same, only with more waiting.
    """
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is None:
        return None
    try:
        return fcntl.fcntl(descriptor, set_size, capacity)
    except OSError:
        return None


@contextmanager
def run_tool(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    stdin: int | IO | None = subprocess.DEVNULL,
    stdout: int | IO | None = subprocess.PIPE,
    timeout: float | None = None,
    secrets: Iterable[str | None] = (),
    error_class: type[BackupError] = DumpFailed,
) -> Iterator[subprocess.Popen]:
    """Run `argv` and yield the Popen; leaving the block waits for it and checks its exit status.

    - `stdout=PIPE` (dumps): read `process.stdout` to the end inside the block.
    - `stdin=PIPE` (restores): write into `process.stdin` inside the block; it is closed on exit.
    - If the block raises, the process group is killed before the exception propagates.
    - After `timeout` seconds the process group is killed and `error_class` is raised.
    - Non-zero exit raises `error_class("<tool>: <stderr tail>")` with `secrets` redacted.
    - `env` None gives the tool `tool_environment()`, never our whole environment.
    """
    secrets = list(secrets)
    tool = os.path.basename(argv[0])
    try:
        process = subprocess.Popen(
            argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
            env=tool_environment() if env is None else env,
            start_new_session=True, close_fds=True,
        )
    except OSError as error:
        # FileNotFoundError for a missing tool: say which one, never the whole argv.
        raise error_class(redact(f"{tool}: {error.strerror or error}", secrets)) from None
    for pipe in (process.stdout, process.stdin):
        if pipe is not None:
            enlarge_pipe(pipe.fileno())
    collector = _TailCollector(process.stderr)
    collector.start()
    timed_out = threading.Event()

    def on_timeout() -> None:
        timed_out.set()
        kill_process_group(process)

    timer = threading.Timer(timeout, on_timeout) if timeout else None
    if timer:
        timer.daemon = True
        timer.start()
    try:
        try:
            yield process
        except BaseException as error:
            # The reader gave up (empty or truncated dump, disk full...). If the tool has exited
            # with an error, its own message (wrong password...) is the one worth reporting.
            try:
                exited_with = process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                exited_with = None
            kill_process_group(process)
            if timed_out.is_set():
                raise error_class(f"{tool}: timed out after {timeout:g} seconds and was killed") from error
            if exited_with and isinstance(error, Exception):
                process.wait()
                collector.join(timeout=5)
                raise error_class(_failure_message(tool, exited_with, redact(collector.text(), secrets))) from error
            raise
        finally:
            if process.stdin is not None and not process.stdin.closed:
                try:
                    process.stdin.close()
                except BrokenPipeError:
                    pass
        returncode = process.wait()
    finally:
        if process.poll() is None:
            kill_process_group(process)
        process.wait()
        if timer:
            timer.cancel()
        collector.join(timeout=5)
        if process.stdout is not None and not process.stdout.closed:
            process.stdout.close()
    message = redact(collector.text(), secrets)
    if timed_out.is_set():
        raise error_class(f"{tool}: timed out after {timeout:g} seconds and was killed")
    if returncode != 0:
        raise error_class(_failure_message(tool, returncode, message))


def _failure_message(tool: str, returncode: int, message: str) -> str:
    if returncode < 0:
        reason = f"killed by signal {signal.Signals(-returncode).name}"
    else:
        reason = f"exited with status {returncode}"
    return f"{tool} {reason}: {message}" if message else f"{tool} {reason}"
