"""Names, queueing, deletion, selectors and the scheduled task."""
from __future__ import annotations

import pytest

from backups_app import selectors
from backups_app.exceptions import BackupError, BackupNotFound
from backups_app.models import AuditEntry, BackupRecord, Trigger
from backups_app.services import naming, orphans, reading
from backups_app.services.backup import backup_create, backup_queue
from backups_app.services.restore import backup_restore
from backups_app.services.delete import backup_delete
from backups_app.signals import backup_finished
from backups_app.tasks import backup_database

pytestmark = pytest.mark.django_db(transaction=True)


def test_two_backups_in_the_same_second_get_distinct_names(sqlite_alias, backup_dir):
    from backups_app.engines import get_engine

    engine = get_engine("app")
    for _attempt in range(5):
        first = naming.reserve_record(database="app", engine=engine, compression="gzip", trigger="cli")
        second = naming.reserve_record(database="app", engine=engine, compression="gzip", trigger="cli")
        if first.name[:-len(".sql.gz")] == second.name[:-len("_2.sql.gz")]:
            break
        BackupRecord.objects.all().delete()  # crossed a second boundary; try again
    assert second.name == first.name.replace(".sql.gz", "_2.sql.gz")
    # A file already in storage (its record lost) keeps its name too.
    taken = first.name.replace(".sql.gz", "_3.sql.gz")
    backup_dir.mkdir(exist_ok=True)
    (backup_dir / taken).write_bytes(b"x")
    third = naming.reserve_record(database="app", engine=engine, compression="gzip", trigger="cli")
    assert third.name not in (first.name, second.name, taken)
    assert (backup_dir / taken).read_bytes() == b"x"


def test_names_follow_the_pattern(sqlite_alias, backup_dir):
    import re

    record = backup_create(database="app", trigger=Trigger.CLI, compression="none")
    assert re.fullmatch(r"backup_app_\d{8}_\d{6}(_\d+)?\.sql", record.name)


