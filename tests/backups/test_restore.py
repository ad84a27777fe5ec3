"""Restore: the stored file is checked completely before the database is touched."""
from __future__ import annotations

import hashlib
import sqlite3

import pytest

from backups_app.exceptions import BackupLocked, ChecksumMismatch, RestoreFailed, RestoreRefused
from backups_app.locks import database_lock
from backups_app.models import AuditEntry, BackupRecord, RestoreRecord, Trigger
from backups_app.services.backup import backup_create
from backups_app.services.sync import backups_sync
from backups_app.services.restore import backup_restore, restore_queue

from .conftest import snapshot
from .fakes import restored_bytes

pytestmark = pytest.mark.django_db(transaction=True)


def change(path) -> list[str]:
    connection = sqlite3.connect(path)
    connection.executescript("CREATE TABLE newer (x); DELETE FROM author WHERE id = 2;")
    connection.close()
    return snapshot(path)


def assert_refused_and_nothing_changed(path, changed_state, count_before):
    assert snapshot(path) == changed_state
    assert BackupRecord.objects.count() == count_before  # no safety backup either
    restore = RestoreRecord.objects.get()
    assert restore.status == RestoreRecord.Status.REFUSED
    assert AuditEntry.objects.filter(action="restore", outcome="refused").exists()


def test_flipped_byte_is_refused_before_the_database_is_touched(sqlite_alias, backup_dir):
    record = backup_create(database="app", trigger=Trigger.CLI)
    changed = change(sqlite_alias)
    path = backup_dir / record.name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch):
        backup_restore(backup=record, trigger=Trigger.CLI)
    assert_refused_and_nothing_changed(sqlite_alias, changed, 1)


def test_truncated_file_is_refused_even_when_its_checksum_was_recorded(sqlite_alias, backup_dir):
    record = backup_create(database="app", trigger=Trigger.CLI, compression="gzip")
    changed = change(sqlite_alias)
    path = backup_dir / record.name
    truncated = path.read_bytes()[:-40]
    path.write_bytes(truncated)
    with pytest.raises(ChecksumMismatch):
        backup_restore(backup=record, trigger=Trigger.CLI)
    # Even if the record matched the truncated bytes, the gzip stream's end is missing.
    record.sha256 = hashlib.sha256(truncated).hexdigest()
    record.size_bytes = len(truncated)
    record.save()
    RestoreRecord.objects.all().delete()
    with pytest.raises(RestoreRefused, match="truncated|damaged|ended"):
        backup_restore(backup=record, trigger=Trigger.CLI)
    assert_refused_and_nothing_changed(sqlite_alias, changed, 1)


def test_uncompressed_dump_without_its_marker_is_refused(sqlite_alias, backup_dir):
    record = backup_create(database="app", trigger=Trigger.CLI, compression="none")
    changed = change(sqlite_alias)
    path = backup_dir / record.name
    content = path.read_bytes().replace(b"-- opsdesk SQLite dump completed\n", b"")
    path.write_bytes(content)
    record.sha256, record.size_bytes, record.raw_size_bytes = hashlib.sha256(content).hexdigest(), len(content), len(content)
    record.save()
    with pytest.raises(RestoreRefused, match="completion marker"):
        backup_restore(backup=record, trigger=Trigger.CLI)
    assert_refused_and_nothing_changed(sqlite_alias, changed, 1)


@pytest.mark.parametrize("status", ["failed", "interrupted", "running"])
def test_only_successful_backups_can_be_restored(sqlite_alias, backup_dir, status):
    record = backup_create(database="app", trigger=Trigger.CLI)
    BackupRecord.objects.filter(pk=record.pk).update(status=status)
    record.refresh_from_db()
    changed = change(sqlite_alias)
    with pytest.raises(RestoreRefused):
        backup_restore(backup=record, trigger=Trigger.CLI)
    assert_refused_and_nothing_changed(sqlite_alias, changed, 1)


def test_restore_takes_a_safety_backup_first_and_it_restores_the_state_before(sqlite_alias, backup_dir):
    original = snapshot(sqlite_alias)
    record = backup_create(database="app", trigger=Trigger.CLI)
    changed = change(sqlite_alias)
    restore = backup_restore(backup=record, trigger=Trigger.ADMIN)
    assert snapshot(sqlite_alias) == original
    safety = restore.safety_backup
    assert safety.kind == BackupRecord.Kind.SAFETY and safety.status == "success"
    assert safety.trigger == Trigger.ADMIN
    backup_restore(backup=safety, trigger=Trigger.CLI, safety_backup=False)
    assert snapshot(sqlite_alias) == changed
    assert AuditEntry.objects.filter(action="restore", outcome="success", source="admin").exists()


