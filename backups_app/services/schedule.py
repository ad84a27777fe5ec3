"""The default backup schedule, stored as django-celery-beat PeriodicTasks.

Per database alias: a backup every day at 02:00, a cleanup pass at 03:30 (cleanup also runs right
after each scheduled backup; this pass catches days where the backup failed and retries offsite
uploads) and a verification by test restore every Sunday at 04:00, all in TIME_ZONE; once for all
databases, the stale-backup alert check every hour at :15. Staff change them in the admin
(Periodic tasks); beat's DatabaseScheduler picks the changes up without a restart.

Installing is idempotent: a task that exists (by name) is left as staff edited it, unless `reset`.

Every configured database gets these tasks, also one added to the configuration later
(`DATABASE_URL_CHAT`): `backup_schedule_ensure()` runs after `migrate` and when a web, worker or
scheduler process starts (backups_app.apps). A default task that staff deleted is remembered
(ScheduleRemoval) and not put back, until `setup_backup_schedule` installs it explicitly.
"""
from __future__ import annotations

import dataclasses
import json
import logging

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils.translation import gettext as _
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from backups_app.conf import app_settings
from backups_app.models import AuditEntry, ScheduleRemoval
from backups_app.services.audit import audit_log

logger = logging.getLogger(__name__)

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
    """Every configured database alias: each can be backed up (DATABASE_URL_<ALIAS>); and `media`
    (the uploaded files under MEDIA_ROOT) when BACKUP_MEDIA_SCHEDULE is on."""
    databases = list(connections.settings)
    if app_settings.BACKUP_MEDIA_SCHEDULE:
        databases.append("media")
    return databases


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
        # Installed on request: a removal staff made earlier is overruled by this explicit install.
        ScheduleRemoval.objects.filter(database=database).delete()
    if databases is None:
        ScheduleRemoval.objects.filter(database="").delete()
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


@transaction.atomic
def backup_schedule_ensure(*, audit: bool = True) -> ScheduleInstallResult:
    """Give every configured database the default tasks it lacks, except those staff removed.

    Cheap when nothing is missing (one query for the names, one for the removals). What it creates
    is audited as a change by the system: a database added to the configuration got a schedule.
    """
    result = ScheduleInstallResult()
    existing = set(PeriodicTask.objects.filter(name__startswith=TASK_NAME_PREFIX).values_list("name", flat=True))
    removed = set(ScheduleRemoval.objects.values_list("database", "label"))
    for database in schedule_databases():
        for default in DEFAULT_TASKS:
            name = periodic_task_name(label=default.label, database=database)
            if name in existing or (database, default.label) in removed:
                continue
            _install_task(name=name, default=default, kwargs={"database": database}, reset=False, result=result)
    for default in GLOBAL_TASKS:
        name = f"{TASK_NAME_PREFIX} {default.label}"
        if name not in existing and ("", default.label) not in removed:
            _install_task(name=name, default=default, kwargs={}, reset=False, result=result)
    if audit and result.created:
        audit_log(
            action="schedule_change", source=AuditEntry.Source.SYSTEM, outcome=AuditEntry.Outcome.SUCCESS,
            target=_("default backup schedule"),
            detail="\n".join(f"created: {name}" for name in result.created),
        )
    return result


def _default_task_key(name: str) -> tuple[str, str] | None:
    """(database, label) of a default task's name (`opsdesk: backup chat`), ("", label) for a global one."""
    if not name.startswith(TASK_NAME_PREFIX + " "):
        return None
    parts = name[len(TASK_NAME_PREFIX) + 1:].split(" ", 1)
    labels = {default.label for default in DEFAULT_TASKS}
    if len(parts) == 2 and parts[0] in labels:
        return parts[1], parts[0]
    if len(parts) == 1 and parts[0] in {default.label for default in GLOBAL_TASKS}:
        return "", parts[0]
    return None


def schedule_removal_remember(*, name: str, removed_by: str = "") -> None:
    """A default task was deleted: remember it, so that no start-up or migrate puts it back."""
    key = _default_task_key(name)
    if key is None:
        return
    ScheduleRemoval.objects.update_or_create(
        database=key[0], label=key[1], defaults={"task_name": name, "removed_by": removed_by[:255]},
    )


def periodic_task_deleted(sender, instance: PeriodicTask, **kwargs) -> None:
    """post_delete receiver of PeriodicTask: any deletion (admin, shell, cascade) is on purpose."""
    schedule_removal_remember(name=instance.name)


def backup_schedule_install_if_absent(*, using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    """post_migrate receiver: every database gets its default tasks with no further step.

    Tasks staff deleted do not come back (ScheduleRemoval). Not audited: no one acted, and an audit
    entry in every fresh (test) database would be noise.
    """
    if using != DEFAULT_DB_ALIAS:
        return
    tables = connections[using].introspection.table_names()
    if PeriodicTask._meta.db_table not in tables or ScheduleRemoval._meta.db_table not in tables:
        return  # `migrate backups_app` alone, before django_celery_beat's tables exist
    backup_schedule_ensure(audit=False)


_ensured_in_this_process = False


def backup_schedule_ensure_on_start(**kwargs) -> None:
    """Receiver of the first request of a web process, celery `worker_ready` and `beat_init`.

    Once per process, and only with BACKUP_SCHEDULE_ON_START (the test suite turns it off): a
    database added to the configuration since the last start gets its schedule. Never raises: a
    process must start even when the database is not migrated yet.
    """
    global _ensured_in_this_process
    if _ensured_in_this_process or not app_settings.BACKUP_SCHEDULE_ON_START:
        return
    _ensured_in_this_process = True
    try:
        created = backup_schedule_ensure().created
    except Exception as error:  # noqa: BLE001 - e.g. not migrated yet; the request or worker goes on
        logger.warning("could not check the default backup schedule at start-up: %s", error)
        return
    if created:
        logger.info("default schedule installed: %s", ", ".join(created))
