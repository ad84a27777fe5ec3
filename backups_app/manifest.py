"""The JSON manifest stored beside each backup file (`<name>.json`).

It holds everything needed to rebuild the BackupRecord from storage alone, so that when the ops
database itself is lost (or restored to an older state) `sync_backups` lists and restores backups
again. It is written after the backup file was fsynced and before the file gets its final name.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.core.files.storage import Storage

from backups_app.models import BackupRecord
from backups_app.pipeline import write_small_file

MANIFEST_FORMAT = 1
MANIFEST_SUFFIX = ".json"
FIELDS = (
    "name", "database", "engine", "kind", "trigger", "compression", "raw_size_bytes", "size_bytes",
    "sha256", "duration_seconds", "tool_versions", "table_row_counts",
)
TIME_FIELDS = ("created_at", "started_at", "finished_at")


def manifest_name(backup_name: str) -> str:
    return backup_name + MANIFEST_SUFFIX


def manifest_from_record(record: BackupRecord) -> dict[str, Any]:
    data: dict[str, Any] = {"format": MANIFEST_FORMAT, "status": record.status}
    data.update({field: getattr(record, field) for field in FIELDS})
    data.update({field: getattr(record, field).isoformat() if getattr(record, field) else None for field in TIME_FIELDS})
    data["user"] = record.user.get_username() if record.user_id else None
    return data


def manifest_write(*, storage: Storage, record: BackupRecord, file_name: str | None = None) -> None:
    """Write the record's manifest (atomically: temporary name, fsync, rename)."""
    content = json.dumps(manifest_from_record(record), indent=2, sort_keys=True).encode()
    write_small_file(storage, manifest_name(file_name or record.name), content)


def manifest_read(*, storage: Storage, name: str) -> dict[str, Any]:
    """Parse one manifest; ValueError when it is not a manifest opsdesk wrote."""
    with storage.open(name, "rb") as handle:
        data = json.loads(handle.read(1 << 20))
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not data.get("name"):
        raise ValueError(f"{name} is not an opsdesk backup manifest")
    if manifest_name(data["name"]) != name.rsplit("/", 1)[-1]:
        raise ValueError(f"{name} describes another file ({data['name']})")
    for field in TIME_FIELDS:
        if data.get(field):
            data[field] = datetime.fromisoformat(data[field])
    return data


def record_fields_from_manifest(data: dict[str, Any]) -> dict[str, Any]:
    """Model field values for a record rebuilt from a manifest (the user is resolved by the caller)."""
    fields = {field: data.get(field) for field in FIELDS if field != "name"}
    fields.update({field: data.get(field) for field in TIME_FIELDS})
    fields["tool_versions"] = fields["tool_versions"] or {}
    fields["table_row_counts"] = fields["table_row_counts"] or {}
    fields["status"] = BackupRecord.Status.SUCCESS
    return fields
