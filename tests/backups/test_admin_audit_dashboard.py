"""Audit log read-only in the admin, schedule changes audited, the index dashboard and the alerts."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from backups_app import dashboard
from backups_app.alerts import backup_alerts_check
from backups_app.models import AuditEntry, BackupRecord
from backups_app.services.audit import audit_log
from backups_app.signals import backup_finished

from .admin_fixtures import *  # noqa: F401,F403
from .admin_fixtures import store_backup

pytestmark = pytest.mark.django_db

AUDIT = "/admin/backups_app/auditentry/"


def logged_in(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


@pytest.fixture(autouse=True)
def fresh_dashboard_cache():
    dashboard.dashboard_invalidate()
    yield
    dashboard.dashboard_invalidate()


# --- Audit log -----------------------------------------------------------------------------------

@pytest.fixture
def entry(db) -> AuditEntry:
    return audit_log(action="download", source="cli", outcome="success", actor="ops", target="x.sql.gz")


def test_audit_log_is_listed_and_readable(superuser, entry):
    client = logged_in(superuser)
    assert b"x.sql.gz" in client.get(AUDIT).content
    assert client.get(f"{AUDIT}{entry.pk}/change/").status_code == 200


def test_audit_log_cannot_be_changed_even_by_a_superuser(superuser, entry):
    client = logged_in(superuser)
    assert client.get(f"{AUDIT}add/").status_code == 403
    assert client.post(f"{AUDIT}add/", {"action": "restore", "actor": "me", "source": "admin",
                                         "outcome": "success"}).status_code == 403
    assert client.post(f"{AUDIT}{entry.pk}/change/", {"actor": "somebody else"}).status_code == 403
    assert client.post(f"{AUDIT}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    client.post(AUDIT, {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"})
    page = client.get(f"{AUDIT}{entry.pk}/change/").content
    assert b'name="_save"' not in page and b"deletelink" not in page
    entry.refresh_from_db()
    assert entry.actor == "ops"
    assert AuditEntry.objects.count() == 1


def test_schedule_changes_in_the_admin_are_audited(superuser):
    client = logged_in(superuser)
    interval = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.DAYS)
    response = client.post("/admin/django_celery_beat/periodictask/add/", {
        "name": "nightly backup", "regtask": "", "task": "backups_app.tasks.backup_database",
        "enabled": "on", "interval": interval.pk, "args": "[]", "kwargs": "{}", "priority": "",
        "headers": "{}", "description": "",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    task = PeriodicTask.objects.get(name="nightly backup")
    client.post("/admin/django_celery_beat/periodictask/", {
        "action": "disable_tasks", "_selected_action": [task.pk],
    })
    task.refresh_from_db()
    assert not task.enabled
    client.post(f"/admin/django_celery_beat/periodictask/{task.pk}/delete/", {"post": "yes"})
    entries = list(AuditEntry.objects.filter(action="schedule_change").order_by("id"))
    assert [entry.detail.split(":")[0] for entry in entries] == [
        "created periodic task", "disabled periodic task", "deleted periodic task",
    ]
    assert all(entry.source == "admin" and entry.user == superuser and entry.target.startswith("nightly backup")
               for entry in entries)


# --- Dashboard -----------------------------------------------------------------------------------

def test_index_shows_backup_health(superuser):
    store_backup(age=timedelta(hours=2))
    store_backup(age=timedelta(hours=5), status=BackupRecord.Status.FAILED)
    page = logged_in(superuser).get("/admin/").content.decode()
    assert 'id="backup-dashboard"' in page
    assert 'class="backup-fresh"' in page
    assert "Success rate (30 days): <strong>50%</strong>" in page
    assert "<svg" in page and "<polyline" in page
    assert "failed" in page  # the recent failure is listed


def test_stale_database_is_red_on_the_index(superuser, settings):
    settings.BACKUP_ALERT_AFTER_HOURS = 26
    store_backup(age=timedelta(hours=30))
    page = logged_in(superuser).get("/admin/").content.decode()
    assert 'class="backup-stale"' in page
    assert "No good backup of default for" in page


def test_never_backed_up_database_is_red(superuser):
    page = logged_in(superuser).get("/admin/").content.decode()
    assert 'class="backup-stale"' in page and "never" in page


def test_dashboard_hidden_without_view_permission(db):
    from .admin_fixtures import make_user

    page = logged_in(make_user("cacheonly")).get("/admin/").content.decode()
    assert "backup-dashboard" not in page


def test_dashboard_is_cached_and_dropped_when_a_backup_finishes(django_assert_num_queries):
    first = dashboard.dashboard_summary()
    assert first.finished_count == 0
    record = store_backup()
    with django_assert_num_queries(0):
        assert dashboard.dashboard_summary().finished_count == 0  # from the cache
    backup_finished.send(sender=BackupRecord, record=record)
    assert dashboard.dashboard_summary().finished_count == 1


def test_dashboard_cache_dropped_when_a_record_is_deleted():
    record = store_backup()
    assert dashboard.dashboard_summary().finished_count == 1
    record.delete()
    assert dashboard.dashboard_summary().finished_count == 0


def test_dashboard_query_count_is_constant(django_assert_max_num_queries):
    for hours in range(1, 4):
        store_backup(age=timedelta(hours=hours))
    with django_assert_max_num_queries(6):
        dashboard.dashboard_summary_compute()


def test_chart_has_labelled_axes_in_readable_units():
    from datetime import datetime, timezone as dt_timezone

    from backups_app import charts

    start = datetime(2026, 11, 1, tzinfo=dt_timezone.utc)
    times = [start, start + timedelta(days=1), start + timedelta(days=2)]
    values = [0.0, 1.5 * 1024**2, 3 * 1024**2]
    chart = charts.line_chart(title="size", css_class="size", times=times, values=values,
                              unit=charts.size_unit(max(values)), dot_titles=["a", "b", "c"])
    assert [tick.label for tick in chart.y_ticks] == ["0 MB", "1 MB", "2 MB", "3 MB"]
    assert chart.y_ticks[0].position == chart.bottom and chart.y_ticks[-1].position == chart.top
    assert [tick.label for tick in chart.x_ticks] == ["11-01 00:00", "11-02 00:00", "11-03 00:00"]
    first, middle, last = (tuple(map(float, point.split(","))) for point in chart.points.split())
    assert first == (chart.left, chart.bottom) and last == (chart.right, chart.top)
    assert middle[0] == (chart.left + chart.right) / 2
    assert charts.duration_unit(45).symbol == "s" and charts.duration_unit(600).symbol == "min"
    assert charts.duration_unit(4 * 3600).label(5400) == "1.5 h"
    single = charts.line_chart(title="d", css_class="duration", times=[start], values=[7.0],
                               unit=charts.duration_unit(7), dot_titles=["a"])
    assert len(single.x_ticks) == 1 and single.dots[0].y == round(single.top + (single.bottom - single.top) * (1 - 7 / 8), 1)


def test_the_index_draws_one_chart_pair_per_database(superuser, settings, tmp_path):
    from ..conftest import register_alias, unregister_alias

    settings_dict = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "chat.sqlite3")}
    register_alias("chat", settings_dict)
    settings.DATABASES = {**settings.DATABASES, "chat": settings_dict}
    try:
        store_backup(database="default", age=timedelta(hours=2))
        store_backup(database="chat", age=timedelta(hours=3))
        store_backup(database="chat", age=timedelta(hours=1))
        page = logged_in(superuser).get("/admin/").content.decode()
    finally:
        unregister_alias("chat")
    assert page.count('class="backup-chart-group"') == 2
    assert "chat: the last 2 good backups" in page and "default: the last good backup" in page
    assert 'class="y-label"' in page and 'class="x-label"' in page


# --- Alerts --------------------------------------------------------------------------------------

def test_a_failed_backup_mails_admins():
    record = store_backup(status=BackupRecord.Status.FAILED)
    backup_finished.send(sender=BackupRecord, record=record)
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["ops@example.com"]
    assert record.name in message.subject and "Got error 1045" in message.body
    assert AuditEntry.objects.filter(action="alert", outcome="success", target=record.name).exists()


def test_a_successful_backup_mails_nobody():
    backup_finished.send(sender=BackupRecord, record=store_backup())
    assert mail.outbox == []


def test_a_broken_mail_server_never_breaks_the_backup(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 1
    record = store_backup(status=BackupRecord.Status.FAILED)
    backup_finished.send(sender=BackupRecord, record=record)  # must not raise
    assert AuditEntry.objects.get(action="alert").outcome == "failure"


def test_stale_database_mails_admins_once_per_interval(settings):
    settings.BACKUP_ALERT_AFTER_HOURS = 26
    store_backup(age=timedelta(hours=40))
    assert backup_alerts_check() == ["default"]
    assert len(mail.outbox) == 1 and "default" in mail.outbox[0].subject
    assert backup_alerts_check() == []
    assert len(mail.outbox) == 1
    # Once the interval has passed again, it reminds.
    AuditEntry.objects.filter(action="alert").update(created_at=timezone.now() - timedelta(hours=27))
    assert backup_alerts_check() == ["default"]


def test_fresh_database_raises_no_alert():
    store_backup(age=timedelta(hours=1))
    assert backup_alerts_check() == []
    assert mail.outbox == []


def test_alert_command(capsys):
    call_command("check_backup_alerts")
    assert "default" in capsys.readouterr().out
    assert len(mail.outbox) == 1 and "No good backup of default" in mail.outbox[0].subject


def test_dashboard_survives_a_cache_that_raises(settings, caplog):
    """Redis down and raising: the summary is computed directly, invalidation does not raise."""
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.CACHES = {"default": {
        "BACKEND": "django_redis.cache.RedisCache", "LOCATION": f"redis://127.0.0.1:{port}/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},  # errors raised, not ignored
    }}
    store_backup()
    assert dashboard.dashboard_summary().success_count == 1
    dashboard.dashboard_invalidate()
    assert "dashboard cache unavailable" in caplog.text
