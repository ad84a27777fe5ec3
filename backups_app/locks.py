"""One backup or restore per database at a time, held on the database server itself.

The lock lives where the database lives, on a connection opened for it and kept for the whole job:
- MariaDB/MySQL: ``GET_LOCK('opsdesk:<database>', 0)`` (user-level locks are server-wide, so the
  name carries the database's name);
- PostgreSQL: ``pg_try_advisory_lock`` on a connection to the database itself (advisory locks are
  per database);
- SQLite (and any other engine): an ``flock()`` (msvcrt lock on Windows) on
  BACKUP_LOCK_DIR/<alias>.lock; a SQLite file is reached from one machine anyway.

So exclusion holds across machines with or without Redis, and a lock dies with its holder: the
server ends the session of a killed process (kill -9, OOM, a machine gone) as soon as its
connection closes, and the kernel drops the flock of a dead process, so the next job for that
database never waits for a TTL, and a live lock is never stolen (nothing expires while the holder
lives). No TTL, no extender thread, no fallback row: those belonged to the Redis lock this replaces.

The second caller is refused at once with `BackupLocked`, whose message says who holds the lock.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from django.db import connections
from django.utils import timezone
from django.utils.translation import gettext as _

from backups_app.conf import app_settings
from backups_app.exceptions import BackupLocked, LockUnavailable

try:
    import fcntl
except ImportError:  # Windows (Task Scheduler hosts): msvcrt byte-range locks, same semantics here
    fcntl = None
    import msvcrt

logger = logging.getLogger(__name__)
# Windows locks a byte range; lock one byte far past the holder text so the text stays readable.
_WINDOWS_LOCK_OFFSET = 1 << 20

#: The operations whose name a MySQL holder publishes (as a second user lock) for refusal messages.
OPERATIONS = ("backup", "restore")
#: PostgreSQL advisory lock key (two int4): "opsd" and 1. Per database, since the lock is taken on a
#: connection to the database itself.
_ADVISORY_KEY = (0x6F707364, 1)
_MYSQL_ENGINES = ("django.db.backends.mysql",)
_POSTGRESQL_ENGINES = ("django.db.backends.postgresql",)


def _safe(alias: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", alias)


def lock_path(alias: str) -> Path:
    return Path(app_settings.BACKUP_LOCK_DIR) / f"{_safe(alias)}.lock"


def _owner(operation: str) -> dict:
    return {
        "operation": operation, "host": socket.gethostname(), "pid": os.getpid(),
        "since": timezone.now().isoformat(timespec="seconds"),
    }


def _refusal(alias: str, holder: dict | None) -> BackupLocked:
    if holder:
        return BackupLocked(
            _("Another %(operation)s of database '%(alias)s' is running (process %(pid)s on %(host)s "
              "since %(since)s); try again when it has finished.")
            % {"alias": alias, **{key: holder.get(key, "?") for key in ("operation", "pid", "host", "since")}}
        )
    return BackupLocked(
        _("Another backup or restore of database '%(alias)s' is running; try again when it has finished.")
        % {"alias": alias}
    )


def _try_lock(fd: int) -> bool:
    """Non-blocking exclusive lock of the whole file; False when another open file holds it."""
    if fcntl is not None:
        try:
            # flock (not lockf): two opens in one process also exclude each other.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _read_holder(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        return json.loads(os.read(fd, 4096) or b"null")
    except (ValueError, OSError):
        return None


def _write_holder(fd: int, holder: dict | None) -> None:
    os.ftruncate(fd, 0)
    if holder:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(holder).encode())


def _open_lock_file(path, flags: int) -> int:
    """Open a lock file without following a symlink planted in its place; 0600 whatever the umask."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def _file_lock(alias: str, operation: str) -> Iterator[None]:
    path = lock_path(alias)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = _open_lock_file(path, os.O_RDWR | os.O_CREAT)
    try:
        if not _try_lock(fd):
            raise _refusal(alias, _read_holder(fd))
        _write_holder(fd, _owner(operation))
        try:
            yield
        finally:
            _write_holder(fd, None)
            _unlock(fd)
    finally:
        os.close(fd)


def _file_is_locked(alias: str) -> bool:
    """Whether a process on this machine holds the file lock of `alias` right now."""
    path = lock_path(alias)
    if not path.exists():
        return False
    fd = _open_lock_file(path, os.O_RDWR)
    try:
        return not _try_lock(fd)
    finally:
        os.close(fd)  # closing releases the probe's own lock


