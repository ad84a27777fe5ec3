"""Read-only queries about backups. Callers look backups up by record, never by a path."""
from __future__ import annotations

from django.conf import settings
from django.db.models import QuerySet

from backups_app.exceptions import BackupNotFound
from backups_app.models import BackupRecord


def backup_databases() -> list[str]:
    """The aliases that can be backed up: every configured DATABASES alias, `default` first."""
    return sorted(settings.DATABASES, key=lambda alias: (alias != "default", alias))


def backup_list(*, database: str | None = None, status: str | None = None) -> QuerySet[BackupRecord]:
    """Backups, newest first, optionally of one database and/or in one status."""
    backups = BackupRecord.objects.select_related("user")
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
    return backup_list(database=database, status=BackupRecord.Status.SUCCESS).first()


def last_good_backups() -> dict[str, BackupRecord | None]:
    """The newest successful backup of every configured database."""
    return {alias: last_good_backup(database=alias) for alias in backup_databases()}


def dirty_databases() -> set[str]:
    """Aliases marked dirty: a restore began to change them and did not finish."""
    from backups_app.models import DirtyDatabase

    return set(DirtyDatabase.objects.values_list("database", flat=True))
