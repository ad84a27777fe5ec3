"""Backup records rebuilt from storage: `backups_sync` reads the manifests beside the files, and
`backup_adopt` lets a superuser trust a backup whose manifest opsdesk did not sign.

The records are the source of truth, but the files outlive them: after the ops database is lost or
restored to an older state, the signed manifests bring every backup back.
"""
from __future__ import annotations

import logging
from dataclasses import replace

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from django.utils.translation import gettext as _

from backups_app.encryption import EXTENSION as ENCRYPTED_EXTENSION
from backups_app.encryption import DecryptingReader, required_identities
from backups_app.engines import get_engine
from backups_app.exceptions import BackupError, RestoreRefused
from backups_app.manifest import (
    MANIFEST_SUFFIX,
    manifest_name,
    manifest_read,
    manifest_write,
    record_fields_from_manifest,
)
from backups_app.models import BackupRecord, Compression, Trigger
from backups_app.pipeline import EXTENSIONS, CheckResult, stream_check
from backups_app.services.audit import audit_log
from backups_app.services.backup import audit_actor
from backups_app.services.reading import backup_open
from backups_app.storage import backup_storage, delete_quietly

logger = logging.getLogger(__name__)


def _compression_of(name: str) -> str:
    """The compression a stored file's name says; checked by decompressing it before any use."""
    for compression, extension in EXTENSIONS.items():
        if extension and name.endswith(extension):
            return compression
    return Compression.NONE


def _adoption_check(backup: BackupRecord, *, compression: str, encrypted: bool) -> CheckResult:
    """Read a file nobody vouches for: its SHA-256 and size, and whether it decompresses (after
    decryption, for an .age file: a second read, through the private key) to a complete stream."""
    with backup_open(backup=backup) as stored:
        check = stream_check(stored, compression=compression if not encrypted else Compression.NONE)
    if not encrypted:
        return check
    identities = required_identities(backup_name=backup.name)
    with DecryptingReader(backup_open(backup=backup), identities) as decrypted:
        plain = stream_check(decrypted, compression=compression)
    return replace(plain, sha256=check.sha256, size_bytes=check.size_bytes)


def _untrusted_record_fields(data: dict) -> dict:
    """A record for a manifest without our signature: its claims are shown, never used.

    No SHA-256, sizes or user are taken over; the status keeps it from being restored, verified,
    downloaded or counted as good until a superuser adopts it, which re-reads the file itself.
    """
    def claim(field: str, length: int) -> str:
        value = data.get(field)
        return str(value)[:length] if isinstance(value, (str, int)) else ""

    created = data.get("created_at") if hasattr(data.get("created_at"), "tzinfo") else None
    if created is not None and created.tzinfo is None:
        created = None
    trigger = data.get("trigger") if data.get("trigger") in Trigger.values else Trigger.CLI
    return {
        "database": claim("database", 100), "engine": claim("engine", 50), "trigger": trigger,
        "kind": BackupRecord.Kind.REGULAR, "status": BackupRecord.Status.UNTRUSTED,
        "compression": _compression_of(data["name"]), "created_at": created or timezone.now(),
        "storage_name": data["name"], "sha256": "",
        "error_message": _(
            "Found in storage with a manifest that opsdesk did not sign (or whose signature does not "
            "match). Its claims (database %(database)s, engine %(engine)s, SHA-256 %(sha256)s) are not "
            "trusted: it cannot be restored, verified or downloaded until a superuser adopts it."
        ) % {"database": claim("database", 100) or "?", "engine": claim("engine", 50) or "?",
             "sha256": claim("sha256", 64) or "?"},
    }


def _trusted_record_fields(data: dict, users) -> dict:
    fields = record_fields_from_manifest(data)
    fields["storage_name"] = data["name"]
    fields["user"] = users.filter(**{users.model.USERNAME_FIELD: data["user"]}).first() if data.get("user") else None
    fields["error_message"] = ""
    return fields


#: Records a signed manifest may complete: the ops database was saved while that backup ran.
SYNC_UPGRADABLE = (BackupRecord.Status.QUEUED, BackupRecord.Status.RUNNING, BackupRecord.Status.UNTRUSTED)


