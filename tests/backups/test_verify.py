"""Verification by test restore: corrupted files fail before any database is touched.

docs/FAULTS.md: corrupted-file.
"""
from __future__ import annotations

import gzip
import hashlib
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest
from django.core.files.storage import storages
from django.core.management import call_command
from django.core.management.base import CommandError

from backups_app.engines.sqlite import COMPLETION_MARKER, SQLiteDumpEngine
from backups_app.exceptions import BackupError, ChecksumMismatch
from backups_app.models import AuditEntry, BackupRecord
from backups_app.services.backup import backup_create
from backups_app.services.restore import backup_restore
from backups_app.services.verify import backup_verify

from tests.conftest import register_alias, unregister_alias

from .conftest import snapshot
from .retention_helpers import make_backup

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)


def rewrite(backup: BackupRecord, transform) -> None:
    path = storages["backups"].path(backup.storage_name)
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(transform(data))


def flip_one_byte(data: bytes) -> bytes:
    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0x01
    return bytes(changed)


def test_a_flipped_byte_fails_verification_and_is_audited():
    backup = make_backup(created_at=NOW, payload=b"INSERT INTO t VALUES (1);\n" * 500 + b"-- Dump completed\n")
    rewrite(backup, flip_one_byte)

    backup = backup_verify(backup=backup, source=AuditEntry.Source.CLI)

    assert backup.verification_status == BackupRecord.VerificationStatus.FAILED
    assert "damaged" in backup.verification_message
    assert backup.verified_at is not None
    entry = AuditEntry.objects.get(action="verify")
    assert (entry.target, entry.outcome) == (backup.name, AuditEntry.Outcome.FAILURE)


def test_a_lost_tail_fails_verification():
    backup = make_backup(created_at=NOW, payload=b"x" * 10000 + b"\n-- Dump completed\n")
    rewrite(backup, lambda data: data[: len(data) - 20])

    backup = backup_verify(backup=backup, source=AuditEntry.Source.CLI)

    assert backup.verification_status == BackupRecord.VerificationStatus.FAILED
    assert "SHA-256" in backup.verification_message


