"""The dirty mark: a restore that began to change a database and did not finish leaves it marked.

While marked, the database is red on the admin index and in /health, ADMINS get a mail, and every
backup of it is refused and recorded as failed, until a restore completes or a superuser clears it.
"""
from __future__ import annotations

import pytest
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError

from backups_app.exceptions import DumpFailed, RestoreFailed
from backups_app.models import AuditEntry, BackupRecord, DirtyDatabase, RestoreRecord, Trigger
from backups_app.services.backup import backup_create
from backups_app.services.restore import backup_restore

from .admin_fixtures import make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")]

DIRTY = "database is dirty after an interrupted restore"


@pytest.fixture
def fake_database(fake_alias, settings):
    """The fault-injecting alias `fake`, listed in DATABASES (admin index, /health), with a backup."""
    settings_dict = fake_alias()
    settings.DATABASES = {**settings.DATABASES, "fake": settings_dict}
    backup = backup_create(database="fake", trigger=Trigger.CLI)
    mail.outbox.clear()
    return backup


def fail_after_touching(fake_alias, settings, value=True):
    settings_dict = fake_alias(FAKE_RESTORE_FAIL=value)
    settings.DATABASES = {**settings.DATABASES, "fake": settings_dict}


def test_a_restore_that_failed_after_touching_the_target_leaves_it_dirty(fake_database, fake_alias, settings, client):
    fail_after_touching(fake_alias, settings)
    with pytest.raises(RestoreFailed, match="may be partly restored"):
        backup_restore(backup=fake_database, trigger=Trigger.CLI)
    mark = DirtyDatabase.objects.get(database="fake")
    assert mark.backup_name == fake_database.name and mark.restore == RestoreRecord.objects.get()
    assert any("dirty" in message.subject for message in mail.outbox)

    # The next scheduled backup stores nothing as good: failed, with the reason, and mailed.
    mail.outbox.clear()
    with pytest.raises(DumpFailed, match=DIRTY):
        backup_create(database="fake", trigger=Trigger.SCHEDULE)
    newest = BackupRecord.objects.order_by("-id").first()
    assert (newest.status, newest.error_message, newest.storage_name) == ("failed", DIRTY, "")
    assert any(newest.name in message.subject for message in mail.outbox)

    # /health says so.
    response = client.get("/health")
    assert response.status_code == 503 and response.json()["databases"] is False

    # The admin index shows it red.
    admin = make_user("boss", is_superuser=True)
    client.force_login(admin)
    page = client.get("/admin/").content.decode()
    assert "fake is dirty after an interrupted restore" in page and 'class="backup-dirty"' in page


def test_a_completed_restore_clears_the_mark_and_backups_are_good_again(fake_database, fake_alias, settings):
    fail_after_touching(fake_alias, settings)
    with pytest.raises(RestoreFailed):
        backup_restore(backup=fake_database, trigger=Trigger.CLI)
    fake_alias()
    restore = backup_restore(backup=fake_database, trigger=Trigger.CLI)
    # A dirty database's content may not be kept, not even as a safety backup.
    assert restore.status == "success" and restore.safety_backup is None
    assert not DirtyDatabase.objects.exists()
    assert backup_create(database="fake", trigger=Trigger.SCHEDULE).status == "success"


def test_a_restore_that_failed_before_touching_says_nothing_was_restored(fake_database, fake_alias, settings):
    fail_after_touching(fake_alias, settings, "before_touching")
    with pytest.raises(RestoreFailed) as caught:
        backup_restore(backup=fake_database, trigger=Trigger.CLI)
    assert "Nothing was restored" in str(caught.value) and "partly restored" not in str(caught.value)
    assert not DirtyDatabase.objects.exists()
    assert backup_create(database="fake", trigger=Trigger.SCHEDULE).status == "success"


def test_only_a_superuser_clears_the_mark_and_it_is_audited(fake_database, fake_alias, settings, client):
    fail_after_touching(fake_alias, settings)
    with pytest.raises(RestoreFailed):
        backup_restore(backup=fake_database, trigger=Trigger.CLI)
    make_user("staffer", "view_dirtydatabase")
    with pytest.raises(CommandError, match="superuser"):
        call_command("clear_dirty_mark", "fake", "--user", "staffer")
    assert DirtyDatabase.objects.exists()
    assert AuditEntry.objects.filter(action="clear_dirty", outcome="refused", actor="staffer").exists()

    # In the admin: the staff member sees the row but not the action; a forged POST changes nothing.
    client.force_login(make_user("viewer2", "view_dirtydatabase"))
    url = "/admin/backups_app/dirtydatabase/"
    assert client.get(url).status_code == 200
    mark = DirtyDatabase.objects.get()
    client.post(url, {"action": "clear_dirty_mark", "_selected_action": [mark.pk]})
    assert DirtyDatabase.objects.exists()

    client.force_login(make_user("boss", is_superuser=True))
    client.post(url, {"action": "clear_dirty_mark", "_selected_action": [mark.pk]})
    assert not DirtyDatabase.objects.exists()
    assert AuditEntry.objects.filter(action="clear_dirty", outcome="success", actor="boss", source="admin").exists()
    with pytest.raises(CommandError, match="not marked dirty"):
        call_command("clear_dirty_mark", "fake", "--user", "boss")


def test_the_periodic_alert_check_mails_a_dirty_database_once_per_interval(fake_database, fake_alias, settings):
    from backups_app.alerts import dirty_alerts_check

    fail_after_touching(fake_alias, settings)
    with pytest.raises(RestoreFailed):
        backup_restore(backup=fake_database, trigger=Trigger.CLI)
    assert dirty_alerts_check() == []  # the failed restore itself mailed it just now
    AuditEntry.objects.filter(action="alert", detail="dirty database").delete()  # an interval later
    mail.outbox.clear()
    assert dirty_alerts_check() == ["fake"] and "fake is dirty" in mail.outbox[0].subject.replace("Database ", "")
    assert dirty_alerts_check() == []