def backups_sync() -> dict[str, int]:
    """Rebuild backup records from the manifests in the backup storage.

    Only a manifest signed by opsdesk (manifest.py) is believed: it creates a `success` record, or
    completes one that was `queued`, `running` or `untrusted`. A failed, interrupted or good record
    is never changed. A manifest without a valid signature creates an `untrusted` record (when no
    record has that name) and changes nothing else. A manifest whose file is missing is skipped.
    Returns counts: created, updated, skipped, untrusted.
    """
    storage = backup_storage()
    counts = {"created": 0, "updated": 0, "skipped": 0, "untrusted": 0}
    try:
        _directories, files = storage.listdir("")
    except FileNotFoundError:
        return counts
    from django.contrib.auth import get_user_model

    users = get_user_model().objects
    for manifest_file in sorted(f for f in files if f.endswith(MANIFEST_SUFFIX) and not f.startswith(".")):
        try:
            data = manifest_read(storage=storage, name=manifest_file)
        except (ValueError, OSError, BackupError) as error:
            logger.warning("Skipping %s: %s", manifest_file, error)
            counts["skipped"] += 1
            continue
        name = data["name"]
        if not storage.exists(name) or (data["signed"] and data.get("status") != BackupRecord.Status.SUCCESS):
            counts["skipped"] += 1
            continue
        existing = BackupRecord.objects.filter(name=name).first()
        if not data["signed"]:
            counts["untrusted"] += 1
            logger.warning("Manifest %s is not signed by opsdesk; its backup is listed as untrusted.", manifest_file)
            if existing is None:
                BackupRecord.objects.create(name=name, **_untrusted_record_fields(data))
                counts["created"] += 1
            continue
        fields = _trusted_record_fields(data, users)
        if existing is None:
            BackupRecord.objects.create(name=name, **fields)
            counts["created"] += 1
        elif BackupRecord.objects.filter(pk=existing.pk, status__in=SYNC_UPGRADABLE).update(**fields):
            counts["updated"] += 1
    return counts


def backup_adopt(*, backup: BackupRecord, source: str, user=None, database: str | None = None) -> BackupRecord:
    """Trust an `untrusted` backup after a superuser looked at it; audited.

    Nothing its manifest claimed is kept: the file is read (never through a symlink) and must
    decompress to its end and carry `database`'s engine completion marker; its SHA-256, sizes and
    engine come from that read and from the configured alias (default: the claimed one). A new
    signed manifest replaces the unsigned one. `user` None is the command line (an operating-system
    account on the server); any other user must be a superuser.
    """
    target = f"{backup.name} -> {database or backup.database}"

    def refuse(message: str) -> BackupError:
        audit_log(action="adopt", source=source, outcome="refused", user=user, actor=audit_actor(source, user),
                  target=target, detail=message)
        return RestoreRefused(message)

    if user is not None and not user.is_superuser:
        raise refuse(_("Only a superuser can adopt an untrusted backup."))
    if backup.status != BackupRecord.Status.UNTRUSTED:
        raise refuse(_("Backup %(name)s is %(status)s, not untrusted; there is nothing to adopt.")
                     % {"name": backup.name, "status": backup.get_status_display()})
    database = database or backup.database
    try:
        engine = get_engine(database)
    except ImproperlyConfigured as error:
        raise refuse(str(error)) from None
    stored_name = backup.storage_name or backup.name
    encrypted = stored_name.endswith(ENCRYPTED_EXTENSION)
    compression = _compression_of(stored_name.removesuffix(ENCRYPTED_EXTENSION))
    try:
        check = _adoption_check(backup, compression=compression, encrypted=encrypted)
    except BackupError as error:
        raise refuse(_("Backup %(name)s cannot be adopted: %(error)s.") % {"name": backup.name, "error": error}) from None
    if not check.stream_complete or not engine.is_complete(check.tail):
        raise refuse(_("Backup %(name)s is not a complete %(engine)s dump (its stream end or completion "
                       "marker is missing); it cannot be adopted.") % {"name": backup.name, "engine": engine.vendor})
    backup.database, backup.engine, backup.compression = database, engine.vendor, compression
    backup.encrypted = encrypted
    backup.sha256, backup.size_bytes, backup.raw_size_bytes = check.sha256, check.size_bytes, check.raw_size_bytes
    backup.status = BackupRecord.Status.SUCCESS
    backup.verification_status = BackupRecord.VerificationStatus.UNVERIFIED
    backup.table_row_counts, backup.tool_versions = {}, {}
    backup.error_message = ""
    storage = backup_storage()
    delete_quietly(storage, manifest_name(backup.name))
    manifest_write(storage=storage, record=backup)
    backup.save()
    audit_log(action="adopt", source=source, outcome="success", user=user, actor=audit_actor(source, user),
              target=target, detail=f"{check.size_bytes} bytes, sha256 {check.sha256}")
    return backup


__all__ = ["backup_adopt", "backups_sync"]
