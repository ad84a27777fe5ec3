"""Celery tasks: thin callers of the backup services (ids in, one service call each).

Task names are `backups_app.tasks.<function>`. Without a broker (CELERY_TASK_ALWAYS_EAGER) they run
inline in the caller.
"""
from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from backups_app.exceptions import BackupError
from backups_app.models import BackupRecord, RestoreRecord, Trigger

logger = logging.getLogger(__name__)


@shared_task(name="backups_app.tasks.backup_run", ignore_result=True)
def backup_run(record_id: int) -> None:
    """Run the queued backup `record_id` (created by `backup_queue`)."""
    from backups_app.services.backup import backup_create

    record = BackupRecord.objects.filter(pk=record_id, status=BackupRecord.Status.QUEUED).first()
    if record is None:
        logger.warning("Backup record %s is not queued any more; nothing to run.", record_id)
        return
    try:
        backup_create(record=record, trigger=record.trigger)
    except BackupError as error:
        # Already recorded and audited by the service; a retry would only repeat the failure.
        logger.error("Backup %s failed: %s", record.name, error)


@shared_task(name="backups_app.tasks.restore_run", ignore_result=True)
def restore_run(restore_id: int, safety_backup: bool = True) -> None:
    """Run the queued restore `restore_id` (created by `restore_queue`)."""
    from backups_app.services.backup import backup_restore

    restore = RestoreRecord.objects.select_related("backup", "user").filter(
        pk=restore_id, status=RestoreRecord.Status.QUEUED
    ).first()
    if restore is None or restore.backup is None:
        logger.warning("Restore %s is not queued any more; nothing to run.", restore_id)
        return
    try:
        backup_restore(
            backup=restore.backup, database=restore.database, trigger=restore.trigger, user=restore.user,
            safety_backup=safety_backup, restore=restore,
        )
    except BackupError as error:
        logger.error("Restore of %s failed: %s", restore.backup_name, error)


@shared_task(name="backups_app.tasks.backup_database", ignore_result=True)
def backup_database(database: str = "default") -> str | None:
    """The scheduled backup of one database; a no-op while BACKUP_ENABLED is false."""
    if not settings.BACKUP_ENABLED:
        logger.info("BACKUP_ENABLED is false: scheduled backup of %s skipped.", database)
        return None
    from backups_app.services.backup import backup_create

    try:
        return backup_create(database=database, trigger=Trigger.SCHEDULE).name
    except BackupError as error:
        logger.error("Scheduled backup of %s failed: %s", database, error)
        return None
