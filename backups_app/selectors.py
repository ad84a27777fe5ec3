"""Read-only queries about backups. Callers look backups up by record, never by a path."""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from backups_app.conf import app_settings
from backups_app.exceptions import BackupNotFound
from backups_app.models import BackupRecord

logger = logging.getLogger(__name__)


def backup_databases() -> list[str]:
    """The aliases that can be backed up: every configured DATABASES alias, `default` first."""
    return sorted(settings.DATABASES, key=lambda alias: (alias != "default", alias))


def media_databases(*, recorded: Iterable[str] | None = None) -> list[str]:
    """The media aliases (`media`, `media:<storage>`) that deserve a health row and alerts: `media`
    when BACKUP_MEDIA_SCHEDULE is on (the default schedule then backs it up daily), and every media
    alias that has backups. A media folder nobody backs up then shows red instead of being left out.

    `recorded`: the aliases that have backups, when the caller already has them (else one query).
    """
    from backups_app.engines.media import is_media_alias

    if recorded is None:
        recorded = BackupRecord.objects.filter(database__startswith="media").values_list(
            "database", flat=True).distinct()
    aliases = {alias for alias in recorded if is_media_alias(alias)}
    if app_settings.BACKUP_MEDIA_SCHEDULE:
        aliases.add("media")
    return sorted(aliases)


def backup_list(*, database: str | None = None, status: str | None = None) -> QuerySet[BackupRecord]:
    """Backups, newest first, optionally of one database and/or in one status."""
    backups = BackupRecord.objects.select_related("user", "parent")
    if database is not None:
        backups = backups.filter(database=database)
    if status is not None:
        backups = backups.filter(status=status)
    return backups.order_by("-created_at", "-id")


def backup_get(*, name: str) -> BackupRecord:
    """The backup record called `name`; BackupNotFound otherwise (the name is never used as a path)."""
    try:
        return BackupRecord.objects.get(name=name)
    except BackupRecord.DoesNotExist:
        raise BackupNotFound(f"No backup named {name!r}.") from None


def last_good_backup(*, database: str) -> BackupRecord | None:
    """The newest successful backup of `database` (safety backups included: they are restorable)."""
    return backup_list(database=database).good().first()


def last_good_backups() -> dict[str, BackupRecord | None]:
    """The newest successful backup of every configured database."""
    return {alias: last_good_backup(database=alias) for alias in backup_databases()}


# --- Schedules ------------------------------------------------------------------------------------
BACKUP_TASK = "backups_app.tasks.backup_database"


@dataclass(frozen=True)
class ScheduledBackup:
    """The backup schedule of one database: when it next runs (None: never), and how many tasks."""

    database: str
    next_at: datetime | None
    enabled_tasks: int
    disabled_tasks: int

    @property
    def is_missing(self) -> bool:
        """No enabled backup task at all: nothing will back this database up."""
        return self.next_at is None


def _task_database(task) -> str:
    try:
        kwargs = json.loads(task.kwargs or "{}")
    except ValueError:
        kwargs = {}
    return str(kwargs.get("database", "default"))  # the task's own default


def _next_run(task, now: datetime) -> datetime | None:
    if task.one_off and task.total_run_count:
        return None
    if task.expires is not None and task.expires <= now:
        return None
    try:
        schedule = task.schedule
        remaining = schedule.remaining_estimate(task.last_run_at or now)
    except Exception:  # noqa: BLE001 - a schedule beat cannot read is shown as no schedule
        logger.warning("cannot compute the next run of periodic task %s", task.name, exc_info=True)
        return None
    # Whole seconds: `now` carries microseconds that the schedule's own times do not.
    moment = (now + max(remaining, timedelta(0)) + timedelta(microseconds=500_000)).replace(microsecond=0)
    if task.start_time is not None and task.start_time > moment:
        moment = task.start_time
    return moment


def scheduled_backups() -> list[ScheduledBackup]:
    """Per configured database: the next scheduled backup of the enabled backup tasks that name it."""
    from django_celery_beat.models import PeriodicTask

    now = timezone.now()
    tasks = list(PeriodicTask.objects.filter(task=BACKUP_TASK).select_related(
        "interval", "crontab", "solar", "clocked"))
    result = []
    for database in backup_databases():
        own = [task for task in tasks if _task_database(task) == database]
        upcoming = [moment for task in own if task.enabled for moment in [_next_run(task, now)] if moment]
        result.append(ScheduledBackup(
            database=database, next_at=min(upcoming, default=None),
            enabled_tasks=sum(task.enabled for task in own),
            disabled_tasks=sum(not task.enabled for task in own),
        ))
    return result


def dirty_databases() -> set[str]:
    """Aliases marked dirty: a restore began to change them and did not finish."""
    from backups_app.models import DirtyDatabase

    return set(DirtyDatabase.objects.values_list("database", flat=True))
