"""Someone else can write into BACKUP_DIR (docs/FAULTS.md: storage written by someone else).

Each test does what such an attacker would: swap a file between the check and its use, change it
in place while it is read, plant symbolic links at the names opsdesk writes or reads, truncate a
file being downloaded. Nothing may be restored, verified, downloaded or written through.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import checks
from django.core.files.storage import storages

from backups_app import locks
from backups_app.exceptions import ChecksumMismatch, RestoreFailed, RestoreRefused
from backups_app.models import AuditEntry, BackupRecord, RestoreRecord, Trigger
from backups_app.pipeline import DecompressingReader, HashingReader, LocalStorageTarget, partial_path
from backups_app.services import restore as restore_service
from backups_app.services import verify as verify_service
from backups_app.services.backup import backup_create
from backups_app.services.restore import backup_restore
from backups_app.services.verify import backup_verify

from .admin_fixtures import *  # noqa: F401,F403 - the operator fixture
from .admin_fixtures import store_backup
from .conftest import PROJECT_ROOT, snapshot

pytestmark = pytest.mark.django_db(transaction=True)


def rename_author(path: Path, name: str) -> None:
    connection = sqlite3.connect(path)
    connection.execute("UPDATE author SET name = ? WHERE id = 1", [name])
    connection.commit()
    connection.close()


def forged_backup_bytes(sqlite_alias: Path) -> bytes:
    """A well-formed backup of the same database with other data: what an attacker swaps in."""
    rename_author(sqlite_alias, "attacker")
    forged = backup_create(database="app", trigger=Trigger.CLI)
    data = (Path(storages["backups"].path(forged.storage_name))).read_bytes()
    forged.delete()
    return data


def swap_after_the_check(monkeypatch, module, path: Path, content: bytes) -> None:
    """The attacker replaces the file right after opsdesk's full check passed."""
    real_check = module.backup_check

    def check_then_swap(**kwargs):
        real_check(**kwargs)
        replacement = path.with_name("attacker.tmp")
        replacement.write_bytes(content)
        os.replace(replacement, path)

    monkeypatch.setattr(module, "backup_check", check_then_swap)


# --- Item 5: the bytes restored, verified and downloaded are the bytes checked ---------------------
def test_a_file_swapped_after_the_check_is_not_restored(sqlite_alias, monkeypatch):
    record = backup_create(database="app", trigger=Trigger.CLI)
    forged = forged_backup_bytes(sqlite_alias)
    rename_author(sqlite_alias, "current")
    before = snapshot(sqlite_alias)
    swap_after_the_check(monkeypatch, restore_service, Path(storages["backups"].path(record.storage_name)), forged)

    with pytest.raises(RestoreFailed, match="does not match"):
        backup_restore(backup=record, trigger=Trigger.CLI)

    assert snapshot(sqlite_alias) == before  # neither the forged data nor a half restore
    restore = RestoreRecord.objects.get()
    assert restore.status == RestoreRecord.Status.FAILED
    assert "does not match" in restore.error_message


def test_a_file_swapped_after_the_check_is_not_verified(sqlite_alias, monkeypatch):
    record = backup_create(database="app", trigger=Trigger.CLI)
    # Same tables and row counts, other data: only the checksum can tell.
    forged = forged_backup_bytes(sqlite_alias)
    swap_after_the_check(monkeypatch, verify_service, Path(storages["backups"].path(record.storage_name)), forged)

    record = backup_verify(backup=record, source=AuditEntry.Source.CLI)

    assert record.verification_status == BackupRecord.VerificationStatus.FAILED
    assert "does not match" in record.verification_message


