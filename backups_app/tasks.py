"""Celery tasks of backups_app, named `backups_app.tasks.<function>`.

Tasks are thin: they load what they are given by id or alias and call one service. Overlapping
runs of one database are refused by the services' `database_lock`, not here.
"""
from __future__ import annotations

import logging

from celery import shared_task

from backups_app.models import AuditEntry, BackupRecord
from backups_app.services import offsite, retention, verify

logger = logging.getLogger(__name__)


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
