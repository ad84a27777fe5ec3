"""The default beat schedule: installed by migrate, idempotent, staff edits respected."""
from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from backups_app.models import AuditEntry
from backups_app.services.schedule import backup_schedule_install, backup_schedule_install_if_absent

pytestmark = pytest.mark.django_db


def opsdesk_tasks() -> dict[str, PeriodicTask]:
    return {task.name: task for task in PeriodicTask.objects.filter(name__startswith="opsdesk:")}


def test_migrate_installed_the_default_schedule():
    tasks = opsdesk_tasks()
    assert set(tasks) == {
        "opsdesk: backup default", "opsdesk: cleanup default", "opsdesk: verify default", "opsdesk: alerts",
    }
    backup = tasks["opsdesk: backup default"]
    assert backup.task == "backups_app.tasks.backup_database"
    assert json.loads(backup.kwargs) == {"database": "default"}
    assert (backup.crontab.hour, backup.crontab.minute, backup.crontab.day_of_week) == ("2", "0", "*")
    verify = tasks["opsdesk: verify default"]
    assert verify.task == "backups_app.tasks.verify_backup"
    assert (verify.crontab.hour, verify.crontab.day_of_week) == ("4", "0")
    assert tasks["opsdesk: cleanup default"].task == "backups_app.tasks.cleanup_backups"
    alerts = tasks["opsdesk: alerts"]
    assert alerts.task == "backups_app.alerts.check_backup_alerts"
    assert (alerts.crontab.hour, alerts.crontab.minute, json.loads(alerts.kwargs)) == ("*", "15", {})


@pytest.fixture
def chat_alias(tmp_path):
    # configure_settings() insists on a `default` entry, so configure it beside the real one.
    configured = connections.configure_settings({
        "default": connections.settings["default"],
        "chat": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "chat.sqlite3")},
    })
    connections.settings["chat"] = configured["chat"]
    yield "chat"
    connections.settings.pop("chat", None)


def test_installer_is_idempotent_and_keeps_staff_edits(chat_alias, capsys):
    call_command("setup_backup_schedule")
    first = opsdesk_tasks()
    assert len(first) == 7  # three per database, and the alert check once
    crontabs = CrontabSchedule.objects.count()
    # Staff move the chat backup to 05:15 and disable its verification.
    moved = CrontabSchedule.objects.create(minute="15", hour="5")
    PeriodicTask.objects.filter(name="opsdesk: backup chat").update(crontab=moved)
    PeriodicTask.objects.filter(name="opsdesk: verify chat").update(enabled=False)

    call_command("setup_backup_schedule")
    call_command("setup_backup_schedule")

    again = opsdesk_tasks()
    assert set(again) == set(first)
    assert CrontabSchedule.objects.count() == crontabs + 1
    assert again["opsdesk: backup chat"].crontab_id == moved.pk
    assert again["opsdesk: verify chat"].enabled is False
    assert "unchanged opsdesk: backup chat" in capsys.readouterr().out
    assert AuditEntry.objects.filter(action="schedule_change").count() == 1


def test_reset_puts_the_default_timing_back():
    moved = CrontabSchedule.objects.create(minute="15", hour="5")
    PeriodicTask.objects.filter(name="opsdesk: backup default").update(crontab=moved, enabled=False)

    result = backup_schedule_install(reset=True)

    task = PeriodicTask.objects.get(name="opsdesk: backup default")
    assert (task.crontab.hour, task.crontab.minute, task.enabled) == ("2", "0", True)
    assert "opsdesk: backup default" in result.reset
    entry = AuditEntry.objects.get(action="schedule_change")
    assert "reset: opsdesk: backup default" in entry.detail


def test_migrate_does_not_bring_back_tasks_staff_deleted():
    PeriodicTask.objects.filter(name="opsdesk: verify default").delete()

    backup_schedule_install_if_absent(using="default")

    assert "opsdesk: verify default" not in opsdesk_tasks()


def test_unknown_alias_is_refused():
    with pytest.raises(CommandError, match="Unknown database alias: nope"):
        call_command("setup_backup_schedule", "--database", "nope")
