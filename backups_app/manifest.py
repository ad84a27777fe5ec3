"""The JSON manifest stored beside each backup file (`<name>.json`).

It holds everything needed to rebuild the BackupRecord from storage alone, so that when the ops
database itself is lost (or restored to an older state) `sync_backups` lists and restores backups
again. It is written after the backup file was fsynced and before the file gets its final name.

A manifest is a claim made by whoever can write into the storage, so opsdesk signs its own: an
HMAC-SHA256 over the manifest's canonical JSON (sorted keys, no whitespace, without the `signature`
field), keyed by the secret `BACKUP_SIGNING_KEY` (through `get_secret`) or, when that is unset, by a
key derived from SECRET_KEY for this one purpose. `sync_backups` trusts only manifests whose
signature checks; the others become `untrusted` records that a superuser must adopt.
"""
from __future__ import annotations

import hmac
import json
from datetime import datetime
from hashlib import sha256
from typing import Any

from django.conf import settings
from django.core.files.storage import Storage
from django.utils.crypto import salted_hmac

from backups_app.models import BackupRecord
from backups_app.pipeline import open_stored, write_small_file

MANIFEST_FORMAT = 1
MANIFEST_SUFFIX = ".json"
FIELDS = (
    "name", "database", "engine", "kind", "trigger", "compression", "raw_size_bytes", "size_bytes",
    "sha256", "duration_seconds", "tool_versions", "table_row_counts", "encrypted", "encryption_recipients",
    "binlog_file", "binlog_position", "binlog_gtid", "media_mode", "media_file_list_sha256",
)
TIME_FIELDS = ("created_at", "started_at", "finished_at")


SIGNATURE_FIELD = "signature"
SIGNATURE_PREFIX = "hmac-sha256:"
#: Salt of the key derived from SECRET_KEY: a manifest signature is useless for anything else.
DERIVED_KEY_SALT = "opsdesk.backups.manifest-signing-key"


def manifest_name(backup_name: str) -> str:
    return backup_name + MANIFEST_SUFFIX


def _signing_keys() -> list[bytes]:
    """The current key first, then the keys of SECRET_KEY_FALLBACKS (a rotated SECRET_KEY)."""
    from secrets_app import get_secret

    configured = get_secret("BACKUP_SIGNING_KEY", default=None)
    if configured:
        return [configured.encode()]
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return [salted_hmac(DERIVED_KEY_SALT, "v1", secret=secret, algorithm="sha256").digest() for secret in secrets]


def derived_key(purpose: str) -> bytes:
    """A key for one other purpose (`purpose` names it), derived from the current signing key."""
    return hmac.new(_signing_keys()[0], f"opsdesk derived key: {purpose}".encode(), sha256).digest()


def _canonical(data: dict[str, Any]) -> bytes:
    unsigned = {key: value for key, value in data.items() if key != SIGNATURE_FIELD}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _signature(key: bytes, data: dict[str, Any]) -> str:
    return SIGNATURE_PREFIX + hmac.new(key, _canonical(data), sha256).hexdigest()


def manifest_sign(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with its signature, by the current key."""
    return {**data, SIGNATURE_FIELD: _signature(_signing_keys()[0], data)}


def manifest_is_signed(data: dict[str, Any]) -> bool:
    """Whether `data` (as parsed, times still strings) carries a valid signature of ours."""
    claimed = data.get(SIGNATURE_FIELD)
    if not isinstance(claimed, str) or not claimed.startswith(SIGNATURE_PREFIX):
        return False
    return any(hmac.compare_digest(claimed, _signature(key, data)) for key in _signing_keys())


def manifest_from_record(record: BackupRecord) -> dict[str, Any]:
    data: dict[str, Any] = {"format": MANIFEST_FORMAT, "status": record.status}
    data.update({field: getattr(record, field) for field in FIELDS})
    data.update({field: getattr(record, field).isoformat() if getattr(record, field) else None for field in TIME_FIELDS})
    data["user"] = record.user.get_username() if record.user_id else None
    # A media incremental names its parent archive: a rebuilt record finds its chain again.
    data["parent"] = record.parent.name if record.parent_id else None
    return manifest_sign(data)


def manifest_write(*, storage: Storage, record: BackupRecord, file_name: str | None = None) -> None:
    """Write the record's manifest (atomically: temporary name, fsync, rename)."""
    content = json.dumps(manifest_from_record(record), indent=2, sort_keys=True).encode()
    write_small_file(storage, manifest_name(file_name or record.name), content)


def manifest_read(*, storage: Storage, name: str) -> dict[str, Any]:
    """Parse one manifest; ValueError when it is not a manifest (signed or not) of this format.

    `data["signed"]` says whether its signature is ours; only then are its claims to be believed.
    """
    with open_stored(storage, name) as handle:  # never through a planted symlink
        data = json.loads(handle.read(1 << 20))
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("name"), str):
        raise ValueError(f"{name} is not an opsdesk backup manifest")
    if manifest_name(data["name"]) != name.rsplit("/", 1)[-1]:
        raise ValueError(f"{name} describes another file ({data['name']})")
    data["signed"] = manifest_is_signed(data)
    for field in TIME_FIELDS:
        if data.get(field):
            try:
                data[field] = datetime.fromisoformat(data[field])
            except (TypeError, ValueError):
                raise ValueError(f"{name} has an invalid {field}") from None
    return data


def record_fields_from_manifest(data: dict[str, Any]) -> dict[str, Any]:
    """Model field values for a record rebuilt from a manifest (the user is resolved by the caller)."""
    fields = {field: data.get(field) for field in FIELDS if field != "name"}
    fields.update({field: data.get(field) for field in TIME_FIELDS})
    fields["tool_versions"] = fields["tool_versions"] or {}
    fields["table_row_counts"] = fields["table_row_counts"] or {}
    # Manifests written before encryption existed lack these: such a file is plain.
    fields["encrypted"] = bool(fields["encrypted"])
    fields["encryption_recipients"] = fields["encryption_recipients"] or []
    # Manifests written before binlog coordinates existed have none.
    fields["binlog_file"] = fields["binlog_file"] or ""
    fields["binlog_gtid"] = fields["binlog_gtid"] or ""
    # Manifests written before media chains existed have none; a parent is found by its name
    # (manifests are read oldest first, so it is usually there already).
    fields["media_mode"] = fields["media_mode"] or ""
    fields["media_file_list_sha256"] = fields["media_file_list_sha256"] or ""
    parent = data.get("parent")
    fields["parent"] = BackupRecord.objects.filter(name=parent).first() if isinstance(parent, str) else None
    fields["status"] = BackupRecord.Status.SUCCESS
    return fields
