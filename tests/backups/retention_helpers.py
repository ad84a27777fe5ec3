"""Backup records and files made directly, the way the backup service stores them."""
from __future__ import annotations

import gzip
import hashlib
import json
import uuid
from datetime import datetime

from django.core.files.base import ContentFile
from django.core.files.storage import storages

from backups_app.manifest import manifest_name
from backups_app.models import BackupRecord

DUMP_TRAILER = b"\n-- Dump completed\n"


def make_backup(
    *,
    created_at: datetime,
    database: str = "default",
    status: str = BackupRecord.Status.SUCCESS,
    payload: bytes | None = None,
    with_file: bool = True,
    **fields,
) -> BackupRecord:
    """A record plus its gzip file and JSON manifest in the backups storage."""
    # Named and stored as the backup service does: the file is the name, the manifest <name>.json.
    name = f"backup_{database}_{created_at:%Y%m%d_%H%M%S}_{uuid.uuid4().hex[:6]}.sql.gz"
    storage_name = name
    compressed = gzip.compress(payload if payload is not None else b"CREATE TABLE t (x int);" + DUMP_TRAILER)
    if with_file:
        storage = storages["backups"]
        storage.save(storage_name, ContentFile(compressed))
        storage.save(manifest_name(name), ContentFile(json.dumps({"name": name}).encode()))
    values = {
        "name": name,
        "database": database,
        "engine": "sqlite",
        "status": status,
        "trigger": "schedule",
        "created_at": created_at,
        "compression": "gzip",
        "storage_name": storage_name if with_file else "",
        "sha256": hashlib.sha256(compressed).hexdigest(),
        "size_bytes": len(compressed),
    }
    values.update(fields)
    return BackupRecord.objects.create(**values)
