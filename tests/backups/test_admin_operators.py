"""The "Backup operators" group gives the console's buttons and nothing more."""
import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client

from .admin_fixtures import *  # noqa: F401,F403
from .admin_fixtures import APP_ALIAS, store_backup

pytestmark = pytest.mark.django_db


def test_group_member_can_download_and_restore_but_not_delete(capsys, app_database):
    user = User.objects.create_user("maria", password="x")
    call_command("ensure_backup_operators", "maria")
    assert "Added maria" in capsys.readouterr().out
    user.refresh_from_db()
    assert user.is_staff
    record = store_backup(database=APP_ALIAS)
    client = Client()
    client.force_login(user)
    assert client.get(f"/admin/backups_app/backuprecord/{record.pk}/download/").status_code == 200
    assert client.get(f"/admin/backups_app/backuprecord/{record.pk}/restore/").status_code == 200
    assert client.post(f"/admin/backups_app/backuprecord/{record.pk}/delete/", {"post": "yes"}).status_code == 403
    call_command("ensure_backup_operators", "--with-delete")
    assert client.get(f"/admin/backups_app/backuprecord/{record.pk}/delete/").status_code == 200


def test_unknown_user_is_an_error():
    with pytest.raises(CommandError, match="No such user: ghost"):
        call_command("ensure_backup_operators", "ghost")