# --- Which lock -------------------------------------------------------------------------------------
def _settings_dict(alias: str) -> dict[str, Any] | None:
    return connections.settings[alias] if alias in connections.settings else None


def _kind(alias: str) -> str:
    """"mysql", "postgresql" or "file", from the alias's DATABASES entry."""
    settings_dict = _settings_dict(alias)
    engine = str((settings_dict or {}).get("ENGINE") or "")
    if engine in _MYSQL_ENGINES or engine.endswith(".mysql"):
        return "mysql"
    if engine in _POSTGRESQL_ENGINES or engine.endswith((".postgresql", ".postgis")):
        return "postgresql"
    return "file"


def _server_connection(alias: str, **options: Any):
    """A dedicated driver connection to the alias's database, for the lock alone."""
    from backups_app.engines.client import driver_connection

    settings_dict = dict(_settings_dict(alias))
    settings_dict["OPTIONS"] = {**(settings_dict.get("OPTIONS") or {}), **options}
    return driver_connection(settings_dict)


def _unreachable(alias: str, error: BaseException) -> LockUnavailable:
    from backups_app.engines.process import redact

    text = redact(str(error), [(_settings_dict(alias) or {}).get("PASSWORD")])
    return LockUnavailable(
        _("Could not take the lock of database '%(alias)s' on its server: %(error)s") % {"alias": alias, "error": text}
    )


def _session_seconds() -> int:
    """Idle time a lock session must survive: the longest job, plus margin (servers may cut idle
    sessions sooner, which would release the lock under a running job)."""
    return int(app_settings.BACKUP_DUMP_TIMEOUT or 21600) + 3600


# --- MariaDB / MySQL: GET_LOCK ----------------------------------------------------------------------
def mysql_lock_name(database_name: str, suffix: str = "") -> str:
    """A user-lock name (at most 64 characters) unique to the database on its server."""
    name = f"opsdesk:{database_name}{suffix}"
    if len(name) <= 64:
        return name
    return "opsdesk:" + hashlib.sha256(f"{database_name}{suffix}".encode()).hexdigest()[:56]


def _mysql_scalar(connection, statement: str, parameters: list) -> Any:
    cursor = connection.cursor()
    cursor.execute(statement, parameters)
    row = cursor.fetchone()
    return row[0] if row else None


def _mysql_holder(connection, database_name: str) -> dict | None:
    holder_id = _mysql_scalar(connection, "SELECT IS_USED_LOCK(%s)", [mysql_lock_name(database_name)])
    if holder_id is None:
        return None
    operation = next(
        (name for name in OPERATIONS
         if _mysql_scalar(connection, "SELECT IS_USED_LOCK(%s)", [mysql_lock_name(database_name, f":{name}")]) == holder_id),
        "backup or restore",
    )
    # SHOW PROCESSLIST, not information_schema.PROCESSLIST: the latter builds an Aria temporary
    # table per query, and MariaDB 10.11 crashed (signal 11 in ha_maria::drop_table) while such
    # queries ran by the thousand from concurrent refusals here.
    cursor = connection.cursor()
    cursor.execute("SHOW PROCESSLIST")
    row = next((row for row in cursor.fetchall() if row[0] == holder_id), None)
    host, seconds = (row[2], row[5]) if row else ("?", 0)
    since = (timezone.now() - timezone.timedelta(seconds=int(seconds or 0))).isoformat(timespec="seconds")
    return {"operation": operation, "pid": f"server connection {holder_id}", "host": host, "since": since}


@contextmanager
def _mysql_lock(alias: str, operation: str) -> Iterator[None]:
    from backups_app.engines.client import database_errors

    database_name = str(_settings_dict(alias)["NAME"])
    name = mysql_lock_name(database_name)
    with ExitStack() as stack:
        try:
            connection = stack.enter_context(_server_connection(alias))
            connection.cursor().execute("SET SESSION wait_timeout = %s", [_session_seconds()])
            if _mysql_scalar(connection, "SELECT GET_LOCK(%s, 0)", [name]) != 1:
                raise _refusal(alias, _mysql_holder(connection, database_name))
            if operation in OPERATIONS:
                _mysql_scalar(connection, "SELECT GET_LOCK(%s, 0)", [mysql_lock_name(database_name, f":{operation}")])
        except database_errors(_settings_dict(alias)) as error:
            raise _unreachable(alias, error) from None
        try:
            yield
        finally:
            _release_checked(alias, lambda: _mysql_scalar(connection, "SELECT RELEASE_LOCK(%s)", [name]) == 1)


