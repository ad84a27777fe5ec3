"""The backup health panel of the admin index (`{% backup_dashboard %}`)."""
from __future__ import annotations

from django import template
from django.template.defaultfilters import filesizeformat
from django.utils import formats

from backups_app.admin.backups import human_duration
from backups_app.dashboard import chart_series, dashboard_summary

register = template.Library()


@register.inclusion_tag("admin/backups_app/dashboard.html", takes_context=True)
def backup_dashboard(context) -> dict:
    request = context.get("request")
    if request is None or not request.user.has_perm("backups_app.view_backuprecord"):
        return {"show": False}
    summary = dashboard_summary()
    labels = [
        f"{formats.date_format(point.created_at, 'SHORT_DATETIME_FORMAT')} · {point.name}"
        for point in summary.chart
    ]
    sizes = [float(point.size_bytes) for point in summary.chart]
    durations = [point.duration_seconds for point in summary.chart]
    charts = []
    if summary.chart:
        charts = [
            chart_series(
                values=sizes, title="size",
                labels=[f"{label}: {filesizeformat(size)}" for label, size in zip(labels, sizes)],
                maximum_label=filesizeformat(max(sizes)), css_class="size",
            ),
            chart_series(
                values=durations, title="duration",
                labels=[f"{label}: {human_duration(duration)}" for label, duration in zip(labels, durations)],
                maximum_label=human_duration(max(durations)), css_class="duration",
            ),
        ]
    rate = summary.success_rate
    return {
        "show": True,
        "summary": summary,
        "databases": summary.databases,
        "stale": summary.stale_databases,
        "success_rate_percent": None if rate is None else round(rate * 100),
        "size_chart": charts[0] if charts else None,
        "duration_chart": charts[1] if charts else None,
        "chart_first": summary.chart[0].created_at if summary.chart else None,
        "chart_last": summary.chart[-1].created_at if summary.chart else None,
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
