"""Backups and restores: the services every caller (commands, admin, API, Celery) goes through.

A backup is `success` only when the dump tool exited 0, its completion marker is in the stream, the
compressed stream was closed, the file was fsynced and atomically renamed to its final name and its
manifest written. Anything else leaves the record `failed` with the reason (passwords redacted) and
no file under a final name. A backup whose process died is found by the next run and marked
`interrupted`; neither is ever offered for restore.
"""
from __future__ import annotations

import getpass
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from backups_app import locks
from backups_app.encryption import EXTENSION as ENCRYPTED_EXTENSION
from backups_app.encryption import (
    DecryptingReader,
    EncryptingCompressor,
    configured_recipient_fingerprints,
    configured_recipients,
    required_identities,
)
from backups_app.engines import get_engine
from backups_app.engines.base import DumpEngine
from backups_app.engines.process import redact
from backups_app.exceptions import (
    BackupError,
    BackupLocked,
    DumpFailed,
    LockUnavailable,
    RestoreRefused,
)
from backups_app.manifest import (
    MANIFEST_SUFFIX,
    manifest_name,
    manifest_read,
    manifest_write,
    record_fields_from_manifest,
)
from backups_app.models import BackupRecord, Compression, Trigger
from backups_app.pipeline import (
    EXTENSIONS,
    CheckResult,
    PendingFile,
    make_compressor,
    stream_check,
    stream_to_storage,
)
from backups_app.services.audit import audit_log
from backups_app.services.dirty import DIRTY_BACKUP_ERROR, is_dirty
from backups_app.services.naming import reserve_record
from backups_app.services.orphans import backups_mark_interrupted, current_host
from backups_app.services.reading import backup_open
from backups_app.signals import backup_finished
from backups_app.storage import backup_storage, delete_quietly

logger = logging.getLogger(__name__)

#: progress(raw_bytes_dumped, compressed_bytes_written), called about once a second.
Progress = Callable[[int, int], None]


def audit_source(trigger: str) -> str:
    # Triggers and audit sources share their values (cli, admin, api, schedule).
    return str(trigger)


def audit_actor(trigger: str, user) -> str:
    """Who to name in the audit log when no opsdesk user is involved: on the command line, the
    operating-system account that ran the command ("cli:deploy"); otherwise the source itself."""
    if user is None and str(trigger) == Trigger.CLI:
        try:
            return f"cli:{getpass.getuser()}"
        except (KeyError, OSError):
            return "cli"
    return ""


def _secrets_of(engine: DumpEngine) -> list[str]:
    return [engine.settings_dict.get("PASSWORD") or ""]


def error_text(error: BaseException, engine: DumpEngine | None) -> str:
    text = str(error) or error.__class__.__name__
    return redact(text, _secrets_of(engine) if engine else [])[:4000]


def check_compression(compression: str | None) -> str:
    compression = compression or settings.BACKUP_COMPRESSION
    if compression not in Compression.values:
        raise BackupError(
            _("Unknown compression %(value)r: use one of %(choices)s.")
            % {"value": compression, "choices": ", ".join(Compression.values)}
        )
    return compression


