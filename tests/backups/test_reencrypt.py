"""Key rotation (`reencrypt_backups`): real backups, real age keys, real restores (SQLite files).

A backup re-encrypted to a new key restores with the new private key only; a plain backup becomes
encrypted under a name with `.age`; a damaged file or a failure after the new file was put in place
leaves the file, the manifest and the record exactly as they were; the manifest stays signed, so
`sync_backups` keeps trusting the backup.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest
from django.core.management import CommandError, call_command

from backups_app.encryption import generate_key_pair, recipient_fingerprint
from backups_app.exceptions import BackupError, RestoreRefused
from backups_app.models import AuditEntry, BackupRecord, Trigger
from backups_app.services.backup import backup_create
from backups_app.services.sync import backups_sync
from backups_app.services.restore import backup_restore
from backups_app.services.reencrypt import backup_reencrypt, reencrypt_recipients
from secrets_app import default_manager
from secrets_app.providers.local import LocalProvider
from tests.backups.conftest import stored_files

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def keys(settings):
    """Encryption on with an "old" key pair; a "new" pair to rotate to. Keys served by get_secret."""
    old_identity, old_recipient = generate_key_pair()
    new_identity, new_recipient = generate_key_pair()
    secrets = {"BACKUP_ENCRYPTION_RECIPIENTS": old_recipient, "BACKUP_ENCRYPTION_IDENTITY": old_identity}
    saved = dict(vars(default_manager))
    default_manager.configure(provider=LocalProvider(environ=secrets), ttl=0)
    settings.BACKUP_ENCRYPTION = "age"
    yield {"old": (old_identity, old_recipient), "new": (new_identity, new_recipient), "secrets": secrets}
    default_manager.__dict__.update(saved)


def book_count(path) -> int:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT count(*) FROM book").fetchone()[0]


def delete_books(path) -> None:
    connection = sqlite3.connect(path)
    connection.execute("DELETE FROM book")
    connection.commit()
    connection.close()


def use_identity(keys, identity: str) -> None:
    keys["secrets"]["BACKUP_ENCRYPTION_IDENTITY"] = identity
    default_manager.invalidate()


def folder_state(folder) -> dict[str, str]:
    """Every file in the backup folder (hidden ones too) with the SHA-256 of its bytes."""
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in stored_files(folder)}


def record_state(record: BackupRecord) -> dict:
    record = BackupRecord.objects.get(pk=record.pk)
    return {field: getattr(record, field) for field in (
        "name", "storage_name", "sha256", "size_bytes", "encrypted", "encryption_recipients", "status")}


def test_a_backup_re_encrypted_to_a_new_key_restores_with_the_new_key_only(sqlite_alias, keys, backup_dir):
    record = backup_create(database="app", trigger=Trigger.CLI, compression="zstd")
    old_sha256 = record.sha256

    updated = backup_reencrypt(backup=record, recipients=[keys["new"][1]], source="cli")

    assert updated.name == record.name and updated.storage_name == record.name
    assert updated.sha256 != old_sha256 and updated.encrypted
    assert updated.encryption_recipients == [recipient_fingerprint(keys["new"][1])]
    assert hashlib.sha256((backup_dir / updated.name).read_bytes()).hexdigest() == updated.sha256
    assert stored_files(backup_dir) == sorted([updated.name, f"{updated.name}.json"])
    manifest = json.loads((backup_dir / f"{updated.name}.json").read_text())
    assert manifest["sha256"] == updated.sha256 and manifest["encryption_recipients"] == updated.encryption_recipients
    entry = AuditEntry.objects.get(action="reencrypt")
    assert entry.outcome == "success" and entry.target == record.name

    delete_books(sqlite_alias)
    with pytest.raises(RestoreRefused):  # the retired key no longer opens it
        backup_restore(backup=updated, trigger=Trigger.CLI)
    assert book_count(sqlite_alias) == 0
    use_identity(keys, keys["new"][0])
    backup_restore(backup=updated, trigger=Trigger.CLI)
    assert book_count(sqlite_alias) == 3


def test_a_plain_backup_becomes_encrypted_and_sync_still_trusts_its_manifest(sqlite_alias, keys, settings, backup_dir):
    settings.BACKUP_ENCRYPTION = ""
    record = backup_create(database="app", trigger=Trigger.CLI, compression="gzip")
    assert not record.encrypted and not record.name.endswith(".age")

    updated = backup_reencrypt(backup=record, recipients=reencrypt_recipients("@config"), source="cli")

    assert updated.name == updated.storage_name == record.name + ".age"
    assert updated.encrypted and updated.encryption_recipients == [recipient_fingerprint(keys["old"][1])]
    assert stored_files(backup_dir) == sorted([updated.name, f"{updated.name}.json"])
    assert (backup_dir / updated.name).read_bytes().startswith(b"age-encryption.org/v1")

    # The ops database is lost: the signed manifest rebuilds a good, encrypted record.
    BackupRecord.objects.all().delete()
    assert backups_sync() == {"created": 1, "updated": 0, "skipped": 0, "untrusted": 0}
    rebuilt = BackupRecord.objects.get()
    assert (rebuilt.name, rebuilt.sha256, rebuilt.encrypted) == (updated.name, updated.sha256, True)
    delete_books(sqlite_alias)
    backup_restore(backup=rebuilt, trigger=Trigger.CLI)
    assert book_count(sqlite_alias) == 3


@pytest.mark.parametrize("encrypted", [True, False])
def test_a_damaged_stored_file_leaves_everything_as_it_was(sqlite_alias, keys, settings, backup_dir, encrypted):
    settings.BACKUP_ENCRYPTION = "age" if encrypted else ""
    record = backup_create(database="app", trigger=Trigger.CLI, compression="zstd")
    path = backup_dir / record.name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    files, fields = folder_state(backup_dir), record_state(record)

    with pytest.raises(BackupError):
        backup_reencrypt(backup=record, recipients=[keys["new"][1]], source="cli")

    assert folder_state(backup_dir) == files and record_state(record) == fields
    assert AuditEntry.objects.get(action="reencrypt").outcome == "failure"


def test_a_failure_after_the_new_file_is_in_place_puts_the_old_one_back(sqlite_alias, keys, backup_dir):
    record = backup_create(database="app", trigger=Trigger.CLI, compression="zstd")
    files = folder_state(backup_dir)
    # Another process changed the record meanwhile: the re-encrypted file must not be kept.
    BackupRecord.objects.filter(pk=record.pk).update(storage_name="moved-elsewhere")

    with pytest.raises(BackupError, match="changed or was deleted"):
        backup_reencrypt(backup=record, recipients=[keys["new"][1]], source="cli")

    assert folder_state(backup_dir) == files
    BackupRecord.objects.filter(pk=record.pk).update(storage_name=record.name)
    delete_books(sqlite_alias)
    backup_restore(backup=BackupRecord.objects.get(pk=record.pk), trigger=Trigger.CLI)
    assert book_count(sqlite_alias) == 3


def test_the_command_dry_run_changes_nothing_and_the_real_run_rotates(sqlite_alias, keys, backup_dir, capsys):
    record = backup_create(database="app", trigger=Trigger.CLI, compression="zstd")
    files, fields = folder_state(backup_dir), record_state(record)

    call_command("reencrypt_backups", "--to-recipients", keys["new"][1], "--database", "app", "--dry-run")
    assert f"{record.name}: would be re-encrypted" in capsys.readouterr().out
    assert folder_state(backup_dir) == files and record_state(record) == fields
    assert not AuditEntry.objects.filter(action="reencrypt").exists()

    call_command("reencrypt_backups", "--to-recipients", keys["new"][1], "--name", record.name)
    assert "re-encrypted as" in capsys.readouterr().out
    assert record_state(record)["encryption_recipients"] == [recipient_fingerprint(keys["new"][1])]
    # Already encrypted to exactly these keys: a second run has nothing to do.
    call_command("reencrypt_backups", "--to-recipients", keys["new"][1], "--database", "app")
    assert "Nothing to re-encrypt." in capsys.readouterr().out


def test_the_command_refuses_a_bad_key_in_one_line(keys):
    with pytest.raises(CommandError, match="not an age public key"):
        call_command("reencrypt_backups", "--to-recipients", "AGE-SECRET-KEY-1OOPS")


def test_the_offsite_copy_is_replaced_by_the_re_encrypted_file(settings, keys, backup_dir):
    """Against moto's S3 server: the plain offsite copy is gone once the encrypted one is verified."""
    from datetime import UTC, datetime

    from backups_app.services.offsite import offsite_upload

    from .moto_server import MotoServer, offsite_settings
    from .retention_helpers import make_backup

    server = MotoServer().start()
    try:
        bucket = offsite_settings(settings, server, prefix="backups")
        backup = offsite_upload(backup=make_backup(created_at=datetime(2026, 6, 15, tzinfo=UTC),
                                                   payload=b"INSERT 1;\n-- Dump completed\n"))
        assert backup.offsite_status == BackupRecord.OffsiteStatus.UPLOADED
        old_name = backup.offsite_name

        updated = backup_reencrypt(backup=backup, recipients=[keys["new"][1]], source="cli")

        assert updated.offsite_status == BackupRecord.OffsiteStatus.UPLOADED
        assert updated.offsite_name == updated.name == old_name + ".age"
        remote = server.client().get_object(Bucket=bucket, Key=f"backups/{updated.offsite_name}")["Body"].read()
        assert hashlib.sha256(remote).hexdigest() == updated.sha256
        listed = server.client().list_objects_v2(Bucket=bucket, Prefix="backups/").get("Contents", [])
        assert sorted(item["Key"] for item in listed) == [f"backups/{updated.name}", f"backups/{updated.name}.json"]
    finally:
        server.stop()


