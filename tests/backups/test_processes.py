"""The real command in real processes: kill -9, two backups at once, restoring the ops database."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from .conftest import stored_files

pytestmark = pytest.mark.slow

SLOW_DUMP = (
    "import sys, time\n"
    "out = sys.stdout.buffer\n"
    "for i in range(150):\n"
    "    out.write(b'INSERT INTO t VALUES (%d);\\n' % i * 200); out.flush(); time.sleep(0.05)\n"
    "out.write(b'-- Dump completed\\n')\n"
)


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def test_kill_9_leaves_no_final_name_and_the_next_run_marks_it_interrupted(manage):
    process = manage.start("backup_now", "--database", "fake", script=SLOW_DUMP)
    try:
        wait_for(lambda: any(name.endswith(".partial") for name in stored_files(manage.backup_dir)))
        record_name = manage.records()[0][0]
        assert manage.records()[0][2] == "running"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    files = stored_files(manage.backup_dir)
    assert record_name not in files and record_name + ".json" not in files
    assert manage.records()[0][2] == "running"  # nobody has looked yet

    # The next backup of that database finds the orphan, marks it and cleans its temporary file.
    result = manage.run("backup_now", "--database", "fake", "--json")
    assert result.returncode == 0, result.stderr
    records = manage.records()
    assert records[0][:3] == (record_name, "fake", "interrupted")
    assert "stopped before finishing" in records[0][3]
    assert records[1][2] == "success"
    assert stored_files(manage.backup_dir) == sorted([records[1][0], records[1][0] + ".json"])

    # Never offered for restore.
    refused = manage.run("restore_backup", record_name, "--noinput")
    assert refused.returncode != 0 and "interrupted" in refused.stderr
    listed = json.loads(manage.run("list_backups", "--json").stdout)
    assert {entry["name"]: entry["status"] for entry in listed}[record_name] == "interrupted"


def test_restore_killed_mid_way_is_failed_and_names_its_safety_backup(manage):
    backup = json.loads(manage.run("backup_now", "--database", "fake", "--json").stdout)["name"]
    restored = manage.ops_db.parent / (manage.ops_db.name + ".restored")
    process = manage.start("restore_backup", backup, "--noinput", OPSDESK_TEST_FAKE_RESTORE_SLEEP="0.5")
    try:
        wait_for(lambda: restored.exists() and restored.stat().st_size > 0)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    import sqlite3

    def restore_row():
        connection = sqlite3.connect(manage.ops_db, timeout=30)
        try:
            return connection.execute(
                "SELECT r.status, r.error_message, s.name FROM backups_app_restorerecord r "
                "JOIN backups_app_backuprecord s ON s.id = r.safety_backup_id"
            ).fetchone()
        finally:
            connection.close()

    assert restore_row()[0] == "running"
    # The next operation on that database finds it. The database is half-restored (dirty): the next
    # scheduled backup must not store that as a good backup; it is recorded as failed instead.
    scheduled = manage.run("backup_now", "--database", "fake", "--scheduled")
    assert scheduled.returncode != 0
    assert "database is dirty after an interrupted restore" in scheduled.stderr
    status, message, safety = restore_row()
    assert status == "failed" and safety in message and "partly restored" in message
    newest = manage.records()[-1]
    assert newest[2:] == ("failed", "database is dirty after an interrupted restore")
    assert [row[2] for row in manage.records()].count("success") == 2  # the backup and the safety one

    # Until a restore completes: then backups are good again.
    assert manage.run("restore_backup", safety, "--noinput", "--no-safety-backup").returncode == 0
    assert manage.run("backup_now", "--database", "fake", "--scheduled").returncode == 0


def test_sync_backups_marks_a_killed_backup_interrupted_too(manage):
    process = manage.start("backup_now", "--database", "fake", script=SLOW_DUMP)
    wait_for(lambda: any(name.endswith(".partial") for name in stored_files(manage.backup_dir)))
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    result = manage.run("sync_backups")
    assert result.returncode == 0 and "1 interrupted" in result.stdout
    assert manage.records()[0][2] == "interrupted"
    assert stored_files(manage.backup_dir) == []


def test_two_backups_at_once_one_runs_the_other_is_refused(manage):
    first = manage.start("backup_now", "--database", "fake", script=SLOW_DUMP)
    try:
        wait_for(lambda: manage.records() and manage.records()[0][2] == "running")
        started = time.monotonic()
        second = manage.run("backup_now", "--database", "fake", script=SLOW_DUMP)
        assert second.returncode == 1
        assert "Another backup of database 'fake' is running" in second.stderr
        assert time.monotonic() - started < 20
        assert len(manage.records()) == 1  # the refused one created no record
        # Another database is not blocked.
        assert manage.run("backup_now").returncode == 0
    finally:
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert [r[2] for r in manage.records()] == ["success", "success"]


def test_restoring_the_ops_database_keeps_every_backup_record(manage):
    first = manage.run("backup_now", "--json")
    assert first.returncode == 0, first.stderr
    first_name = json.loads(first.stdout)["name"]
    time.sleep(1.1)
    second_name = json.loads(manage.run("backup_now", "--json", "--compression", "zstd").stdout)["name"]

    result = manage.run("restore_backup", first_name, "--noinput")
    assert result.returncode == 0, result.stderr
    assert "Safety backup of the previous state" in result.stdout
    listed = {entry["name"]: entry for entry in json.loads(manage.run("list_backups", "--json").stdout)}
    assert {first_name, second_name} <= set(listed)
    assert all(entry["status"] == "success" for entry in listed.values()), listed
    assert len(listed) == 3 and sum(entry["kind"] == "safety" for entry in listed.values()) == 1
    # ...and each is still restorable.
    assert manage.run("restore_backup", second_name, "--noinput", "--no-safety-backup").returncode == 0


def test_backup_now_does_not_import_cloud_sdks(manage):
    probe = (
        "import sys, django; django.setup()\n"
        "from django.core.management import call_command\n"
        "call_command('backup_now')\n"
        "print(sorted(m for m in ('boto3', 'botocore', 'hvac', 'azure', 'storages.backends.s3') if m in sys.modules))\n"
    )
    import subprocess
    import sys as _sys

    result = subprocess.run([_sys.executable, "-c", probe], env=manage.environment(), capture_output=True,
                            text=True, cwd=str(manage.ops_db.parent), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_sigterm_fails_the_backup_at_once_and_cleans_up(manage):
    process = manage.start("backup_now", "--database", "fake", script=SLOW_DUMP)
    wait_for(lambda: any(name.endswith(".partial") for name in stored_files(manage.backup_dir)))
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode != 0
    name, _database, status, message = manage.records()[0]
    assert status == "failed" and "Stopped" in message
    assert stored_files(manage.backup_dir) == []
    # The lock was released: the next backup runs.
    assert manage.run("backup_now", "--database", "fake").returncode == 0