# --- Backup ---------------------------------------------------------------------------------------
def backup_run_locked(
    *,
    engine: DumpEngine,
    compression: str,
    trigger: str,
    user=None,
    kind: str = BackupRecord.Kind.REGULAR,
    record: BackupRecord | None = None,
    progress: Progress | None = None,
) -> BackupRecord:
    """Run one backup while the caller holds the database lock."""
    storage = backup_storage()
    started = timezone.now()
    owner = {"owner_host": current_host(), "owner_pid": os.getpid()}
    if record is None:
        record = reserve_record(
            database=engine.alias, engine=engine, compression=compression, trigger=trigger, user=user,
            kind=kind, status=BackupRecord.Status.RUNNING, started_at=started, **owner,
        )
    else:
        record.status = BackupRecord.Status.RUNNING
        record.started_at = started
        record.engine = engine.vendor
        record.owner_host, record.owner_pid = owner["owner_host"], owner["owner_pid"]
        record.save(update_fields=["status", "started_at", "engine", "owner_host", "owner_pid"])
    clock = time.monotonic()
    last_progress = [0.0]

    def report(raw_bytes: int, written_bytes: int) -> None:
        # At most about once a second: a dashboard needs no more, the database no more writes.
        if time.monotonic() - last_progress[0] >= 1.0:
            last_progress[0] = time.monotonic()
            BackupRecord.objects.filter(pk=record.pk).update(progress_bytes=written_bytes)
        if progress is not None:
            progress(raw_bytes, written_bytes)

    pending: PendingFile | None = None
    manifest_written = False
    try:
        try:
            record.tool_versions = engine.tool_versions()
        except Exception as error:  # noqa: BLE001 - the dump itself reports a missing tool
            logger.warning("Could not read tool versions for %s: %s", engine.alias, error_text(error, engine))
        compressor = _compressor_for(record, compression)
        with engine.dump() as stream:
            pending = stream_to_storage(
                stream, storage=storage, name=record.name, compression=compression,
                is_complete=engine.is_complete, progress=report, compressor=compressor,
            )
        # Every stage exited 0 (leaving engine.dump() checked the tool); now make it final.
        try:
            # Tables dumped without rows restore empty; verification compares against that.
            record.table_row_counts = engine.counts_as_dumped(engine.table_row_counts())
        except Exception as error:  # noqa: BLE001 - counts help verification, never fail a backup
            logger.warning("Could not count rows of %s: %s", engine.alias, error_text(error, engine))
            record.table_row_counts = {}
        coordinates = engine.snapshot_binlog_coordinates()
        if coordinates:
            record.binlog_file = str(coordinates["file"])
            record.binlog_position = int(coordinates["position"])
            record.binlog_gtid = str(coordinates.get("gtid") or "")
        result = pending.result
        record.status = BackupRecord.Status.SUCCESS
        record.raw_size_bytes = result.raw_size_bytes
        record.size_bytes = record.progress_bytes = result.size_bytes
        record.sha256 = result.sha256
        record.storage_name = record.name
        record.finished_at = timezone.now()
        record.duration_seconds = round(time.monotonic() - clock, 3)
        record.error_message = ""
        manifest_write(storage=storage, record=record)
        manifest_written = True
        pending.commit()
        pending = None
        record.save()
    except BaseException as error:
        if pending is not None:
            pending.abort()
        elif manifest_written:
            # Committed, then the record could not be saved: no final name for a failed backup.
            delete_quietly(storage, record.name)
        if manifest_written:
            delete_quietly(storage, manifest_name(record.name))
        record.status = BackupRecord.Status.FAILED
        record.finished_at = timezone.now()
        record.duration_seconds = round(time.monotonic() - clock, 3)
        record.storage_name = ""
        record.sha256 = ""
        if isinstance(error, Exception):
            record.error_message = error_text(error, engine)
        else:
            record.error_message = _("Stopped (%(reason)s).") % {"reason": error.__class__.__name__}
        record.save()
        backup_finished.send(sender=BackupRecord, record=record)
        if isinstance(error, Exception):
            failure = DumpFailed(record.error_message)
            failure.record = record  # callers (backup_now --json) report the failed record
            raise failure from (None if isinstance(error, DumpFailed) else error)
        raise
    backup_finished.send(sender=BackupRecord, record=record)
    return record


def _compressor_for(record: BackupRecord, compression: str):
    """The pipeline's compressor, encrypting to the configured recipients when encryption is on
    (the record says so, and to whom: fingerprints only). None: the pipeline's own."""
    if not record.name.endswith(ENCRYPTED_EXTENSION):
        return None
    recipients = configured_recipients()
    record.encrypted = True
    record.encryption_recipients = configured_recipient_fingerprints()
    return EncryptingCompressor(make_compressor(compression), recipients)


def _fail_queued_record(record: BackupRecord | None, error: Exception) -> None:
    """A queued record whose backup could not even start ends failed, with the reason."""
    if record is None:
        return
    record.status = BackupRecord.Status.FAILED
    record.error_message = str(error)
    record.finished_at = timezone.now()
    record.save(update_fields=["status", "error_message", "finished_at"])


