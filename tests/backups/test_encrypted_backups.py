"""BACKUP_ENCRYPTION=age end to end: backups written encrypted, restored and verified through the
private key, refused without it, and readable by the standard tools exactly as documented.
"""
from __future__ import annotations

import json
import shutil
import subprocess

import MySQLdb
import pytest

from backups_app.encryption import generate_key_pair, recipient_fingerprint
from backups_app.exceptions import RestoreRefused
from backups_app.models import BackupRecord, RestoreRecord, Trigger
from backups_app.services.backup import backup_create
from backups_app.services.restore import backup_restore
from backups_app.services.verify import backup_verify
from secrets_app import default_manager
from secrets_app.providers.local import LocalProvider
from tests.conftest import MARIADB, services_required

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def keys(settings):
    """Encryption on; the keys served by get_secret (from a provider, as in production)."""
    identity, recipient = generate_key_pair()
    break_glass_identity, break_glass_recipient = generate_key_pair()
    secrets = {"BACKUP_ENCRYPTION_RECIPIENTS": f"{recipient},{break_glass_recipient}",
               "BACKUP_ENCRYPTION_IDENTITY": identity}
    saved = dict(vars(default_manager))
    default_manager.configure(provider=LocalProvider(environ=secrets), ttl=0)
    settings.BACKUP_ENCRYPTION = "age"
    yield {"identity": identity, "recipient": recipient, "break_glass": break_glass_identity, "secrets": secrets}
    default_manager.__dict__.update(saved)


def forget_private_key(keys) -> None:
    """A host that only writes backups: the public keys, no private one."""
    keys["secrets"].pop("BACKUP_ENCRYPTION_IDENTITY")
    default_manager.invalidate()


def run_sql(alias: str, statement: str, rows=None):
    """On a connection of the test's own: the scratch database is not one the Django test case owns."""
    from django.db import connections

    connection = MySQLdb.connect(host=MARIADB["HOST"], port=MARIADB["PORT"], user=MARIADB["USER"], passwd="",
                                 db=connections.settings[alias]["NAME"], charset="utf8mb4")
    try:
        cursor = connection.cursor()
        if rows is None:
            cursor.execute(statement)
        else:
            cursor.executemany(statement, rows)
        connection.commit()
        return cursor.fetchall()
    finally:
        connection.close()


def messages_table(alias: str, rows: int = 500) -> None:
    run_sql(alias, "CREATE TABLE messages (id INT PRIMARY KEY, body TEXT) CHARACTER SET utf8mb4")
    run_sql(alias, "INSERT INTO messages VALUES (%s, %s)",
            [(number, f"olá, conversa número {number}") for number in range(rows)])


def message_count(alias: str) -> int:
    return run_sql(alias, "SELECT count(*) FROM messages")[0][0]


def test_an_encrypted_backup_restores_and_verifies_through_the_private_key(mariadb_database, keys, backup_dir):
    messages_table(mariadb_database)
    record = backup_create(database=mariadb_database, trigger=Trigger.CLI, compression="zstd")

    assert record.name.endswith(".sql.zst.age") and record.encrypted
    assert record.encryption_recipients[0] == recipient_fingerprint(keys["recipient"])
    assert len(record.encryption_recipients) == 2
    stored = (backup_dir / record.name).read_bytes()
    assert stored.startswith(b"age-encryption.org/v1") and "conversa".encode() not in stored
    manifest = json.loads((backup_dir / f"{record.name}.json").read_text())
    assert manifest["encrypted"] is True and manifest["encryption_recipients"] == record.encryption_recipients

    run_sql(mariadb_database, "DELETE FROM messages")
    backup_restore(backup=record, trigger=Trigger.CLI)
    assert message_count(mariadb_database) == 500
    assert backup_verify(backup=record, source="cli").verification_status == BackupRecord.VerificationStatus.VERIFIED


def test_without_the_private_key_a_restore_is_refused_before_the_database_is_touched(mariadb_database, keys):
    messages_table(mariadb_database)
    record = backup_create(database=mariadb_database, trigger=Trigger.CLI, compression="zstd")
    forget_private_key(keys)
    run_sql(mariadb_database, "DELETE FROM messages WHERE id >= 100")

    with pytest.raises(RestoreRefused, match="BACKUP_ENCRYPTION_IDENTITY is not configured"):
        backup_restore(backup=record, trigger=Trigger.CLI)
    assert message_count(mariadb_database) == 100
    restore = RestoreRecord.objects.get()
    assert restore.status == RestoreRecord.Status.REFUSED and restore.safety_backup is None
    assert "\n" not in restore.error_message


def test_a_flipped_byte_in_an_encrypted_file_is_refused(mariadb_database, keys, backup_dir):
    messages_table(mariadb_database)
    record = backup_create(database=mariadb_database, trigger=Trigger.CLI, compression="gzip")
    path = backup_dir / record.name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    with pytest.raises(RestoreRefused):
        backup_restore(backup=record, trigger=Trigger.CLI)
    assert message_count(mariadb_database) == 500


def test_the_documented_shell_pipeline_restores_an_encrypted_backup(mariadb_database, keys, backup_dir, tmp_path):
    """docs/BACKUP_GUIDE.md: age -d -i key.txt backup_....sql.zst.age | zstd -d | mariadb chat"""
    age = shutil.which("age")
    if age is None:
        if services_required():
            pytest.fail("the age tool is missing (apt-get install -y age)")
        pytest.skip("the age tool is missing (apt-get install -y age)")
    messages_table(mariadb_database)
    record = backup_create(database=mariadb_database, trigger=Trigger.CLI, compression="zstd")
    from django.db import connections

    name = connections.settings[mariadb_database]["NAME"]
    run_sql(mariadb_database, "DROP TABLE messages")
    # The break-glass key alone, as an operator holding only the offline key would do it.
    (tmp_path / "key.txt").write_text(keys["break_glass"] + "\n")
    client = f"mariadb -h {MARIADB['HOST']} -P {MARIADB['PORT']} -u {MARIADB['USER']} {name}"
    subprocess.run(  # noqa: S602 - a fixed, documented pipeline
        f"age -d -i key.txt {backup_dir / record.name} | zstd -d | {client}",
        shell=True, cwd=tmp_path, check=True, capture_output=True,
    )
    assert message_count(mariadb_database) == 500
