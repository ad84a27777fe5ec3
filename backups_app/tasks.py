"""Celery tasks: thin callers of the backup services (ids in, one service call each).

Task names are `backups_app.tasks.<function>`. Without a broker (CELERY_TASK_ALWAYS_EAGER) they run
inline in the caller.
"""
from __future__ import annotations

import logging

from celery import shared_task

from backups_app.conf import app_settings
from backups_app.exceptions import BackupError
from backups_app.models import AuditEntry, BackupRecord, RestoreRecord, Trigger
from backups_app.services import offsite, retention, verify
from backups_app.services.backup import backup_create
from backups_app.services.pitr import pitr_restore, recovery_target_parse
from backups_app.services.queued import queued_claim
from backups_app.services.restore import backup_restore, restore_backup_gone, restore_queued_user_gone

logger = logging.getLogger(__name__)


@shared_task(name="backups_app.tasks.backup_run", ignore_result=True)
def backup_run(record_id: int) -> None:
    """Run the queued backup `record_id` (created by `backup_queue`)."""
    # One conditional UPDATE decides between this run and a cancel (services/queued.py).
    if not queued_claim(model=BackupRecord, pk=record_id):
        logger.warning("Backup record %s is not queued any more (cancelled?); nothing to run.", record_id)
        return
    record = BackupRecord.objects.get(pk=record_id)
    try:
        backup_create(record=record, trigger=record.trigger)
    except BackupError as error:
        # Already recorded and audited by the service; a retry would only repeat the failure.
        logger.error("Backup %s failed: %s", record.name, error)


@shared_task(name="backups_app.tasks.restore_run", ignore_result=True)
def restore_run(restore_id: int, safety_backup: bool = True, user_id: int | None = None) -> None:
    """Run the queued restore `restore_id` (created by `restore_queue`) for `user_id`, who queued it."""
    if not queued_claim(model=RestoreRecord, pk=restore_id):
        logger.warning("Restore %s is not queued any more (cancelled?); nothing to run.", restore_id)
        return
    restore = RestoreRecord.objects.select_related("backup", "user").get(pk=restore_id)
    if restore.backup is None:
        logger.warning("The backup of restore %s was deleted; nothing to run.", restore_id)
        restore_backup_gone(restore=restore)
        return
    if restore_queued_user_gone(restore=restore, user_id=user_id):
        return
    try:
        backup_restore(
            backup=restore.backup, database=restore.database, trigger=restore.trigger, user=restore.user,
            safety_backup=safety_backup, restore=restore,
            media_path=restore.media_path, delete_extraneous=restore.delete_extraneous,
        )
    except BackupError as error:
        logger.error("Restore of %s failed: %s", restore.backup_name, error)


@shared_task(name="backups_app.tasks.pitr_restore_run", ignore_result=True)
def pitr_restore_run(restore_id: int, to_time: str = "", to_position: str = "", to_gtid: str = "",
                     user_id: int | None = None) -> None:
    """Run the queued point-in-time restore `restore_id` (created by `pitr_restore_queue`) for `user_id`."""
    restore = RestoreRecord.objects.select_related("user").filter(
        pk=restore_id, status=RestoreRecord.Status.QUEUED
    ).first()
    if restore is None:
        logger.warning("Restore %s is not queued any more; nothing to run.", restore_id)
        return
    if restore_queued_user_gone(restore=restore, user_id=user_id):
        return
    try:
        target = recovery_target_parse(to_time=to_time or None, to_position=to_position or None, to_gtid=to_gtid or None)
        pitr_restore(database=restore.database, target=target, trigger=restore.trigger, user=restore.user,
                     restore=restore)
    except BackupError as error:
        logger.error("Point-in-time restore of %s failed: %s", restore.database, error)


@shared_task(name="backups_app.tasks.backup_database", ignore_result=True)
def backup_database(database: str = "default") -> str | None:
    """The scheduled backup of one database; a no-op while BACKUP_ENABLED is false."""
    if not app_settings.BACKUP_ENABLED:
        logger.info("BACKUP_ENABLED is false: scheduled backup of %s skipped.", database)
        return None
    try:
        return backup_create(database=database, trigger=Trigger.SCHEDULE).name
    except BackupError as error:
        logger.error("Scheduled backup of %s failed: %s", database, error)
        return None


# --- Retention, offsite copies and verification ---------------------------------------------------

@shared_task(name="backups_app.tasks.cleanup_backups")
def cleanup_backups(database: str | None = None) -> dict:
    """Apply retention to one database (or all), then retry the offsite uploads that are due."""
    result = retention.retention_apply(database=database, source=AuditEntry.Source.SCHEDULE)
    retried = offsite.offsite_retry(database=database)
    return {
        "ok": result.ok,
        "deleted": result.deleted,
        "offsite_retried": [backup.name for backup in retried],
    }


@shared_task(name="backups_app.tasks.verify_backup")
def verify_backup(database: str = "default", name: str | None = None) -> dict:
    """Verify a backup by test restore: the one named, else the database's newest good backup."""
    backup = verify.backup_to_verify(database=database, name=name)
    if backup is None:
        logger.warning("no good backup of %s to verify", database)
        return {"database": database, "verified": None}
    backup = verify.backup_verify(backup=backup, source=AuditEntry.Source.SCHEDULE)
    return {"database": database, "name": backup.name, "verification": backup.verification_status}


@shared_task(name="backups_app.tasks.backup_verify_run", ignore_result=True)
def backup_verify_run(backup_id: int, user_id: int | None, source: str, ip_address: str | None = None) -> None:
    """Run the verification queued by `backup_verify_queue` (the admin's Verify)."""
    from django.contrib.auth import get_user_model

    backup = BackupRecord.objects.filter(pk=backup_id).first()
    if backup is None:
        logger.warning("Backup %s was deleted before its verification ran; nothing to verify.", backup_id)
        return
    user = get_user_model().objects.filter(pk=user_id).first() if user_id is not None else None
    if user_id is not None and user is None:
        # None would be the host operator (backups_app/access.py), with rights the user never had.
        logger.warning("The user who queued the verification of %s was deleted; it does not run.", backup.name)
        return
    try:
        verify.backup_verify(backup=backup, user=user, source=source, ip_address=ip_address)
    except BackupError as error:
        # Refused (access withdrawn meanwhile) or no longer a good backup: audited by the service.
        logger.error("Verification of %s did not run: %s", backup.name, error)


@shared_task(name="backups_app.tasks.offsite_upload_run")
def offsite_upload_run(record_id: int) -> str | None:
    """Upload one backup offsite (queued by the backup_finished receiver)."""
    backup = BackupRecord.objects.filter(pk=record_id).first()
    if backup is None:  # deleted before the worker got to it
        return None
    return offsite.offsite_upload(backup=backup).offsite_status


@shared_task(name="backups_app.tasks.offsite_retry")
def offsite_retry(database: str | None = None) -> list[str]:
    """Retry the offsite uploads that failed or never ran and are due (exponential backoff)."""
    return [backup.name for backup in offsite.offsite_retry(database=database)]
