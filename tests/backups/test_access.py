"""Backups of `default` are for superusers; a backup restores only into its own alias or a listed one.

docs/FAULTS.md: acting-as-someone-else, control-database-rewind. Each face is tested: the admin,
the commands and the services here, the API in tests/api/test_api_privilege.py.
"""
from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from backups_app.access import check_restore_targets
from backups_app.exceptions import AccessRefused, RestoreTargetRefused
from backups_app.models import AuditEntry, BackupRecord, RestoreRecord, Trigger
from backups_app.services.backup import backup_create
from backups_app.services.restore import backup_restore, restore_queue
from backups_app.services.verify import backup_verify

from .admin_fixtures import *  # noqa: F401,F403
from .admin_fixtures import store_backup
from .conftest import snapshot
from .test_admin import download_url, logged_in, restore_url, verify_url

pytestmark = pytest.mark.django_db


@pytest.fixture
def ops_backup(db) -> BackupRecord:
    return store_backup(database="default")


# --- the admin --------------------------------------------------------------------------------------
def test_admin_hides_and_refuses_ops_backups_to_staff(operator, ops_backup):
    client = logged_in(operator)
    page = client.get(f"/admin/backups_app/backuprecord/{ops_backup.pk}/change/").content.decode()
    for url in (download_url(ops_backup), restore_url(ops_backup), verify_url(ops_backup)):
        assert url not in page
    assert client.get(download_url(ops_backup)).status_code == 403
    assert client.get(restore_url(ops_backup)).status_code == 403
    assert client.post(restore_url(ops_backup), {"confirm_database": "default"}).status_code == 403
    assert client.post(verify_url(ops_backup)).status_code == 403
    assert not RestoreRecord.objects.exists()
    refused = set(AuditEntry.objects.filter(outcome="refused").values_list("action", flat=True))
    assert refused == {"download", "restore", "verify"}


def test_admin_verify_action_refuses_ops_backups_to_staff(operator, ops_backup):
    response = logged_in(operator).post(
        "/admin/backups_app/backuprecord/",
        {"action": "verify_selected", "_selected_action": [ops_backup.pk]}, follow=True,
    )
    assert "Only a superuser" in response.content.decode()
    ops_backup.refresh_from_db()
    assert ops_backup.verified_at is None


def test_admin_gives_a_superuser_ops_backups_and_says_what_goes_back_in_time(superuser, ops_backup):
    client = logged_in(superuser)
    page = client.get(f"/admin/backups_app/backuprecord/{ops_backup.pk}/change/").content.decode()
    assert download_url(ops_backup) in page and restore_url(ops_backup) in page
    assert client.get(download_url(ops_backup)).status_code == 200
    confirmation = client.get(restore_url(ops_backup)).content.decode()
    assert "What goes back in time" in confirmation
    for what in ("users", "API tokens", "backup schedules", "audit log"):
        assert what in confirmation


def test_admin_product_restore_page_has_no_rewind_warning(operator, stored_backup):
    assert "What goes back in time" not in logged_in(operator).get(restore_url(stored_backup)).content.decode()


# --- services and commands -----------------------------------------------------------------------
def test_services_refuse_ops_backups_to_staff(operator, ops_backup):
    with pytest.raises(AccessRefused):
        backup_verify(backup=ops_backup, user=operator, source=AuditEntry.Source.CLI)
    with pytest.raises(AccessRefused):
        restore_queue(backup=ops_backup, trigger=Trigger.API, user=operator)
    with pytest.raises(AccessRefused):
        backup_restore(backup=ops_backup, trigger=Trigger.API, user=operator)
    assert list(RestoreRecord.objects.values_list("status", flat=True)) == [RestoreRecord.Status.REFUSED]


def test_commands_acting_as_staff_are_refused_ops_backups(operator, ops_backup):
    with pytest.raises(CommandError, match="Only a superuser"):
        call_command("restore_backup", ops_backup.name, "--noinput", "--as-user", operator.username)
    with pytest.raises(CommandError, match="Only a superuser"):
        call_command("verify_backup", ops_backup.name, "--as-user", operator.username, stdout=io.StringIO())
    with pytest.raises(CommandError, match="not an active staff user"):
        call_command("verify_backup", ops_backup.name, "--as-user", "nobody", stdout=io.StringIO())


def test_commands_acting_as_a_user_need_their_permission(viewer, stored_backup):
    with pytest.raises(CommandError, match="lacks the permission"):
        call_command("restore_backup", stored_backup.name, "--noinput", "--as-user", viewer.username)


# --- restore targets -----------------------------------------------------------------------------
def test_a_backup_restores_only_into_its_own_alias(settings, sqlite_alias, fake_alias):
    fake_alias()
    record = backup_create(database="fake", trigger=Trigger.CLI)
    before = snapshot(sqlite_alias)
    with pytest.raises(RestoreTargetRefused, match="BACKUP_RESTORE_TARGETS"):
        backup_restore(backup=record, database="app", trigger=Trigger.API)
    with pytest.raises(RestoreTargetRefused):
        restore_queue(backup=record, database="app", trigger=Trigger.API)
    assert snapshot(sqlite_alias) == before
    assert RestoreRecord.objects.get().status == RestoreRecord.Status.REFUSED
    assert BackupRecord.objects.count() == 1  # no safety backup either


def test_a_listed_target_is_allowed(settings, sqlite_alias, tmp_path):
    from .conftest import fill
    from tests.conftest import register_alias, unregister_alias

    staging = tmp_path / "staging.sqlite3"
    fill(staging)
    register_alias("app_staging", {"ENGINE": "django.db.backends.sqlite3", "NAME": str(staging)})
    try:
        settings.BACKUP_RESTORE_TARGETS = ["app:app_staging"]
        record = backup_create(database="app", trigger=Trigger.CLI)
        restore = backup_restore(backup=record, database="app_staging", trigger=Trigger.CLI, safety_backup=False)
        assert restore.status == RestoreRecord.Status.SUCCESS
    finally:
        unregister_alias("app_staging")


def test_default_is_never_a_cross_restore_target(settings, sqlite_alias):
    settings.BACKUP_RESTORE_TARGETS = ["app:default"]
    record = backup_create(database="app", trigger=Trigger.CLI)
    with pytest.raises(RestoreTargetRefused, match="never be restored into default"):
        backup_restore(backup=record, database="default", trigger=Trigger.CLI)


def test_system_check_names_bad_restore_targets(settings):
    settings.BACKUP_RESTORE_TARGETS = ["chat:chat_staging", "chat:default", "chat", ":x"]
    assert [error.id for error in check_restore_targets()] == [
        "backups_app.E102", "backups_app.E101", "backups_app.E101",
    ]
    settings.BACKUP_RESTORE_TARGETS = ["chat:chat_staging", "default:ops_copy"]
    assert check_restore_targets() == []
