"""API downloads from a backup folder someone else can write into (docs/FAULTS.md)."""
from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.storage import storages

from backups_app.models import BackupRecord

pytestmark = pytest.mark.django_db


def test_a_backup_file_replaced_by_a_symlink_is_not_downloaded(api, stored_backup, tmp_path):
    backup = stored_backup("app-1.sql.gz", database="app", content=b"b" * (3 << 20))
    secret = tmp_path / "secret_key"
    secret.write_bytes(b"s" * (3 << 20))  # larger than a chunk: the old code streamed its start
    stored = Path(storages["backups"].path(backup.storage_name))
    stored.unlink()
    stored.symlink_to(secret)

    response = api.get(f"/api/v1/backup/{backup.name}/download")

    assert response.status_code == 409
    assert b"sss" not in b"".join(response.streaming_content if response.streaming else [response.content])


def test_a_backup_without_a_recorded_checksum_is_not_downloaded(api, stored_backup):
    backup = stored_backup("app-2.sql.gz", database="app")
    BackupRecord.objects.filter(pk=backup.pk).update(sha256="")
    response = api.get(f"/api/v1/backup/{backup.name}/download")
    assert response.status_code == 409
    assert not response.streaming