def _mysql_is_locked(alias: str) -> bool:
    with _server_connection(alias) as connection:
        name = mysql_lock_name(str(_settings_dict(alias)["NAME"]))
        return _mysql_scalar(connection, "SELECT IS_USED_LOCK(%s)", [name]) is not None


# --- PostgreSQL: pg_try_advisory_lock ---------------------------------------------------------------
def _application_name(operation: str) -> str:
    """Who holds the lock, readable by the refused caller in pg_stat_activity (63 bytes at most)."""
    return f"opsdesk:{operation}:{os.getpid()}:{socket.gethostname()}".encode()[:63].decode("utf-8", "ignore")


_PG_HOLDER = (
    "SELECT a.application_name, a.backend_start FROM pg_catalog.pg_locks l "
    "JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s AND l.objsubid = 2 "
    "AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())"
)


def _pg_holder(connection) -> dict | None:
    row = connection.execute(_PG_HOLDER, list(_ADVISORY_KEY)).fetchone()
    if row is None:
        return None
    application_name, started = row
    parts = str(application_name or "").split(":", 3)
    if len(parts) == 4 and parts[0] == "opsdesk":
        operation, pid, host = parts[1:]
    else:
        operation, pid, host = "backup or restore", "?", "?"
    return {"operation": operation, "pid": pid, "host": host,
            "since": started.isoformat(timespec="seconds") if started else "?"}


@contextmanager
def _postgresql_lock(alias: str, operation: str) -> Iterator[None]:
    from backups_app.engines.client import database_errors

    with ExitStack() as stack:
        try:
            connection = stack.enter_context(_server_connection(alias, application_name=_application_name(operation)))
            connection.autocommit = True
            if connection.info.server_version >= 140000:
                # The session must outlive the job; a server-wide idle timeout would end it (and the lock).
                connection.execute("SET idle_session_timeout = 0")
            if not connection.execute("SELECT pg_catalog.pg_try_advisory_lock(%s, %s)", list(_ADVISORY_KEY)).fetchone()[0]:
                raise _refusal(alias, _pg_holder(connection))
        except database_errors(_settings_dict(alias)) as error:
            raise _unreachable(alias, error) from None
        try:
            yield
        finally:
            _release_checked(alias, lambda: connection.execute(
                "SELECT pg_catalog.pg_advisory_unlock(%s, %s)", list(_ADVISORY_KEY)).fetchone()[0])


def _postgresql_is_locked(alias: str) -> bool:
    with _server_connection(alias) as connection:
        return _pg_holder(connection) is not None


def _release_checked(alias: str, release) -> None:
    """Release; a lock found already gone means the session was cut under the job: say so loudly."""
    try:
        released = release()
    except Exception:  # noqa: BLE001 - the connection closes next, which releases it anyway
        logger.error("The lock session of %s broke while the operation ran; the lock may have been lost.",
                     alias, exc_info=True)
        return
    if not released:
        logger.error("The lock of %s was lost while the operation ran (its server session ended).", alias)


# --- Public API ---------------------------------------------------------------------------------------
@contextmanager
def database_lock(alias: str, operation: str) -> Iterator[None]:
    """Hold the lock of database `alias` for `operation` ("backup" or "restore").

    Raises `BackupLocked` immediately (never waits) when another process, here or on another
    machine, holds it; `LockUnavailable` when the database server cannot be reached to take it.
    """
    kind = _kind(alias)
    lock = {"mysql": _mysql_lock, "postgresql": _postgresql_lock}.get(kind, _file_lock)
    with lock(alias, operation):
        yield


def is_locked(alias: str) -> bool:
    """Whether any process (on any machine, for server locks) holds the lock of `alias` right now."""
    kind = _kind(alias)
    if kind == "file":
        return _file_is_locked(alias)
    from backups_app.engines.client import database_errors

    try:
        return _mysql_is_locked(alias) if kind == "mysql" else _postgresql_is_locked(alias)
    except database_errors(_settings_dict(alias)):
        return True  # unknown: never declare a running job dead because the server did not answer


def cross_machine(alias: str) -> bool:
    """Whether the lock of `alias` also excludes other machines (server locks do; file locks don't)."""
    return _kind(alias) != "file"
