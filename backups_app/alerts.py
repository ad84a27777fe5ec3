"""Alert e-mails to ADMINS: a backup failed, or a database has no good backup recent enough.

A failed backup is reported as it finishes (receiver of backup_finished, connected in
BackupsConfig.ready()). A missing backup cannot announce itself, so `backup_alerts_check()` looks for
it: run it from the scheduler (task `backups_app.alerts.check_backup_alerts`) or from cron
(`manage.py check_backup_alerts`). Each sent alert is written to the audit log (action "alert"),
which is also how a stale database is mailed once per BACKUP_ALERT_AFTER_HOURS rather than at
every check. The admin index shows the same problems (backups_app.dashboard).
"""
from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.core.mail import mail_admins
from django.utils import timezone
from django.utils.translation import gettext as _

from backups_app.dashboard import DatabaseHealth, backup_alert_after, database_health_list
from backups_app.models import AuditEntry, BackupRecord
from backups_app.selectors import dirty_databases
from backups_app.services.audit import audit_log
from backups_app.services.dirty import DIRTY_ALERT_DETAIL, dirty_alert

logger = logging.getLogger(__name__)

ALERT_ACTION = "alert"


def _send(*, subject: str, message: str, target: str, detail: str) -> bool:
    """Mail ADMINS and audit it; a broken mail server is logged, never raised into the caller."""
    try:
        mail_admins(subject, message, fail_silently=False)
    except Exception as error:
        logger.exception("could not e-mail the backup alert %r", subject)
        audit_log(
            action=ALERT_ACTION, source=AuditEntry.Source.SYSTEM, outcome=AuditEntry.Outcome.FAILURE,
            target=target, detail=f"{detail}\n{type(error).__name__}: {error}",
        )
        return False
    audit_log(
        action=ALERT_ACTION, source=AuditEntry.Source.SYSTEM, outcome=AuditEntry.Outcome.SUCCESS,
        target=target, detail=detail,
    )
    return True


def backup_failure_alert(*, record: BackupRecord) -> bool:
    """E-mail ADMINS that one backup failed or was interrupted. Returns whether the mail went out."""
    subject = _("Backup failed: %(name)s (%(database)s)") % {"name": record.name, "database": record.database}
    message = _(
        "The backup %(name)s of the database %(database)s ended as %(status)s.\n\n"
        "Error: %(error)s\n\nTrigger: %(trigger)s\nStarted: %(started)s\n"
        "The backup list in the admin console shows every attempt."
    ) % {
        "name": record.name,
        "database": record.database,
        "status": record.get_status_display(),
        "error": record.error_message or _("(no message)"),
        "trigger": record.get_trigger_display(),
        "started": record.started_at or record.created_at,
    }
    return _send(subject=subject, message=message, target=record.name, detail=f"failed backup {record.name}")


def backup_finished_alert(sender=None, *, record: BackupRecord, **kwargs) -> None:
    """Receiver of backup_finished: alert on failures; a receiver must never break the backup."""
    if record.status not in (BackupRecord.Status.FAILED, BackupRecord.Status.INTERRUPTED):
        return
    try:
        backup_failure_alert(record=record)
    except Exception:
        logger.exception("backup failure alert for %s could not be sent", record.name)


def _already_alerted(health: DatabaseHealth) -> bool:
    """Whether this stale database was already reported within the alert interval."""
    since = timezone.now() - health.alert_after
    if health.last_good_at is not None and health.last_good_at > since:
        since = health.last_good_at
    return AuditEntry.objects.filter(
        action=ALERT_ACTION, target=health.database, outcome=AuditEntry.Outcome.SUCCESS,
        created_at__gte=since,
    ).exclude(detail=DIRTY_ALERT_DETAIL).exists()


def backup_alerts_check() -> list[str]:
    """E-mail ADMINS about every database without a good backup within BACKUP_ALERT_AFTER_HOURS.

    Returns the aliases that were reported now. A database already reported within the interval
    is not mailed again until the interval has passed once more.
    """
    reported = []
    for health in database_health_list():
        if not health.is_stale or _already_alerted(health):
            continue
        hours = int(health.alert_after.total_seconds() // 3600)
        if health.last_good_at is None:
            subject = _("No good backup of %(database)s") % {"database": health.database}
            message = _("The database %(database)s has no successful backup at all.") % {
                "database": health.database,
            }
        else:
            subject = _("No recent backup of %(database)s") % {"database": health.database}
            message = _(
                "The newest good backup of the database %(database)s is %(name)s, taken at %(when)s: "
                "older than %(hours)s hours."
            ) % {
                "database": health.database, "name": health.last_good_name,
                "when": health.last_good_at, "hours": hours,
            }
        message += "\n\n" + _("Check the scheduler (celery beat) and the backup list in the admin console.")
        if _send(subject=subject, message=message, target=health.database,
                 detail=f"no good backup within {hours} hours"):
            reported.append(health.database)
    return reported


def dirty_alerts_check() -> list[str]:
    """E-mail ADMINS about every database still dirty after an interrupted restore, once per
    BACKUP_ALERT_AFTER_HOURS (its first mail went out when the restore failed or was found killed)."""
    since = timezone.now() - backup_alert_after()
    reported = []
    for alias in sorted(dirty_databases()):
        if AuditEntry.objects.filter(action=ALERT_ACTION, target=alias, detail=DIRTY_ALERT_DETAIL,
                                     outcome=AuditEntry.Outcome.SUCCESS, created_at__gte=since).exists():
            continue
        if dirty_alert(database=alias, reason=_("it is still marked dirty")):
            reported.append(alias)
    return reported


#: A point-in-time recovery problem that stays the same is mailed again after this long.
BINLOG_ALERT_REPEAT = timedelta(hours=24)


def binlog_alerts_check() -> list[str]:
    """E-mail ADMINS about every binlog archive with a hole or a stopped archiver (once per problem).

    Returns the aliases reported now. The same problems are mailed again after BINLOG_ALERT_REPEAT.
    """
    from backups_app.services.binlogs import archived_databases, binlog_window

    reported = []
    for database in archived_databases():
        problems = binlog_window(database=database).gaps
        if not problems:
            continue
        target = f"{database} (point-in-time recovery)"
        detail = "\n".join(problems)
        if AuditEntry.objects.filter(
            action=ALERT_ACTION, target=target, detail=detail, outcome=AuditEntry.Outcome.SUCCESS,
            created_at__gte=timezone.now() - BINLOG_ALERT_REPEAT,
        ).exists():
            continue
        subject = _("Point-in-time recovery of %(database)s has a gap") % {"database": database}
        message = _(
            "The binlog archive of the database %(database)s cannot reach every second of its recoverable "
            "window:\n\n%(problems)s\n\nStart archive_binlogs if it is down; take a new base backup after a "
            "hole. The backup list in the admin console shows the window."
        ) % {"database": database, "problems": detail}
        if _send(subject=subject, message=message, target=target, detail=detail):
            reported.append(database)
    return reported


@shared_task(name="backups_app.alerts.check_backup_alerts")
def check_backup_alerts() -> list[str]:
    """Scheduled form of backup_alerts_check(), dirty_alerts_check() and binlog_alerts_check() (beat, hourly)."""
    return backup_alerts_check() + dirty_alerts_check() + binlog_alerts_check()
