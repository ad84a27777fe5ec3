"""Orphan recovery: backups and restores whose process died are found and closed.

Every running backup or restore records who runs it (`owner_host`, `owner_pid`). The next backup
or restore of the same database, `sync_backups` and the admin's index look for `running` and
`queued` records whose process is gone: a backup becomes `interrupted` (never offered for
restore), a restore `failed`, its message naming the safety backup to go back to.
"""
from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from pathlib import Path

from django.utils import timezone
from django.utils.translation import gettext as _

from backups_app import locks
from backups_app.conf import app_settings
from backups_app.manifest import manifest_name
from backups_app.models import BackupRecord, DirtyDatabase, RestoreRecord
from backups_app.pipeline import partial_path
from backups_app.services.media import file_list_name, media_file_list_delete
from backups_app.services.audit import audit_log
from backups_app.services.dirty import dirty_alert
from backups_app.signals import backup_finished, restore_finished
from backups_app.storage import backup_storage

logger = logging.getLogger(__name__)


def current_host() -> str:
    return socket.gethostname()


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_partial(record: BackupRecord) -> None:
    storage = backup_storage()
    for name in (record.name, manifest_name(record.name), file_list_name(record.name)):
        try:
            partial_path(Path(storage.path(name))).unlink(missing_ok=True)
        except NotImplementedError:
            return
    # A media backup stores its file list before its archive: killed between the two, the list
    # stays under its final name, for an archive that never was.
    media_file_list_delete(record=record, storage=storage)


def _is_orphan(record, *, database: str | None, lock_held: bool, horizon) -> bool:
    """Whether the process that ran `record` (a BackupRecord or RestoreRecord) is gone."""
    if record.owner_host == current_host() and record.owner_pid == os.getpid():
        return False  # this very process (a safety backup's parent, for instance)
    if record.owner_host == current_host():
        return (
            (lock_held and record.database == database)
            or not _pid_alive(record.owner_pid)
            or not locks.is_locked(record.database)
        )
    started = getattr(record, "started_at", None) or record.created_at
    if lock_held and record.database == database and locks.cross_machine(database):
        return True  # we hold the only lock of that database, wherever its holder ran
    # A server lock nobody holds: the job that held it is gone (its session ended with it).
    return (locks.cross_machine(record.database) and not locks.is_locked(record.database)) or started < horizon


def _restores_mark_interrupted(*, database: str | None, lock_held: bool, horizon) -> int:
    """A restore whose process was killed: `failed`, pointing at its safety backup."""
    restores = RestoreRecord.objects.select_related("safety_backup").filter(status=RestoreRecord.Status.RUNNING)
    if database is not None:
        restores = restores.filter(database=database)
    count = 0
    for restore in restores:
        if not _is_orphan(restore, database=database, lock_held=lock_held, horizon=horizon):
            continue
        left_dirty = DirtyDatabase.objects.filter(database=restore.database, restore=restore).exists()
        if not left_dirty:
            message = _(
                "The restore process (%(pid)s on %(host)s) stopped before finishing, before it changed "
                "the database: nothing was restored."
            ) % {"pid": restore.owner_pid, "host": restore.owner_host}
        elif restore.safety_backup is not None:
            message = _(
                "The restore process (%(pid)s on %(host)s) stopped before finishing; the database may "
                "be partly restored: restore the safety backup %(safety)s to return to the state before."
            ) % {"pid": restore.owner_pid, "host": restore.owner_host, "safety": restore.safety_backup.name}
        else:
            message = _(
                "The restore process (%(pid)s on %(host)s) stopped before finishing; the database may "
                "be partly restored (no safety backup was taken)."
            ) % {"pid": restore.owner_pid, "host": restore.owner_host}
        if RestoreRecord.objects.filter(pk=restore.pk, status=RestoreRecord.Status.RUNNING).update(
            status=RestoreRecord.Status.FAILED, error_message=message, finished_at=timezone.now(),
        ):
            count += 1
            restore.refresh_from_db()
            logger.warning("Restore of %s into %s was interrupted.", restore.backup_name, restore.database)
            audit_log(action="restore", source="system", outcome="failure",
                      target=f"{restore.backup_name} -> {restore.database}", detail=message)
            if left_dirty:
                dirty_alert(database=restore.database, reason=message)
            restore_finished.send(sender=RestoreRecord, restore=restore)
    return count


def backups_mark_interrupted(*, database: str | None = None, lock_held: bool = False) -> int:
    """Mark `running` records whose process is gone as `interrupted`; return how many.

    Restores whose process is gone become `failed`, their message naming the safety backup.

    A record is an orphan when its host is this machine and its process is dead or no process here
    holds the database's lock; or when the caller holds the database's lock (`lock_held`) and locks
    span machines (Redis); or when it has run longer than the dump timeout plus an hour. A queued
    record whose task never ran is an orphan after that long too.
    """
    now = timezone.now()
    horizon = now - timedelta(seconds=app_settings.BACKUP_DUMP_TIMEOUT + 3600)
    records = BackupRecord.objects.filter(status__in=[BackupRecord.Status.RUNNING, BackupRecord.Status.QUEUED])
    if database is not None:
        records = records.filter(database=database)
    count = 0
    for record in records:
        if record.status == BackupRecord.Status.QUEUED:
            orphan = record.created_at < horizon
        else:
            orphan = _is_orphan(record, database=database, lock_held=lock_held, horizon=horizon)
        if not orphan:
            continue
        updated = BackupRecord.objects.filter(pk=record.pk, status=record.status).update(
            status=BackupRecord.Status.INTERRUPTED,
            finished_at=now,
            error_message=_(
                "The backup process (%(pid)s on %(host)s) stopped before finishing; this backup "
                "was never completed."
            ) % {"pid": record.owner_pid or "?", "host": record.owner_host or "?"},
        )
        if updated:
            count += 1
            _remove_partial(record)
            record.refresh_from_db()
            logger.warning("Backup %s was interrupted (its process is gone).", record.name)
            backup_finished.send(sender=BackupRecord, record=record)
    return count + _restores_mark_interrupted(database=database, lock_held=lock_held, horizon=horizon)


__all__ = ["backups_mark_interrupted", "current_host"]
