"""The backup services and commands end to end on the real MariaDB and PostgreSQL servers."""
from __future__ import annotations

import io
import json
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.db import connections

from backups_app.engines import get_engine
from backups_app.exceptions import DumpFailed
from backups_app.models import BackupRecord, RestoreRecord, Trigger
from backups_app.services.backup import backup_create
from backups_app.services.restore import backup_restore
from tests.conftest import register_alias, unregister_alias

from . import test_mysql, test_postgresql

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

FAMILIES = {
    "mariadb_database": test_mysql.TestMySQLDumpEngine,
    "postgres_database": test_postgresql.TestPostgreSQLDumpEngine,
}


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
@pytest.mark.parametrize("fixture", list(FAMILIES))
def test_backup_then_restore_through_the_services(request, backup_dir, fixture, compression):
    alias = request.getfixturevalue(fixture)
    cases = FAMILIES[fixture]()
    engine = get_engine(alias)
    cases.populate(engine)
    before = cases.snapshot(engine)

    record = backup_create(database=alias, trigger=Trigger.CLI, compression=compression)
    assert record.status == BackupRecord.Status.SUCCESS
    assert record.engine == engine.vendor
    assert (backup_dir / record.name).is_file()
    assert record.table_row_counts == engine.table_row_counts()
    assert cases.dump_tool_name in record.tool_versions and record.tool_versions["server"]

    cases.change_after_backup(engine)
    restore = backup_restore(backup=record, trigger=Trigger.CLI)
    assert restore.status == RestoreRecord.Status.SUCCESS
    assert cases.snapshot(engine) == before
    # The safety backup holds the state the restore replaced.
    assert restore.safety_backup.status == BackupRecord.Status.SUCCESS
    assert restore.safety_backup.kind == BackupRecord.Kind.SAFETY


def test_backup_now_command_against_mariadb(mariadb_database, backup_dir):
    cases = test_mysql.TestMySQLDumpEngine()
    cases.populate(get_engine(mariadb_database))
    out = io.StringIO()
    call_command("backup_now", "--database", mariadb_database, "--compression", "zstd", "--json", stdout=out)
    payload = json.loads(out.getvalue())
    assert payload["status"] == "success"
    assert payload["name"].startswith("backup_mariadb_") and payload["name"].endswith(".sql.zst")
    assert payload["size_bytes"] == (backup_dir / payload["name"]).stat().st_size
    assert payload["raw_size_bytes"] > payload["size_bytes"] > 0

    out = io.StringIO()
    call_command("restore_backup", payload["name"], "--noinput", "--no-safety-backup", stdout=out)
    assert RestoreRecord.objects.get(backup_name=payload["name"]).status == RestoreRecord.Status.SUCCESS


def test_wrong_password_fails_the_backup_and_keeps_no_file(mariadb_database, backup_dir):
    """docs/FAULTS.md wrong-password: exit 1, record failed with the tool's message, password
    redacted, no file."""
    engine = get_engine(mariadb_database)
    user, password = f"opsdesk_pw_{uuid.uuid4().hex[:8]}", test_mysql.HARD_PASSWORD + uuid.uuid4().hex[:4]
    test_mysql.run_sql(engine, ("CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s", [user, password]))
    try:
        wrong = password + "-not-it"
        settings_dict = {**connections.settings[mariadb_database], "USER": user, "PASSWORD": wrong}
        unregister_alias(mariadb_database)
        register_alias(mariadb_database, settings_dict)
        with pytest.raises(DumpFailed):
            backup_create(database=mariadb_database, trigger=Trigger.CLI, compression="gzip")
        record = BackupRecord.objects.get(database=mariadb_database)
        assert record.status == BackupRecord.Status.FAILED
        assert "Access denied" in record.error_message
        assert wrong not in record.error_message and password not in record.error_message
        assert not [path for path in backup_dir.rglob("*.sql*")]
        with pytest.raises(CommandError) as error:
            call_command("backup_now", "--database", mariadb_database, stdout=io.StringIO())
        assert wrong not in str(error.value)
    finally:
        test_mysql.run_sql(engine, ("DROP USER IF EXISTS %s@'127.0.0.1'", [user]))


def test_postgresql_restore_of_a_file_swapped_after_the_check_commits_nothing(postgres_database, monkeypatch):
    """Someone with write access to BACKUP_DIR swaps the file once the full check passed: the bytes
    psql receives are hashed on the way, the end of input is never reached, nothing is committed."""
    import os
    from pathlib import Path

    from django.core.files.storage import storages

    from backups_app.exceptions import RestoreFailed
    from backups_app.services import restore as restore_service

    cases = test_postgresql.TestPostgreSQLDumpEngine()
    engine = get_engine(postgres_database)
    cases.populate(engine)
    record = backup_create(database=postgres_database, trigger=Trigger.CLI)
    cases.change_after_backup(engine)
    forged = backup_create(database=postgres_database, trigger=Trigger.CLI)  # well-formed, other data
    forged_bytes = Path(storages["backups"].path(forged.storage_name)).read_bytes()
    test_postgresql.run_sql(engine, "CREATE TABLE written_after_both_backups (x int)")
    state_before_restore = cases.snapshot(engine)
    real_check = restore_service.backup_check
    stored = Path(storages["backups"].path(record.storage_name))

    def check_then_swap(**kwargs):
        real_check(**kwargs)
        replacement = stored.with_name("attacker.tmp")
        replacement.write_bytes(forged_bytes)
        os.replace(replacement, stored)

    monkeypatch.setattr(restore_service, "backup_check", check_then_swap)
    with pytest.raises(RestoreFailed, match="does not match"):
        backup_restore(backup=record, trigger=Trigger.CLI, safety_backup=False)
    assert cases.snapshot(engine) == state_before_restore
