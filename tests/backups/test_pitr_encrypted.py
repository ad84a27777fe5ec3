"""BACKUP_ENCRYPTION=age and the point-in-time archive, against a private mariadbd with a binlog.

Segments are written encrypted in the pipeline (nothing plain in the archive), recorded and
manifested as encrypted with the recipients' fingerprints, decrypted by a point-in-time restore and
its verification with BACKUP_ENCRYPTION_IDENTITY, refused in one line before the database is touched
without that key or with a wrong one, readable by Debian's `age`, and re-encrypted by
`reencrypt_backups`.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import subprocess

import pytest
from django.core.management import CommandError, call_command

from backups_app.encryption import generate_key_pair, recipient_fingerprint
from backups_app.exceptions import RestoreRefused
from backups_app.models import AuditEntry, BinlogSegment, RestoreRecord, Trigger
from backups_app.pipeline import Decompressor
from backups_app.services.backup import backup_create
from backups_app.services.binlogs import (
    BinlogArchiverRun,
    binlog_segments_sync,
    binlog_window,
    segment_read,
    segments_check,
)
from backups_app.services.pitr import pitr_restore, pitr_verify, recovery_target_parse
from secrets_app import default_manager
from secrets_app.providers.local import LocalProvider
from tests.conftest import services_required

from .binlog_server import tools_available
from .test_pitr import ids_in, master_position, server, wait_until_streamed, write_rows  # noqa: F401 - fixture

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(bool(tools_available()), reason=f"MariaDB server tools missing: {tools_available()}"),
]


@pytest.fixture
def keys(settings):
    """Encryption on; two recipients (one a break-glass key); keys served by get_secret."""
    identity, recipient = generate_key_pair()
    break_glass_identity, break_glass_recipient = generate_key_pair()
    secrets = {"BACKUP_ENCRYPTION_RECIPIENTS": f"{recipient},{break_glass_recipient}",
               "BACKUP_ENCRYPTION_IDENTITY": identity}
    saved = dict(vars(default_manager))
    default_manager.configure(provider=LocalProvider(environ=secrets), ttl=0)
    settings.BACKUP_ENCRYPTION = "age"
    yield {"identity": identity, "recipient": recipient, "break_glass": break_glass_identity,
           "break_glass_recipient": break_glass_recipient, "secrets": secrets}
    default_manager.__dict__.update(saved)


def use_identity(keys, identity: str | None) -> None:
    if identity is None:
        keys["secrets"].pop("BACKUP_ENCRYPTION_IDENTITY", None)
    else:
        keys["secrets"]["BACKUP_ENCRYPTION_IDENTITY"] = identity
    default_manager.invalidate()


def archive(server, rows: int) -> tuple[list[int], str]:
    """A base backup, `rows` more rows archived in closed segments; (their ids, the position after)."""
    run = BinlogArchiverRun(database="chat", segment_seconds_value=0)
    run.start()
    try:
        backup_create(database="chat", trigger=Trigger.CLI)
        ids = write_rows(server, rows, "after-base")
        wait_until_streamed(run, server)
        run.poll(force=True)
    finally:
        run.stop()
    return ids, ":".join(map(str, master_position(server)))


def test_segments_are_stored_encrypted_and_a_restore_decrypts_them(server, keys, backup_dir):
    kept, position = archive(server, 6)
    segments = list(BinlogSegment.objects.filter(database="chat"))
    assert segments
    fingerprints = [recipient_fingerprint(keys["recipient"]), recipient_fingerprint(keys["break_glass_recipient"])]
    for segment in segments:
        assert segment.encrypted and segment.name.endswith(".age")
        assert segment.encryption_recipients == fingerprints
        stored = (backup_dir / segment.storage_name).read_bytes()
        assert stored.startswith(b"age-encryption.org/v1")
        manifest = json.loads((backup_dir / f"{segment.storage_name}.json").read_text())
        assert manifest["encrypted"] is True and manifest["encryption_recipients"] == fingerprints
    # Nothing plain was left beside them in the archive folder (temporaries included).
    archived = [p for p in (backup_dir / "binlogs" / "chat").iterdir() if p.is_file()]
    assert all(p.name.endswith((".age", ".age.json")) for p in archived), archived

    server.execute("DELETE FROM chat.message")
    restore = pitr_restore(database="chat", target=recovery_target_parse(to_position=position), trigger=Trigger.CLI)
    assert restore.status == "success"
    assert set(kept) <= ids_in(server)


def test_the_break_glass_key_and_debians_age_read_a_segment(server, keys, backup_dir, tmp_path):
    archive(server, 3)
    segment = BinlogSegment.objects.filter(database="chat").order_by("-end_position").first()
    use_identity(keys, keys["break_glass"])
    raw = segment_read(segment=segment)
    assert len(raw) == segment.end_position - segment.start_position

    age = shutil.which("age")
    if age is None:
        if services_required():
            pytest.fail("the age tool is missing (apt-get install -y age)")
        pytest.skip("the age tool is missing (apt-get install -y age)")
    key_file = tmp_path / "key.txt"
    key_file.write_text(keys["identity"] + "\n")
    decrypted = subprocess.run([age, "-d", "-i", str(key_file), str(backup_dir / segment.storage_name)],
                               capture_output=True, check=True).stdout
    decompressor = Decompressor(segment.compression)
    assert decompressor.decompress(decrypted) == raw and decompressor.complete


@pytest.mark.parametrize("identity", ["none", "wrong"])
def test_without_the_right_key_a_restore_is_refused_in_one_line_before_the_database_is_touched(
        server, keys, identity):
    _kept, position = archive(server, 4)
    server.execute("DELETE FROM chat.message WHERE id > 2")
    before = ids_in(server)
    use_identity(keys, None if identity == "none" else generate_key_pair()[0])
    target = recovery_target_parse(to_position=position)

    with pytest.raises(RestoreRefused) as refused:
        pitr_restore(database="chat", target=target, trigger=Trigger.CLI)
    message = str(refused.value)
    assert "BACKUP_ENCRYPTION_IDENTITY" in message and "\n" not in message
    assert ids_in(server) == before
    assert not RestoreRecord.objects.filter(status=RestoreRecord.Status.SUCCESS).exists()
    assert AuditEntry.objects.filter(action="restore", outcome="refused").exists()
    with pytest.raises(RestoreRefused, match="BACKUP_ENCRYPTION_IDENTITY"):
        pitr_verify(database="chat", target=target)
    # A host without the key (or with another one) never marks an intact segment corrupt.
    assert segments_check(database="chat") == []
    assert set(BinlogSegment.objects.values_list("status", flat=True)) == {BinlogSegment.Status.OK}


def test_a_flipped_byte_in_an_encrypted_segment_is_caught(server, keys, backup_dir):
    _kept, position = archive(server, 4)
    segment = BinlogSegment.objects.filter(database="chat").order_by("-end_position").first()
    path = backup_dir / segment.storage_name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    before = ids_in(server)

    with pytest.raises(RestoreRefused, match="does not match its SHA-256"):
        pitr_restore(database="chat", target=recovery_target_parse(to_position=position), trigger=Trigger.CLI)
    assert ids_in(server) == before
    assert segments_check(database="chat") == [segment]


def test_verify_decrypts_the_base_backup_and_the_segments(server, keys, capsys):
    _kept, position = archive(server, 5)
    call_command("verify_backup", database="chat", to_position=position)
    assert "1 tables, 5 rows" in capsys.readouterr().out


def test_segment_records_rebuilt_from_manifests_stay_encrypted(server, keys):
    archive(server, 2)
    expected = sorted(BinlogSegment.objects.values_list("name", "encrypted", "encryption_recipients"))
    BinlogSegment.objects.all().delete()
    assert binlog_segments_sync() == len(expected)
    assert sorted(BinlogSegment.objects.values_list("name", "encrypted", "encryption_recipients")) == expected


def test_reencrypt_backups_rotates_the_segments_too(server, keys, settings, backup_dir, capsys):
    settings.BACKUP_ENCRYPTION = ""
    kept, position = archive(server, 4)
    plain = list(BinlogSegment.objects.filter(database="chat"))
    assert plain and not any(segment.encrypted for segment in plain)
    new_identity, new_recipient = generate_key_pair()

    call_command("reencrypt_backups", to_recipients=new_recipient)

    segments = list(BinlogSegment.objects.filter(database="chat"))
    assert len(segments) == len(plain)
    for segment in segments:
        assert segment.encrypted and segment.name.endswith(".age")
        assert segment.encryption_recipients == [recipient_fingerprint(new_recipient)]
        assert (backup_dir / segment.storage_name).read_bytes().startswith(b"age-encryption.org/v1")
        assert not (backup_dir / segment.storage_name[:-len(".age")]).exists()
    assert "re-encrypted as binlogs/chat/" in capsys.readouterr().out

    use_identity(keys, keys["identity"])  # the old key does not open the rotated files
    with pytest.raises(RestoreRefused, match="BACKUP_ENCRYPTION_IDENTITY"):
        pitr_restore(database="chat", target=recovery_target_parse(to_position=position), trigger=Trigger.CLI)
    use_identity(keys, new_identity)
    server.execute("DELETE FROM chat.message")
    restore = pitr_restore(database="chat", target=recovery_target_parse(to_position=position), trigger=Trigger.CLI)
    assert restore.status == "success" and set(kept) <= ids_in(server)
    # Rotated again to the same key: nothing left to do.
    call_command("reencrypt_backups", to_recipients=new_recipient)
    assert "binlogs/chat/" not in capsys.readouterr().out


def test_admin_and_api_refuse_a_point_in_time_restore_without_the_key_in_one_line(server, keys, client,
                                                                                   django_user_model):
    from rest_framework.test import APIClient

    from backups_app.services.tokens import api_token_create

    _kept, position = archive(server, 3)
    newest = binlog_window(database="chat").windows[-1].end
    use_identity(keys, None)
    before = ids_in(server)
    user = django_user_model.objects.create_superuser("root-pitr-enc", "r@example.com", "pw")
    client.force_login(user)
    page = client.post("/admin/backups_app/backuprecord/point-in-time/chat/",
                       {"to_time": newest.isoformat(), "confirm_database": "chat"})
    assert page.status_code == 400 and b"BACKUP_ENCRYPTION_IDENTITY is not configured" in page.content

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user, source='cli').raw_token}")
    answer = api.post("/api/v1/backup/restore", {"database": "chat", "to_position": position}, format="json")
    assert answer.status_code == 409 and answer.json()["error"] == "encryption_key_missing"
    assert "\n" not in answer.json()["detail"]
    assert ids_in(server) == before
    assert not RestoreRecord.objects.exists()


def test_a_damaged_segment_is_not_re_encrypted_and_stays_as_it_was(server, keys, settings, backup_dir):
    settings.BACKUP_ENCRYPTION = ""
    archive(server, 3)
    segment = BinlogSegment.objects.filter(database="chat").order_by("-end_position").first()
    path = backup_dir / segment.storage_name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    folder = backup_dir / "binlogs" / "chat"
    files_before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    with pytest.raises(CommandError, match="could not be re-encrypted"):
        call_command("reencrypt_backups", to_recipients=generate_key_pair()[1])

    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == files_before
    unchanged = BinlogSegment.objects.get(pk=segment.pk)
    assert (unchanged.name, unchanged.sha256, unchanged.encrypted) == (segment.name, segment.sha256, False)
    assert AuditEntry.objects.filter(action="reencrypt", target=segment.name, outcome="failure").exists()


def test_archiving_with_encryption_on_and_no_recipient_writes_nothing_plain(server, keys, backup_dir):
    keys["secrets"]["BACKUP_ENCRYPTION_RECIPIENTS"] = ""
    default_manager.invalidate()
    run = BinlogArchiverRun(database="chat", segment_seconds_value=0)
    run.start()
    try:
        write_rows(server, 2)
        wait_until_streamed(run, server)
        with pytest.raises(RestoreRefused, match="BACKUP_ENCRYPTION_RECIPIENTS is empty"):
            run.poll(force=True)
    finally:
        with contextlib.suppress(RestoreRefused):  # its last poll refuses the same way
            run.stop()
    assert not BinlogSegment.objects.exists()
    folder = backup_dir / "binlogs" / "chat"
    assert not [p for p in folder.iterdir() if p.is_file()]
