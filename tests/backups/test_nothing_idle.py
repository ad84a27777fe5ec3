"""Nothing silently idle (in-process part): every database scheduled, removals remembered, waiting
and cancelled jobs, liveness on the index, messages that tell the truth.

The real processes (worker, beat, `make run`, background jobs) are in test_nothing_idle_processes.py.
"""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from backups_app import liveness, tasks
from backups_app.models import AuditEntry, BackupRecord, ProcessHeartbeat, RestoreRecord, ScheduleRemoval, Trigger
from backups_app.selectors import scheduled_backups
from backups_app.services import schedule
from tests.backups.admin_fixtures import APP_ALIAS, app_database, make_user, operator, superuser  # noqa: F401
from tests.conftest import register_alias, unregister_alias

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/backups_app/backuprecord/"
BACKUP_NOW = "/admin/backups_app/backuprecord/backup-now/"
TASKS_ADMIN = "/admin/django_celery_beat/periodictask/"


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def chat_alias(settings, tmp_path):
    """A database added to the configuration after `migrate` (DATABASE_URL_CHAT)."""
    settings_dict = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "chat.sqlite3")}
    register_alias("chat", settings_dict)
    settings.DATABASES = {**settings.DATABASES, "chat": settings_dict}
    yield "chat"
    unregister_alias("chat")


@pytest.fixture
def start_up(settings, monkeypatch):
    """Start-up scheduling on, and this process counted as not started yet."""
    settings.BACKUP_SCHEDULE_ON_START = True
    monkeypatch.setattr(schedule, "_ensured_in_this_process", False)


def queued_record(database: str = "default", *, age_seconds: int = 0) -> BackupRecord:
    return BackupRecord.objects.create(
        name=f"backup_{database}_queued_{age_seconds}.sql.gz", database=database, engine="sqlite",
        trigger=Trigger.ADMIN, status=BackupRecord.Status.QUEUED, compression="gzip",
        created_at=timezone.now() - timedelta(seconds=age_seconds),
    )


def task_names() -> set[str]:
    return set(PeriodicTask.objects.filter(name__startswith="opsdesk:").values_list("name", flat=True))


# --- 1. Every configured database is scheduled ----------------------------------------------------
def test_a_database_added_later_gets_its_schedule_at_the_first_request(chat_alias, superuser, start_up):
    assert "opsdesk: backup chat" not in task_names()  # migrate ran before `chat` existed

    logged_in(superuser).get("/admin/")

    assert {"opsdesk: backup chat", "opsdesk: cleanup chat", "opsdesk: verify chat"} <= task_names()
    entry = AuditEntry.objects.get(action="schedule_change", source=AuditEntry.Source.SYSTEM)
    assert "created: opsdesk: backup chat" in entry.detail


def test_the_start_up_check_runs_once_per_process(chat_alias, start_up):
    schedule.backup_schedule_ensure_on_start()
    PeriodicTask.objects.filter(name="opsdesk: verify chat").update(name="renamed by staff")
    schedule.backup_schedule_ensure_on_start()
    assert "opsdesk: verify chat" not in task_names()


