"""Retention: what cleanup keeps and deletes, and what it never touches.

docs/FAULTS.md: retention-after-failures, empty-listing, clock-jump, cleanup-bystanders.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from django.core.files.storage import storages
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone as django_timezone

from backups_app.models import AuditEntry, BackupRecord, RestoreRecord, RetentionPolicy
from backups_app.services.retention import retention_apply, retention_plan

from .retention_helpers import make_backup

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def names(records) -> set[str]:
    return {record.name for record in records}


def remaining() -> set[str]:
    return set(BackupRecord.objects.values_list("name", flat=True))


def stored(record: BackupRecord) -> bool:
    return storages["backups"].exists(record.storage_name)


def test_default_policy_keeps_young_backups_and_the_last_seven(settings):
    settings.BACKUP_RETENTION_DAYS = 10
    young = [make_backup(created_at=days_ago(day)) for day in range(10)]
    old = [make_backup(created_at=days_ago(day)) for day in range(20, 30)]

    result = retention_apply(now=NOW)

    assert result.ok
    assert remaining() == names(young)
    assert set(result.deleted) == names(old)
    assert not any(stored(record) for record in old)
    assert not any(storages["backups"].exists(f"{record.storage_name}.json") for record in old)
    assert all(stored(record) for record in young)


def test_all_backups_old_keeps_keep_last_newest(settings):
    RetentionPolicy.objects.create(database="default", keep_days=7, keep_last=3)
    backups = [make_backup(created_at=days_ago(100 + day)) for day in range(10)]

    retention_apply(now=NOW)

    assert remaining() == names(backups[:3])


def test_newest_good_backup_survives_a_policy_that_keeps_nothing():
    RetentionPolicy.objects.create(database="default", keep_days=0, keep_last=0)
    backups = [make_backup(created_at=days_ago(50 + day)) for day in range(5)]

    retention_apply(now=NOW)

    assert remaining() == {backups[0].name}
    assert stored(backups[0])


def test_failed_backups_never_count_as_kept_and_lose_their_files():
    RetentionPolicy.objects.create(database="default", keep_days=3, keep_last=2)
    good = [make_backup(created_at=days_ago(30 + day)) for day in range(4)]
    # A week of failures after the last good backups: they must not push those out.
    recent_failures = [
        make_backup(created_at=days_ago(day), status=BackupRecord.Status.FAILED) for day in range(2)
    ]
    old_failures = [
        make_backup(created_at=days_ago(day), status=BackupRecord.Status.INTERRUPTED) for day in range(4, 8)
    ]

    result = retention_apply(now=NOW)

    assert remaining() == names(good[:2]) | names(recent_failures)
    assert not names(old_failures) & remaining()  # past keep_days, their records go too
    # The recent failures keep their record (the failure stays visible) but not their files.
    for record in recent_failures:
        record.refresh_from_db()
        assert record.storage_name == ""
    assert set(result.databases[0].files_removed) == names(recent_failures)
    assert all(stored(record) for record in good[:2])


def test_a_backup_that_failed_verification_does_not_count_as_good():
    RetentionPolicy.objects.create(database="default", keep_days=1, keep_last=1)
    corrupt = make_backup(
        created_at=days_ago(2), verification_status=BackupRecord.VerificationStatus.FAILED
    )
    sound = make_backup(created_at=days_ago(5))

    retention_apply(now=NOW)

    assert remaining() == {sound.name}
    assert not stored(corrupt)


def test_clock_moved_forward_a_year_keeps_keep_last_and_the_newest():
    RetentionPolicy.objects.create(database="default", keep_days=30, keep_last=2)
    backups = [make_backup(created_at=days_ago(day)) for day in range(6)]

    retention_apply(now=NOW + timedelta(days=365))

    assert remaining() == names(backups[:2])


def test_backups_dated_in_the_future_count_as_young():
    """The clock was ahead when they were made, then corrected: they are the newest, keep them."""
    RetentionPolicy.objects.create(database="default", keep_days=7, keep_last=1)
    future = make_backup(created_at=NOW + timedelta(days=300))
    normal = make_backup(created_at=days_ago(1))
    old = make_backup(created_at=days_ago(40))

    retention_apply(now=NOW)

    assert remaining() == {future.name, normal.name}
    assert not stored(old)


def test_file_times_are_ignored(tmp_path):
    """A freshly copied (new mtime) old backup is still old; an old-mtime new backup is still new."""
    import os

    RetentionPolicy.objects.create(database="default", keep_days=7, keep_last=1)
    new = make_backup(created_at=days_ago(1))
    old = make_backup(created_at=days_ago(60))
    os.utime(storages["backups"].path(new.storage_name), (0, 0))

    retention_apply(now=NOW)

    assert remaining() == {new.name}
    assert not stored(old)


def test_running_and_queued_backups_are_untouched():
    RetentionPolicy.objects.create(database="default", keep_days=1, keep_last=1)
    make_backup(created_at=days_ago(0))
    running = make_backup(created_at=days_ago(90), status=BackupRecord.Status.RUNNING)
    queued = make_backup(created_at=days_ago(91), status=BackupRecord.Status.QUEUED, with_file=False)
    # The temporary file a running backup writes is named by no record.
    partial = _ensure(storages["backups"], ".backup_default_20260615_120000.sql.gz.partial")
    open(partial, "wb").write(b"partial")

    retention_apply(now=NOW)

    assert {running.name, queued.name} <= remaining()
    assert stored(running)
    assert open(partial, "rb").read() == b"partial"


def test_unrelated_files_in_the_folder_are_untouched():
    RetentionPolicy.objects.create(database="default", keep_days=1, keep_last=1)
    make_backup(created_at=days_ago(0))
    old = make_backup(created_at=days_ago(90))
    storage = storages["backups"]
    unrelated = ["default/someone-elses-dump.sql.gz", "notes.txt", "default/old-backup-2019.sql.gz.json"]
    for name in unrelated:
        with open(_ensure(storage, name), "wb") as handle:
            handle.write(b"not ours")

    retention_apply(now=NOW)

    assert not stored(old)
    assert all(storage.exists(name) for name in unrelated)


def _ensure(storage, name: str) -> str:
    import os

    path = storage.path(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def test_storage_that_cannot_be_listed_deletes_nothing(settings, tmp_path):
    RetentionPolicy.objects.create(database="default", keep_days=1, keep_last=1)
    backups = [make_backup(created_at=days_ago(day * 30)) for day in range(4)]
    # The volume is unmounted: the folder the records point into is gone.
    storages_setting = {name: dict(config) for name, config in settings.STORAGES.items()}
    storages_setting["backups"]["OPTIONS"] = {
        **storages_setting["backups"]["OPTIONS"], "location": tmp_path / "unmounted",
    }
    settings.STORAGES = storages_setting

    result = retention_apply(now=NOW)

    assert not result.ok
    assert "cannot be listed" in result.databases[0].refused
    assert result.deleted == []
    assert remaining() == names(backups)
    entry = AuditEntry.objects.get(action="cleanup")
    assert entry.outcome == AuditEntry.Outcome.REFUSED


def test_storage_that_lists_nothing_deletes_nothing(settings, tmp_path):
    RetentionPolicy.objects.create(database="default", keep_days=1, keep_last=1)
    backups = [make_backup(created_at=days_ago(day * 30)) for day in range(4)]
    empty = tmp_path / "empty-mount"
    (empty / "default").mkdir(parents=True)
    storages_setting = {name: dict(config) for name, config in settings.STORAGES.items()}
    storages_setting["backups"]["OPTIONS"] = {**storages_setting["backups"]["OPTIONS"], "location": empty}
    settings.STORAGES = storages_setting

    result = retention_apply(now=NOW)

    assert "lists none" in result.databases[0].refused
    assert remaining() == names(backups)


def test_grandfather_father_son_keeps_the_newest_of_each_bucket():
    RetentionPolicy.objects.create(
        database="default", keep_days=0, keep_last=1, keep_daily=3, keep_weekly=2, keep_monthly=3
    )
    # Two backups a day for 100 days, at 01:00 and 13:00 UTC.
    backups = []
    for day in range(100):
        for hour in (13, 1):
            backups.append(make_backup(created_at=datetime(2026, 6, 14, hour, tzinfo=timezone.utc) - timedelta(days=day)))
    plan = retention_plan(database="default", now=NOW)
    kept = {item.record.created_at: item.keep_reasons for item in plan.kept}

    at = lambda month, day, hour=13: datetime(2026, month, day, hour, tzinfo=timezone.utc)  # noqa: E731
    # daily: the newest of each of the last three days that have backups.
    assert [moment for moment, reasons in kept.items() if "daily" in reasons] == [at(6, 14), at(6, 13), at(6, 12)]
    # weekly: ISO weeks (Monday-Sunday): 2026-06-14 is a Sunday, the week before ends on 06-07.
    assert [moment for moment, reasons in kept.items() if "weekly" in reasons] == [at(6, 14), at(6, 7)]
    # monthly: the newest of June, May and April.
    assert [moment for moment, reasons in kept.items() if "monthly" in reasons] == [at(6, 14), at(5, 31), at(4, 30)]
    assert sorted(kept) == [at(4, 30), at(5, 31), at(6, 7), at(6, 12), at(6, 13), at(6, 14)]
    assert len(plan.to_delete) == 200 - 6


def test_dry_run_deletes_nothing_and_reports_what_it_would(capsys):
    RetentionPolicy.objects.create(database="default", keep_days=1, keep_last=1)
    keep = make_backup(created_at=days_ago(0))
    old = make_backup(created_at=days_ago(40))

    call_command("cleanup_backups", "--dry-run", "--json", "--database", "default")

    output = json.loads(capsys.readouterr().out)
    assert output["dry_run"] is True
    assert output["databases"][0]["deleted"] == [old.name]
    assert keep.name in output["databases"][0]["kept"]
    assert remaining() == {keep.name, old.name}
    assert stored(old)
    assert not AuditEntry.objects.filter(action="cleanup").exists()


def test_cleanup_is_audited_and_only_touches_the_given_database(capsys):
    RetentionPolicy.objects.create(database="default", keep_days=1, keep_last=1)
    RetentionPolicy.objects.create(database="chat", keep_days=1, keep_last=1)
    make_backup(created_at=days_ago(0))
    old = make_backup(created_at=days_ago(40))
    make_backup(created_at=days_ago(0), database="chat")
    other_old = make_backup(created_at=days_ago(40), database="chat")

    call_command("cleanup_backups", "--database", "default")

    assert old.name in capsys.readouterr().out
    assert other_old.name in remaining() and old.name not in remaining()
    entry = AuditEntry.objects.get(action="cleanup")
    assert entry.outcome == AuditEntry.Outcome.SUCCESS
    assert entry.target == "default"
    assert old.name in entry.detail


def test_command_fails_when_storage_cannot_be_trusted(settings, tmp_path):
    RetentionPolicy.objects.create(database="default", keep_days=1, keep_last=1)
    make_backup(created_at=days_ago(0))
    make_backup(created_at=days_ago(40))
    storages_setting = {name: dict(config) for name, config in settings.STORAGES.items()}
    storages_setting["backups"]["OPTIONS"] = {
        **storages_setting["backups"]["OPTIONS"], "location": tmp_path / "gone",
    }
    settings.STORAGES = storages_setting

    with pytest.raises(CommandError, match="cannot be listed"):
        call_command("cleanup_backups")
    assert BackupRecord.objects.count() == 2


def test_deleting_a_restored_backup_keeps_the_restore_history():
    RetentionPolicy.objects.create(database="default", keep_days=1, keep_last=1)
    make_backup(created_at=days_ago(0))
    restored = make_backup(created_at=days_ago(40))
    restore = RestoreRecord.objects.create(
        backup=restored, backup_name=restored.name, database="default", status="success", trigger="cli",
    )

    result = retention_apply(now=NOW)

    assert result.deleted == [restored.name]
    restore.refresh_from_db()
    assert restore.backup is None and restore.backup_name == restored.name


def test_cleanup_runs_after_each_scheduled_backup(django_capture_on_commit_callbacks):
    from backups_app.signals import backup_finished

    RetentionPolicy.objects.create(database="default", keep_days=1, keep_last=1)
    old = make_backup(created_at=django_timezone.now() - timedelta(days=40))
    manual = make_backup(created_at=django_timezone.now(), trigger="admin")
    with django_capture_on_commit_callbacks(execute=True):
        backup_finished.send(sender=BackupRecord, record=manual)
    assert old.name in remaining()  # a manual backup does not trigger cleanup

    scheduled = make_backup(created_at=django_timezone.now(), trigger="schedule")
    with django_capture_on_commit_callbacks(execute=True):
        backup_finished.send(sender=BackupRecord, record=scheduled)

    assert old.name not in remaining()
    entry = AuditEntry.objects.get(action="cleanup")
    assert entry.source == AuditEntry.Source.SCHEDULE
