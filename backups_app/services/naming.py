"""Backup names: every backup gets a name no other backup has, reserved with its record.

A name says the database and the moment (UTC) it was taken, then the engine's extension, the
compression's and `.age` when encryption is on: `backup_chat_20261129_143205.sql.gz.age`.
"""
from __future__ import annotations

import re
from datetime import UTC

from django.core.files.storage import Storage
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from backups_app.encryption import EXTENSION as ENCRYPTED_EXTENSION
from backups_app.encryption import encryption_enabled
from backups_app.engines.base import DumpEngine
from backups_app.exceptions import DumpFailed
from backups_app.manifest import manifest_name
from backups_app.models import BackupRecord
from backups_app.pipeline import EXTENSIONS
from backups_app.storage import backup_storage


def _name_stem(database: str, when) -> str:
    alias = "" if database == "default" else re.sub(r"[^a-z0-9-]+", "-", database.lower()).strip("-") + "_"
    return f"backup_{alias}{when.astimezone(UTC):%Y%m%d_%H%M%S}"


def _name_taken(storage: Storage, name: str) -> bool:
    return (
        BackupRecord.objects.filter(name=name).exists()
        or storage.exists(name)
        or storage.exists(manifest_name(name))
    )


def reserve_record(*, database: str, engine: DumpEngine, compression: str, **fields) -> BackupRecord:
    """Create the record under a name no other backup has (same second -> `_2`, `_3`...).

    The unique constraint on `name` settles races between processes; the storage is checked too,
    because files can outlive their records.
    """
    storage = backup_storage()
    now = timezone.now()
    stem = _name_stem(database, now)
    suffix = engine.file_extension + EXTENSIONS[compression] + (ENCRYPTED_EXTENSION if encryption_enabled() else "")
    for number in range(1, 1000):
        name = f"{stem}{'' if number == 1 else f'_{number}'}{suffix}"
        if _name_taken(storage, name):
            continue
        try:
            with transaction.atomic():
                return BackupRecord.objects.create(
                    name=name, database=database, engine=engine.vendor, compression=compression,
                    created_at=now, **fields,
                )
        except IntegrityError:
            continue
    raise DumpFailed(_("Could not find a free backup name."))


__all__ = ["reserve_record"]
