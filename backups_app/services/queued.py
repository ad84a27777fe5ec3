"""Queued backups and restores: taken by exactly one runner, or cancelled before anyone takes them.

A runner (a Celery worker, or a background process) *claims* a queued record by writing its host
and process id onto it with one conditional UPDATE; a cancel is the conditional UPDATE the other
way (queued and unclaimed -> cancelled). Whichever comes first wins, on every database engine, so a
task that runs after a cancel sees it and does nothing, and a job already taken cannot be cancelled
half-started.
"""
from __future__ import annotations

import os
import socket

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext as _

from backups_app.exceptions import BackupError
from backups_app.models import BackupRecord, RestoreRecord
from backups_app.services.audit import audit_log
from backups_app.signals import backup_finished, restore_finished


def _unclaimed(model: type[models.Model], pk: int):
    return model.objects.filter(pk=pk, status=model.Status.QUEUED, owner_pid__isnull=True)


def queued_claim(*, model: type[BackupRecord] | type[RestoreRecord], pk: int) -> bool:
    """Take the queued record `pk` for this process; False when it was cancelled or taken already."""
    return bool(_unclaimed(model, pk).update(owner_host=socket.gethostname(), owner_pid=os.getpid()))


def _cancel(record, *, target: str, action: str, user, source: str) -> None:
    message = _("Cancelled by %(who)s before it started.") % {"who": user.get_username() if user else source}
    updated = _unclaimed(type(record), record.pk).update(
        status=record.Status.CANCELLED, finished_at=timezone.now(), error_message=message,
    )
    if not updated:
        record.refresh_from_db()
        audit_log(action="cancel", source=source, outcome="refused", user=user, target=target,
                  detail=f"{action} is {record.status}")
        raise BackupError(
            _("%(target)s is %(status)s, not waiting in the queue: it cannot be cancelled any more.")
            % {"target": target, "status": record.get_status_display()}
        )
    record.refresh_from_db()
    audit_log(action="cancel", source=source, outcome="success", user=user, target=target, detail=action)


def backup_cancel(*, backup: BackupRecord, user=None, source: str) -> BackupRecord:
    """Cancel a backup that waits in the queue (audited); raises BackupError once it has started."""
    _cancel(backup, target=backup.name, action="backup", user=user, source=source)
    backup_finished.send(sender=BackupRecord, record=backup)
    return backup


def restore_cancel(*, restore: RestoreRecord, user=None, source: str) -> RestoreRecord:
    """Cancel a restore that waits in the queue (audited); raises BackupError once it has started."""
    _cancel(restore, target=str(restore), action="restore", user=user, source=source)
    restore_finished.send(sender=RestoreRecord, restore=restore)
    return restore


__all__ = ["backup_cancel", "queued_claim", "restore_cancel"]
