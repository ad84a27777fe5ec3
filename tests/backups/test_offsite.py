"""Offsite copies against moto's S3 server over real HTTP.

docs/FAULTS.md: offsite-upload-fails, empty-listing, private-downloads.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from django.core.files.storage import storages
from django.core.management import call_command
from django.utils.timezone import now as django_now

from backups_app.exceptions import RestoreRefused
from backups_app.models import BackupRecord, RetentionPolicy
from backups_app.services.backup import backup_create
from backups_app.services.restore import backup_restore
from backups_app.services.offsite import offsite_retry, offsite_upload
from backups_app.services.reading import backup_open
from backups_app.services.retention import retention_apply
from backups_app.signals import backup_finished
from backups_app.storage import offsite_open

from .conftest import snapshot
from .moto_server import MotoServer, offsite_settings
from .retention_helpers import make_backup

pytestmark = [pytest.mark.django_db, pytest.mark.services]

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
PREFIX = "backups"


@pytest.fixture(scope="module")
def moto():
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def bucket(settings, moto):
    return offsite_settings(settings, moto, prefix=PREFIX)


def remote_bytes(server: MotoServer, bucket: str, name: str) -> bytes:
    return server.client().get_object(Bucket=bucket, Key=f"{PREFIX}/{name}")["Body"].read()


def test_good_backup_is_uploaded_and_read_back(moto, bucket):
    backup = make_backup(created_at=NOW, payload=b"x" * 1000 + b"\n-- Dump completed\n")

    offsite_upload(backup=backup)

    backup.refresh_from_db()
    assert backup.offsite_status == BackupRecord.OffsiteStatus.UPLOADED
    assert backup.offsite_attempts == 1 and backup.offsite_uploaded_at is not None
    assert hashlib.sha256(remote_bytes(moto, bucket, backup.offsite_name)).hexdigest() == backup.sha256
    # The manifest goes too, so that records can be rebuilt from the bucket alone.
    assert remote_bytes(moto, bucket, backup.offsite_name + ".json")
    # Never public: the object's ACL grants nothing to AllUsers.
    grants = moto.client().get_object_acl(Bucket=bucket, Key=f"{PREFIX}/{backup.offsite_name}")["Grants"]
    assert not [grant for grant in grants if "AllUsers" in str(grant.get("Grantee"))]


def test_upload_killed_mid_way_keeps_the_local_copy_and_is_retried(settings, tmp_path):
    server = MotoServer().start()
    try:
        bucket = offsite_settings(settings, server, prefix=PREFIX)
        payload = os.urandom(11 * 1024 * 1024)  # three 5 MiB parts: a real multipart upload
        backup = make_backup(created_at=NOW, payload=payload, finished_at=NOW)
        local_before = open(storages["backups"].path(backup.storage_name), "rb").read()

        parts_sent = []

        def kill_after_first_part(**kwargs):
            parts_sent.append(kwargs.get("http_response"))
            server.stop()  # the store dies while the upload is under way

        client = storages["backups_offsite"].connection.meta.client
        client.meta.events.register("after-call.s3.UploadPart", kill_after_first_part)
        try:
            offsite_upload(backup=backup)
        finally:
            client.meta.events.unregister("after-call.s3.UploadPart", kill_after_first_part)

        backup.refresh_from_db()
        assert len(parts_sent) == 1
        assert backup.status == BackupRecord.Status.SUCCESS  # the backup itself is untouched
        assert backup.offsite_status == BackupRecord.OffsiteStatus.FAILED
        assert backup.offsite_attempts == 1 and backup.offsite_error
        assert open(storages["backups"].path(backup.storage_name), "rb").read() == local_before

        # Not due yet: exponential backoff from the backup's end.
        settings.BACKUP_OFFSITE_RETRY_SECONDS = 600
        assert offsite_retry(now=NOW + timedelta(seconds=599)) == []

        # The store comes back (empty: moto keeps its state in memory) and the retry succeeds.
        server = MotoServer(port=server.port).start()
        server.client().create_bucket(Bucket=bucket)
        retried = offsite_retry(now=NOW + timedelta(seconds=600))

        assert [record.pk for record in retried] == [backup.pk]
        backup.refresh_from_db()
        assert backup.offsite_status == BackupRecord.OffsiteStatus.UPLOADED
        assert backup.offsite_attempts == 2 and backup.offsite_error == ""
        assert remote_bytes(server, bucket, backup.offsite_name) == local_before
        assert server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    finally:
        server.stop()


def test_a_stale_multipart_upload_is_aborted_before_the_retry(moto, bucket):
    backup = make_backup(created_at=NOW)
    client = moto.client()
    key = f"{PREFIX}/{backup.storage_name}"
    # What a connection dropped mid-upload leaves behind: parts nobody will complete.
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)
    client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 1024)
    assert len(client.list_multipart_uploads(Bucket=bucket)["Uploads"]) == 1

    offsite_upload(backup=backup)

    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert BackupRecord.objects.get(pk=backup.pk).offsite_status == BackupRecord.OffsiteStatus.UPLOADED


def test_a_local_file_that_no_longer_matches_its_checksum_is_not_marked_uploaded(moto, bucket):
    backup = make_backup(created_at=NOW)
    path = storages["backups"].path(backup.storage_name)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF  # one flipped byte on the local disk
    open(path, "wb").write(bytes(data))

    offsite_upload(backup=backup)

    backup.refresh_from_db()
    assert backup.offsite_status == BackupRecord.OffsiteStatus.FAILED
    assert "SHA-256" in backup.offsite_error
    assert "Contents" not in moto.client().list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/{backup.storage_name}")


def test_backup_finished_queues_the_upload(moto, bucket, django_capture_on_commit_callbacks):
    backup = make_backup(created_at=NOW, trigger="admin")

    with django_capture_on_commit_callbacks(execute=True):
        backup_finished.send(sender=BackupRecord, record=backup)

    backup.refresh_from_db()
    assert backup.offsite_status == BackupRecord.OffsiteStatus.UPLOADED


def test_failed_backup_is_not_uploaded(moto, bucket, django_capture_on_commit_callbacks):
    backup = make_backup(created_at=NOW, status=BackupRecord.Status.FAILED, trigger="admin")

    with django_capture_on_commit_callbacks(execute=True):
        backup_finished.send(sender=BackupRecord, record=backup)

    backup.refresh_from_db()
    assert backup.offsite_status == BackupRecord.OffsiteStatus.NOT_CONFIGURED


def test_the_offsite_copy_is_read_when_the_local_one_is_gone(moto, bucket):
    backup = make_backup(created_at=NOW)
    local_bytes = open(storages["backups"].path(backup.storage_name), "rb").read()
    offsite_upload(backup=backup)
    storages["backups"].delete(backup.storage_name)
    backup.refresh_from_db()

    with offsite_open(backup=backup) as stream:
        assert stream.read() == local_bytes


def test_retention_deletes_offsite_copies_too(moto, bucket):
    RetentionPolicy.objects.create(database="default", keep_days=1, keep_last=1)
    keep = make_backup(created_at=NOW)
    old = make_backup(created_at=NOW - timedelta(days=60))
    for backup in (keep, old):
        offsite_upload(backup=backup)

    result = retention_apply(now=NOW)

    assert result.ok and result.deleted == [old.name]
    keys = {item["Key"] for item in moto.client().list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {f"{PREFIX}/{keep.storage_name}", f"{PREFIX}/{keep.storage_name}.json"}


def test_retention_deletes_nothing_when_the_bucket_cannot_be_listed(settings, moto, bucket):
    RetentionPolicy.objects.create(database="default", keep_days=1, keep_last=1)
    make_backup(created_at=NOW)
    old = make_backup(created_at=NOW - timedelta(days=60))
    for backup in BackupRecord.objects.all():
        offsite_upload(backup=backup)
    # The bucket was renamed or the credentials lost access: listing fails.
    storages_setting = {name: dict(config) for name, config in settings.STORAGES.items()}
    storages_setting["backups_offsite"]["OPTIONS"] = {
        **storages_setting["backups_offsite"]["OPTIONS"], "bucket_name": "opsdesk-test-no-such-bucket",
    }
    settings.STORAGES = storages_setting

    result = retention_apply(now=NOW)

    assert "offsite storage cannot be listed" in result.databases[0].refused
    assert BackupRecord.objects.filter(pk=old.pk).exists()
    assert storages["backups"].exists(old.storage_name)


def test_an_upload_claimed_by_another_worker_is_not_run_twice(moto, bucket):
    backup = make_backup(created_at=NOW)
    stale_view = BackupRecord.objects.get(pk=backup.pk)
    offsite_upload(backup=backup)  # the first worker

    result = offsite_upload(backup=stale_view)  # a second worker with the old attempt count

    assert result.offsite_status == BackupRecord.OffsiteStatus.UPLOADED
    assert BackupRecord.objects.get(pk=backup.pk).offsite_attempts == 1


def test_retry_pass_leaves_a_queued_upload_to_its_task_at_first(settings, moto, bucket):
    settings.BACKUP_OFFSITE_RETRY_SECONDS = 600
    backup = make_backup(created_at=NOW, finished_at=NOW, offsite_status=BackupRecord.OffsiteStatus.PENDING)

    assert offsite_retry(now=NOW + timedelta(seconds=60)) == []
    assert [record.pk for record in offsite_retry(now=NOW + timedelta(seconds=600))] == [backup.pk]
    assert BackupRecord.objects.get(pk=backup.pk).offsite_status == BackupRecord.OffsiteStatus.UPLOADED


def test_restore_and_download_from_s3_after_the_local_copy_is_lost(
    moto, bucket, sqlite_alias, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        backup = backup_create(database="app", trigger="cli")  # uploaded by the backup_finished receiver
    backup.refresh_from_db()
    assert backup.offsite_status == BackupRecord.OffsiteStatus.UPLOADED
    original = snapshot(sqlite_alias)
    local_path = storages["backups"].path(backup.storage_name)
    local_bytes = open(local_path, "rb").read()
    os.unlink(local_path)  # the disk is lost
    connection = sqlite3.connect(sqlite_alias)
    connection.execute("DELETE FROM book")
    connection.commit()
    connection.close()

    with backup_open(backup=backup) as stream:  # what the download view streams
        assert stream.read() == local_bytes
    restore = backup_restore(backup=backup, trigger="cli", safety_backup=False)

    assert restore.status == "success"
    assert snapshot(sqlite_alias) == original


def test_restore_refuses_when_neither_copy_exists(moto, bucket, sqlite_alias, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        backup = backup_create(database="app", trigger="cli")
    backup.refresh_from_db()
    os.unlink(storages["backups"].path(backup.storage_name))
    moto.client().delete_object(Bucket=bucket, Key=f"{PREFIX}/{backup.offsite_name}")
    before = snapshot(sqlite_alias)

    with pytest.raises(RestoreRefused, match="missing"):
        backup_restore(backup=backup, trigger="cli", safety_backup=False)
    assert snapshot(sqlite_alias) == before


def test_cleanup_command_retries_failed_uploads_for_cron_users(settings, moto, bucket, capsys):
    settings.BACKUP_OFFSITE_RETRY_SECONDS = 0
    backup = make_backup(
        created_at=django_now(), finished_at=django_now(), offsite_status=BackupRecord.OffsiteStatus.FAILED,
        offsite_attempts=1, trigger="cli",
    )

    call_command("cleanup_backups", "--json")

    output = json.loads(capsys.readouterr().out)
    assert output["offsite_retried"] == {backup.name: "uploaded"}
    assert BackupRecord.objects.get(pk=backup.pk).offsite_status == BackupRecord.OffsiteStatus.UPLOADED
