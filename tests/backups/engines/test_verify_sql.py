"""Verification by test restore on the real MariaDB and PostgreSQL servers (scratch databases)."""
from __future__ import annotations

import pytest

from backups_app.engines import get_engine
from backups_app.models import AuditEntry, BackupRecord, Trigger
from backups_app.services.backup import backup_create
from backups_app.services.verify import backup_verify

from . import test_mysql, test_postgresql

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

FAMILIES = {
    "mariadb_database": test_mysql.TestMySQLDumpEngine,
    "postgres_database": test_postgresql.TestPostgreSQLDumpEngine,
}


@pytest.mark.parametrize("fixture", list(FAMILIES))
def test_a_good_backup_is_verified_in_a_scratch_database(request, fixture):
    alias = request.getfixturevalue(fixture)
    cases = FAMILIES[fixture]()
    engine = get_engine(alias)
    cases.populate(engine)
    before = cases.snapshot(engine)
    backup = backup_create(database=alias, trigger=Trigger.CLI, compression="zstd")
    assert backup.table_row_counts

    backup = backup_verify(backup=backup, source=AuditEntry.Source.CLI)

    assert backup.verification_status == BackupRecord.VerificationStatus.VERIFIED, backup.verification_message
    assert "row counts as at backup time" in backup.verification_message
    assert cases.snapshot(engine) == before  # the source database is not touched


@pytest.mark.parametrize("fixture", list(FAMILIES))
def test_row_counts_unlike_the_backup_fail_verification(request, fixture):
    alias = request.getfixturevalue(fixture)
    cases = FAMILIES[fixture]()
    cases.populate(get_engine(alias))
    backup = backup_create(database=alias, trigger=Trigger.CLI, compression="gzip")
    table, count = sorted(backup.table_row_counts.items())[0]
    BackupRecord.objects.filter(pk=backup.pk).update(
        table_row_counts={**backup.table_row_counts, table: count + 5}
    )
    backup.refresh_from_db()

    backup = backup_verify(backup=backup, source=AuditEntry.Source.CLI)

    assert backup.verification_status == BackupRecord.VerificationStatus.FAILED
    assert f"has {count} rows instead of {count + 5}" in backup.verification_message
