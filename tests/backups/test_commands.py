"""The commands only parse, call a service and print; their output shapes and exit codes."""
from __future__ import annotations

import io
import json
import sqlite3

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from backups_app.models import AuditEntry, BackupRecord, RestoreRecord, Trigger
from backups_app.services.backup import backup_create

from .conftest import snapshot
from .test_backup_failures import HALF_THEN_DIE

pytestmark = pytest.mark.django_db(transaction=True)

BACKUP_KEYS = {"name", "status", "sha256", "size_bytes", "raw_size_bytes", "duration_seconds"}
LIST_KEYS = {"name", "database", "status", "created_at", "size_bytes", "sha256"}


def run(*args, **options) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


def test_backup_now_prints_the_name(sqlite_alias, backup_dir):
    name = run("backup_now", "--database", "app").strip()
    assert (backup_dir / name).is_file()
    record = BackupRecord.objects.get(name=name)
    assert record.trigger == Trigger.CLI and record.status == "success"
    entry = AuditEntry.objects.get(action="create", source="cli", outcome="success", target=name)
    import getpass

    assert entry.actor == f"cli:{getpass.getuser()}"


def test_backup_now_json_shape(sqlite_alias, backup_dir):
    payload = json.loads(run("backup_now", "--database", "app", "--compression", "zstd", "--json"))
    assert BACKUP_KEYS <= set(payload)
    assert payload["status"] == "success" and payload["name"].endswith(".sql.zst")
    assert len(payload["sha256"]) == 64 and payload["size_bytes"] > 0 and payload["raw_size_bytes"] > 0


def test_backup_now_failure_exits_non_zero_with_the_reason(fake_alias, backup_dir, capsys):
    fake_alias(HALF_THEN_DIE)
    with pytest.raises(CommandError, match="Lost connection"):
        run("backup_now", "--database", "fake")
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("backup_now", "--database", "fake", "--json", stdout=out, stderr=io.StringIO())
    payload = json.loads(out.getvalue())
    assert payload["status"] == "failed" and "Lost connection" in payload["error"] and payload["name"]


def test_backup_now_of_an_unknown_database_is_a_clear_error(backup_dir):
    with pytest.raises(CommandError, match="Unknown database alias 'nope'"):
        run("backup_now", "--database", "nope")


def test_backup_now_shows_progress_on_a_terminal(fake_alias, backup_dir):
    fake_alias("import sys, time\nfor i in range(3):\n    sys.stdout.buffer.write(b'x' * 300000); sys.stdout.flush(); time.sleep(0.6)\nsys.stdout.buffer.write(b'\\n-- Dump completed\\n')\n")

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    # On a terminal: stdout is one (progress goes to stderr, keeping stdout to the backup's name).
    err = io.StringIO()
    call_command("backup_now", "--database", "fake", stdout=Terminal(), stderr=err)
    assert "dumped" in err.getvalue() and "/s)" in err.getvalue()


def test_scheduled_backup_is_skipped_while_backups_are_disabled(sqlite_alias, backup_dir, settings):
    settings.BACKUP_ENABLED = False
    assert "skipped" in run("backup_now", "--database", "app", "--scheduled")
    assert json.loads(run("backup_now", "--database", "app", "--scheduled", "--json"))["status"] == "skipped"
    assert not BackupRecord.objects.exists()
    # A manual backup_now still works: an operator asking explicitly gets a backup.
    assert run("backup_now", "--database", "app").strip()
    settings.BACKUP_ENABLED = True
    run("backup_now", "--database", "app", "--scheduled")
    assert BackupRecord.objects.filter(trigger=Trigger.SCHEDULE).count() == 1


def test_list_backups_json_and_text(sqlite_alias, fake_alias, backup_dir):
    fake_alias()
    a = backup_create(database="app", trigger=Trigger.CLI)
    b = backup_create(database="fake", trigger=Trigger.CLI)
    everything = json.loads(run("list_backups", "--json"))
    assert [entry["name"] for entry in everything] == [b.name, a.name]
    assert all(LIST_KEYS <= set(entry) for entry in everything)
    only_app = json.loads(run("list_backups", "--json", "--database", "app"))
    assert [entry["name"] for entry in only_app] == [a.name]
    assert a.name in run("list_backups")


def test_list_backups_empty(backup_dir):
    assert json.loads(run("list_backups", "--json")) == []
    assert "No backups" in run("list_backups")


def test_restore_backup_asks_for_confirmation_and_cancel_changes_nothing(sqlite_alias, backup_dir, monkeypatch):
    record = backup_create(database="app", trigger=Trigger.CLI)
    connection = sqlite3.connect(sqlite_alias)
    connection.execute("CREATE TABLE newer (x)")
    connection.close()
    changed = snapshot(sqlite_alias)
    monkeypatch.setattr("builtins.input", lambda prompt: "no")
    with pytest.raises(CommandError, match="cancelled"):
        run("restore_backup", record.name)
    assert snapshot(sqlite_alias) == changed and not RestoreRecord.objects.exists()
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    output = run("restore_backup", record.name)
    assert "Safety backup of the previous state" in output and "Restored" in output
    assert "newer" not in "".join(snapshot(sqlite_alias))


def test_restore_backup_without_a_terminal_asks_for_noinput(sqlite_alias, backup_dir, monkeypatch):
    record = backup_create(database="app", trigger=Trigger.CLI)

    def closed(prompt):
        raise EOFError

    monkeypatch.setattr("builtins.input", closed)
    with pytest.raises(CommandError, match="--noinput"):
        run("restore_backup", record.name)
    assert not RestoreRecord.objects.exists()


def test_restore_backup_errors(sqlite_alias, backup_dir):
    with pytest.raises(CommandError, match="No backup named"):
        run("restore_backup", "../../etc/passwd", "--noinput")
    record = backup_create(database="app", trigger=Trigger.CLI)
    (backup_dir / record.name).write_bytes(b"garbage")
    with pytest.raises(CommandError, match="SHA-256|damaged"):
        run("restore_backup", record.name, "--noinput", "--no-safety-backup")


def test_sync_backups_command(sqlite_alias, backup_dir):
    backup_create(database="app", trigger=Trigger.CLI)
    BackupRecord.objects.all().delete()
    assert "1 record(s) created" in run("sync_backups")
    assert BackupRecord.objects.get().status == "success"
