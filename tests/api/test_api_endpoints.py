"""The endpoints' happy paths and their 400/404/409 answers."""
from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.core.files.storage import storages

from backups_app.models import AuditEntry, BackupRecord, RestoreRecord

from .test_api_auth import assert_error

pytestmark = pytest.mark.django_db


# --- list and detail ---------------------------------------------------------------------------

def test_list_is_newest_first_with_the_documented_fields(api, stored_backup):
    older = stored_backup("default-1.sqlite3.gz", age=timedelta(days=1))
    newer = stored_backup("default-2.sqlite3.gz")
    body = api.get("/api/v1/backup/list").json()
    assert body["count"] == 2
    assert [item["name"] for item in body["results"]] == [newer.name, older.name]
    item = body["results"][0]
    for field in ("database", "status", "size_bytes", "raw_size_bytes", "sha256", "created_at",
                  "finished_at", "offsite_status", "verification_status"):
        assert field in item
    assert item["sha256"] == newer.sha256 and "storage_name" not in item


def test_list_filters_and_paginates(settings, api, stored_backup):
    for number in range(5):
        stored_backup(f"default-{number}.gz", database="default", age=timedelta(minutes=number))
    stored_backup("chat-1.gz", database="chat")
    stored_backup("default-failed.gz", status=BackupRecord.Status.FAILED, write_file=False)

    assert api.get("/api/v1/backup/list", {"database": "chat"}).json()["count"] == 1
    failed = api.get("/api/v1/backup/list", {"status": "failed"}).json()
    assert [item["name"] for item in failed["results"]] == ["default-failed.gz"]

    page = api.get("/api/v1/backup/list", {"database": "default", "status": "success", "page_size": 2}).json()
    assert page["count"] == 5 and len(page["results"]) == 2 and page["next"]
    settings.BACKUP_API_PAGE_SIZE = 4
    assert len(api.get("/api/v1/backup/list").json()["results"]) == 4


def test_list_bad_filters_are_400_and_a_page_past_the_end_is_404(api, stored_backup):
    stored_backup()
    assert_error(api.get("/api/v1/backup/list", {"status": "sideways"}), 400, "invalid")
    assert_error(api.get("/api/v1/backup/list", {"page": 99}), 404, "not_found")


def test_detail_and_unknown_name(api, stored_backup):
    backup = stored_backup()
    body = api.get(f"/api/v1/backup/{backup.name}").json()
    assert body["name"] == backup.name and body["id"] == backup.pk
    assert_error(api.get("/api/v1/backup/default-never.gz"), 404, "not_found")


# --- download ----------------------------------------------------------------------------------

def test_download_streams_the_file_and_is_audited(api, stored_backup):
    content = bytes(range(256)) * 20_000  # 5 MB: several chunks
    backup = stored_backup(content=content)
    response = api.get(f"/api/v1/backup/{backup.name}/download", HTTP_ACCEPT="application/octet-stream")
    assert response.status_code == 200 and response.streaming
    assert "no-store" in response["Cache-Control"]
    assert response["Content-Disposition"] == f'attachment; filename="{backup.name}"'
    assert response["Content-Length"] == str(len(content))
    assert response["X-Backup-SHA256"] == hashlib.sha256(content).hexdigest()
    assert b"".join(response.streaming_content) == content
    entry = AuditEntry.objects.get(action="download")
    assert entry.source == "api" and entry.target == backup.name and entry.outcome == "success"


def test_download_of_a_corrupted_file_is_cut_short(api, stored_backup):
    # docs/FAULTS.md corrupted-file: one flipped byte; the client must not receive a
    # complete-looking file.
    content = b"x" * (3 * 1024 * 1024)
    backup = stored_backup(content=content)
    with storages["backups"].open(backup.storage_name, "r+b") as stored:
        stored.seek(10)
        stored.write(b"y")
    response = api.get(f"/api/v1/backup/{backup.name}/download")
    received = b""
    with pytest.raises(Exception, match="SHA-256"):
        for chunk in response.streaming_content:
            received += chunk
    assert len(received) < len(content)
    assert AuditEntry.objects.filter(action="download", outcome="failure").exists()