def test_failed_restore_names_the_safety_backup_to_restore(fake_alias, backup_dir):
    fake_alias()
    record = backup_create(database="fake", trigger=Trigger.CLI)
    fake_alias(FAKE_RESTORE_FAIL=True)
    with pytest.raises(RestoreFailed) as caught:
        backup_restore(backup=record, trigger=Trigger.CLI)
    restore = RestoreRecord.objects.get()
    assert restore.status == RestoreRecord.Status.FAILED
    assert restore.safety_backup.name in str(caught.value)
    assert restore.safety_backup.name in restore.error_message
    assert "ERROR at line 1" in restore.error_message


def test_restore_streams_the_plain_dump_into_the_engine(fake_alias, backup_dir):
    settings_dict = fake_alias()
    record = backup_create(database="fake", trigger=Trigger.CLI, compression="zstd")
    backup_restore(backup=record, trigger=Trigger.CLI, safety_backup=False)
    assert restored_bytes(settings_dict).endswith(b"-- Dump completed\n")
    assert len(restored_bytes(settings_dict)) == record.raw_size_bytes


def test_restore_while_a_backup_runs_is_refused(sqlite_alias, backup_dir):
    record = backup_create(database="app", trigger=Trigger.CLI)
    changed = change(sqlite_alias)
    with database_lock("app", "backup"):
        with pytest.raises(BackupLocked, match="Another backup of database 'app' is running"):
            backup_restore(backup=record, trigger=Trigger.CLI)
    assert_refused_and_nothing_changed(sqlite_alias, changed, 1)


def test_a_backup_of_another_engine_is_refused(sqlite_alias, fake_alias, backup_dir, settings):
    fake_alias()
    settings.BACKUP_RESTORE_TARGETS = ["fake:app"]  # allowed, so that the engine is what refuses it
    record = backup_create(database="fake", trigger=Trigger.CLI)
    changed = change(sqlite_alias)
    with pytest.raises(RestoreRefused, match="fake dump"):
        backup_restore(backup=record, database="app", trigger=Trigger.CLI)
    assert_refused_and_nothing_changed(sqlite_alias, changed, 1)


def test_restore_queue_runs_inline_without_a_broker(sqlite_alias, backup_dir, django_capture_on_commit_callbacks):
    original = snapshot(sqlite_alias)
    record = backup_create(database="app", trigger=Trigger.CLI)
    change(sqlite_alias)
    with django_capture_on_commit_callbacks(execute=True):
        restore = restore_queue(backup=record, trigger=Trigger.API, safety_backup=False)
    restore.refresh_from_db()
    assert restore.status == "success" and restore.safety_backup is None
    assert snapshot(sqlite_alias) == original


def test_records_rebuilt_from_manifests_after_the_ops_database_is_emptied(sqlite_alias, backup_dir):
    first = backup_create(database="app", trigger=Trigger.CLI, compression="zstd")
    second = backup_create(database="app", trigger=Trigger.SCHEDULE)
    expected = {r.name: (r.sha256, r.size_bytes, r.raw_size_bytes, r.table_row_counts, r.kind, r.created_at)
                for r in (first, second)}
    # A manifest whose file never got its final name (kill -9 between the two) is ignored.
    (backup_dir / "backup_app_20000101_000000.sql.gz.json").write_text(
        (backup_dir / (first.name + ".json")).read_text().replace(first.name, "backup_app_20000101_000000.sql.gz")
    )
    (backup_dir / "unrelated.json").write_text("{}")
    BackupRecord.objects.all().delete()

    counts = backups_sync()
    assert counts == {"created": 2, "updated": 0, "skipped": 2, "untrusted": 0}
    rebuilt = {r.name: (r.sha256, r.size_bytes, r.raw_size_bytes, r.table_row_counts, r.kind, r.created_at)
               for r in BackupRecord.objects.all()}
    assert rebuilt == expected
    assert backups_sync() == {"created": 0, "updated": 0, "skipped": 2, "untrusted": 0}
    original = snapshot(sqlite_alias)
    change(sqlite_alias)
    backup_restore(backup=BackupRecord.objects.get(name=second.name), trigger=Trigger.CLI, safety_backup=False)
    assert snapshot(sqlite_alias) == original


def test_decompressing_reader_thread_ends_when_its_file_is_closed_early(sqlite_alias, backup_dir):
    import threading
    import time

    from backups_app.pipeline import DecompressingReader
    from backups_app.services.reading import backup_open

    record = backup_create(database="app", trigger=Trigger.CLI, compression="none")
    (backup_dir / record.name).write_bytes(b"x" * (8 << 20))  # many pieces: the queue fills up
    with backup_open(backup=record) as stored:
        reader = DecompressingReader(stored, compression="none")
        reader.read(10)  # a restore that fails after the first bytes, never closing the reader
    deadline = time.monotonic() + 5
    while reader._thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not reader._thread.is_alive()
    assert "restore-decompress" not in [t.name for t in threading.enumerate()]