def test_backup_queue_runs_inline_without_a_broker(sqlite_alias, backup_dir, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        record = backup_queue(database="app", trigger=Trigger.API)
        assert record.status == "queued"
    record.refresh_from_db()
    assert record.status == "success" and (backup_dir / record.name).is_file()
    assert AuditEntry.objects.filter(action="create", source="api", outcome="success").exists()


def test_backup_finished_signal_is_sent_with_the_final_record(sqlite_alias, backup_dir):
    seen = []

    def receiver(sender, record, **kwargs):
        seen.append((record.name, record.status))

    backup_finished.connect(receiver)
    try:
        record = backup_create(database="app", trigger=Trigger.CLI)
    finally:
        backup_finished.disconnect(receiver)
    assert seen == [(record.name, "success")]


def test_scheduled_task_is_a_no_op_when_disabled(sqlite_alias, backup_dir, settings):
    settings.BACKUP_ENABLED = False
    assert backup_database("app") is None and not BackupRecord.objects.exists()
    settings.BACKUP_ENABLED = True
    name = backup_database("app")
    assert BackupRecord.objects.get(name=name).trigger == Trigger.SCHEDULE


def test_backup_delete_removes_file_manifest_and_record_but_keeps_restore_history(sqlite_alias, backup_dir):
    record = backup_create(database="app", trigger=Trigger.CLI)
    restore = backup_restore(backup=record, trigger=Trigger.CLI, safety_backup=False)
    backup_delete(backup=record, source="admin")
    assert not (backup_dir / record.name).exists() and not (backup_dir / (record.name + ".json")).exists()
    assert not BackupRecord.objects.filter(pk=record.pk).exists()
    restore.refresh_from_db()
    assert restore.backup is None and restore.backup_name == record.name
    assert AuditEntry.objects.filter(action="delete", outcome="success", target=record.name).exists()


def test_a_running_backup_cannot_be_deleted(sqlite_alias, backup_dir):
    record = backup_create(database="app", trigger=Trigger.CLI)
    BackupRecord.objects.filter(pk=record.pk).update(status="running")
    record.refresh_from_db()
    with pytest.raises(BackupError, match="still running"):
        backup_delete(backup=record, source="cli")
    assert (backup_dir / record.name).exists()


def test_selectors(sqlite_alias, fake_alias, backup_dir, settings):
    fake_alias()
    old = backup_create(database="app", trigger=Trigger.CLI)
    new = backup_create(database="app", trigger=Trigger.CLI)
    BackupRecord.objects.filter(pk=new.pk).update(status="failed")
    assert selectors.last_good_backup(database="app") == old
    assert selectors.backup_get(name=old.name) == old
    with pytest.raises(BackupNotFound):
        selectors.backup_get(name="../" + old.name)
    assert list(selectors.backup_list(database="app", status="success")) == [old]
    assert selectors.backup_databases()[0] == "default"
    assert set(selectors.last_good_backups()) == set(settings.DATABASES)


def test_good_backups_are_the_successful_ones_whatever_their_verification():
    """One meaning of "good": the queryset method and the record's property agree; retention adds
    its own condition (verification not failed) on top, explicitly."""
    from django.utils import timezone

    for number, (status, verification) in enumerate([
        (status, verification)
        for status in BackupRecord.Status.values for verification in BackupRecord.VerificationStatus.values
    ]):
        BackupRecord.objects.create(
            name=f"backup_{number}.sql.gz", database="app", engine="sqlite", compression="gzip",
            trigger=Trigger.CLI, status=status, verification_status=verification, created_at=timezone.now(),
        )
    good = BackupRecord.objects.good()
    assert {record.status for record in good} == {BackupRecord.Status.SUCCESS}
    assert good.count() == len(BackupRecord.VerificationStatus.values)
    assert {record.pk for record in BackupRecord.objects.all() if record.is_good} == set(good.values_list("pk", flat=True))


def test_backup_open_streams_the_stored_file(sqlite_alias, backup_dir):
    record = backup_create(database="app", trigger=Trigger.CLI)
    with reading.backup_open(backup=record) as handle:
        assert handle.read() == (backup_dir / record.name).read_bytes()
    (backup_dir / record.name).unlink()
    with pytest.raises(BackupNotFound):
        reading.backup_open(backup=record)


def test_a_queued_backup_of_a_removed_alias_fails_instead_of_staying_queued(sqlite_alias, backup_dir):
    from backups_app.exceptions import DumpFailed

    from django.utils import timezone

    record = BackupRecord.objects.create(
        name="backup_gone_20250101_000000.sql.gz", database="gone", engine="sqlite", compression="gzip",
        trigger=Trigger.ADMIN, status=BackupRecord.Status.QUEUED, created_at=timezone.now(),
    )
    with pytest.raises(DumpFailed, match="Unknown database alias 'gone'"):
        backup_create(record=record, trigger=record.trigger)
    record.refresh_from_db()
    assert record.status == "failed"


def test_a_queued_backup_whose_task_never_ran_is_interrupted_after_the_horizon(settings, backup_dir):
    from datetime import timedelta

    from django.utils import timezone

    settings.BACKUP_DUMP_TIMEOUT = 60
    fresh = BackupRecord.objects.create(name="backup_a.sql.gz", database="app", engine="sqlite", compression="gzip",
                                        trigger=Trigger.API, status="queued", created_at=timezone.now())
    lost = BackupRecord.objects.create(name="backup_b.sql.gz", database="app", engine="sqlite", compression="gzip",
                                       trigger=Trigger.API, status="queued",
                                       created_at=timezone.now() - timedelta(seconds=60 + 3600 + 5))
    assert orphans.backups_mark_interrupted() == 1
    fresh.refresh_from_db()
    lost.refresh_from_db()
    assert fresh.status == "queued" and lost.status == "interrupted"


def test_progress_is_written_to_the_record_while_the_backup_runs(fake_alias, backup_dir):
    fake_alias(
        "import sys, time\nfor i in range(4):\n"
        "    sys.stdout.buffer.write(b'x' * (1 << 20)); sys.stdout.flush(); time.sleep(0.7)\n"
        "sys.stdout.buffer.write(b'\\n-- Dump completed\\n')\n"
    )
    seen = []

    def watch(raw_bytes, written_bytes):
        seen.append(BackupRecord.objects.values_list("status", "progress_bytes").get())

    record = backup_create(database="fake", trigger=Trigger.CLI, compression="none", progress=watch)
    running = [progress for status, progress in seen if status == "running"]
    assert any(0 < progress < record.size_bytes for progress in running), seen