def test_a_file_changed_in_place_while_it_is_read_raises_before_the_end_of_input(tmp_path):
    """The contract engines commit on: the end of input is never returned for other bytes."""
    # Incompressible: the reader's read-ahead (a few pieces) is far from the end when the attack comes.
    plain = b"".join(os.urandom(32).hex().encode() + b"\n" for _ in range(100_000)) + b"-- Dump completed\n"
    # Uncompressed: no gzip CRC to notice first, the SHA-256 alone must catch it.
    stored = tmp_path / "backup.sql"
    stored.write_bytes(plain)
    recorded = hashlib.sha256(plain).hexdigest()
    handle = open(stored, "rb")  # noqa: SIM115 - closed by the reader
    checked = HashingReader(handle, sha256=recorded, size_bytes=len(plain), name="backup")
    with DecompressingReader(checked, compression="none", raw_size_bytes=len(plain),
                             is_complete=lambda tail: tail.endswith(b"-- Dump completed\n")) as reader:
        first = reader.read(1000)
        assert first
        with open(stored, "r+b") as attacker:  # same inode, bytes flipped behind the reader's back
            attacker.seek(-100, os.SEEK_END)
            attacker.write(b"0" * 20)
        received = first
        with pytest.raises(ChecksumMismatch):
            while chunk := reader.read(65536):
                received += chunk
        assert not reader.verified


def test_the_reader_gives_a_clean_end_only_for_the_recorded_bytes(tmp_path):
    plain = b"x\n" * 1000 + b"-- Dump completed\n"
    stored = tmp_path / "backup.gz"
    stored.write_bytes(gzip.compress(plain))
    recorded = hashlib.sha256(stored.read_bytes()).hexdigest()
    with DecompressingReader(
        HashingReader(open(stored, "rb"), sha256=recorded, size_bytes=stored.stat().st_size),  # noqa: SIM115
        compression="gzip", raw_size_bytes=len(plain),
    ) as reader:
        assert reader.read() == plain
        assert reader.read() == b""
        assert reader.verified


