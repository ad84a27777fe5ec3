"""Stand-in for the engine area's `backups_app.services.backup` while it is not merged yet.

The admin tests run against the real service whenever it can be imported; only before the engine
branch lands do they fall back to this implementation of the shared contract (backup_queue,
restore_queue, backup_open, backup_delete) for the SQLite default database. It follows the
contract's behaviour the admin relies on: records, files in the `backups` storage, SHA-256,
RestoreRecord outcome, the backup_finished signal.
"""
from __future__ import annotations

import gzip
import hashlib
import sys
import types

from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import connections
from django.utils import timezone

from backups_app.exceptions import BackupError, BackupNotFound, ChecksumMismatch
from backups_app.models import AuditEntry, BackupRecord, RestoreRecord
from backups_app.services.audit import audit_log
from backups_app.signals import backup_finished, restore_finished


def _dump(database: str) -> bytes:
    connection = connections[database]
    connection.ensure_connection()
    return ("\n".join(connection.connection.iterdump()) + "\n-- Dump completed\n").encode()


def backup_queue(*, database="default", trigger, user=None, compression=None) -> BackupRecord:
    now = timezone.now()
    name = f"{database}-{now:%Y%m%d-%H%M%S-%f}.sql.gz"
    record = BackupRecord.objects.create(
        name=name, database=database, engine="sqlite", trigger=trigger, user=user, created_at=now,
        started_at=now, compression="gzip", status=BackupRecord.Status.RUNNING,
    )
    audit_log(action="create", source=trigger, outcome="started", user=user, target=name)
    plain = _dump(database)
    compressed = gzip.compress(plain)
    storage_name = storages["backups"].save(f"{database}/{name}", ContentFile(compressed))
    record.storage_name = storage_name
    record.raw_size_bytes = len(plain)
    record.size_bytes = len(compressed)
    record.sha256 = hashlib.sha256(compressed).hexdigest()
    record.status = BackupRecord.Status.SUCCESS
    record.finished_at = timezone.now()
    record.duration_seconds = (record.finished_at - now).total_seconds()
    record.save()
    audit_log(action="create", source=trigger, outcome="success", user=user, target=name)
    backup_finished.send(sender=BackupRecord, record=record)
    return record


def backup_open(*, backup: BackupRecord):
    storage = storages["backups"]
    if not backup.storage_name or not storage.exists(backup.storage_name):
        raise BackupNotFound(backup.name)
    return storage.open(backup.storage_name, "rb")


def restore_queue(*, backup, database=None, trigger, user=None, safety_backup=True) -> RestoreRecord:
    database = database or backup.database
    restore = RestoreRecord.objects.create(
        backup=backup, backup_name=backup.name, database=database, trigger=trigger, user=user,
        status=RestoreRecord.Status.RUNNING,
    )
    audit_log(action="restore", source=trigger, outcome="started", user=user, target=f"{backup.name} -> {database}")
    with backup_open(backup=backup) as stream:
        data = stream.read()
    if hashlib.sha256(data).hexdigest() != backup.sha256:
        restore.status = RestoreRecord.Status.REFUSED
        restore.error_message = str(ChecksumMismatch(backup.name))
    else:
        if safety_backup:
            restore.safety_backup = backup_queue(database=database, trigger=trigger, user=user)
            restore.safety_backup.kind = BackupRecord.Kind.SAFETY
            restore.safety_backup.save(update_fields=["kind"])
        restore.status = RestoreRecord.Status.SUCCESS
    restore.finished_at = timezone.now()
    restore.save()
    audit_log(action="restore", source=trigger, outcome="success", user=user, target=f"{backup.name} -> {database}")
    restore_finished.send(sender=RestoreRecord, restore=restore)
    return restore


def backup_delete(*, backup, user=None, source) -> None:
    if backup.status in (BackupRecord.Status.RUNNING, BackupRecord.Status.QUEUED):
        audit_log(action="delete", source=source, outcome="refused", user=user, target=backup.name)
        raise BackupError(f"Backup {backup.name} is still running; it cannot be deleted.")
    storage = storages["backups"]
    if backup.storage_name and storage.exists(backup.storage_name):
        storage.delete(backup.storage_name)
    name = backup.name
    backup.delete()
    audit_log(action="delete", source=source, outcome=AuditEntry.Outcome.SUCCESS, user=user, target=name)


def install() -> bool:
    """Make `backups_app.services.backup` importable; False when the real module exists."""
    try:
        import backups_app.services.backup  # noqa: F401
    except ImportError:
        module = types.ModuleType("backups_app.services.backup")
        for function in (backup_queue, backup_open, restore_queue, backup_delete):
            setattr(module, function.__name__, function)
        sys.modules["backups_app.services.backup"] = module
        return True
    return False


