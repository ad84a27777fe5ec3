"""The "dirty" mark: a database that a restore began to change and did not finish.

An engine whose restore cannot be atomic for some step calls ``before_target_change`` right before
it (MySQL before swapping its staging database in; PostgreSQL and SQLite never do). The restore
service then writes the mark, and removes it only when a restore of that database completes. A
process killed in between leaves the mark behind, which is the point: the half-restored database is
shown red (admin index, /health), mailed to ADMINS, and never backed up as good (every backup of it
is recorded as failed) until a restore completes or a superuser clears the mark
(docs/FAULTS.md, "restore killed at any byte").
"""
from __future__ import annotations

import logging

from django.core.mail import mail_admins
from django.utils.translation import gettext as _

from backups_app.dashboard import dashboard_invalidate
from backups_app.exceptions import BackupError
from backups_app.models import AuditEntry, DirtyDatabase, RestoreRecord
from backups_app.services.audit import audit_log

logger = logging.getLogger(__name__)

#: The error of every backup refused because of the mark (searchable, so kept in one place).
DIRTY_BACKUP_ERROR = "database is dirty after an interrupted restore"
#: The audit detail of a dirty-database alert (alerts.py mails it again once per alert interval).
DIRTY_ALERT_DETAIL = "dirty database"


class DatabaseDirty(BackupError):
    """A backup of a database marked dirty was refused."""


def dirty_mark(*, database: str, restore: RestoreRecord | None) -> DirtyDatabase:
    """Mark `database` dirty before a restore's first non-atomic change to it."""
    mark, _created = DirtyDatabase.objects.update_or_create(
        database=database,
        defaults={"restore": restore if restore is not None and restore.pk else None,
                  "backup_name": restore.backup_name if restore is not None else ""},
    )
    dashboard_invalidate()
    return mark


def dirty_clear(*, database: str, user=None, source: str | None = None) -> bool:
    """Remove the mark of `database`: by a completed restore (no user), or by a superuser.

    A superuser's clearing is audited (action "clear_dirty"). Returns whether there was a mark.
    """
    if user is not None and not user.is_superuser:
        audit_log(action="clear_dirty", source=source or AuditEntry.Source.SYSTEM, outcome="refused",
                  user=user, target=database, detail=_("only a superuser may clear the dirty mark"))
        raise BackupError(_("Only a superuser may clear the dirty mark of a database."))
    deleted, _details = DirtyDatabase.objects.filter(database=database).delete()
    if deleted:
        dashboard_invalidate()
    if user is not None:
        audit_log(action="clear_dirty", source=source or AuditEntry.Source.SYSTEM,
                  outcome="success" if deleted else "failure", user=user, target=database,
                  detail="" if deleted else _("the database was not marked dirty"))
    return bool(deleted)


def is_dirty(*, database: str) -> bool:
    return DirtyDatabase.objects.filter(database=database).exists()


def dirty_alert(*, database: str, reason: str) -> bool:
    """E-mail ADMINS that `database` is left dirty; audited like every alert. Never raises."""
    subject = _("Database %(database)s is dirty after an interrupted restore") % {"database": database}
    message = _(
        "A restore of the database %(database)s began to change it and did not finish: %(reason)s\n\n"
        "Its content is neither the state before the restore nor the backup's. Backups of it are "
        "refused until a restore of it completes (restore the backup again, or the safety backup) or "
        "a superuser clears the mark (admin: Dirty databases, or `manage.py clear_dirty_mark %(database)s`)."
    ) % {"database": database, "reason": reason}
    try:
        mail_admins(subject, message, fail_silently=False)
    except Exception as error:  # noqa: BLE001 - a broken mail server must not hide the restore's outcome
        logger.exception("could not e-mail the dirty-database alert for %s", database)
        audit_log(action="alert", source=AuditEntry.Source.SYSTEM, outcome="failure", target=database,
                  detail=f"{DIRTY_ALERT_DETAIL}\n{type(error).__name__}: {error}")
        return False
    audit_log(action="alert", source=AuditEntry.Source.SYSTEM, outcome="success", target=database,
              detail=DIRTY_ALERT_DETAIL)
    return True
