"""GET /api/v1/backup/<name>/download?decrypted=true: the age-decrypted (still compressed) file.

Real age files (pyrage) and keys served by get_secret. Checked against the recorded SHA-256 and
authenticated by age on the way; a tampered file ends the stream in an error. Without the private
key: 409 `encryption_key_missing`, nothing streamed. Audited as `download_decrypted`.
"""
from __future__ import annotations

import gzip
import os

import pyrage
import pytest
from django.core.files.storage import storages

from backups_app.encryption import generate_key_pair, recipient_fingerprint
from backups_app.models import AuditEntry
from secrets_app import default_manager
from secrets_app.providers.local import LocalProvider

from .test_api_auth import assert_error

pytestmark = pytest.mark.django_db

NAME = "app-20261129-010000.sqlite3.gz.age"


@pytest.fixture
def keys(settings):
    identity, recipient = generate_key_pair()
    secrets = {"BACKUP_ENCRYPTION_RECIPIENTS": recipient, "BACKUP_ENCRYPTION_IDENTITY": identity}
    saved = dict(vars(default_manager))
    default_manager.configure(provider=LocalProvider(environ=secrets), ttl=0)
    settings.BACKUP_ENCRYPTION = "age"
    yield {"identity": identity, "recipient": recipient, "secrets": secrets}
    default_manager.__dict__.update(saved)


@pytest.fixture
def encrypted(stored_backup, keys):
    """An encrypted backup: (its record, the compressed bytes inside it)."""
    compressed = gzip.compress(os.urandom(1 << 20) + b"-- Dump completed\n", compresslevel=1) * 3
    content = pyrage.encrypt(compressed, [pyrage.x25519.Recipient.from_str(keys["recipient"])])
    record = stored_backup(NAME, content=content)
    record.encrypted, record.encryption_recipients = True, [recipient_fingerprint(keys["recipient"])]
    record.save()
    return record, compressed


def download(api, name: str, query: str = "decrypted=true"):
    return api.get(f"/api/v1/backup/{name}/download?{query}", HTTP_ACCEPT="application/octet-stream")


def test_decrypted_download_streams_the_compressed_bytes_and_is_audited(api, encrypted):
    record, compressed = encrypted
    response = download(api, record.name)
    assert response.status_code == 200 and response.streaming
    assert response["Content-Disposition"] == 'attachment; filename="app-20261129-010000.sqlite3.gz"'
    assert response["Content-Length"] == str(len(compressed))
    assert "no-store" in response["Cache-Control"]
    assert b"".join(response.streaming_content) == compressed
    entry = AuditEntry.objects.get(action="download_decrypted")
    assert entry.outcome == "success" and entry.source == "api" and entry.target == record.name
    # The stored file's own download is unchanged: the ciphertext, as recorded.
    stored = download(api, record.name, query="decrypted=false")
    assert b"".join(stored.streaming_content).startswith(b"age-encryption.org/v1")


def test_a_tampered_file_ends_the_decrypted_stream_in_an_error(api, encrypted):
    record, compressed = encrypted
    with storages["backups"].open(record.storage_name, "r+b") as stored:
        stored.seek(record.size_bytes // 2)
        byte = stored.read(1)
        stored.seek(record.size_bytes // 2)
        stored.write(bytes([byte[0] ^ 0x01]))
    response = download(api, record.name)
    assert response.status_code == 200
    received = b""
    with pytest.raises(Exception, match="SHA-256|cannot be decrypted"):
        for chunk in response.streaming_content:
            received += chunk
    assert len(received) < len(compressed)
    assert AuditEntry.objects.filter(action="download_decrypted", outcome="failure").exists()


def test_without_the_private_key_it_is_409_in_one_line(api, encrypted, keys):
    record, _compressed = encrypted
    keys["secrets"].pop("BACKUP_ENCRYPTION_IDENTITY")
    default_manager.invalidate()
    body = assert_error(download(api, record.name), 409, "encryption_key_missing")
    assert "BACKUP_ENCRYPTION_IDENTITY is not configured" in body["detail"] and "\n" not in body["detail"]
    entry = AuditEntry.objects.get(action="download_decrypted")
    assert entry.outcome == "failure" and "409" in entry.detail


def test_without_the_download_permission_it_is_403(api_client, make_user, make_token, encrypted):
    record, _compressed = encrypted
    token = make_token(user=make_user(permissions=("view_backuprecord", "restore_backup")))
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert_error(download(api_client, record.name), 403)
    assert AuditEntry.objects.get(action="download_decrypted").outcome == "refused"


def test_a_plain_backup_or_a_bad_flag_is_refused(api, stored_backup, keys):
    plain = stored_backup("app-20261129-020000.sqlite3.gz")
    assert_error(download(api, plain.name), 409, "restore_refused")
    assert_error(download(api, plain.name, query="decrypted=maybe"), 400, "invalid")
