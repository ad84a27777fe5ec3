"""Commands behave like Django's: --verbosity, --database defaulting to DEFAULT_DB_ALIAS, progress on a TTY only.

-v 0: nothing on stdout but errors (and what --json asked for); -v 1: the usual; -v 2: details.
Progress (on stderr) only when stdout is a terminal: never into a pipe, a file or cron's mail.
"""
from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError
from django.db import DEFAULT_DB_ALIAS

from backups_app.models import BackupRecord, Trigger
from backups_app.services.backup import backup_create

from .test_verify import scratch_alias  # noqa: F401 - the fixture: `app` on an engine with scratch databases

pytestmark = pytest.mark.django_db(transaction=True)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(*args, stdout=None) -> tuple[str, str]:
    out, err = stdout or io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def parsed_database(command: str, *args: str) -> str:
    parser = load_command_class("backups_app", command).create_parser("manage.py", command)
    return parser.parse_args(list(args)).database


@pytest.mark.parametrize("command", ["backup_now", "verify_backup"])
def test_database_defaults_to_the_default_alias(command):
    assert parsed_database(command) == DEFAULT_DB_ALIAS


# --- backup_now ----------------------------------------------------------------------------------

def test_backup_now_verbosity(sqlite_alias, backup_dir):
    assert run("backup_now", "--database", "app", "-v", "0") == ("", "")
    quiet = BackupRecord.objects.get()
    assert quiet.status == BackupRecord.Status.SUCCESS  # silent, not idle
    normal, _err = run("backup_now", "--database", "app")
    assert normal.strip() == BackupRecord.objects.latest("created_at").name
    detailed, _err = run("backup_now", "--database", "app", "-v", "2")
    record = BackupRecord.objects.latest("created_at")
    assert detailed.splitlines()[0] == record.name and record.sha256 in detailed
    # What --json asks for is written whatever the verbosity.
    assert json.loads(run("backup_now", "--database", "app", "--json", "-v", "0")[0])["status"] == "success"


def test_backup_now_shows_progress_only_when_stdout_is_a_terminal(fake_alias, backup_dir):
    fake_alias("import sys, time\nfor i in range(3):\n    sys.stdout.buffer.write(b'x' * 300000); sys.stdout.flush(); time.sleep(0.6)\nsys.stdout.buffer.write(b'\\n-- Dump completed\\n')\n")
    err = Terminal()  # stderr on a terminal is not enough: stdout goes to a pipe or a file
    call_command("backup_now", "--database", "fake", stdout=io.StringIO(), stderr=err)
    assert "dumped" not in err.getvalue()
    _out, err = run("backup_now", "--database", "fake", "-v", "0", stdout=Terminal())
    assert "dumped" not in err
    _out, err = run("backup_now", "--database", "fake", stdout=Terminal())
    assert "dumped" in err


# --- restore_backup ------------------------------------------------------------------------------

def test_restore_backup_verbosity_and_progress(sqlite_alias, backup_dir):
    record = backup_create(database="app", trigger=Trigger.CLI)
    assert run("restore_backup", record.name, "--noinput", "-v", "0") == ("", "")
    out, err = run("restore_backup", record.name, "--noinput")
    assert "Restored" in out and "Safety backup of the previous state" in out and record.sha256 not in out
    assert err == ""  # not a terminal: no progress
    out, _err = run("restore_backup", record.name, "--noinput", "--no-safety-backup", "-v", "2")
    assert record.sha256 in out and "No safety backup was taken." in out
    out, err = run("restore_backup", record.name, "--noinput", stdout=Terminal())
    assert f"Restoring {record.name} into app" in err and "Restored" in out


def test_restore_backup_errors_still_raise_at_verbosity_0(sqlite_alias, backup_dir):
    with pytest.raises(CommandError, match="No backup named"):
        run("restore_backup", "no-such-backup", "--noinput", "-v", "0")


# --- verify_backup -------------------------------------------------------------------------------

def test_verify_backup_verbosity_and_progress(scratch_alias):
    record = backup_create(database="app", trigger=Trigger.CLI)
    assert run("verify_backup", record.name, "-v", "0") == ("", "")
    record.refresh_from_db()
    assert record.verification_status == BackupRecord.VerificationStatus.VERIFIED
    out, err = run("verify_backup", record.name)
    assert out.startswith(f"{record.name}: verified") and "verified at" not in out and err == ""
    out, _err = run("verify_backup", "--latest", "--database", "app", "-v", "2")
    assert "verified at" in out
    out, err = run("verify_backup", record.name, stdout=Terminal())
    assert f"Verifying {record.name}" in err and out.startswith(record.name)


def test_verify_backup_failure_is_an_error_at_verbosity_0(sqlite_alias, backup_dir):
    with pytest.raises(CommandError, match="No good backup"):
        run("verify_backup", "--latest", "--database", "app", "-v", "0")


# --- list_backups --------------------------------------------------------------------------------

def test_list_backups_verbosity(sqlite_alias, backup_dir):
    assert run("list_backups", "-v", "0") == ("", "")  # "No backups." is a message
    record = backup_create(database="app", trigger=Trigger.CLI)
    assert run("list_backups", "-v", "0") == ("", "")
    normal, _err = run("list_backups")
    assert record.name in normal and record.sha256 not in normal
    detailed, _err = run("list_backups", "-v", "2")
    assert record.name in detailed and record.sha256 in detailed and "cli" in detailed
    assert [entry["name"] for entry in json.loads(run("list_backups", "--json", "-v", "0")[0])] == [record.name]


def test_list_backups_never_shows_progress(sqlite_alias, backup_dir):
    backup_create(database="app", trigger=Trigger.CLI)
    out, err = run("list_backups", stdout=Terminal())
    assert err == "" and out.count("\n") == 1
