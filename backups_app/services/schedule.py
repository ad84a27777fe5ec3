"""The default backup schedule, stored as django-celery-beat PeriodicTasks.

Per database alias: a backup every day at 02:00, a cleanup pass at 03:30 (cleanup also runs right
after each scheduled backup; this pass catches days where the backup failed and retries offsite
uploads) and a verification by test restore every Sunday at 04:00, all in TIME_ZONE; once for all
databases, the stale-backup alert check every hour at :15. Staff change them in the admin
(Periodic tasks); beat's DatabaseScheduler picks the changes up without a restart.

Installing is idempotent: a task that exists (by name) is left as staff edited it, unless `reset`.
"""
from __future__ import annotations

import dataclasses
import json

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils.translation import gettext as _
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from backups_app.models import AuditEntry
from backups_app.services.audit import audit_log

TASK_NAME_PREFIX = "opsdesk:"


@dataclasses.dataclass(frozen=True)
class DefaultTask:
    label: str
    task: str
    minute: str
    hour: str
    day_of_week: str = "*"


DEFAULT_TASKS = (
    DefaultTask(label="backup", task="backups_app.tasks.backup_database", minute="0", hour="2"),
    DefaultTask(label="cleanup", task="backups_app.tasks.cleanup_backups", minute="30", hour="3"),
    DefaultTask(
        label="verify", task="backups_app.tasks.verify_backup", minute="0", hour="4", day_of_week="0"
    ),
)


# Not per database: the stale-backup alert looks at every database at once.
GLOBAL_TASKS = (
    DefaultTask(label="alerts", task="backups_app.alerts.check_backup_alerts", minute="15", hour="*"),
)


def periodic_task_name(*, label: str, database: str) -> str:
    return f"{TASK_NAME_PREFIX} {label} {database}"


def schedule_databases() -> list[str]:
    """Every configured database alias: each can be backed up (DATABASE_URL_<ALIAS>)."""
    return list(connections.settings)


@dataclasses.dataclass
class ScheduleInstallResult:
    created: list[str] = dataclasses.field(default_factory=list)
    reset: list[str] = dataclasses.field(default_factory=list)
    unchanged: list[str] = dataclasses.field(default_factory=list)


@transaction.atomic
def backup_schedule_install(
    *, databases: list[str] | None = None, reset: bool = False, source: str = AuditEntry.Source.CLI,
    user=None, audit: bool = True,
) -> ScheduleInstallResult:
    """Create the default PeriodicTasks of each database that lacks them (all of them by default).

    With `reset`, existing ones get the default timing back and are enabled again. Changes are
    audited (action `schedule_change`).
    """
    result = ScheduleInstallResult()
    for database in databases or schedule_databases():
        for default in DEFAULT_TASKS:
            name = periodic_task_name(label=default.label, database=database)
            _install_task(name=name, default=default, kwargs={"database": database}, reset=reset, result=result)
    if databases is None:
        for default in GLOBAL_TASKS:
            _install_task(name=f"{TASK_NAME_PREFIX} {default.label}", default=default, kwargs={},
                          reset=reset, result=result)
    if audit and (result.created or result.reset):
        audit_log(
            action="schedule_change", source=source, user=user, outcome=AuditEntry.Outcome.SUCCESS,
            target=_("default backup schedule"),
            detail="\n".join(
                [f"created: {name}" for name in result.created]
                + [f"reset: {name}" for name in result.reset]
            ),
        )
    return result


def _install_task(
    *, name: str, default: DefaultTask, kwargs: dict, reset: bool, result: ScheduleInstallResult
) -> None:
    crontab, _created = CrontabSchedule.objects.get_or_create(
        minute=default.minute, hour=default.hour, day_of_week=default.day_of_week,
        day_of_month="*", month_of_year="*", timezone=settings.TIME_ZONE,
    )
    values = {
        "task": default.task,
        "crontab": crontab,
        "interval": None,
        "kwargs": json.dumps(kwargs),
        "enabled": True,
    }
    periodic_task = PeriodicTask.objects.filter(name=name).first()
    if periodic_task is None:
        PeriodicTask.objects.create(name=name, **values)
        result.created.append(name)
    elif reset:
        for field, value in values.items():
            setattr(periodic_task, field, value)
        periodic_task.save()
        result.reset.append(name)
    else:
        result.unchanged.append(name)


def backup_schedule_install_if_absent(*, using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    """post_migrate receiver: a fresh installation gets the default schedule with no further step.

    Only when no opsdesk task exists at all, so that tasks staff deleted do not come back. Not
    audited: no one acted, and an audit entry in every fresh (test) database would be noise.
    """
    if using != DEFAULT_DB_ALIAS:
        return
    if PeriodicTask._meta.db_table not in connections[using].introspection.table_names():
        return  # `migrate backups_app` alone, before django_celery_beat's tables exist
    if not PeriodicTask.objects.filter(name__startswith=TASK_NAME_PREFIX).exists():
        backup_schedule_install(source=AuditEntry.Source.SYSTEM, audit=False)
