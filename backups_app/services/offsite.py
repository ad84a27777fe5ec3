"""Offsite copies: every good backup is also uploaded to S3 (or an S3-compatible store).

The offsite copy has its own status on the record (`offsite_status`), apart from the backup's: a
failed upload never fails the backup nor touches the local copy. After an upload the object is
read back and its size and SHA-256 compared with the record, so a copy marked `uploaded` is known
to be whole. A failed multipart upload is aborted (its parts would otherwise be billed forever)
and retried later with exponential backoff by `offsite_retry`, run by the cleanup task.

The storage is Django's `storages["backups_offsite"]` (django-storages' S3Storage, private ACL),
configured by backups_app.conf when BACKUP_OFFSITE_BUCKET is set; backups_app.storage gives it out and
reads it.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.core.files import File
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _

from backups_app.conf import app_settings
from backups_app.exceptions import BackupError
from backups_app.jobs import job_delay
from backups_app.manifest import manifest_name
from backups_app.models import BackupRecord, Trigger
from backups_app.pipeline import open_stored
from backups_app.storage import (
    backup_storage,
    offsite_enabled,
    offsite_object_key,
    offsite_object_open,
    offsite_storage,
    sha256_and_size,
)

logger = logging.getLogger(__name__)


class OffsiteUploadFailed(BackupError):
    """The offsite copy could not be written or did not read back identical."""


def _abort_multipart_uploads(storage, name: str) -> int:
    """Abort unfinished multipart uploads of `name`: their parts cost money and are never used.

    boto3 aborts a multipart upload that fails while the server answers; this catches the ones it
    could not (the connection died mid-way), on the next attempt.
    """
    key = offsite_object_key(storage, name)
    aborted = 0
    for upload in storage.bucket.multipart_uploads.filter(Prefix=key):
        if upload.object_key == key:
            upload.abort()
            aborted += 1
    return aborted


def _upload_and_check(*, backup: BackupRecord, storage) -> str:
    local = backup_storage()
    name = backup.storage_name
    if not name or not local.exists(name):
        raise OffsiteUploadFailed(_("the local file of %(name)s is gone") % {"name": backup.name})
    with open_stored(local, name) as stream:
        saved_name = storage.save(name, File(stream, name=name))
    with offsite_object_open(storage, saved_name) as stream:
        remote_sha256, remote_size = sha256_and_size(stream)
    # Compared with what the backup service recorded when it wrote the file, so a local copy
    # that rotted since is not passed off as a good offsite copy either.
    expected_sha256, expected_size = backup.sha256, backup.size_bytes
    if not expected_sha256 or expected_size is None:
        with open_stored(local, name) as stream:
            expected_sha256, expected_size = sha256_and_size(stream)
    if remote_size != expected_size or remote_sha256 != expected_sha256:
        storage.delete(saved_name)
        raise OffsiteUploadFailed(
            _("the offsite copy reads back %(size)d bytes with SHA-256 %(sha)s, expected "
              "%(expected_size)d bytes with %(expected_sha)s") % {
                "size": remote_size, "sha": remote_sha256,
                "expected_size": expected_size, "expected_sha": expected_sha256,
            }
        )
    # The manifest lets `backups_sync` rebuild records from the bucket alone.
    manifest = manifest_name(backup.name)
    if local.exists(manifest):
        with open_stored(local, manifest) as stream:
            storage.save(manifest, File(stream, name=manifest))
    return saved_name


def offsite_upload(*, backup: BackupRecord) -> BackupRecord:
    """Upload a good backup to the offsite storage, verify it, and record the outcome on it.

    Never raises for an upload failure: the record says `failed` with the reason, the local copy
    stays, and `offsite_retry` tries again later. Raises `BackupError` only for a backup that
    cannot have an offsite copy (not successful).
    """
    if not offsite_enabled():
        return backup
    if not backup.is_good:
        raise BackupError(_("Only successful backups are copied offsite."))
    # Claim the attempt: of two workers picking the same backup (the queued upload and a retry
    # pass), only the one whose view of the attempt count is current uploads; the other's
    # multipart abort would otherwise kill the first one's upload.
    claimed = (
        BackupRecord.objects.filter(pk=backup.pk, offsite_attempts=backup.offsite_attempts)
        .exclude(offsite_status=BackupRecord.OffsiteStatus.UPLOADED)
        .update(offsite_attempts=F("offsite_attempts") + 1, offsite_status=BackupRecord.OffsiteStatus.PENDING)
    )
    if not claimed:
        backup.refresh_from_db()
        return backup
    backup.offsite_attempts += 1
    storage = offsite_storage()
    try:
        _abort_multipart_uploads(storage, backup.storage_name)
        backup.offsite_name = _upload_and_check(backup=backup, storage=storage)
    except Exception as error:  # noqa: BLE001 - any failure leaves the backup as it is, retried
        try:
            _abort_multipart_uploads(storage, backup.storage_name)
        except Exception:  # noqa: BLE001 - the server is gone; the next attempt aborts it
            logger.warning("could not abort the multipart upload of %s yet", backup.name)
        backup.offsite_status = BackupRecord.OffsiteStatus.FAILED
        backup.offsite_error = f"{type(error).__name__}: {error}"[:2000]
        logger.warning(
            "offsite upload of %s failed (attempt %d): %s",
            backup.name, backup.offsite_attempts, backup.offsite_error,
        )
    else:
        backup.offsite_status = BackupRecord.OffsiteStatus.UPLOADED
        backup.offsite_uploaded_at = timezone.now()
        backup.offsite_error = ""
        logger.info("offsite copy of %s uploaded and verified", backup.name)
    backup.save(update_fields=[
        "offsite_attempts", "offsite_name", "offsite_status", "offsite_uploaded_at", "offsite_error",
    ])
    return backup


def offsite_next_attempt_at(*, backup: BackupRecord) -> datetime:
    """When the next upload attempt is due: exponential backoff from the backup's end.

    Attempt k+1 waits BACKUP_OFFSITE_RETRY_SECONDS * (2**k - 1) after the backup finished, so
    the schedule needs no extra column and survives restarts.
    """
    start = backup.finished_at or backup.created_at
    delay = app_settings.BACKUP_OFFSITE_RETRY_SECONDS * (2 ** backup.offsite_attempts - 1)
    return start + timedelta(seconds=delay)


def offsite_retry(*, database: str | None = None, now: datetime | None = None) -> list[BackupRecord]:
    """Upload again the good backups whose offsite copy is pending or failed and due for a retry."""
    if not offsite_enabled():
        return []
    now = now or timezone.now()
    candidates = BackupRecord.objects.good().filter(
        offsite_status__in=[BackupRecord.OffsiteStatus.PENDING, BackupRecord.OffsiteStatus.FAILED],
        offsite_attempts__lt=app_settings.BACKUP_OFFSITE_MAX_ATTEMPTS,
    ).exclude(storage_name="")
    if database:
        candidates = candidates.filter(database=database)
    retried = []
    for backup in candidates.order_by("created_at"):
        if _retry_due(backup, now):
            retried.append(offsite_upload(backup=backup))
    return retried


def _retry_due(backup: BackupRecord, now: datetime) -> bool:
    due = offsite_next_attempt_at(backup=backup)
    if backup.offsite_status == BackupRecord.OffsiteStatus.PENDING:
        if backup.offsite_attempts == 0:
            # Queued but not started: give the queued task its chance first.
            due = (backup.finished_at or backup.created_at) + timedelta(
                seconds=app_settings.BACKUP_OFFSITE_RETRY_SECONDS
            )
        else:
            # An attempt is under way (or its worker died): only take over when it is stuck.
            due += timedelta(seconds=app_settings.BACKUP_DUMP_TIMEOUT)
    return due <= now


def offsite_delete(*, backup: BackupRecord) -> None:
    """Delete the offsite copy of a backup and its manifest (a missing object is not an error)."""
    if not offsite_enabled() or not backup.offsite_name:
        return
    storage = offsite_storage()
    for name in (backup.offsite_name, manifest_name(backup.offsite_name)):
        storage.delete(name)


def _queue(task_name: str, *args, **kwargs) -> None:
    try:
        job_delay(task_name, *args, **kwargs)
    except Exception:  # noqa: BLE001 - a broker outage must not fail the backup; retried later
        logger.exception("could not queue %s; the next cleanup pass retries it", task_name)


def after_backup(sender, record: BackupRecord, **kwargs) -> None:
    """Queue the offsite upload of a good backup, and cleanup after a scheduled one.

    A receiver of backup_finished (connected by BackupsConfig.ready()) rather than a call in the
    backup task, so that backups made from the admin, the API or the command line are copied
    offsite too.
    """
    if record.is_good and offsite_enabled():
        BackupRecord.objects.filter(pk=record.pk).update(
            offsite_status=BackupRecord.OffsiteStatus.PENDING
        )
        record.offsite_status = BackupRecord.OffsiteStatus.PENDING
        transaction.on_commit(lambda: _queue("backups_app.tasks.offsite_upload_run", record.pk))
    if record.trigger == Trigger.SCHEDULE and record.kind == BackupRecord.Kind.REGULAR:
        transaction.on_commit(lambda: _queue("backups_app.tasks.cleanup_backups", database=record.database))