def _fail_before_start(*, engine: DumpEngine, compression: str, trigger: str, user, kind: str,
                      record: BackupRecord | None, message: str) -> None:
    """Record a backup that could not start as failed, with `message`, and raise DumpFailed: a dirty
    database (half-restored data must never become a good backup) or a server that refused the lock
    connection. The failure alert goes out like any other."""
    now = timezone.now()
    fields = {"status": BackupRecord.Status.FAILED, "error_message": message[:4000],
              "started_at": now, "finished_at": now, "duration_seconds": 0.0}
    if record is None:
        record = reserve_record(database=engine.alias, engine=engine, compression=compression,
                                 trigger=trigger, user=user, kind=kind, **fields)
    else:
        for field, value in fields.items():
            setattr(record, field, value)
        record.save(update_fields=list(fields))
    backup_finished.send(sender=BackupRecord, record=record)
    failure = DumpFailed(record.error_message)
    failure.record = record
    raise failure


def backup_create(
    *,
    database: str = "default",
    trigger: str,
    user=None,
    compression: str | None = None,
    record: BackupRecord | None = None,
    kind: str = BackupRecord.Kind.REGULAR,
    progress: Progress | None = None,
) -> BackupRecord:
    """Back up `database` now (synchronously) and return the final record.

    `record` is a queued record (from `backup_queue`) to run; otherwise one is created.
    Raises `BackupLocked` when another backup/restore of that database runs (a given queued record is
    then marked failed), `DumpFailed` when the backup failed (the record is saved as failed first).
    Every outcome is audited.
    """
    if record is not None:
        database, compression = record.database, record.compression
        trigger, user, kind = record.trigger, record.user, record.kind
    source = audit_source(trigger)
    try:
        compression = check_compression(compression)
        engine = get_engine(database)
    except (BackupError, ImproperlyConfigured) as error:
        # e.g. a queued backup of an alias removed from the configuration since.
        _fail_queued_record(record, error)
        audit_log(action="create", source=source, outcome="failure", user=user,
                  actor=audit_actor(trigger, user), target=database, detail=str(error))
        raise DumpFailed(str(error)) from None
    start = {"engine": engine, "compression": compression, "trigger": trigger, "user": user, "kind": kind,
             "record": record}
    try:
        try:
            with locks.database_lock(database, "backup"):
                backups_mark_interrupted(database=database, lock_held=True)
                if is_dirty(database=database):
                    _fail_before_start(**start, message=DIRTY_BACKUP_ERROR)
                result = backup_run_locked(**start, progress=progress)
        except LockUnavailable as error:
            _fail_before_start(**start, message=error_text(error, engine))
    except BackupLocked as error:
        _fail_queued_record(record, error)
        audit_log(action="create", source=source, outcome="refused", user=user,
                  actor=audit_actor(trigger, user), target=database, detail=str(error))
        raise
    except DumpFailed as error:
        audit_log(action="create", source=source, outcome="failure", user=user,
                  actor=audit_actor(trigger, user), target=database, detail=str(error))
        raise
    audit_log(
        action="create", source=source, outcome="success", user=user, actor=audit_actor(trigger, user),
        target=result.name,
        detail=f"{result.size_bytes} bytes, sha256 {result.sha256}",
    )
    return result


def backup_queue(
    *, database: str = "default", trigger: str, user=None, compression: str | None = None
) -> BackupRecord:
    """Create a `queued` record (its name reserved) and run it through Celery after commit.

    Without a broker the task runs in a background process of its own (backups_app.jobs).
    """
    compression = check_compression(compression)
    engine = get_engine(database)
    record = reserve_record(
        database=database, engine=engine, compression=compression, trigger=trigger, user=user,
        status=BackupRecord.Status.QUEUED,
    )
    audit_log(action="create", source=audit_source(trigger), outcome="started", user=user,
              actor=audit_actor(trigger, user), target=record.name,
              detail=_("queued"))

    def enqueue() -> None:
        from backups_app.jobs import job_enqueue
        from backups_app.tasks import backup_run

        job_enqueue(backup_run, record.pk)

    transaction.on_commit(enqueue)
    return record


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


__all__ = [
    "backup_adopt", "backup_create", "backup_queue", "backups_sync",
]
