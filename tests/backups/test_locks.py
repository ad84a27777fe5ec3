"""One backup or restore per database: across processes (flock) and machines (Redis, or the
database row while Redis is down). A live lock is never stolen; a dead holder's lock goes away."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from contextlib import closing

import pytest
import redis

from backups_app import locks
from backups_app.exceptions import BackupLocked
from backups_app.models import AuditEntry, BackupRecord, DatabaseLock, Trigger
from backups_app.services.backup import backup_create

pytestmark = pytest.mark.django_db(transaction=True)


def test_second_lock_in_the_same_process_is_refused_at_once():
    with locks.database_lock("app", "backup"):
        started = time.monotonic()
        with pytest.raises(BackupLocked, match="Another backup of database 'app' is running"):
            with locks.database_lock("app", "restore"):
                pass
        assert time.monotonic() - started < 1
        with locks.database_lock("other", "backup"):
            pass  # other databases are independent
    with locks.database_lock("app", "restore"):
        pass  # released


def test_second_backup_is_refused_audited_and_leaves_no_record(sqlite_alias, backup_dir):
    with locks.database_lock("app", "backup"):
        with pytest.raises(BackupLocked):
            backup_create(database="app", trigger=Trigger.ADMIN)
    assert not BackupRecord.objects.exists()
    assert AuditEntry.objects.filter(action="create", outcome="refused", source="admin").exists()


def test_file_lock_held_by_another_process_and_released_when_it_is_killed(settings, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         f"fd = os.open({str(tmp_path / 'locks' / 'app.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "os.write(fd, b'{\"operation\": \"backup\", \"pid\": %d, \"host\": \"h\", \"since\": \"t\"}' % os.getpid())\n"
         "print('locked', flush=True)\ntime.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )
    (tmp_path / "locks").mkdir(exist_ok=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert locks.is_locked_locally("app")
        with pytest.raises(BackupLocked, match=f"process {holder.pid}"):
            with locks.database_lock("app", "backup"):
                pass
    finally:
        holder.kill()
        holder.wait()
    assert not locks.is_locked_locally("app")
    with locks.database_lock("app", "backup"):
        pass


@pytest.fixture
def redis_locks(settings, redis_url, unique_prefix):
    settings.REDIS_URL = redis_url
    settings.CACHE_KEY_PREFIX = unique_prefix
    client = redis.Redis.from_url(redis_url)
    yield client
    for key in client.scan_iter(f"{unique_prefix}:*"):
        client.delete(key)


def other_machine(settings, tmp_path, name="machine-b"):
    """Another machine shares Redis and the ops database but not the lock folder."""
    settings.BACKUP_LOCK_DIR = tmp_path / name


@pytest.mark.services
def test_redis_lock_refuses_a_second_machine_and_is_released(redis_locks, settings, tmp_path):
    with locks.database_lock("app", "backup"):
        value = json.loads(redis_locks.get(locks.redis_key("app")))
        assert value["operation"] == "backup" and 0 < redis_locks.pttl(locks.redis_key("app")) <= 60000
        other_machine(settings, tmp_path)
        with pytest.raises(BackupLocked, match="Another backup"):
            with locks.database_lock("app", "backup"):
                pass
    assert redis_locks.get(locks.redis_key("app")) is None


@pytest.mark.services
def test_a_live_redis_lock_is_extended_and_never_stolen(redis_locks, settings, tmp_path, monkeypatch):
    monkeypatch.setattr(locks, "LOCK_TTL_SECONDS", 2)
    monkeypatch.setattr(locks, "EXTEND_EVERY_SECONDS", 0.5)
    with locks.database_lock("app", "backup"):
        time.sleep(3)  # longer than the TTL: only the extension keeps it
        other_machine(settings, tmp_path)
        with pytest.raises(BackupLocked):
            with locks.database_lock("app", "backup"):
                pass


@pytest.mark.services
def test_a_dead_holders_redis_lock_expires(redis_locks, settings):
    # What a crashed machine leaves: a key nobody extends any more.
    redis_locks.set(locks.redis_key("app"), json.dumps({"operation": "backup", "pid": 1, "host": "gone",
                                                        "since": "x", "token": "t"}), px=300)
    with pytest.raises(BackupLocked, match="on gone"):
        with locks.database_lock("app", "backup"):
            pass
    time.sleep(0.5)
    with locks.database_lock("app", "backup"):
        pass


@pytest.mark.services
def test_another_owners_redis_lock_is_not_released_by_us(redis_locks, settings):
    with locks.database_lock("app", "backup"):
        key = locks.redis_key("app")
        redis_locks.set(key, "someone else", px=60000)  # our lock expired and was taken meanwhile
    assert redis_locks.get(key) == b"someone else"


def closed_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_redis_down_falls_back_to_the_database_row_not_to_acquired(settings, tmp_path):
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    with locks.database_lock("app", "backup"):
        row = DatabaseLock.objects.get(database="app")
        assert row.operation == "backup"
        other_machine(settings, tmp_path)
        with pytest.raises(BackupLocked, match="Another backup"):
            with locks.database_lock("app", "restore"):
                pass
    assert not DatabaseLock.objects.exists()
    with locks.database_lock("app", "restore"):
        pass


def test_expired_database_row_of_a_dead_holder_is_replaced(settings):
    from django.utils import timezone

    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    DatabaseLock.objects.create(database="app", token="dead", operation="backup", owner_host="gone",
                                owner_pid=1, expires_at=timezone.now() - timezone.timedelta(seconds=1))
    with locks.database_lock("app", "backup"):
        assert DatabaseLock.objects.get().token != "dead"


@pytest.mark.services
def test_redis_up_still_respects_a_fallback_row_taken_while_it_was_down(redis_locks, settings):
    from django.utils import timezone

    DatabaseLock.objects.create(database="app", token="live", operation="restore", owner_host="b",
                                owner_pid=7, expires_at=timezone.now() + timezone.timedelta(seconds=60))
    with pytest.raises(BackupLocked, match="restore"):
        with locks.database_lock("app", "backup"):
            pass
    assert redis_locks.get(locks.redis_key("app")) is None
