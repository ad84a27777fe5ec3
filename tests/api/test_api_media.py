"""Media backups through the REST API: create (`media`, `storage`, `full`) and restore (`path`,
`delete_extraneous`), with the same permission checks as database backups."""
from __future__ import annotations

from pathlib import Path

import pytest

from backups_app.models import BackupRecord, RestoreRecord

from .test_api_auth import assert_error

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")]


@pytest.fixture
def media_root(settings, tmp_path) -> Path:
    root = tmp_path / "media"
    (root / "attachments").mkdir(parents=True)
    (root / "attachments" / "a.bin").write_bytes(b"a")
    (root / "notes ✓.txt").write_text("notes")
    storages = {name: dict(config) for name, config in settings.STORAGES.items()}
    storages["default"] = {**storages["default"], "OPTIONS": {"location": root}}
    settings.STORAGES = storages
    settings.MEDIA_ROOT = root
    return root


def create(api, payload: dict, capture) -> BackupRecord:
    with capture(execute=True):
        response = api.post("/api/v1/backup/create", payload, format="json")
    assert response.status_code == 202, response.content
    return BackupRecord.objects.get(pk=response.json()["id"])


def test_media_backups_full_then_incremental_then_forced_full(api, media_root, django_capture_on_commit_callbacks):
    first = create(api, {"media": True}, django_capture_on_commit_callbacks)
    assert first.status == BackupRecord.Status.SUCCESS, first.error_message
    assert first.database == "media" and first.media_mode == "full" and first.trigger == "api"
    (media_root / "attachments" / "b.bin").write_bytes(b"b")
    second = create(api, {"media": True, "storage": "default"}, django_capture_on_commit_callbacks)
    assert second.media_mode == "incremental" and second.parent == first
    third = create(api, {"media": True, "full": True}, django_capture_on_commit_callbacks)
    assert third.media_mode == "full" and third.parent is None

    detail = api.get(f"/api/v1/backup/{second.name}").json()
    assert detail["media_mode"] == "incremental" and detail["parent_name"] == first.name


def test_media_options_are_checked(api, media_root):
    assert_error(api.post("/api/v1/backup/create", {"media": True, "storage": "backups"}, format="json"),
                 400, "invalid")
    assert_error(api.post("/api/v1/backup/create", {"media": True, "storage": "nope"}, format="json"), 400, "invalid")
    assert_error(api.post("/api/v1/backup/create", {"full": True}, format="json"), 400, "invalid")
    assert_error(api.post("/api/v1/backup/create", {"storage": "default"}, format="json"), 400, "invalid")
    assert not BackupRecord.objects.exists()


def test_restore_a_path_of_an_incremental_and_delete_extraneous(api, media_root, django_capture_on_commit_callbacks):
    create(api, {"media": True}, django_capture_on_commit_callbacks)
    (media_root / "attachments" / "b.bin").write_bytes(b"b")
    incremental = create(api, {"media": True}, django_capture_on_commit_callbacks)
    (media_root / "attachments" / "a.bin").write_bytes(b"changed")
    (media_root / "attachments" / "stray.bin").write_bytes(b"stray")
    (media_root / "notes ✓.txt").write_text("changed outside the path")

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/v1/backup/restore", {
            "backup_name": incremental.name, "path": "attachments", "delete_extraneous": True,
        }, format="json")
    assert response.status_code == 202, response.content
    restore = RestoreRecord.objects.get(pk=response.json()["id"])
    assert restore.status == RestoreRecord.Status.SUCCESS, restore.error_message
    assert restore.media_path == "attachments" and restore.delete_extraneous
    assert (media_root / "attachments" / "a.bin").read_bytes() == b"a"
    assert (media_root / "attachments" / "b.bin").read_bytes() == b"b"
    assert not (media_root / "attachments" / "stray.bin").exists()
    assert (media_root / "notes ✓.txt").read_text() == "changed outside the path"


@pytest.mark.parametrize("path", ["../outside", "/etc", "a/../../b", "C:\\windows", "bad\x00name"])
def test_a_restore_path_outside_the_media_folder_is_400(api, media_root, path, django_capture_on_commit_callbacks):
    backup = create(api, {"media": True}, django_capture_on_commit_callbacks)
    response = api.post("/api/v1/backup/restore", {"backup_name": backup.name, "path": path}, format="json")
    assert_error(response, 400, "invalid")
    assert not RestoreRecord.objects.exists()


def test_media_restore_options_are_refused_for_a_database_backup(api, stored_backup):
    backup = stored_backup()
    response = api.post("/api/v1/backup/restore", {"backup_name": backup.name, "path": "x"}, format="json")
    assert response.status_code == 409 and "media backups only" in response.json()["detail"]


def test_permissions_are_those_of_database_backups(api_client, make_user, make_token, media_root,
                                                    django_capture_on_commit_callbacks):
    viewer = make_token(make_user(permissions=("view_backuprecord",)))
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {viewer}")
    assert api_client.post("/api/v1/backup/create", {"media": True}, format="json").status_code == 403

    creator = make_token(make_user(permissions=("view_backuprecord", "create_backup")))
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {creator}")
    backup = create(api_client, {"media": True}, django_capture_on_commit_callbacks)
    response = api_client.post("/api/v1/backup/restore", {"backup_name": backup.name, "path": "attachments"},
                               format="json")
    assert response.status_code == 403
    assert not RestoreRecord.objects.exists()
