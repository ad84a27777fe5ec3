"""Manifests are claims: only those opsdesk signed rebuild good records (docs/FAULTS.md).

The attacker here can write into BACKUP_DIR but does not know the signing key: every forged or
tampered manifest is written straight into the folder, as they would.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from backups_app.exceptions import BackupError, RestoreRefused
from backups_app.manifest import manifest_is_signed
from backups_app.models import AuditEntry, BackupRecord, RestoreRecord, Trigger
from backups_app.services.backup import backup_create
from backups_app.services.sync import backup_adopt, backups_sync
from backups_app.services.restore import backup_restore
from backups_app.services.verify import backup_verify

from .admin_fixtures import make_user
from .conftest import PROJECT_ROOT, snapshot

pytestmark = pytest.mark.django_db(transaction=True)


def plant_backup(backup_dir: Path, name: str, plain: bytes, **claims) -> bytes:
    """A backup file and an unsigned manifest claiming whatever the attacker likes."""
    backup_dir.mkdir(parents=True, exist_ok=True)
    compressed = gzip.compress(plain)
    (backup_dir / name).write_bytes(compressed)
    manifest = {
        "format": 1, "status": "success", "name": name, "database": "app", "engine": "sqlite",
        "kind": "regular", "trigger": "schedule", "compression": "gzip", "raw_size_bytes": len(plain),
        "size_bytes": len(compressed), "sha256": hashlib.sha256(compressed).hexdigest(),
        "duration_seconds": 1.0, "tool_versions": {}, "table_row_counts": {},
        "created_at": "2026-11-01T02:00:00+00:00", "started_at": None, "finished_at": None, "user": None,
        **claims,
    }
    (backup_dir / (name + ".json")).write_text(json.dumps(manifest))
    return compressed


def attacker_dump() -> bytes:
    return (b"BEGIN TRANSACTION;\nCREATE TABLE author (id INTEGER PRIMARY KEY, name TEXT);\n"
            b"INSERT INTO author VALUES (1, 'attacker');\nCOMMIT;\n-- opsdesk SQLite dump completed\n")


def test_backups_write_signed_manifests(sqlite_alias, backup_dir):
    record = backup_create(database="app", trigger=Trigger.CLI)
    manifest = json.loads((backup_dir / (record.name + ".json")).read_text())
    assert manifest["signature"].startswith("hmac-sha256:")
    assert manifest_is_signed(manifest)
    manifest["sha256"] = "0" * 64
    assert not manifest_is_signed(manifest)


def test_the_signing_key_comes_from_backup_signing_key(sqlite_alias, backup_dir):
    """A process with its own BACKUP_SIGNING_KEY does not accept a manifest signed with the key
    derived from SECRET_KEY; one without it does."""
    record = backup_create(database="app", trigger=Trigger.CLI)
    probe = (
        "import json, sys, django\n"
        "django.setup()\n"
        "from backups_app.manifest import manifest_is_signed\n"
        "print(manifest_is_signed(json.loads(open(sys.argv[1]).read())))\n"
    )

    def signed_for(environment: dict[str, str]) -> str:
        result = subprocess.run(
            [sys.executable, "-c", probe, str(backup_dir / (record.name + ".json"))], cwd=PROJECT_ROOT,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", **environment},
            capture_output=True, text=True, check=True,
        )
        return result.stdout.strip()

    assert signed_for({}) == "True"
    assert signed_for({"BACKUP_SIGNING_KEY": "a-key-of-its-own-0123456789"}) == "False"


def test_a_forged_manifest_is_listed_untrusted_and_cannot_be_used(sqlite_alias, backup_dir):
    plant_backup(backup_dir, "backup_app_20261101_020000.sql.gz", attacker_dump())
    before = snapshot(sqlite_alias)

    counts = backups_sync()

    assert counts["untrusted"] == 1 and counts["created"] == 1
    record = BackupRecord.objects.get(name="backup_app_20261101_020000.sql.gz")
    assert record.status == BackupRecord.Status.UNTRUSTED
    assert record.sha256 == ""  # the claimed checksum is not taken over
    assert not BackupRecord.objects.filter(status=BackupRecord.Status.SUCCESS).exists()
    with pytest.raises(RestoreRefused):
        backup_restore(backup=record, trigger=Trigger.CLI, safety_backup=False)
    assert snapshot(sqlite_alias) == before
    with pytest.raises(BackupError):
        backup_verify(backup=record, source=AuditEntry.Source.CLI)
    listing = io.StringIO()
    call_command("list_backups", stdout=listing)
    assert "untrusted" in listing.getvalue()


def test_a_tampered_signed_manifest_is_untrusted(sqlite_alias, backup_dir):
    record = backup_create(database="app", trigger=Trigger.CLI)
    manifest_path = backup_dir / (record.name + ".json")
    manifest = json.loads(manifest_path.read_text())
    manifest["database"] = "default"  # aim the backup at the control database
    manifest_path.write_text(json.dumps(manifest))
    BackupRecord.objects.all().delete()

    backups_sync()

    rebuilt = BackupRecord.objects.get(name=record.name)
    assert rebuilt.status == BackupRecord.Status.UNTRUSTED


def test_sync_never_upgrades_a_failed_or_interrupted_record(sqlite_alias, backup_dir):
    good = backup_create(database="app", trigger=Trigger.CLI)
    other = backup_create(database="app", trigger=Trigger.CLI)
    BackupRecord.objects.filter(pk=good.pk).update(status=BackupRecord.Status.FAILED, error_message="boom")
    BackupRecord.objects.filter(pk=other.pk).update(status=BackupRecord.Status.INTERRUPTED)
    # Unsigned manifests for existing records change nothing either.
    plant_backup(backup_dir, "backup_app_20261101_030000.sql.gz", attacker_dump())
    BackupRecord.objects.create(name="backup_app_20261101_030000.sql.gz", database="app", engine="sqlite",
                                status=BackupRecord.Status.FAILED, trigger=Trigger.CLI,
                                created_at=good.created_at, compression="gzip")

    backups_sync()

    assert BackupRecord.objects.get(pk=good.pk).status == BackupRecord.Status.FAILED
    assert BackupRecord.objects.get(pk=other.pk).status == BackupRecord.Status.INTERRUPTED
    assert BackupRecord.objects.get(name="backup_app_20261101_030000.sql.gz").status == BackupRecord.Status.FAILED


def test_sync_still_completes_a_record_the_restored_ops_database_shows_running(sqlite_alias, backup_dir):
    record = backup_create(database="app", trigger=Trigger.CLI)
    BackupRecord.objects.filter(pk=record.pk).update(status=BackupRecord.Status.RUNNING, sha256="")
    assert backups_sync()["updated"] == 1
    assert BackupRecord.objects.get(pk=record.pk).status == BackupRecord.Status.SUCCESS


def test_a_superuser_adopts_an_untrusted_backup_from_the_command_line(sqlite_alias, backup_dir):
    good = backup_create(database="app", trigger=Trigger.CLI)
    name = good.name
    manifest_path = backup_dir / (name + ".json")
    manifest = json.loads(manifest_path.read_text())
    del manifest["signature"]  # e.g. written before signing existed, or under another key
    manifest_path.write_text(json.dumps(manifest))
    BackupRecord.objects.all().delete()
    backups_sync()
    assert BackupRecord.objects.get(name=name).status == BackupRecord.Status.UNTRUSTED

    output = io.StringIO()
    call_command("sync_backups", adopt=name, stdout=output)

    adopted = BackupRecord.objects.get(name=name)
    assert adopted.status == BackupRecord.Status.SUCCESS
    assert adopted.sha256 == hashlib.sha256((backup_dir / name).read_bytes()).hexdigest()
    assert manifest_is_signed(json.loads(manifest_path.read_text()))
    assert AuditEntry.objects.filter(action="adopt", outcome="success", target__startswith=name).exists()
    original = snapshot(sqlite_alias)
    backup_restore(backup=adopted, trigger=Trigger.CLI, safety_backup=False)
    assert snapshot(sqlite_alias) == original
    # Adopted: a second sync trusts its new manifest and changes nothing.
    assert backups_sync()["untrusted"] == 0


def test_adoption_refuses_a_file_that_is_not_a_complete_dump(sqlite_alias, backup_dir):
    plant_backup(backup_dir, "backup_app_20261101_040000.sql.gz", b"CREATE TABLE t (x);\n")
    backups_sync()
    with pytest.raises(CommandError, match="not a complete"):
        call_command("sync_backups", adopt="backup_app_20261101_040000.sql.gz")
    assert BackupRecord.objects.get(name="backup_app_20261101_040000.sql.gz").status == BackupRecord.Status.UNTRUSTED


def test_only_a_superuser_adopts_in_the_admin(sqlite_alias, backup_dir):
    plant_backup(backup_dir, "backup_app_20261101_050000.sql.gz", attacker_dump())
    backups_sync()
    record = BackupRecord.objects.get(name="backup_app_20261101_050000.sql.gz")
    staff = make_user("staff-adopter", "view_backuprecord", "change_backuprecord", "restore_backup",
                      "download_backup", "verify_backup", "delete_backuprecord")
    root = make_user("root-adopter", is_superuser=True)
    changelist = "/admin/backups_app/backuprecord/"
    form = {"action": "adopt_selected", "_selected_action": [record.pk], "confirm_adopt": "yes"}

    staff_client = Client()
    staff_client.force_login(staff)
    staff_client.post(changelist, form)
    assert BackupRecord.objects.get(pk=record.pk).status == BackupRecord.Status.UNTRUSTED
    # Not downloadable meanwhile either.
    assert staff_client.get(f"{changelist}{record.pk}/download/").status_code == 404

    root_client = Client()
    root_client.force_login(root)
    confirmation = root_client.post(changelist, {**form, "confirm_adopt": ""})
    assert confirmation.status_code == 200 and b"Adopt these backups" in confirmation.content
    assert BackupRecord.objects.get(pk=record.pk).status == BackupRecord.Status.UNTRUSTED
    root_client.post(changelist, form)
    assert BackupRecord.objects.get(pk=record.pk).status == BackupRecord.Status.SUCCESS
    assert AuditEntry.objects.filter(action="adopt", outcome="success", user=root).exists()


def test_the_adopt_service_refuses_a_staff_user(sqlite_alias, backup_dir):
    plant_backup(backup_dir, "backup_app_20261101_060000.sql.gz", attacker_dump())
    backups_sync()
    record = BackupRecord.objects.get(name="backup_app_20261101_060000.sql.gz")
    staff = make_user("staff-only", "restore_backup")
    with pytest.raises(RestoreRefused, match="superuser"):
        backup_adopt(backup=record, source=AuditEntry.Source.API, user=staff)
    assert AuditEntry.objects.filter(action="adopt", outcome="refused").exists()
    assert not RestoreRecord.objects.exists()