def test_a_task_staff_delete_in_the_admin_stays_deleted(chat_alias, superuser, start_up):
    schedule.backup_schedule_ensure()
    task = PeriodicTask.objects.get(name="opsdesk: backup chat")
    client = logged_in(superuser)

    response = client.post(f"{TASKS_ADMIN}{task.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    removal = ScheduleRemoval.objects.get(database="chat", label="backup")
    assert removal.removed_by == superuser.username
    assert AuditEntry.objects.filter(action="schedule_change", target__startswith="opsdesk: backup chat").exists()
    # Neither a start-up nor a migrate puts it back...
    schedule.backup_schedule_ensure_on_start()
    schedule.backup_schedule_install_if_absent(using="default")
    assert "opsdesk: backup chat" not in task_names()
    assert "opsdesk: cleanup chat" in task_names()
    # ...until staff install it explicitly.
    from django.core.management import call_command

    call_command("setup_backup_schedule", "--database", "chat")
    assert "opsdesk: backup chat" in task_names()
    assert not ScheduleRemoval.objects.exists()


def test_the_index_shows_each_database_next_backup_and_flags_one_without(chat_alias, superuser):
    schedule.backup_schedule_ensure(audit=False)
    heartbeat("scheduler")
    PeriodicTask.objects.filter(name="opsdesk: backup chat").update(enabled=False)

    by_database = {entry.database: entry for entry in scheduled_backups()}
    assert by_database["default"].next_at is not None and by_database["default"].next_at > timezone.now()
    assert by_database["default"].next_at.astimezone(timezone.get_current_timezone()).hour == 2
    assert by_database["chat"].is_missing and by_database["chat"].disabled_tasks == 1

    page = logged_in(superuser).get("/admin/").content.decode()
    default_row = page[page.index('id="schedule-default"'):][:400]
    chat_row = page[page.index('id="schedule-chat"'):][:400]
    assert "backup-fresh" in page[page.rindex("<tr", 0, page.index('id="schedule-default"')):][:80]
    assert "02:00" in default_row
    assert "backup-stale" in page[page.rindex("<tr", 0, page.index('id="schedule-chat"')):][:80]
    assert "its backup tasks are disabled" in chat_row


def test_a_next_backup_the_scheduler_will_not_start_is_red(chat_alias, superuser):
    """The scheduler's heartbeat is missing: the next run is shown, but red, and says why."""
    schedule.backup_schedule_ensure(audit=False)
    page = logged_in(superuser).get("/admin/").content.decode()
    row_start = page.rindex("<tr", 0, page.index('id="schedule-default"'))
    assert "backup-stale" in page[row_start:][:80]
    assert "will not start: the scheduler is not running" in page[row_start:][:600]


def test_a_database_with_no_backup_task_at_all_is_flagged(chat_alias, superuser):
    schedule.backup_schedule_ensure(audit=False)
    PeriodicTask.objects.filter(name="opsdesk: backup chat").delete()
    page = logged_in(superuser).get("/admin/").content.decode()
    assert "none: no backup task" in page[page.index('id="schedule-chat"'):][:400]


def test_an_interval_task_counts_as_a_schedule(chat_alias):
    every = IntervalSchedule.objects.create(every=6, period=IntervalSchedule.HOURS)
    PeriodicTask.objects.create(name="chat every 6 h", task="backups_app.tasks.backup_database",
                                interval=every, kwargs=json.dumps({"database": "chat"}))
    chat = {entry.database: entry for entry in scheduled_backups()}["chat"]
    assert chat.next_at is not None and chat.next_at <= timezone.now() + timedelta(hours=6, seconds=1)


# --- 2. Workers and the scheduler are visible; waiting and cancelled jobs --------------------------
def heartbeat(component: str, *, age_seconds: int = 0, queues: str = "") -> ProcessHeartbeat:
    moment = timezone.now() - timedelta(seconds=age_seconds)
    return ProcessHeartbeat.objects.create(component=component, host="h", pid=1 + age_seconds,
                                           queues=queues, started_at=moment, seen_at=moment)


def test_worker_and_scheduler_liveness_follow_the_heartbeats(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"  # read only for "is there a broker"
    settings.BACKUP_HEARTBEAT_SECONDS = 10
    assert not liveness.worker_alive() and not liveness.scheduler_alive()
    heartbeat("worker", age_seconds=31, queues="opsdesk")
    heartbeat("scheduler", age_seconds=31)
    assert not liveness.worker_alive() and not liveness.scheduler_alive()  # stale after 3 intervals
    heartbeat("worker", queues="someone-else")
    assert not liveness.worker_alive()  # alive, but not consuming this installation's queue
    heartbeat("worker", age_seconds=2, queues="celery opsdesk")
    heartbeat("scheduler", age_seconds=2)
    assert liveness.worker_alive() and liveness.scheduler_alive()


def test_without_a_broker_jobs_need_no_worker(settings):
    settings.CELERY_BROKER_URL = ""
    assert liveness.worker_alive()


def test_a_job_queued_too_long_says_no_worker_takes_the_queue(settings, operator):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    settings.CELERY_TASK_DEFAULT_QUEUE = "opsdesk"
    queued_record(age_seconds=5)
    client = logged_in(operator)
    assert "waiting:" not in client.get(CHANGELIST).content.decode()  # not waiting long yet
    queued_record(age_seconds=settings.BACKUP_QUEUE_WAIT_SECONDS + 1)

    page = client.get(CHANGELIST).content.decode()

    assert "waiting: no worker is taking jobs from queue opsdesk" in page
    assert 'id="backups-waiting"' in page and "A backup is running" not in page
    assert liveness.queue_depth() == 2 and liveness.waiting_jobs() == 1
    index = logged_in(operator).get("/admin/").content.decode()
    assert 'id="liveness-worker-down"' in index and 'id="liveness-waiting"' in index


def test_the_periodic_tasks_page_shows_liveness(superuser, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    page = logged_in(superuser).get(TASKS_ADMIN).content.decode()
    assert 'id="liveness-worker-down"' in page and 'id="liveness-scheduler-down"' in page
    heartbeat("worker", queues=settings.CELERY_TASK_DEFAULT_QUEUE)
    heartbeat("scheduler")
    page = logged_in(superuser).get(TASKS_ADMIN).content.decode()
    assert "liveness-worker-down" not in page and "The scheduler is running." in page


def test_cancel_in_the_admin_and_the_task_then_does_nothing(operator):
    record = queued_record()
    response = logged_in(operator).post(
        CHANGELIST, {"action": "cancel_selected", "_selected_action": [record.pk]}, follow=True,
    )
    assert "1 queued job cancelled." in response.content.decode()
    record.refresh_from_db()
    assert record.status == BackupRecord.Status.CANCELLED and "operator" in record.error_message
    entry = AuditEntry.objects.get(action="cancel")
    assert entry.user == operator and entry.outcome == "success" and entry.target == record.name

    tasks.backup_run(record.pk)  # the message reaches a worker after all

    record.refresh_from_db()
    assert record.status == BackupRecord.Status.CANCELLED and record.started_at is None


def test_a_job_a_runner_has_taken_cannot_be_cancelled(operator):
    from backups_app.services.queued import queued_claim

    record = queued_record()
    assert queued_claim(model=BackupRecord, pk=record.pk)
    response = logged_in(operator).post(
        CHANGELIST, {"action": "cancel_selected", "_selected_action": [record.pk]}, follow=True,
    )
    assert "cannot be cancelled any more" in response.content.decode()
    record.refresh_from_db()
    assert record.status == BackupRecord.Status.QUEUED
    assert AuditEntry.objects.get(action="cancel").outcome == "refused"


def test_cancel_needs_the_create_permission(db):
    viewer = make_user("viewer", "view_backuprecord")
    record = queued_record()
    logged_in(viewer).post(CHANGELIST, {"action": "cancel_selected", "_selected_action": [record.pk]})
    record.refresh_from_db()
    assert record.status == BackupRecord.Status.QUEUED


def test_cancel_a_queued_restore_in_the_admin(operator):
    backup = BackupRecord.objects.create(
        name="backup_x.sql.gz", database="default", engine="sqlite", trigger=Trigger.CLI,
        status=BackupRecord.Status.SUCCESS, compression="gzip", created_at=timezone.now(),
    )
    restore = RestoreRecord.objects.create(backup=backup, backup_name=backup.name, database="default",
                                           trigger=Trigger.ADMIN)
    logged_in(operator).post("/admin/backups_app/restorerecord/",
                             {"action": "cancel_selected", "_selected_action": [restore.pk]})
    restore.refresh_from_db()
    assert restore.status == RestoreRecord.Status.CANCELLED
    tasks.restore_run(restore.pk)
    restore.refresh_from_db()
    assert restore.status == RestoreRecord.Status.CANCELLED


def test_cancel_through_the_api(settings, db):
    from rest_framework.test import APIClient

    from backups_app.services.tokens import api_token_create

    user = make_user("api-op", "view_backuprecord", "create_backup", "restore_backup")
    raw = api_token_create(user=user, source=AuditEntry.Source.CLI).raw_token
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    record = queued_record()

    response = client.post(f"/api/v1/backup/{record.name}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    again = client.post(f"/api/v1/backup/{record.name}/cancel")
    assert again.status_code == 409
    assert client.post("/api/v1/restore/999999/cancel").status_code == 404
    entry = AuditEntry.objects.filter(action="cancel", outcome="success", detail="backup").get()
    assert entry.source == AuditEntry.Source.API and entry.user == user


# --- 4. Messages tell the truth -------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)  # the job runs when the request's transaction commits
def test_back_up_now_says_a_finished_backup_finished_and_keeps_the_database(operator, app_database):
    client = logged_in(operator)
    response = client.post(BACKUP_NOW, {"database": APP_ALIAS}, follow=True)
    page = response.content.decode()
    record = BackupRecord.objects.get(database=APP_ALIAS)
    assert record.status == BackupRecord.Status.SUCCESS
    assert f"Backup {record.name} of {APP_ALIAS} finished" in page
    assert "this list refreshes" not in page
    assert f'<option value="{APP_ALIAS}" selected>' in page


def test_back_up_now_warns_when_no_worker_takes_the_queue(operator, app_database, settings):
    # The test's transaction never commits, so nothing is sent: the page answers before any worker could.
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    page = logged_in(operator).post(BACKUP_NOW, {"database": APP_ALIAS}, follow=True).content.decode()
    assert "no worker is taking jobs from queue" in page


def test_the_record_page_of_a_waiting_backup_says_why(operator, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    record = queued_record(age_seconds=settings.BACKUP_QUEUE_WAIT_SECONDS + 1)
    page = logged_in(operator).get(f"{CHANGELIST}{record.pk}/change/").content.decode()
    assert "waiting: no worker is taking jobs from queue opsdesk" in page.lower()


def test_restore_of_default_says_what_goes_back_in_time(superuser, django_capture_on_commit_callbacks):
    """The message after starting it; the confirmation page itself is the privilege work's."""
    from tests.backups.admin_fixtures import store_backup

    record = store_backup()
    assert record.database == "default"
    with django_capture_on_commit_callbacks(execute=False):
        response = logged_in(superuser).post(
            f"{CHANGELIST}{record.pk}/restore/", {"confirm_database": "default"}, follow=True,
        )
    page = response.content.decode()
    assert "The audit log is kept, but users, API tokens and schedules go back to the time of the backup." in page


def test_backup_operators_see_the_next_backup_too(operator):
    schedule.backup_schedule_ensure(audit=False)
    assert 'id="schedule-default"' in logged_in(operator).get("/admin/").content.decode()
    outsider = make_user("staff-without-permissions")
    assert 'id="schedule-default"' not in logged_in(outsider).get("/admin/").content.decode()


def test_a_queued_restore_whose_backup_was_deleted_ends_refused_not_queued(db):
    backup = BackupRecord.objects.create(
        name="backup_gone.sql.gz", database="default", engine="sqlite", trigger=Trigger.CLI,
        status=BackupRecord.Status.SUCCESS, compression="gzip", created_at=timezone.now(),
    )
    restore = RestoreRecord.objects.create(backup=backup, backup_name=backup.name, database="default",
                                           trigger=Trigger.ADMIN)
    backup.delete()
    tasks.restore_run(restore.pk)
    restore.refresh_from_db()
    assert restore.status == RestoreRecord.Status.REFUSED and restore.finished_at is not None
    assert "was deleted" in restore.error_message
    assert AuditEntry.objects.get(action="restore").outcome == "refused"