def test_download_of_a_failed_backup_is_409_and_of_a_missing_file_404(api, stored_backup):
    failed = stored_backup("default-failed.gz", status=BackupRecord.Status.FAILED)
    assert_error(api.get(f"/api/v1/backup/{failed.name}/download"), 409, "backup_not_successful")
    interrupted = stored_backup("default-interrupted.gz", status=BackupRecord.Status.INTERRUPTED)
    assert_error(api.get(f"/api/v1/backup/{interrupted.name}/download"), 409)
    gone = stored_backup("default-gone.gz")
    storages["backups"].delete(gone.storage_name)
    assert_error(api.get(f"/api/v1/backup/{gone.name}/download"), 404, "not_found")


# --- create ------------------------------------------------------------------------------------

def test_create_answers_202_with_name_status_and_id(api):
    response = api.post("/api/v1/backup/create", {"database": "default"}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert set(body) == {"backup_name", "status", "id"}
    record = BackupRecord.objects.get(pk=body["id"])
    assert record.name == body["backup_name"] and record.trigger == "api" and record.database == "default"
    assert AuditEntry.objects.filter(action="create", source="api", outcome="started").exists()


def test_create_defaults_to_the_default_database(api):
    response = api.post("/api/v1/backup/create", format="json")
    assert response.status_code == 202, response.content
    assert BackupRecord.objects.get(pk=response.json()["id"]).database == "default"


@pytest.mark.parametrize(
    "body",
    [{"database": "nope"}, {"database": "../default"}, {"compression": "rar"}, {"database": 42}, ["default"]],
)
def test_create_refuses_bad_input(api, body):
    body_json = assert_error(api.post("/api/v1/backup/create", body, format="json"), 400, "invalid")
    assert body_json["fields"]
    assert not BackupRecord.objects.exists()


def test_malformed_json_is_400_and_a_form_body_is_415(api):
    response = api.post("/api/v1/backup/create", data="{not json", content_type="application/json")
    assert_error(response, 400, "parse_error")
    response = api.post("/api/v1/backup/create", data="database=default", content_type="application/x-www-form-urlencoded")
    assert_error(response, 415, "unsupported_media_type")


# --- restore -----------------------------------------------------------------------------------

def test_restore_answers_202_and_defaults_to_the_backups_database(api, stored_backup):
    backup = stored_backup()
    response = api.post("/api/v1/backup/restore", {"backup_name": backup.name}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    restore = RestoreRecord.objects.get(pk=body["id"])
    assert restore.backup == backup and restore.database == "app" and restore.trigger == "api"
    assert body["backup_name"] == backup.name and body["database"] == "app"


def test_restore_refusals(api, stored_backup):
    good = stored_backup()
    failed = stored_backup("default-failed.gz", status=BackupRecord.Status.FAILED)
    assert_error(api.post("/api/v1/backup/restore", {"backup_name": failed.name}, format="json"), 409)
    assert_error(api.post("/api/v1/backup/restore", {"backup_name": "default-none.gz"}, format="json"), 404)
    assert_error(
        api.post("/api/v1/backup/restore", {"backup_name": good.name, "database": "elsewhere"}, format="json"),
        400, "invalid",
    )
    assert_error(api.post("/api/v1/backup/restore", {}, format="json"), 400, "invalid")
    assert not RestoreRecord.objects.exists()


def test_any_accept_header_gets_json(api, stored_backup):
    stored_backup()
    response = api.get("/api/v1/backup/list", HTTP_ACCEPT="text/html")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    error = api.get("/api/v1/backup/default-none.gz/download", HTTP_ACCEPT="application/octet-stream")
    assert_error(error, 404, "not_found")