# --- Item 7: no symbolic links, no shared temporary names ----------------------------------------
def test_a_symlink_planted_at_the_temporary_name_is_not_written_through(backup_dir, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    backup_dir.mkdir(parents=True, exist_ok=True)
    storage = storages["backups"]
    temporary = partial_path(Path(storage.path("backup_app_x.sql.gz")))
    temporary.symlink_to(victim)

    target = LocalStorageTarget(storage, "backup_app_x.sql.gz")
    target.write(b"backup bytes")
    target.commit()

    assert victim.read_text() == "precious"
    final = Path(storage.path("backup_app_x.sql.gz"))
    assert not final.is_symlink() and final.read_bytes() == b"backup bytes"
    assert stat.S_IMODE(final.stat().st_mode) == 0o600


def test_a_temporary_swapped_for_a_symlink_before_the_rename_never_gets_the_final_name(backup_dir, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    storage = storages["backups"]
    target = LocalStorageTarget(storage, "backup_app_y.sql.gz")
    target.write(b"backup bytes")
    target.temporary_path.unlink()
    target.temporary_path.symlink_to(victim)
    with pytest.raises(Exception, match="replaced"):
        target.commit()
    target.abort()
    assert not os.path.lexists(storage.path("backup_app_y.sql.gz"))
    assert victim.read_text() == "precious"


def test_a_symlink_planted_at_the_lock_file_is_not_written_through(sqlite_alias, tmp_path):
    victim = tmp_path / "victim.conf"
    victim.write_text("precious")
    lock = locks.lock_path("app")
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.symlink_to(victim)
    with pytest.raises(OSError):
        with locks.database_lock("app", "backup"):
            pass
    assert victim.read_text() == "precious"


def test_a_backup_without_a_recorded_checksum_is_not_downloaded_from_the_admin(operator):
    admin_backup = store_backup(database="app", name="app-3.sql.gz")
    BackupRecord.objects.filter(pk=admin_backup.pk).update(sha256="")
    response = logged_in(operator).get(f"/admin/backups_app/backuprecord/{admin_backup.pk}/download/")
    assert response.status_code == 302 and not response.streaming
    assert AuditEntry.objects.filter(action="download", outcome="refused", target="app-3.sql.gz").exists()


# --- Item 11: one checked download, a short file ends in an error ---------------------------------
def logged_in(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_the_admin_download_checks_the_file_and_cuts_a_damaged_one(operator, damage):
    record = store_backup(database="app", name=f"app-{damage}.sql.gz",
                          payload=b"CREATE TABLE t (id integer);\n" * 200_000 + b"-- Dump completed\n")
    path = Path(storages["backups"].path(record.storage_name))
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        del data[-1000:]
    else:
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    response = logged_in(operator).get(f"/admin/backups_app/backuprecord/{record.pk}/download/")

    assert response.status_code == 200 and response.streaming
    assert response["Content-Length"] == str(record.size_bytes)
    received = b""
    with pytest.raises(ChecksumMismatch):
        for chunk in response.streaming_content:
            received += chunk
    assert len(received) < record.size_bytes
    assert AuditEntry.objects.filter(action="download", outcome="failure", target=record.name).exists()


def test_the_admin_download_of_a_good_file_is_whole(operator):
    payload = b"CREATE TABLE t (id integer);\n" * 100_000 + b"-- Dump completed\n"
    record = store_backup(database="app", name="app-good.sql.gz", payload=payload)
    response = logged_in(operator).get(f"/admin/backups_app/backuprecord/{record.pk}/download/")
    content = b"".join(response.streaming_content)
    assert hashlib.sha256(content).hexdigest() == record.sha256
    assert gzip.decompress(content) == payload


# --- Item 14: file modes whatever the umask, BACKUP_DIR checks -----------------------------------
def test_backups_manifests_folders_and_locks_are_private_whatever_the_umask(sqlite_alias, backup_dir, settings):
    previous = os.umask(0o277)  # a umask that would even take the owner's write bit away
    try:
        record = backup_create(database="app", trigger=Trigger.CLI)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(backup_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((backup_dir / record.storage_name).stat().st_mode) == 0o600
    assert stat.S_IMODE((backup_dir / (record.name + ".json")).stat().st_mode) == 0o600
    assert stat.S_IMODE(locks.lock_path("app").stat().st_mode) == 0o600


def test_var_and_the_sqlite_database_are_private_whatever_the_umask(tmp_path):
    var = PROJECT_ROOT / "var"
    var.chmod(0o755)
    database = tmp_path / "ops.sqlite3"
    script = (
        "import os, django\n"
        "os.umask(0o022)\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'ops_project.settings'\n"
        "django.setup()\n"
        "from django.db import connection\n"
        "connection.cursor().execute('CREATE TABLE t (x)')\n"
    )
    environment = {**os.environ, "DATABASE_URL": f"sqlite:///{database}"}
    try:
        subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, env=environment, check=True,
                       capture_output=True)
        assert stat.S_IMODE(var.stat().st_mode) == 0o700
        assert stat.S_IMODE(database.stat().st_mode) == 0o600
    finally:
        var.chmod(0o700)


@pytest.mark.parametrize("where", ["", "MEDIA_ROOT", "STATIC_ROOT"])
def test_backup_dir_empty_or_served_is_a_system_check_error(settings, where):
    folder = "" if not where else Path(getattr(settings, where)) / "backups"
    settings.BACKUP_DIR = folder
    storage_settings = {name: dict(config) for name, config in settings.STORAGES.items()}
    storage_settings["backups"]["OPTIONS"] = {**storage_settings["backups"]["OPTIONS"], "location": folder}
    settings.STORAGES = storage_settings
    errors = [message for message in checks.run_checks(tags=[checks.Tags.security])
              if message.id.startswith("backups_app.")]
    assert errors and errors[0].id == ("backups_app.E001" if not where else "backups_app.E002")
    assert errors[0].level == checks.ERROR


def test_a_separate_backup_dir_passes_the_system_check(backup_dir):
    assert not [message for message in checks.run_checks(tags=[checks.Tags.security])
                if message.id.startswith("backups_app.")]


def test_a_fifo_or_a_symlink_at_the_backup_name_is_refused_without_hanging(sqlite_alias, tmp_path):
    record = backup_create(database="app", trigger=Trigger.CLI)
    before = snapshot(sqlite_alias)
    stored = Path(storages["backups"].path(record.storage_name))
    real = tmp_path / "moved-away.sql.gz"
    os.replace(stored, real)
    os.mkfifo(stored)  # opening it for reading would block forever
    with pytest.raises(RestoreRefused, match="not a regular file"):
        backup_restore(backup=record, trigger=Trigger.CLI, safety_backup=False)
    stored.unlink()
    stored.symlink_to(real)  # the right bytes, but through a link: still refused
    RestoreRecord.objects.all().delete()
    with pytest.raises(RestoreRefused, match="symbolic link"):
        backup_restore(backup=record, trigger=Trigger.CLI, safety_backup=False)
    assert snapshot(sqlite_alias) == before
