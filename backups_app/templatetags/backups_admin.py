"""The backup health panel of the admin index (`{% backup_dashboard %}`)."""
from __future__ import annotations

from dataclasses import dataclass

from django import template
from django.template.defaultfilters import filesizeformat
from django.utils import formats
from django.utils.timezone import localtime
from django.utils.translation import gettext

from backups_app.admin.backups import human_duration
from backups_app.charts import LineChart, duration_unit, line_chart, size_unit
from backups_app.dashboard import ChartPoint, dashboard_summary

register = template.Library()


@dataclass(frozen=True)
class DatabaseCharts:
    """The size and duration charts of one database's last backups."""

    database: str
    size: LineChart
    duration: LineChart
    count: int


def database_charts(database: str, points: list[ChartPoint]) -> DatabaseCharts:
    times = [point.created_at for point in points]
    moments = [
        f"{formats.date_format(localtime(point.created_at), 'DATETIME_FORMAT')} · {point.name}" for point in points
    ]
    sizes = [float(point.size_bytes) for point in points]
    durations = [point.duration_seconds for point in points]
    return DatabaseCharts(
        database=database,
        size=line_chart(
            title=gettext("Size of the last backups of %(database)s") % {"database": database},
            css_class="size", times=times, values=sizes, unit=size_unit(max(sizes, default=0)),
            dot_titles=[f"{moment}: {filesizeformat(size)}" for moment, size in zip(moments, sizes)],
        ),
        duration=line_chart(
            title=gettext("Duration of the last backups of %(database)s") % {"database": database},
            css_class="duration", times=times, values=durations, unit=duration_unit(max(durations, default=0)),
            dot_titles=[f"{moment}: {human_duration(duration)}" for moment, duration in zip(moments, durations)],
        ),
        count=len(points),
    )


@register.inclusion_tag("admin/backups_app/dashboard.html", takes_context=True)
def backup_dashboard(context) -> dict:
    request = context.get("request")
    if request is None or not request.user.has_perm("backups_app.view_backuprecord"):
        return {"show": False}
    summary = dashboard_summary()
    by_database: dict[str, list[ChartPoint]] = {}
    for point in summary.chart:
        by_database.setdefault(point.database, []).append(point)
    rate = summary.success_rate
    return {
        # Not cached with the summary: a stopped binlog archiver must turn red within a minute.
        "point_in_time_problems": point_in_time_problems(),
        "show": True,
        "summary": summary,
        "databases": summary.databases,
        "stale": summary.stale_databases,
        "success_rate_percent": None if rate is None else round(rate * 100),
        "charts": [database_charts(database, points) for database, points in by_database.items()],
        "alert_after_hours": int(summary.databases[0].alert_after.total_seconds() // 3600) if summary.databases else None,
    }


@register.inclusion_tag("admin/backups_app/liveness.html", takes_context=True)
def backup_liveness(context, *, schedules: bool = True) -> dict:
    """Workers, scheduler, waiting jobs and (on the index) the next backup of every database."""
    from backups_app.liveness import liveness_summary
    from backups_app.selectors import scheduled_backups

    request = context.get("request")
    if request is None or not request.user.is_staff:
        return {"show": False}
    # When each database is next backed up is what anyone watching backups must see.
    can_see_schedules = schedules and (
        request.user.has_perm("backups_app.view_backuprecord")
        or request.user.has_perm("django_celery_beat.view_periodictask")
    )
    from backups_app.admin.backups import waiting_reason

    summary = liveness_summary()
    return {
        "show": True,
        "liveness": summary,
        "waiting_reason": waiting_reason() if summary.waiting else "",
        "schedules": scheduled_backups() if can_see_schedules else [],
    }


def point_in_time_problems() -> list[tuple[str, str]]:
    """(database, problem) for every binlog archive with a hole or a stopped archiver."""
    from backups_app.services.binlogs import archived_databases, binlog_window

    return [(database, gap) for database in archived_databases() for gap in binlog_window(database=database).gaps]
