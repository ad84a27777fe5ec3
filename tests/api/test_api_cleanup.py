"""POST /api/v1/backup/cleanup: the retention policy applied (or previewed) through the API."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.storage import storages

from backups_app.models import AuditEntry, BackupRecord

from .test_api_auth import assert_error

pytestmark = pytest.mark.django_db


@pytest.fixture
def old_backups(stored_backup):
    """Nine good backups, all older than BACKUP_RETENTION_DAYS: the default policy keeps the last 7."""
    return [stored_backup(f"backup_202601{day:02d}_020000.sql.gz", database="default", age=timedelta(days=100 - day)) for day in range(1, 10)]


def test_dry_run_reports_and_deletes_nothing(api, old_backups):
    response = api.post("/api/v1/backup/cleanup", {"database": "default", "dry_run": True}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["dry_run"] is True and body["ok"] is True and body["database"] == "default"
    assert set(body["deleted"]) == {old_backups[0].name, old_backups[1].name}
    assert BackupRecord.objects.count() == 9
    assert all(storages["backups"].exists(backup.storage_name) for backup in old_backups)


def test_cleanup_deletes_what_the_policy_drops(api, old_backups):
    response = api.post("/api/v1/backup/cleanup", {"database": "default"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body["deleted"]) == {old_backups[0].name, old_backups[1].name}
    assert body["databases"][0]["database"] == "default"
    assert len(body["databases"][0]["kept"]) == 7
    assert BackupRecord.objects.count() == 7
    assert not storages["backups"].exists(old_backups[0].storage_name)
    assert AuditEntry.objects.filter(action="cleanup", source="api", outcome="success").count() == 2


def test_cleanup_of_every_database_is_the_default(api, old_backups):
    body = api.post("/api/v1/backup/cleanup", {"dry_run": True}, format="json").json()
    assert body["database"] is None and len(body["deleted"]) == 2


@pytest.mark.parametrize("body", [{"database": "nowhere"}, {"dry_run": "perhaps"}, {"database": ["default"]}])
def test_cleanup_refuses_bad_input(api, old_backups, body):
    assert_error(api.post("/api/v1/backup/cleanup", body, format="json"), 400, "invalid")
    assert BackupRecord.objects.count() == 9