def test_without_the_old_private_key_nothing_changes(sqlite_alias, keys, backup_dir):
    record = backup_create(database="app", trigger=Trigger.CLI, compression="zstd")
    files, fields = folder_state(backup_dir), record_state(record)
    use_identity(keys, "")

    with pytest.raises(RestoreRefused, match="BACKUP_ENCRYPTION_IDENTITY is not configured"):
        backup_reencrypt(backup=record, recipients=[keys["new"][1]], source="cli")

    assert folder_state(backup_dir) == files and record_state(record) == fields
    assert AuditEntry.objects.get(action="reencrypt").outcome == "refused"


def test_a_second_re_encryption_at_the_same_time_is_refused(sqlite_alias, keys, backup_dir):
    from backups_app import locks
    from backups_app.exceptions import BackupLocked
    from backups_app.services.reencrypt import LOCK_NAME

    record = backup_create(database="app", trigger=Trigger.CLI, compression="zstd")
    files = folder_state(backup_dir)
    with locks._file_lock(LOCK_NAME, "reencrypt"), pytest.raises(BackupLocked):
        backup_reencrypt(backup=record, recipients=[keys["new"][1]], source="cli")
    assert folder_state(backup_dir) == files


def test_a_record_deleted_while_the_new_file_is_written_leaves_no_temporary(sqlite_alias, keys, backup_dir):
    record = backup_create(database="app", trigger=Trigger.CLI, compression="zstd")
    files = folder_state(backup_dir)
    # Deleted (by retention, or in the admin) between the read of the record and its update.
    BackupRecord.objects.filter(pk=record.pk).delete()

    with pytest.raises(Exception):  # noqa: B017 - what matters is the folder afterwards
        backup_reencrypt(backup=record, recipients=[keys["new"][1]], source="cli")

    assert folder_state(backup_dir) == files
