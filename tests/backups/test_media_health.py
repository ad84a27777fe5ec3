"""Media in the admin index's health table, the alerts and the default schedule.

Uploads nobody backs up must show red, exactly like a database that was never backed up.
"""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django_celery_beat.models import PeriodicTask

from backups_app import dashboard
from backups_app.alerts import backup_alerts_check
from backups_app.models import BackupRecord
from backups_app.selectors import media_databases
from backups_app.services.schedule import backup_schedule_install
from backups_app.tasks import backup_database

from .admin_fixtures import *  # noqa: F401,F403
from .admin_fixtures import store_backup

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_dashboard_cache():
    dashboard.dashboard_invalidate()
    yield
    dashboard.dashboard_invalidate()


def index(user) -> str:
    client = Client()
    client.force_login(user)
    return client.get("/admin/").content.decode()


def test_no_media_row_when_media_is_neither_scheduled_nor_backed_up(superuser, settings):
    settings.BACKUP_MEDIA_SCHEDULE = False
    assert media_databases() == []
    assert "?database=media" not in index(superuser)


def test_scheduled_media_that_was_never_backed_up_is_red(superuser, settings):
    settings.BACKUP_MEDIA_SCHEDULE = True
    store_backup(age=timedelta(hours=1))  # `default` is fine
    page = index(superuser)
    assert "?database=media" in page
    assert "media has never been backed up successfully." in page


def test_media_backups_get_a_row_even_unscheduled(superuser, settings):
    settings.BACKUP_MEDIA_SCHEDULE = False
    settings.BACKUP_ALERT_AFTER_HOURS = 26
    store_backup(database="media:uploads", age=timedelta(hours=40))
    page = index(superuser)
    assert "?database=media%3Auploads" in page
    assert "No good backup of media:uploads for" in page


def test_stale_media_mails_admins(settings):
    settings.BACKUP_MEDIA_SCHEDULE = True
    store_backup(age=timedelta(hours=1))
    backup_alerts_check()
    assert any("media" in message.body or "media" in message.subject for message in mail.outbox)


def test_the_default_schedule_backs_up_media_daily_when_enabled(settings, tmp_path):
    settings.BACKUP_MEDIA_SCHEDULE = True
    backup_schedule_install()
    task = PeriodicTask.objects.get(name="opsdesk: backup media")
    assert task.task == "backups_app.tasks.backup_database" and json.loads(task.kwargs) == {"database": "media"}
    assert (task.crontab.hour, task.crontab.minute, task.crontab.day_of_week) == ("2", "0", "*")
    assert PeriodicTask.objects.filter(name__in=["opsdesk: cleanup media", "opsdesk: verify media"]).count() == 2

    root = tmp_path / "media"
    root.mkdir()
    (root / "a.txt").write_text("a")
    storages = {name: dict(config) for name, config in settings.STORAGES.items()}
    storages["default"] = {**storages["default"], "OPTIONS": {"location": root}}
    settings.STORAGES = storages
    name = backup_database(**json.loads(task.kwargs))
    assert BackupRecord.objects.get(name=name).media_mode == "full"


def test_no_media_schedule_unless_enabled(settings):
    settings.BACKUP_MEDIA_SCHEDULE = False
    backup_schedule_install()
    assert not PeriodicTask.objects.filter(name__endswith=" media").exists()


def test_the_admin_refuses_to_delete_an_archive_an_incremental_needs_but_not_the_chain(superuser, settings, tmp_path):
    from backups_app.services.backup import backup_create

    root = tmp_path / "media"
    root.mkdir()
    (root / "a.txt").write_text("a")
    storages = {name: dict(config) for name, config in settings.STORAGES.items()}
    storages["default"] = {**storages["default"], "OPTIONS": {"location": root}}
    settings.STORAGES = storages
    full = backup_create(database="media", trigger="cli")
    (root / "b.txt").write_text("b")
    incremental = backup_create(database="media", trigger="cli")
    client = Client()
    client.force_login(superuser)
    refused = client.post(f"/admin/backups_app/backuprecord/{full.pk}/delete/", {"post": "yes"}, follow=True)
    assert "builds on it" in refused.content.decode()
    assert BackupRecord.objects.filter(pk=full.pk).exists()
    # Selecting the whole chain deletes it, newest first.
    response = client.post("/admin/backups_app/backuprecord/", {
        "action": "delete_selected", "_selected_action": [full.pk, incremental.pk], "post": "yes"})
    assert response.status_code == 302
    assert not BackupRecord.objects.exists()
