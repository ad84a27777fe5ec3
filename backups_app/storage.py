"""Where backup files live: the local backup storage and the offsite (S3) copy.

Every service that writes, opens or deletes a backup file gets its storage here, so that retention,
offsite copies, restores and deletion share one accessor instead of importing each other.

The local storage is Django's `storages["backups"]` (BACKUP_DIR). The offsite storage is
`storages["backups_offsite"]` (django-storages' S3Storage, private ACL), configured by
backups_app.conf when BACKUP_OFFSITE_BUCKET is set; boto3 is imported only by the functions that talk to S3.
"""
from __future__ import annotations

import hashlib
import logging
import posixpath
from typing import BinaryIO

from django.conf import settings
from django.core.files.storage import Storage, storages
from django.utils.translation import gettext as _

from backups_app.conf import app_settings
from backups_app.exceptions import BackupNotFound
from backups_app.models import BackupRecord

logger = logging.getLogger(__name__)

HASH_CHUNK_BYTES = 1024 * 1024


def backup_storage() -> Storage:
    return storages["backups"]


def delete_quietly(storage: Storage, name: str) -> None:
    try:
        storage.delete(name)
    except Exception:  # noqa: BLE001
        logger.warning("Could not delete %s from the backup storage.", name, exc_info=True)


# --- Offsite --------------------------------------------------------------------------------------
def offsite_enabled() -> bool:
    """Whether offsite copies are configured (BACKUP_OFFSITE_BUCKET set)."""
    return bool(app_settings.BACKUP_OFFSITE_BUCKET) and "backups_offsite" in settings.STORAGES


def offsite_storage():
    """The S3 storage holding offsite copies, with BACKUP_OFFSITE_CHUNK_MB as its part size.

    The part size is set here rather than in settings.py so that boto3 is imported only by the
    processes that talk to S3; a `transfer_config` given in the storage's OPTIONS wins.
    """
    storage = storages["backups_offsite"]
    if not getattr(storage, "_opsdesk_transfer_config", False):
        if "transfer_config" not in settings.STORAGES["backups_offsite"].get("OPTIONS", {}):
            from boto3.s3.transfer import TransferConfig

            part_bytes = max(app_settings.BACKUP_OFFSITE_CHUNK_MB, 5) * 1024 * 1024
            storage.transfer_config = TransferConfig(
                multipart_threshold=part_bytes, multipart_chunksize=part_bytes
            )
        storage._opsdesk_transfer_config = True
    return storage


def sha256_and_size(stream: BinaryIO) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(HASH_CHUNK_BYTES):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def offsite_object_key(storage, name: str) -> str:
    """The S3 key of a storage name (the storage's `location` is the key prefix)."""
    return posixpath.join(storage.location, name) if storage.location else name


def offsite_object_open(storage, name: str) -> BinaryIO:
    """Stream an object straight from S3.

    Not `storage.open()`: its S3File buffers the whole object in memory first (a
    SpooledTemporaryFile without a size limit), which a multi-gigabyte backup must not do.
    """
    from botocore.exceptions import ClientError

    try:
        response = storage.connection.meta.client.get_object(
            Bucket=storage.bucket_name, Key=offsite_object_key(storage, name)
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
            raise FileNotFoundError(name) from None
        raise
    return response["Body"]


def offsite_open(*, backup: BackupRecord) -> BinaryIO:
    """Open the offsite copy of a backup for reading; BackupNotFound when there is none."""
    if not offsite_enabled() or backup.offsite_status != BackupRecord.OffsiteStatus.UPLOADED:
        raise BackupNotFound(_("%(name)s has no offsite copy.") % {"name": backup.name})
    try:
        return offsite_object_open(offsite_storage(), backup.offsite_name)
    except FileNotFoundError:
        raise BackupNotFound(_("The offsite copy of %(name)s is gone.") % {"name": backup.name}) from None
    except Exception as error:  # noqa: BLE001 - unreachable store, lost credentials: no copy to read
        logger.warning("offsite copy of %s unreachable: %s", backup.name, error)
        raise BackupNotFound(
            _("The offsite copy of %(name)s cannot be read: %(error)s") % {"name": backup.name, "error": type(error).__name__}
        ) from None


__all__ = [
    "backup_storage", "delete_quietly", "offsite_enabled", "offsite_object_key", "offsite_object_open",
    "offsite_open", "offsite_storage", "sha256_and_size",
]