def test_a_file_that_matches_its_checksum_but_does_not_decompress_fails():
    """The checksum was taken of a broken stream (a compressor killed mid-way)."""
    whole = gzip.compress(b"x" * 10000 + b"\n-- Dump completed\n")
    broken = whole[: len(whole) // 2]
    backup = make_backup(created_at=NOW)
    rewrite(backup, lambda data: broken)
    BackupRecord.objects.filter(pk=backup.pk).update(
        sha256=hashlib.sha256(broken).hexdigest(), size_bytes=len(broken)
    )
    backup.refresh_from_db()

    backup = backup_verify(backup=backup, source=AuditEntry.Source.CLI)

    assert backup.verification_status == BackupRecord.VerificationStatus.FAILED
    assert "truncated" in backup.verification_message


def test_a_backup_whose_files_are_gone_fails_verification():
    backup = make_backup(created_at=NOW)
    storages["backups"].delete(backup.storage_name)

    backup = backup_verify(backup=backup, source=AuditEntry.Source.CLI)

    assert backup.verification_status == BackupRecord.VerificationStatus.FAILED
    assert "missing from storage" in backup.verification_message


def test_a_failed_backup_cannot_be_verified():
    backup = make_backup(created_at=NOW, status=BackupRecord.Status.FAILED)
    with pytest.raises(BackupError, match="only successful backups"):
        backup_verify(backup=backup, source=AuditEntry.Source.CLI)


def test_command_exits_non_zero_for_a_corrupted_backup():
    backup = make_backup(created_at=NOW)
    rewrite(backup, flip_one_byte)

    with pytest.raises(CommandError, match="verification failed.*damaged"):
        call_command("verify_backup", backup.name)


def test_command_needs_a_name_or_latest():
    with pytest.raises(CommandError, match="NAME or --latest"):
        call_command("verify_backup")
    with pytest.raises(CommandError, match="No backup named"):
        call_command("verify_backup", "no-such-backup")
    with pytest.raises(CommandError, match="No good backup"):
        call_command("verify_backup", "--latest", "--database", "default")


def test_real_backup_with_an_engine_that_cannot_test_restore_stays_unverified(fake_alias):
    """The checksum is fine, but the engine has no scratch database: say so, do not fail it."""
    fake_alias()
    backup = backup_create(database="fake", trigger="cli")

    backup = backup_verify(backup=backup, source=AuditEntry.Source.CLI)

    assert backup.verification_status == BackupRecord.VerificationStatus.UNVERIFIED
    assert "cannot test-restore" in backup.verification_message
    assert backup.verification_message.endswith("the engine has no scratch database support")
    assert AuditEntry.objects.get(action="verify").outcome == AuditEntry.Outcome.FAILURE


def test_restore_refuses_a_corrupted_backup_before_touching_the_database(sqlite_alias):
    backup = backup_create(database="app", trigger="cli")
    before = snapshot(sqlite_alias)
    rewrite(backup, flip_one_byte)

    with pytest.raises(ChecksumMismatch):
        backup_restore(backup=backup, trigger="cli", safety_backup=False)

    assert snapshot(sqlite_alias) == before
    assert backup_verify(backup=backup, source="cli").verification_status == BackupRecord.VerificationStatus.FAILED


class ScratchSQLiteEngine(SQLiteDumpEngine):
    """The real SQLite engine, noting the scratch files it makes so tests can check they are gone."""

    scratch_paths: list[Path] = []

    @contextmanager
    def scratch_engine(self):
        with super().scratch_engine() as scratch:
            ScratchSQLiteEngine.scratch_paths.append(Path(scratch.database_name))
            yield scratch


@pytest.fixture
def scratch_alias(sqlite_alias):
    """The `app` SQLite database (awkward data), on an engine that can make scratch databases."""
    unregister_alias("app")
    register_alias("app", {
        "ENGINE": "django.db.backends.sqlite3", "NAME": str(sqlite_alias),
        "BACKUP_ENGINE": "tests.backups.test_verify.ScratchSQLiteEngine",
    })
    ScratchSQLiteEngine.scratch_paths.clear()
    return sqlite_alias


def test_a_good_backup_is_verified_by_test_restore(scratch_alias):
    backup = backup_create(database="app", trigger="cli")
    assert backup.table_row_counts  # recorded at backup time

    backup = backup_verify(backup=backup, source=AuditEntry.Source.CLI)

    assert backup.verification_status == BackupRecord.VerificationStatus.VERIFIED, backup.verification_message
    assert "row counts as at backup time" in backup.verification_message
    assert AuditEntry.objects.get(action="verify").outcome == AuditEntry.Outcome.SUCCESS
    # The scratch database is gone, and the source untouched.
    assert ScratchSQLiteEngine.scratch_paths and not any(path.exists() for path in ScratchSQLiteEngine.scratch_paths)


def test_latest_command_verifies_the_newest_good_backup(scratch_alias, capsys):
    backup_create(database="app", trigger="cli")
    newest = backup_create(database="app", trigger="cli")

    call_command("verify_backup", "--latest", "--database", "app")

    assert newest.name in capsys.readouterr().out
    assert BackupRecord.objects.get(pk=newest.pk).verification_status == BackupRecord.VerificationStatus.VERIFIED


def test_row_counts_that_differ_from_backup_time_fail_verification(scratch_alias):
    backup = backup_create(database="app", trigger="cli")
    counts = dict(backup.table_row_counts)
    counts["book"] += 1
    counts["invoice"] = 3  # a table the restore does not bring back
    BackupRecord.objects.filter(pk=backup.pk).update(table_row_counts=counts)
    backup.refresh_from_db()

    backup = backup_verify(backup=backup, source=AuditEntry.Source.CLI)

    assert backup.verification_status == BackupRecord.VerificationStatus.FAILED
    assert "table book has 3 rows instead of 4" in backup.verification_message
    assert "table invoice is missing" in backup.verification_message
    assert not any(path.exists() for path in ScratchSQLiteEngine.scratch_paths)


def test_a_dump_that_does_not_restore_fails_and_the_scratch_database_is_dropped(scratch_alias):
    """Checksum and marker fine, SQL broken (as written by a buggy tool): only a restore finds out."""
    payload = b"CREATE TABLE t (x int);\nINSERT INTO nowhere VALUES (1);\nCOMMIT;\n" + COMPLETION_MARKER + b"\n"
    backup = make_backup(created_at=NOW, database="app", payload=payload)

    backup = backup_verify(backup=backup, source=AuditEntry.Source.CLI)

    assert backup.verification_status == BackupRecord.VerificationStatus.FAILED
    assert "nowhere" in backup.verification_message
    assert ScratchSQLiteEngine.scratch_paths and not any(path.exists() for path in ScratchSQLiteEngine.scratch_paths)
