"""The admin's "Download decrypted" of an encrypted backup: real age files, real keys.

The body is the age-decrypted, still compressed dump, checked on the way: a flipped byte or a lost
tail cuts the response short (fewer bytes than Content-Length), never a complete-looking file.
Without the private key nothing is streamed; without the download permission, 403; audited under
its own action.
"""
from __future__ import annotations

import sqlite3

import pyrage
import pytest
import zstandard
from django.test import Client

from backups_app.encryption import generate_key_pair
from backups_app.models import AuditEntry, BackupRecord, Trigger
from backups_app.services.backup import backup_create
from secrets_app import default_manager
from secrets_app.providers.local import LocalProvider

from .admin_fixtures import *  # noqa: F401,F403
from .admin_fixtures import APP_ALIAS, store_backup

pytestmark = [pytest.mark.django_db(transaction=True)]

CHANGE_PAGE = "/admin/backups_app/backuprecord/{pk}/change/"


@pytest.fixture
def keys(settings):
    identity, recipient = generate_key_pair()
    secrets = {"BACKUP_ENCRYPTION_RECIPIENTS": recipient, "BACKUP_ENCRYPTION_IDENTITY": identity}
    saved = dict(vars(default_manager))
    default_manager.configure(provider=LocalProvider(environ=secrets), ttl=0)
    settings.BACKUP_ENCRYPTION = "age"
    yield {"identity": identity, "secrets": secrets}
    default_manager.__dict__.update(saved)


@pytest.fixture
def encrypted_backup(app_database, keys, backup_dir) -> BackupRecord:
    """A real encrypted zstd backup of `app`, big enough for several 1 MiB chunks."""
    connection = sqlite3.connect(app_database)
    connection.executemany("INSERT INTO customer (name) VALUES (?)",
                           [(f"{number:08d}-{number * 7919 % 1000003:x}-" + "é" * (number % 50),) for number in range(150_000)])
    connection.commit()
    connection.close()
    record = backup_create(database=APP_ALIAS, trigger=Trigger.CLI, compression="zstd")
    assert record.encrypted and record.size_bytes > 1024 * 1024
    return record


def decrypted_url(record: BackupRecord) -> str:
    return f"/admin/backups_app/backuprecord/{record.pk}/download/?decrypted=1"


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def forget_private_key(keys) -> None:
    keys["secrets"].pop("BACKUP_ENCRYPTION_IDENTITY")
    default_manager.invalidate()


def test_download_decrypted_streams_the_compressed_dump_and_is_audited(operator, encrypted_backup, keys, backup_dir):
    stored = (backup_dir / encrypted_backup.storage_name).read_bytes()
    expected = pyrage.decrypt(stored, [pyrage.x25519.Identity.from_str(keys["identity"])])

    page = logged_in(operator).get(CHANGE_PAGE.format(pk=encrypted_backup.pk)).content.decode()
    assert 'id="backup-download-decrypted"' in page and decrypted_url(encrypted_backup).replace("&", "&amp;") in page
    response = logged_in(operator).get(decrypted_url(encrypted_backup))

    assert response.status_code == 200 and response.streaming
    name = encrypted_backup.storage_name.rsplit("/", 1)[-1]
    assert name.endswith(".sql.zst.age")
    assert response["Content-Disposition"] == f'attachment; filename="{name[:-len(".age")]}"'
    assert response["Content-Length"] == str(len(expected))
    received = b"".join(response.streaming_content)
    assert received == expected
    plain = zstandard.ZstdDecompressor().decompressobj().decompress(received)
    assert "é".encode() in plain
    entry = AuditEntry.objects.get(action="download_decrypted")
    assert entry.outcome == "success" and entry.source == "admin" and entry.target == encrypted_backup.name
    assert not AuditEntry.objects.filter(action="download").exists()


@pytest.mark.parametrize("damage", ["flipped byte", "lost tail", "forged"])
def test_a_damaged_file_cuts_the_decrypted_download_short(operator, encrypted_backup, backup_dir, keys, damage):
    path = backup_dir / encrypted_backup.storage_name
    data = bytearray(path.read_bytes())
    if damage == "flipped byte":
        data[len(data) // 2] ^= 0x01
    elif damage == "lost tail":
        del data[-100_000:]
    else:
        # A valid age file for the same (public) recipient, put in place by someone else: only the
        # recorded SHA-256 tells it apart.
        recipient = pyrage.x25519.Recipient.from_str(keys["secrets"]["BACKUP_ENCRYPTION_RECIPIENTS"])
        data = bytearray(pyrage.encrypt(b"DROP DATABASE app;\n" * 150_000, [recipient]))
    path.write_bytes(bytes(data))

    response = logged_in(operator).get(decrypted_url(encrypted_backup))
    assert response.status_code == 200
    received = b""
    with pytest.raises(Exception, match="SHA-256|cannot be decrypted|instead of|than recorded"):
        for chunk in response.streaming_content:
            received += chunk
    assert len(received) < int(response["Content-Length"])
    assert AuditEntry.objects.filter(action="download_decrypted", outcome="failure").exists()


def test_without_the_private_key_nothing_is_streamed_and_the_button_is_hidden(operator, encrypted_backup, keys):
    forget_private_key(keys)
    client = logged_in(operator)
    page = client.get(CHANGE_PAGE.format(pk=encrypted_backup.pk)).content.decode()
    assert "backup-download-decrypted" not in page and 'id="backup-download"' in page

    response = client.get(decrypted_url(encrypted_backup), follow=True)
    assert not response.streaming
    shown = [str(message) for message in response.context["messages"]]
    assert len(shown) == 1 and "BACKUP_ENCRYPTION_IDENTITY is not configured" in shown[0]
    assert "\n" not in shown[0]
    entry = AuditEntry.objects.get(action="download_decrypted")
    assert entry.outcome == "refused"


def test_without_the_download_permission_it_is_403(viewer, encrypted_backup):
    client = logged_in(viewer)
    assert client.get(decrypted_url(encrypted_backup)).status_code == 403
    assert "backup-download-decrypted" not in client.get(CHANGE_PAGE.format(pk=encrypted_backup.pk)).content.decode()


def test_a_plain_backup_is_not_offered_decrypted(operator, app_database, keys):
    record = store_backup(database=APP_ALIAS)
    client = logged_in(operator)
    assert "backup-download-decrypted" not in client.get(CHANGE_PAGE.format(pk=record.pk)).content.decode()
    response = client.get(decrypted_url(record), follow=True)
    assert not response.streaming
    assert "is not encrypted" in str(list(response.context["messages"])[0])


@pytest.mark.parametrize("replacement", [b"", b"-- not an age file\n" * 10, b"age-encryption.org/v1\n" + b"x" * 70_000])
def test_a_stored_file_that_is_not_age_is_refused_before_any_byte(operator, encrypted_backup, backup_dir, replacement):
    # Refused while the header is read, before the response starts: a message, not a server error.
    (backup_dir / encrypted_backup.storage_name).write_bytes(replacement)
    response = logged_in(operator).get(decrypted_url(encrypted_backup), follow=True)
    assert response.status_code == 200 and not response.streaming
    shown = [str(message) for message in response.context["messages"]]
    assert len(shown) == 1 and encrypted_backup.name in shown[0]
    entry = AuditEntry.objects.get(action="download_decrypted")
    assert entry.outcome == "failure" and entry.target == encrypted_backup.name
