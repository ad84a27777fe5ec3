"""One backup or restore per database, held on the database server: GET_LOCK (MariaDB/MySQL),
pg_try_advisory_lock (PostgreSQL), flock (SQLite). Exclusion holds across processes and machines with
or without Redis; a live lock is never stolen; a dead holder's lock is gone at once (no TTL)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from django.db import connections

from backups_app import locks
from backups_app.exceptions import BackupLocked, LockUnavailable
from backups_app.models import AuditEntry, BackupRecord, Trigger
from backups_app.services.backup import backup_create

from .conftest import PROJECT_ROOT

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
        assert locks.is_locked("app")
        with pytest.raises(BackupLocked, match=f"process {holder.pid}"):
            with locks.database_lock("app", "backup"):
                pass
    finally:
        holder.kill()
        holder.wait()
    assert not locks.is_locked("app")
    with locks.database_lock("app", "backup"):
        pass


def other_machine(settings, tmp_path, name="machine-b"):
    """Another machine shares the database server (and the ops database) but not the lock folder."""
    settings.BACKUP_LOCK_DIR = tmp_path / name


def closed_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(params=["mariadb", "postgres"])
def server_alias(request):
    """A scratch database on the real MariaDB or PostgreSQL, as its alias."""
    return request.getfixturevalue(f"{request.param}_database")


def settings_json(alias: str) -> str:
    return json.dumps({key: value for key, value in connections[alias].settings_dict.items() if key != "TEST"},
                      default=str)


HOLDER = """
import json, os, socket, sys, time
socket.gethostname = lambda: "machine-a"
import django
django.setup()
from django.db import connections
from backups_app import locks
connections.settings["target"] = connections.configure_settings(
    {"default": {"ENGINE": "django.db.backends.dummy"}, "target": json.loads(sys.argv[1])})["target"]
with locks.database_lock("target", "restore"):
    print("locked", flush=True)
    time.sleep(3600)
"""


def start_holder(alias: str, tmp_path: Path) -> subprocess.Popen:
    """Another machine holding the lock: its own process, host name and lock folder, no Redis."""
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(PROJECT_ROOT),
                   "BACKUP_LOCK_DIR": str(tmp_path / "machine-a")}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, settings_json(alias)], cwd=PROJECT_ROOT,
                              env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = holder.stdout.readline().strip()
    assert line == "locked", holder.stderr.read()
    return holder


@pytest.mark.services
def test_server_lock_refuses_a_second_caller_and_is_released(server_alias, settings, tmp_path):
    with locks.database_lock(server_alias, "backup"):
        assert locks.is_locked(server_alias)
        other_machine(settings, tmp_path)  # no lock file in common: only the server can refuse
        with pytest.raises(BackupLocked, match=f"Another backup of database '{server_alias}' is running"):
            with locks.database_lock(server_alias, "restore"):
                pass
    assert not locks.is_locked(server_alias)
    with locks.database_lock(server_alias, "restore"):
        pass


@pytest.mark.services
def test_server_lock_is_per_database(server_alias, settings, tmp_path):
    settings_dict = connections[server_alias].settings_dict
    from tests.conftest import register_alias, unregister_alias

    # The same database under a second alias shares the lock; the server's other databases don't.
    register_alias("same_database", dict(settings_dict))
    try:
        with locks.database_lock(server_alias, "backup"):
            with pytest.raises(BackupLocked):
                with locks.database_lock("same_database", "backup"):
                    pass
    finally:
        unregister_alias("same_database")
    maintenance = "mysql" if "mysql" in settings_dict["ENGINE"] else "postgres"
    register_alias("other_database", {**settings_dict, "NAME": maintenance})
    try:
        with locks.database_lock(server_alias, "backup"), locks.database_lock("other_database", "backup"):
            pass
    finally:
        unregister_alias("other_database")


@pytest.mark.services
def test_another_machines_lock_is_refused_and_dies_with_it_at_once(server_alias, settings, tmp_path):
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"  # Redis down changes nothing
    holder = start_holder(server_alias, tmp_path)
    try:
        with pytest.raises(BackupLocked, match="Another restore of database"):
            with locks.database_lock(server_alias, "backup"):
                pass
        assert locks.is_locked(server_alias)
    finally:
        holder.kill()  # SIGKILL: no finally, no release; the server ends the session
        holder.wait()
    # No TTL to wait for: the server drops the lock with the session. The only wait is for the
    # server to notice the closed socket, which it does as the kernel closes it.
    for _attempt in range(100):
        if not locks.is_locked(server_alias):
            break
        time.sleep(0.05)
    with locks.database_lock(server_alias, "backup"):
        pass


@pytest.mark.services
def test_postgresql_refusal_names_the_holder(postgres_database, tmp_path):
    holder = start_holder(postgres_database, tmp_path)
    try:
        with pytest.raises(BackupLocked, match=rf"process {holder.pid} on machine-a"):
            with locks.database_lock(postgres_database, "backup"):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_an_unreachable_server_refuses_the_lock_instead_of_assuming_it(settings):
    from tests.conftest import register_alias, unregister_alias

    register_alias("down", {"ENGINE": "django.db.backends.postgresql", "NAME": "x", "HOST": "127.0.0.1",
                            "PORT": closed_port(), "USER": "postgres", "PASSWORD": "hunter2"})
    try:
        with pytest.raises(LockUnavailable, match="Could not take the lock of database 'down'") as refused:
            with locks.database_lock("down", "backup"):
                pytest.fail("the lock must not be assumed")
        assert "hunter2" not in str(refused.value)
    finally:
        unregister_alias("down")


@pytest.mark.services
@pytest.mark.slow
def test_two_workers_on_two_hosts_never_overlap(server_alias):
    """benchmarks/lock_overlap.py: two processes reporting different hosts, sharing only the server."""
    sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
    try:
        import lock_overlap
    finally:
        sys.path.pop(0)
    results = lock_overlap.run(settings_json(server_alias), attempts=150)
    assert [result["overlaps"] for result in results] == [0, 0]
    assert all(result["acquired"] > 0 for result in results)
    assert sum(result["refused"] for result in results) > 0  # they did contend
