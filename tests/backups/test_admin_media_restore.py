"""The admin restores a media backup like a database backup: its files back, none deleted."""
from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client

from backups_app.models import RestoreRecord, Trigger
from backups_app.services.backup import backup_create

from .admin_fixtures import *  # noqa: F401,F403

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def media_folder(settings, tmp_path) -> Path:
    root = tmp_path / "media"
    (root / "attachments").mkdir(parents=True)
    (root / "attachments" / "contract.pdf").write_bytes(b"%PDF-1.7 the signed one\n")
    storages = {name: dict(config) for name, config in settings.STORAGES.items()}
    storages["default"] = {**storages["default"], "OPTIONS": {"location": root}}
    settings.STORAGES = storages
    settings.MEDIA_ROOT = root
    return root


def restore_url(record) -> str:
    return f"/admin/backups_app/backuprecord/{record.pk}/restore/"


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_media_backup_is_restored_from_the_admin(operator, media_folder, backup_dir,
                                                   django_capture_on_commit_callbacks):
    record = backup_create(database="media", trigger=Trigger.CLI)
    (media_folder / "attachments" / "contract.pdf").write_bytes(b"overwritten by mistake")
    (media_folder / "attachments" / "new upload.png").write_bytes(b"\x89PNG since the backup")
    client = logged_in(operator)

    page = client.get(restore_url(record))
    assert page.status_code == 200
    assert str(media_folder) in page.content.decode() and "Files the backup does not hold are kept" in page.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(restore_url(record), {"confirm_database": "media"})
    restore = RestoreRecord.objects.get(safety_backup__isnull=False)
    assert response.status_code == 302
    assert restore.status == RestoreRecord.Status.SUCCESS, restore.error_message
    assert restore.database == "media" and restore.user == operator
    assert (media_folder / "attachments" / "contract.pdf").read_bytes() == b"%PDF-1.7 the signed one\n"
    assert (media_folder / "attachments" / "new upload.png").exists()  # never deleted from the admin


def test_without_the_restore_permission_a_media_restore_is_403(viewer, media_folder, backup_dir):
    record = backup_create(database="media", trigger=Trigger.CLI)
    client = logged_in(viewer)
    assert client.get(restore_url(record)).status_code == 403
    assert client.post(restore_url(record), {"confirm_database": "media"}).status_code == 403
    assert not RestoreRecord.objects.exists()
