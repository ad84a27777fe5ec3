"""Backup health at a glance, for the admin index: read-only selectors and their cache.

The figures are computed from the records (a handful of aggregate queries, whatever the number of
backups) and cached, because the admin index is the page staff open most. The cache holds
timestamps, never ages, so a cached summary never shows a stale age; it is dropped whenever a
backup finishes or a record is deleted (receivers below, connected by BackupsConfig.ready()).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.cache import cache
from django.db.models import Count, Q
from django.utils import timezone

from backups_app.conf import app_settings
from backups_app.models import BackupRecord
from backups_app.selectors import backup_databases, dirty_databases, media_databases

logger = logging.getLogger(__name__)

# v2: the chart holds points per database (a v1 summary left in Redis is not read back).
DASHBOARD_CACHE_KEY = "backups_app:dashboard:v2"
#: Backups shown per database in the size/duration charts, newest last.
CHART_POINTS = 30
#: The success rate is computed over this window.
SUCCESS_RATE_DAYS = 30


@dataclass(frozen=True)
class DatabaseHealth:
    """The newest good backup of one database and whether it is recent enough."""

    database: str
    last_good_name: str | None
    last_good_at: datetime | None
    last_failure_at: datetime | None
    alert_after: timedelta
    #: A restore began to change it and did not finish (backups_app.services.dirty).
    is_dirty: bool = False

    @property
    def age(self) -> timedelta | None:
        if self.last_good_at is None:
            return None
        return timezone.now() - self.last_good_at

    @property
    def is_stale(self) -> bool:
        """No good backup at all, or the newest one is older than the schedule allows."""
        age = self.age
        return age is None or age > self.alert_after


@dataclass(frozen=True)
class ChartPoint:
    database: str
    created_at: datetime
    name: str
    size_bytes: int
    duration_seconds: float


@dataclass(frozen=True)
class DashboardSummary:
    databases: list[DatabaseHealth]
    finished_count: int
    success_count: int
    running_count: int
    recent_failures: list[tuple[str, str, datetime]] = field(default_factory=list)
    chart: list[ChartPoint] = field(default_factory=list)

    @property
    def success_rate(self) -> float | None:
        """Share of finished backups that succeeded over SUCCESS_RATE_DAYS; None when none finished."""
        if not self.finished_count:
            return None
        return self.success_count / self.finished_count

    @property
    def stale_databases(self) -> list[DatabaseHealth]:
        return [health for health in self.databases if health.is_stale]

    @property
    def dirty_databases(self) -> list[DatabaseHealth]:
        return [health for health in self.databases if health.is_dirty]


def backup_alert_after() -> timedelta:
    """How old the newest good backup may be before it is an alert (BACKUP_ALERT_AFTER_HOURS)."""
    return timedelta(hours=app_settings.BACKUP_ALERT_AFTER_HOURS)


def dashboard_databases(*, recorded: Iterable[str] | None = None) -> list[str]:
    """The aliases shown on the dashboard: every database that can be backed up, then the media
    aliases that are backed up or scheduled (selectors.media_databases; `recorded` as there)."""
    databases = list(backup_databases())
    return databases + [alias for alias in media_databases(recorded=recorded) if alias not in databases]


def database_health_list(*, aliases: list[str] | None = None) -> list[DatabaseHealth]:
    """Last good backup and last failure per configured database.

    Two indexed queries per configured alias (a handful), whatever the number of records: the
    composite index on (database, status, -created_at) serves both.
    """
    alert_after = backup_alert_after()
    dirty = dirty_databases()
    regular = BackupRecord.objects.filter(kind=BackupRecord.Kind.REGULAR).order_by("-created_at", "-id")
    health = []
    aliases = list(aliases) if aliases is not None else dashboard_databases()
    # A dirty alias that is not a database (media files) still gets its red row.
    aliases += sorted(dirty.difference(aliases))
    for alias in aliases:
        last_good = (
            regular.good().filter(database=alias)
            .values_list("name", "created_at").first()
        )
        last_failure_at = (
            regular.filter(
                database=alias,
                status__in=[BackupRecord.Status.FAILED, BackupRecord.Status.INTERRUPTED],
            ).values_list("created_at", flat=True).first()
        )
        health.append(DatabaseHealth(
            database=alias,
            last_good_name=last_good[0] if last_good else None,
            last_good_at=last_good[1] if last_good else None,
            last_failure_at=last_failure_at,
            alert_after=alert_after,
            is_dirty=alias in dirty,
        ))
    return health


def dashboard_summary_compute() -> DashboardSummary:
    """Build the summary from the database, bypassing the cache."""
    since = timezone.now() - timedelta(days=SUCCESS_RATE_DAYS)
    final_statuses = [
        BackupRecord.Status.SUCCESS, BackupRecord.Status.FAILED, BackupRecord.Status.INTERRUPTED,
    ]
    # Per alias, so the same query also says which aliases have backups at all (media ones get a row).
    recent = Q(created_at__gte=since)
    per_alias = list(BackupRecord.objects.order_by().values("database").annotate(
        finished=Count("id", filter=recent & Q(status__in=final_statuses)),
        succeeded=Count("id", filter=recent & Q(status=BackupRecord.Status.SUCCESS)),
        running=Count("id", filter=recent & Q(
            status__in=[BackupRecord.Status.QUEUED, BackupRecord.Status.RUNNING])),
    ))
    counts = {key: sum(row[key] for row in per_alias) for key in ("finished", "succeeded", "running")}
    aliases = dashboard_databases(recorded=[row["database"] for row in per_alias])
    failures = list(
        BackupRecord.objects.filter(
            created_at__gte=timezone.now() - backup_alert_after(),
            status__in=[BackupRecord.Status.FAILED, BackupRecord.Status.INTERRUPTED],
        ).order_by("-created_at").values_list("name", "database", "created_at")[:5]
    )
    chart = [point for alias in aliases for point in chart_points(database=alias)]
    return DashboardSummary(
        databases=database_health_list(aliases=aliases),
        finished_count=counts["finished"],
        success_count=counts["succeeded"],
        running_count=counts["running"],
        recent_failures=failures,
        chart=chart,
    )


def dashboard_summary() -> DashboardSummary:
    """The cached summary (BACKUP_DASHBOARD_CACHE_SECONDS); computed on a miss.

    A failing cache (Redis down) is logged and the summary computed directly: the index must load.
    """
    try:
        summary = cache.get(DASHBOARD_CACHE_KEY)
    except Exception:
        logger.warning("dashboard cache unavailable; computing the summary directly", exc_info=True)
        return dashboard_summary_compute()
    if isinstance(summary, DashboardSummary):
        return summary
    summary = dashboard_summary_compute()
    try:
        cache.set(DASHBOARD_CACHE_KEY, summary, app_settings.BACKUP_DASHBOARD_CACHE_SECONDS)
    except Exception:
        logger.warning("could not cache the dashboard summary", exc_info=True)
    return summary


def dashboard_invalidate(**kwargs) -> None:
    """Drop the cached summary; a receiver of backup_finished and of BackupRecord deletions."""
    try:
        cache.delete(DASHBOARD_CACHE_KEY)
    except Exception:
        # With the cache down nothing is cached either; the TTL bounds any leftover.
        logger.warning("could not drop the cached dashboard summary", exc_info=True)


# --- Chart ---------------------------------------------------------------------------------------


def chart_points(*, database: str) -> list[ChartPoint]:
    """The last CHART_POINTS good regular backups of one database, oldest first (one indexed query)."""
    rows = list(
        BackupRecord.objects.good().filter(
            database=database, kind=BackupRecord.Kind.REGULAR, size_bytes__isnull=False,
        ).order_by("-created_at").values_list("created_at", "name", "size_bytes", "duration_seconds")[:CHART_POINTS]
    )
    return [
        ChartPoint(database=database, created_at=created_at, name=name, size_bytes=size or 0,
                   duration_seconds=duration or 0.0)
        for created_at, name, size, duration in reversed(rows)
    ]
