"""age encryption of backup streams: readable by the standard `age` tool, authenticated end to end.

The `age` command line tool (Debian's `age` package) is the independent reader: what opsdesk
writes must decrypt with it, and what it writes must decrypt with opsdesk.
"""
from __future__ import annotations

import hashlib
import io
import shutil
import subprocess

import pytest
from django.core.management import call_command

from backups_app.encryption import (
    DecryptingReader,
    EncryptingCompressor,
    EncryptionKeyMissing,
    generate_key_pair,
    parse_identities,
    parse_recipients,
    recipient_fingerprint,
    split_keys,
)
from backups_app.exceptions import BackupError
from backups_app.pipeline import DecompressingReader, make_compressor
from tests.conftest import services_required

DUMP = b"".join(b"INSERT INTO messages VALUES (%d, 'ol\xc3\xa1 %d');\n" % (number, number * 7919 % 10007)
                for number in range(200_000)) + b"-- Dump completed\n"


def encrypt(data: bytes, recipients: str, compression: str = "zstd") -> bytes:
    compressor = EncryptingCompressor(make_compressor(compression), parse_recipients(recipients))
    parts = [compressor.compress(data[start:start + (1 << 20)]) for start in range(0, len(data), 1 << 20)]
    return b"".join(parts) + compressor.flush()


def decrypt(stored: bytes, identities: str, compression: str = "zstd") -> bytes:
    reader = DecryptingReader(io.BytesIO(stored), parse_identities(identities))
    return DecompressingReader(reader, compression=compression).read()


def require_age() -> str:
    path = shutil.which("age")
    if path is None:
        message = "the age command line tool is missing (apt-get install -y age)"
        if services_required():
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def key_pair():
    return generate_key_pair()


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_round_trip_through_compression_and_encryption(key_pair, compression):
    identity, recipient = key_pair
    stored = encrypt(DUMP, recipient, compression)
    assert DUMP[:64] not in stored
    assert decrypt(stored, identity, compression) == DUMP


def test_the_standard_age_tool_decrypts_what_opsdesk_wrote(tmp_path, key_pair):
    age = require_age()
    identity, recipient = key_pair
    (tmp_path / "key.txt").write_text(identity + "\n")
    (tmp_path / "backup.sql.zst.age").write_bytes(encrypt(DUMP, recipient))
    # Exactly the pipeline the documentation gives to operators, minus the database at the end.
    result = subprocess.run(  # noqa: S602 - a fixed, documented pipeline
        f"{age} -d -i key.txt backup.sql.zst.age | zstd -d | sha256sum",
        shell=True, cwd=tmp_path, capture_output=True, text=True, check=True,
    )
    assert result.stdout.split()[0] == hashlib.sha256(DUMP).hexdigest()


def test_opsdesk_decrypts_what_the_age_tool_wrote(tmp_path, key_pair):
    age = require_age()
    identity, recipient = key_pair
    (tmp_path / "dump.sql").write_bytes(DUMP)
    subprocess.run([age, "-r", recipient, "-o", "dump.sql.age", "dump.sql"], cwd=tmp_path, check=True)
    assert decrypt((tmp_path / "dump.sql.age").read_bytes(), identity, "none") == DUMP


def test_a_second_recipient_can_decrypt_alone(key_pair):
    identity, recipient = key_pair
    break_glass_identity, break_glass_recipient = generate_key_pair()
    stored = encrypt(DUMP, f"{recipient}, {break_glass_recipient}")
    assert decrypt(stored, break_glass_identity) == DUMP
    assert decrypt(stored, identity) == DUMP


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "wrong key"])
def test_damage_or_a_wrong_key_raises_instead_of_returning_bytes(key_pair, damage):
    identity, recipient = key_pair
    stored = bytearray(encrypt(DUMP, recipient))
    if damage == "flipped byte":
        stored[len(stored) // 2] ^= 0x01
    elif damage == "truncated":
        del stored[-100:]
    else:
        identity = generate_key_pair()[0]
    with pytest.raises(BackupError, match="cannot be decrypted"):
        decrypt(bytes(stored), identity)


def test_keys_are_validated_without_echoing_private_material(key_pair):
    identity, recipient = key_pair
    with pytest.raises(BackupError, match="not an age public key"):
        parse_recipients("ssh-ed25519 AAAA")
    with pytest.raises(BackupError) as raised:
        parse_identities(identity[:-3] + "QQQ" if not identity.endswith("QQQ") else identity[:-3] + "PPP")
    assert identity[20:] not in str(raised.value)
    with pytest.raises(EncryptionKeyMissing):
        EncryptingCompressor(make_compressor("zstd"), [])
    with pytest.raises(EncryptionKeyMissing, match="BACKUP_ENCRYPTION_IDENTITY"):
        DecryptingReader(io.BytesIO(b""), [])


def test_key_lists_read_like_age_key_files(key_pair):
    identity, recipient = key_pair
    text = f"# created: 2026-11-29\n# public key: {recipient}\n{identity}\n"
    assert split_keys(text) == [identity]
    assert split_keys(f"{recipient},{recipient}\n{recipient}") == [recipient] * 3
    assert len(recipient_fingerprint(recipient)) == 16


def test_generate_backup_key_prints_a_usable_pair(capsys):
    call_command("generate_backup_key")
    lines = capsys.readouterr().out.splitlines()
    recipient = lines[1].removeprefix("# public key: ")
    identity = lines[2]
    assert decrypt(encrypt(DUMP, recipient), identity) == DUMP
