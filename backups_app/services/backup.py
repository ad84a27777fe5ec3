"""Running a backup, now or queued: the service every caller (commands, admin, API, Celery) goes through.

Its siblings, one job each: naming.py (names and records), orphans.py (processes that died),
reading.py (opening and checking a stored backup), restore.py, delete.py and sync.py (records
rebuilt from the manifests in storage).

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

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from backups_app import locks
from backups_app.conf import app_settings
from backups_app.encryption import EXTENSION as ENCRYPTED_EXTENSION
from backups_app.encryption import EncryptingCompressor, configured_recipient_fingerprints, configured_recipients
from backups_app.engines import get_engine
from backups_app.engines.base import DumpEngine
from backups_app.engines.process import redact
from backups_app.jobs import job_enqueue
from backups_app.exceptions import BackupError, BackupLocked, DumpFailed, LockUnavailable
from backups_app.manifest import manifest_name, manifest_write
from backups_app.models import BackupRecord, Compression, Trigger
from backups_app.pipeline import PendingFile, make_compressor, stream_to_storage
from backups_app.services.audit import audit_log
from backups_app.services.dirty import DIRTY_BACKUP_ERROR, is_dirty
from backups_app.services.media import (
    media_backup_options,
    media_backup_prepare,
    media_file_list_delete,
    media_file_list_store,
)
from backups_app.services.naming import reserve_record
from backups_app.services.orphans import backups_mark_interrupted, current_host
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
    compression = compression or app_settings.BACKUP_COMPRESSION
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
    last_progress: list[float | None] = [0.0]

    def report(raw_bytes: int, written_bytes: int) -> None:
        # At most about once a second: a dashboard needs no more, the database no more writes.
        if last_progress[0] is not None and time.monotonic() - last_progress[0] >= 1.0:
            last_progress[0] = time.monotonic()
            try:
                with transaction.atomic():  # a savepoint: a caller's transaction survives the failure
                    BackupRecord.objects.filter(pk=record.pk).update(progress_bytes=written_bytes)
            except DatabaseError as error:
                # Progress is for the dashboard only. A SQLite control database in rollback-journal
                # mode refuses writes ("database is locked") while its own dump reads it: stop
                # reporting rather than fail the backup (the final save comes after the dump).
                last_progress[0] = None
                logger.warning("Progress of %s not recorded: %s", record.name, error)
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
        if engine.vendor == "media":  # full or incremental: decided now, from the chain so far
            media_backup_prepare(engine=engine, record=record, storage=storage)
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
        if engine.vendor == "media":
            media_file_list_store(engine=engine, record=record, storage=storage)
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
        if manifest_written:
            # Committed (or stopped half-way through the commit, after the link to the final name),
            # then failed: no final name for a failed backup. The name was reserved for this record.
            delete_quietly(storage, record.name)
            delete_quietly(storage, manifest_name(record.name))
        media_file_list_delete(record=record, storage=storage)
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
    full: bool = False,
) -> BackupRecord:
    """Back up `database` now (synchronously) and return the final record.

    For media, `full` makes a full archive where an incremental one would be due.

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
        media_backup_options(engine=engine, full=full)
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
    *, database: str = "default", trigger: str, user=None, compression: str | None = None, full: bool = False
) -> BackupRecord:
    """Create a `queued` record (its name reserved) and run it through Celery after commit.

    `full` (media only) asks for a full archive; the queued record remembers it.

    Without a broker the task runs in a background process of its own (backups_app.jobs).
    """
    compression = check_compression(compression)
    engine = get_engine(database)
    media_backup_options(engine=engine, full=full)
    record = reserve_record(
        database=database, engine=engine, compression=compression, trigger=trigger, user=user,
        status=BackupRecord.Status.QUEUED, media_mode=BackupRecord.MediaMode.FULL if full else "",
    )
    audit_log(action="create", source=audit_source(trigger), outcome="started", user=user,
              actor=audit_actor(trigger, user), target=record.name,
              detail=_("queued"))

    def enqueue() -> None:
        job_enqueue("backups_app.tasks.backup_run", record.pk)

    transaction.on_commit(enqueue)
    return record


__all__ = ["backup_create", "backup_queue"]
