"""One backup or restore per database at a time, across processes and across machines.

- On one machine: an `flock()` (msvcrt lock on Windows) on BACKUP_LOCK_DIR/<alias>.lock. The kernel releases it when the
  holder dies, even after kill -9, so a crash never leaves a stale lock behind.
- Across machines, when REDIS_URL is set: a Redis key set with NX, a TTL and a random owner token;
  a background thread extends the TTL while the operation runs, and only the owner (checked by token,
  atomically in Lua) extends or deletes it. A holder that died stops extending, so its lock expires;
  a live lock is never stolen.
- When Redis is configured but unreachable, the lock is *not* assumed acquired (the failure mode of
  `cache.add()` with IGNORE_EXCEPTIONS): a row in the ops database (DatabaseLock, unique per alias,
  with the same TTL/extension/owner rules) takes Redis's place until Redis is back.

The second caller is refused at once with `BackupLocked`, whose message says who holds the lock.
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from backups_app.exceptions import BackupLocked

try:
    import fcntl
except ImportError:  # Windows (Task Scheduler hosts): msvcrt byte-range locks, same semantics here
    fcntl = None
    import msvcrt

logger = logging.getLogger(__name__)
# Windows locks a byte range; lock one byte far past the holder text so the text stays readable.
_WINDOWS_LOCK_OFFSET = 1 << 20

LOCK_TTL_SECONDS = 60
EXTEND_EVERY_SECONDS = 20

_EXTEND_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def _safe(alias: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", alias)


def lock_path(alias: str) -> Path:
    return Path(settings.BACKUP_LOCK_DIR) / f"{_safe(alias)}.lock"


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


def is_locked_locally(alias: str) -> bool:
    """Whether a process on this machine holds the lock of `alias` right now."""
    path = lock_path(alias)
    if not path.exists():
        return False
    fd = _open_lock_file(path, os.O_RDWR)
    try:
        return not _try_lock(fd)
    finally:
        os.close(fd)  # closing releases the probe's own lock


class _Extender(threading.Thread):
    """Extends a TTL lock until stopped; logs loudly if the lock was lost meanwhile."""

    def __init__(self, extend) -> None:
        super().__init__(daemon=True, name="backup-lock-extender")
        self.extend = extend
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(EXTEND_EVERY_SECONDS):
            try:
                if not self.extend():
                    logger.error("The backup lock was lost while the operation was running.")
            except Exception:  # noqa: BLE001 - a transient error must not kill the backup
                logger.warning("Could not extend the backup lock.", exc_info=True)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


def redis_key(alias: str) -> str:
    return f"{settings.CACHE_KEY_PREFIX}:backup-lock:{_safe(alias)}"


def _redis_client():
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


@contextmanager
def _redis_lock(client, alias: str, operation: str) -> Iterator[None]:
    key = redis_key(alias)
    token = secrets.token_hex(16)
    owner = {**_owner(operation), "token": token}
    if not client.set(key, json.dumps(owner), nx=True, px=LOCK_TTL_SECONDS * 1000):
        try:
            holder = json.loads(client.get(key) or b"null")
        except ValueError:
            holder = None
        raise _refusal(alias, holder)
    value = json.dumps(owner)
    extender = _Extender(
        lambda: client.eval(_EXTEND_SCRIPT, 1, key, value, LOCK_TTL_SECONDS * 1000)
    )
    extender.start()
    try:
        yield
    finally:
        extender.stop()
        try:
            client.eval(_RELEASE_SCRIPT, 1, key, value)
        except Exception:  # noqa: BLE001 - the TTL frees it anyway
            logger.warning("Could not release the Redis backup lock %s; it expires by itself.", key)


@contextmanager
def _database_lock_row(alias: str, operation: str) -> Iterator[None]:
    from backups_app.models import DatabaseLock

    token = secrets.token_hex(16)
    owner = _owner(operation)
    now = timezone.now()
    try:
        with transaction.atomic():
            # Only an expired row (its holder stopped extending it) may be replaced.
            DatabaseLock.objects.filter(database=alias, expires_at__lt=now).delete()
            DatabaseLock.objects.create(
                database=alias, token=token, operation=operation, owner_host=owner["host"],
                owner_pid=owner["pid"], expires_at=now + timedelta(seconds=LOCK_TTL_SECONDS),
            )
    except IntegrityError:
        holder = DatabaseLock.objects.filter(database=alias).values("operation", "owner_host", "owner_pid", "acquired_at").first()
        raise _refusal(alias, holder and {
            "operation": holder["operation"], "host": holder["owner_host"], "pid": holder["owner_pid"],
            "since": holder["acquired_at"].isoformat(timespec="seconds"),
        }) from None

    def extend() -> bool:
        from django.db import connection

        try:
            return bool(DatabaseLock.objects.filter(token=token).update(
                expires_at=timezone.now() + timedelta(seconds=LOCK_TTL_SECONDS)
            ))
        finally:
            connection.close()  # this thread's own connection

    extender = _Extender(extend)
    extender.start()
    try:
        yield
    finally:
        extender.stop()
        DatabaseLock.objects.filter(token=token).delete()


@contextmanager
def database_lock(alias: str, operation: str) -> Iterator[None]:
    """Hold the lock of database `alias` for `operation` ("backup" or "restore").

    Raises `BackupLocked` immediately (never waits) when another process holds it.
    """
    with _file_lock(alias, operation):
        if not settings.REDIS_URL:
            yield
            return
        client = _redis_client()
        try:
            client.ping()
        except Exception as error:  # noqa: BLE001 - redis.ConnectionError, TimeoutError, auth...
            logger.warning(
                "Redis is unreachable (%s); using the database lock row for %s instead.",
                error.__class__.__name__, alias,
            )
            with _database_lock_row(alias, operation):
                yield
            return
        with _redis_lock(client, alias, operation):
            # A machine that could not reach Redis a moment ago may hold the fallback row.
            from backups_app.models import DatabaseLock

            holder = DatabaseLock.objects.filter(database=alias, expires_at__gte=timezone.now()).first()
            if holder is not None:
                raise _refusal(alias, {
                    "operation": holder.operation, "host": holder.owner_host, "pid": holder.owner_pid,
                    "since": holder.acquired_at.isoformat(timespec="seconds"),
                })
            yield


def cross_machine() -> bool:
    """Whether locks also exclude other machines (they do when REDIS_URL is set)."""
    return bool(settings.REDIS_URL)
