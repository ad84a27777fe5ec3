"""Deleting a backup: every copy of it (local file, manifest, offsite copy) and its record."""
from __future__ import annotations

import logging

from django.conf import settings
from django.core.files.storage import storages
from django.utils.translation import gettext as _

from backups_app.exceptions import BackupError
from backups_app.manifest import manifest_name
from backups_app.models import BackupRecord
from backups_app.services.audit import audit_log
from backups_app.services.media import media_delete_check, media_file_list_delete
from backups_app.storage import backup_storage

logger = logging.getLogger(__name__)


def backup_delete(*, backup: BackupRecord, user=None, source: str) -> None:
    """Delete every copy of `backup` (local file, manifest, offsite copy) and its record; audited.

    A running or queued backup cannot be deleted. Restore history keeps the backup's name.
    """
    if backup.status in (BackupRecord.Status.RUNNING, BackupRecord.Status.QUEUED):
        audit_log(action="delete", source=source, outcome="refused", user=user, target=backup.name,
                  detail=_("backup still running"))
        raise BackupError(_("Backup %(name)s is still running; it cannot be deleted.") % {"name": backup.name})
    media_delete_check(backup=backup, user=user, source=source)
    storage = backup_storage()
    media_file_list_delete(record=backup, storage=storage)
    for name in filter(None, [backup.storage_name, manifest_name(backup.name)]):
        if storage.exists(name):
            storage.delete(name)
    if backup.offsite_name and "backups_offsite" in settings.STORAGES:
        offsite = storages["backups_offsite"]
        for name in (backup.offsite_name, manifest_name(backup.offsite_name)):
            try:
                offsite.delete(name)
            except Exception:  # noqa: BLE001 - the record goes; the offsite lifecycle rule catches leftovers
                logger.warning("Could not delete offsite copy %s.", name, exc_info=True)
    name = backup.name
    # Restore history keeps the name (RestoreRecord.backup_name); its foreign keys become NULL.
    backup.delete()
    audit_log(action="delete", source=source, outcome="success", user=user, target=name)


__all__ = ["backup_delete"]
