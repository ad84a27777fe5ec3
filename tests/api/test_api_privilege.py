"""The API's face of the privilege rules (backups_app/access.py; docs/FAULTS.md: acting-as-someone-else)."""
from __future__ import annotations

import pytest

from backups_app.models import AuditEntry, RestoreRecord
from backups_app.services.tokens import api_token_create

from tests.conftest import register_alias, unregister_alias

from .test_api_auth import assert_error

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser_api(api_client, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="unused-password-1234")
    raw = api_token_create(user=root, source="cli", created_by=root).raw_token
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return api_client


def test_staff_token_cannot_download_or_restore_an_ops_backup(api, stored_backup):
    backup = stored_backup(database="default")
    assert_error(api.get(f"/api/v1/backup/{backup.name}/download"), 403, "superuser_required")
    assert_error(api.post("/api/v1/backup/restore", {"backup_name": backup.name}, format="json"), 403,
                 "superuser_required")
    assert not RestoreRecord.objects.exists()
    assert set(AuditEntry.objects.filter(source="api", outcome="refused").values_list("action", flat=True)) == {
        "download", "restore",
    }


def test_superuser_token_downloads_an_ops_backup(superuser_api, stored_backup):
    backup = stored_backup(database="default")
    response = superuser_api.get(f"/api/v1/backup/{backup.name}/download")
    assert response.status_code == 200
    b"".join(response.streaming_content)


@pytest.fixture
def staging_alias(settings, tmp_path):
    settings_dict = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "staging.sqlite3")}
    register_alias("app_staging", settings_dict)
    settings.DATABASES = {**settings.DATABASES, "app_staging": settings_dict}
    yield "app_staging"
    unregister_alias("app_staging")


def test_restore_into_another_alias_is_refused_unless_listed(api, stored_backup, settings, staging_alias):
    backup = stored_backup()  # of `app`
    refused = api.post("/api/v1/backup/restore", {"backup_name": backup.name, "database": "app_staging"}, format="json")
    assert_error(refused, 403, "restore_target_not_allowed")
    into_ops = api.post("/api/v1/backup/restore", {"backup_name": backup.name, "database": "default"}, format="json")
    assert_error(into_ops, 403, "restore_target_not_allowed")
    settings.BACKUP_RESTORE_TARGETS = ["app:app_staging", "app:default"]
    into_ops = api.post("/api/v1/backup/restore", {"backup_name": backup.name, "database": "default"}, format="json")
    assert_error(into_ops, 403, "restore_target_not_allowed")  # listed or not
    assert not RestoreRecord.objects.exists()
    allowed = api.post("/api/v1/backup/restore", {"backup_name": backup.name, "database": "app_staging"}, format="json")
    assert allowed.status_code == 202, allowed.content
