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
import re
import socket
import time
from datetime import UTC, timedelta
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import Storage, storages
from django.core.management.color import no_style
from django.db import IntegrityError, connections, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from backups_app import locks
from backups_app.access import backup_access_check, restore_target_check
from backups_app.conf import app_settings
from backups_app.encryption import EXTENSION as ENCRYPTED_EXTENSION
from backups_app.encryption import (
    DecryptingReader,
    EncryptingCompressor,
    configured_recipient_fingerprints,
    configured_recipients,
    encryption_enabled,
    required_identities,
)
from backups_app.engines import get_engine
from backups_app.engines.base import DumpEngine
from backups_app.engines.process import redact
from backups_app.exceptions import (
    AccessRefused,
    BackupError,
    BackupLocked,
    BackupNotFound,
    ChecksumMismatch,
    DumpFailed,
    LockUnavailable,
    RestoreFailed,
    RestoreRefused,
)
from backups_app.manifest import (
    MANIFEST_SUFFIX,
    manifest_name,
    manifest_read,
    manifest_write,
    record_fields_from_manifest,
)
from backups_app.models import AuditEntry, BackupRecord, Compression, DirtyDatabase, RestoreRecord, Trigger
from backups_app.pipeline import (
    CHUNK_SIZE,
    EXTENSIONS,
    CheckResult,
    DecompressingReader,
    HashingReader,
    PendingFile,
    UnsafeStoredFile,
    open_stored,
    make_compressor,
    partial_path,
    stream_check,
    stream_to_storage,
)
from backups_app.services.audit import audit_log
from backups_app.services.dirty import DIRTY_BACKUP_ERROR, dirty_alert, dirty_clear, dirty_mark, is_dirty
from backups_app.services.media import (
    media_backup_options,
    media_backup_prepare,
    media_chain_prepare,
    media_delete_check,
    media_file_list_delete,
    media_file_list_store,
)
from backups_app.signals import backup_finished, restore_finished

logger = logging.getLogger(__name__)

#: progress(raw_bytes_dumped, compressed_bytes_written), called about once a second.
Progress = Callable[[int, int], None]


def backup_storage() -> Storage:
    return storages["backups"]


def _host() -> str:
    return socket.gethostname()


def _source(trigger: str) -> str:
    # Triggers and audit sources share their values (cli, admin, api, schedule).
    return str(trigger)


def _actor(trigger: str, user) -> str:
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


def _error_text(error: BaseException, engine: DumpEngine | None) -> str:
    text = str(error) or error.__class__.__name__
    return redact(text, _secrets_of(engine) if engine else [])[:4000]


def _check_compression(compression: str | None) -> str:
    compression = compression or app_settings.BACKUP_COMPRESSION
    if compression not in Compression.values:
        raise BackupError(
            _("Unknown compression %(value)r: use one of %(choices)s.")
            % {"value": compression, "choices": ", ".join(Compression.values)}
        )
    return compression


# --- Names ----------------------------------------------------------------------------------------
def _name_stem(database: str, when) -> str:
    alias = "" if database == "default" else re.sub(r"[^a-z0-9-]+", "-", database.lower()).strip("-") + "_"
    return f"backup_{alias}{when.astimezone(UTC):%Y%m%d_%H%M%S}"


def _name_taken(storage: Storage, name: str) -> bool:
    return (
        BackupRecord.objects.filter(name=name).exists()
        or storage.exists(name)
        or storage.exists(manifest_name(name))
    )


def _reserve_record(*, database: str, engine: DumpEngine, compression: str, **fields) -> BackupRecord:
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


# --- Orphans --------------------------------------------------------------------------------------
def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_partial(record: BackupRecord) -> None:
    storage = backup_storage()
    for name in (record.name, manifest_name(record.name)):
        try:
            partial_path(Path(storage.path(name))).unlink(missing_ok=True)
        except NotImplementedError:
            return


def _is_orphan(record, *, database: str | None, lock_held: bool, horizon) -> bool:
    """Whether the process that ran `record` (a BackupRecord or RestoreRecord) is gone."""
    if record.owner_host == _host() and record.owner_pid == os.getpid():
        return False  # this very process (a safety backup's parent, for instance)
    if record.owner_host == _host():
        return (
            (lock_held and record.database == database)
            or not _pid_alive(record.owner_pid)
            or not locks.is_locked(record.database)
        )
    started = getattr(record, "started_at", None) or record.created_at
    if lock_held and record.database == database and locks.cross_machine(database):
        return True  # we hold the only lock of that database, wherever its holder ran
    # A server lock nobody holds: the job that held it is gone (its session ended with it).
    return (locks.cross_machine(record.database) and not locks.is_locked(record.database)) or started < horizon


def _restores_mark_interrupted(*, database: str | None, lock_held: bool, horizon) -> int:
    """A restore whose process was killed: `failed`, pointing at its safety backup."""
    restores = RestoreRecord.objects.select_related("safety_backup").filter(status=RestoreRecord.Status.RUNNING)
    if database is not None:
        restores = restores.filter(database=database)
    count = 0
    for restore in restores:
        if not _is_orphan(restore, database=database, lock_held=lock_held, horizon=horizon):
            continue
        left_dirty = DirtyDatabase.objects.filter(database=restore.database, restore=restore).exists()
        if not left_dirty:
            message = _(
                "The restore process (%(pid)s on %(host)s) stopped before finishing, before it changed "
                "the database: nothing was restored."
            ) % {"pid": restore.owner_pid, "host": restore.owner_host}
        elif restore.safety_backup is not None:
            message = _(
                "The restore process (%(pid)s on %(host)s) stopped before finishing; the database may "
                "be partly restored: restore the safety backup %(safety)s to return to the state before."
            ) % {"pid": restore.owner_pid, "host": restore.owner_host, "safety": restore.safety_backup.name}
        else:
            message = _(
                "The restore process (%(pid)s on %(host)s) stopped before finishing; the database may "
                "be partly restored (no safety backup was taken)."
            ) % {"pid": restore.owner_pid, "host": restore.owner_host}
        if RestoreRecord.objects.filter(pk=restore.pk, status=RestoreRecord.Status.RUNNING).update(
            status=RestoreRecord.Status.FAILED, error_message=message, finished_at=timezone.now(),
        ):
            count += 1
            restore.refresh_from_db()
            logger.warning("Restore of %s into %s was interrupted.", restore.backup_name, restore.database)
            audit_log(action="restore", source="system", outcome="failure",
                      target=f"{restore.backup_name} -> {restore.database}", detail=message)
            if left_dirty:
                dirty_alert(database=restore.database, reason=message)
            restore_finished.send(sender=RestoreRecord, restore=restore)
    return count


def backups_mark_interrupted(*, database: str | None = None, lock_held: bool = False) -> int:
    """Mark `running` records whose process is gone as `interrupted`; return how many.

    Restores whose process is gone become `failed`, their message naming the safety backup.

    A record is an orphan when its host is this machine and its process is dead or no process here
    holds the database's lock; or when the caller holds the database's lock (`lock_held`) and locks
    span machines (Redis); or when it has run longer than the dump timeout plus an hour. A queued
    record whose task never ran is an orphan after that long too.
    """
    now = timezone.now()
    horizon = now - timedelta(seconds=app_settings.BACKUP_DUMP_TIMEOUT + 3600)
    records = BackupRecord.objects.filter(status__in=[BackupRecord.Status.RUNNING, BackupRecord.Status.QUEUED])
    if database is not None:
        records = records.filter(database=database)
    count = 0
    for record in records:
        if record.status == BackupRecord.Status.QUEUED:
            orphan = record.created_at < horizon
        else:
            orphan = _is_orphan(record, database=database, lock_held=lock_held, horizon=horizon)
        if not orphan:
            continue
        updated = BackupRecord.objects.filter(pk=record.pk, status=record.status).update(
            status=BackupRecord.Status.INTERRUPTED,
            finished_at=now,
            error_message=_(
                "The backup process (%(pid)s on %(host)s) stopped before finishing; this backup "
                "was never completed."
            ) % {"pid": record.owner_pid or "?", "host": record.owner_host or "?"},
        )
        if updated:
            count += 1
            _remove_partial(record)
            record.refresh_from_db()
            logger.warning("Backup %s was interrupted (its process is gone).", record.name)
            backup_finished.send(sender=BackupRecord, record=record)
    return count + _restores_mark_interrupted(database=database, lock_held=lock_held, horizon=horizon)


# --- Backup ---------------------------------------------------------------------------------------
def _backup_run(
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
    owner = {"owner_host": _host(), "owner_pid": os.getpid()}
    if record is None:
        record = _reserve_record(
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
            logger.warning("Could not read tool versions for %s: %s", engine.alias, _error_text(error, engine))
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
            logger.warning("Could not count rows of %s: %s", engine.alias, _error_text(error, engine))
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
        elif manifest_written:
            # Committed, then the record could not be saved: no final name for a failed backup.
            _delete_quietly(storage, record.name)
        if manifest_written:
            _delete_quietly(storage, manifest_name(record.name))
        media_file_list_delete(record=record, storage=storage)
        record.status = BackupRecord.Status.FAILED
        record.finished_at = timezone.now()
        record.duration_seconds = round(time.monotonic() - clock, 3)
        record.storage_name = ""
        record.sha256 = ""
        if isinstance(error, Exception):
            record.error_message = _error_text(error, engine)
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


def _delete_quietly(storage: Storage, name: str) -> None:
    try:
        storage.delete(name)
    except Exception:  # noqa: BLE001
        logger.warning("Could not delete %s from the backup storage.", name, exc_info=True)


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
        record = _reserve_record(database=engine.alias, engine=engine, compression=compression,
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
    source = _source(trigger)
    try:
        compression = _check_compression(compression)
        engine = get_engine(database)
        media_backup_options(engine=engine, full=full)
    except (BackupError, ImproperlyConfigured) as error:
        # e.g. a queued backup of an alias removed from the configuration since.
        _fail_queued_record(record, error)
        audit_log(action="create", source=source, outcome="failure", user=user,
                  actor=_actor(trigger, user), target=database, detail=str(error))
        raise DumpFailed(str(error)) from None
    start = {"engine": engine, "compression": compression, "trigger": trigger, "user": user, "kind": kind,
             "record": record}
    try:
        try:
            with locks.database_lock(database, "backup"):
                backups_mark_interrupted(database=database, lock_held=True)
                if is_dirty(database=database):
                    _fail_before_start(**start, message=DIRTY_BACKUP_ERROR)
                result = _backup_run(**start, progress=progress)
        except LockUnavailable as error:
            _fail_before_start(**start, message=_error_text(error, engine))
    except BackupLocked as error:
        _fail_queued_record(record, error)
        audit_log(action="create", source=source, outcome="refused", user=user,
                  actor=_actor(trigger, user), target=database, detail=str(error))
        raise
    except DumpFailed as error:
        audit_log(action="create", source=source, outcome="failure", user=user,
                  actor=_actor(trigger, user), target=database, detail=str(error))
        raise
    audit_log(
        action="create", source=source, outcome="success", user=user, actor=_actor(trigger, user),
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
    compression = _check_compression(compression)
    engine = get_engine(database)
    media_backup_options(engine=engine, full=full)
    record = _reserve_record(
        database=database, engine=engine, compression=compression, trigger=trigger, user=user,
        status=BackupRecord.Status.QUEUED, media_mode=BackupRecord.MediaMode.FULL if full else "",
    )
    audit_log(action="create", source=_source(trigger), outcome="started", user=user,
              actor=_actor(trigger, user), target=record.name,
              detail=_("queued"))

    def enqueue() -> None:
        from backups_app.jobs import job_enqueue
        from backups_app.tasks import backup_run

        job_enqueue(backup_run, record.pk)

    transaction.on_commit(enqueue)
    return record


# --- Reading stored backups -----------------------------------------------------------------------
def backup_open(*, backup: BackupRecord) -> BinaryIO:
    """Open the stored file of `backup` for streaming (binary, read-only).

    When the local file is gone, the offsite copy (S3) is read instead, if there is one. A local name
    that is a symbolic link or not a regular file raises `RestoreRefused`: it is never followed.
    Callers that hand the bytes on read them through `backup_read` or `backup_chunks`, which check them.
    """
    if not backup.storage_name:
        raise BackupNotFound(_("Backup %(name)s has no stored file.") % {"name": backup.name})
    try:
        return open_stored(backup_storage(), backup.storage_name)
    except FileNotFoundError:
        pass
    except UnsafeStoredFile as error:
        raise RestoreRefused(str(error)) from None
    # Retention area: fall back to the offsite copy (imported here: only then is boto3 loaded).
    from backups_app.services.offsite import offsite_open

    try:
        return offsite_open(backup=backup)
    except BackupNotFound:
        raise BackupNotFound(_("The file of backup %(name)s is missing from storage.") % {"name": backup.name}) from None


def _refuse_unchecked(backup: BackupRecord) -> None:
    if not backup.sha256:
        raise RestoreRefused(
            _("Backup %(name)s has no recorded SHA-256; its bytes cannot be checked, so it is not used.")
            % {"name": backup.name}
        )


def _decryption_check(backup: BackupRecord) -> Callable[[BinaryIO], BinaryIO]:
    """What turns the stored bytes of `backup` into its compressed stream: nothing for a plain file,
    a DecryptingReader for an encrypted one. Raises EncryptionKeyMissing (a refusal, one line) at
    once when this host has no private key, so a restore stops before touching anything."""
    if not backup.encrypted:
        return lambda stored: stored
    identities = required_identities(backup_name=backup.name)
    return lambda stored: DecryptingReader(stored, identities)


def backup_open_checked(*, backup: BackupRecord) -> HashingReader:
    """The stored file as a `HashingReader`: the end of the file raises `ChecksumMismatch` unless its
    bytes are exactly the recorded ones. A backup without a recorded SHA-256 is refused."""
    _refuse_unchecked(backup)
    return HashingReader(backup_open(backup=backup), sha256=backup.sha256, size_bytes=backup.size_bytes,
                         name=backup.name)


@contextmanager
def backup_read(*, backup: BackupRecord, engine: DumpEngine) -> Iterator[DecompressingReader]:
    """The plain dump of `backup`, checked while it is read: what a restore feeds its engine.

    One descriptor, read once: the compressed bytes are hashed as they are decompressed and handed
    on. The read that reaches the end raises `ChecksumMismatch` instead of returning b"" when the
    SHA-256, size, compressed stream end, decompressed size or completion marker is wrong; an engine
    that commits only after a clean end of input therefore never commits other bytes than those
    recorded. After the engine returns, `reader.verified` says whether it read that clean end.
    """
    # The private key is looked up before the file is opened: without it, nothing is read.
    decrypt = _decryption_check(backup)
    checked = decrypt(backup_open_checked(backup=backup))
    with DecompressingReader(
        checked, compression=backup.compression, is_complete=engine.is_complete,
        raw_size_bytes=backup.raw_size_bytes, name=backup.name,
    ) as plain:
        yield plain


class CheckedChunks:
    """An iterator over a stored file's chunks that closes the file even if never iterated.

    Each chunk is handed out only once the next one was read, so the last one is held back until
    the end matched (HashingReader raises there). `on_mismatch(error)` runs before the error
    propagates (the download audits it).
    """

    def __init__(self, checked: HashingReader, on_mismatch: Callable[[ChecksumMismatch], None] | None = None) -> None:
        self.checked = checked
        self.on_mismatch = on_mismatch
        self._chunks = self._generate()

    def _generate(self) -> Iterator[bytes]:
        pending = b""
        try:
            while chunk := self.checked.read(CHUNK_SIZE):
                if pending:
                    yield pending
                pending = chunk
        except ChecksumMismatch as error:
            if self.on_mismatch is not None:
                self.on_mismatch(error)
            raise
        if pending:
            yield pending

    def __iter__(self) -> CheckedChunks:
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()
        self.checked.close()


def backup_chunks(
    *, backup: BackupRecord, on_mismatch: Callable[[ChecksumMismatch], None] | None = None
) -> CheckedChunks:
    """The stored file's bytes for a download, checked on the way (see `CheckedChunks`).

    A damaged, swapped or truncated file raises `ChecksumMismatch` instead of ending cleanly, so the
    response is cut and the client sees an error (fewer bytes than Content-Length), never a short
    body that looks complete. Opening errors (`BackupNotFound`, `RestoreRefused`) are raised before
    the first chunk, so callers can answer them with a status code.
    """
    return CheckedChunks(backup_open_checked(backup=backup), on_mismatch)


def _plain_check(backup: BackupRecord) -> CheckResult:
    try:
        with backup_open(backup=backup) as stored:
            try:
                return stream_check(stored, compression=backup.compression)
            except BackupError as error:
                raise ChecksumMismatch(
                    _("Backup %(name)s is damaged: %(error)s.") % {"name": backup.name, "error": error}
                ) from None
    except BackupNotFound as error:
        raise RestoreRefused(str(error)) from None


def _encrypted_check(backup: BackupRecord) -> CheckResult:
    """The stored bytes hashed as they are read (the HashingReader raises at the end on a mismatch),
    decrypted (age authenticates every chunk), then decompressed and checked like a plain file."""
    decrypt = _decryption_check(backup)
    try:
        with decrypt(backup_open_checked(backup=backup)) as decrypted:
            check = stream_check(decrypted, compression=backup.compression)
    except BackupNotFound as error:
        raise RestoreRefused(str(error)) from None
    except ChecksumMismatch:
        raise
    except BackupError as error:
        raise ChecksumMismatch(
            _("Backup %(name)s is damaged: %(error)s.") % {"name": backup.name, "error": error}
        ) from None
    # The hashing reader already matched the stored bytes against the record.
    return replace(check, sha256=backup.sha256, size_bytes=backup.size_bytes)


def backup_check(*, backup: BackupRecord, engine: DumpEngine | None = None) -> None:
    """Read the whole stored file: SHA-256, size, compressed stream end, decompressed size and the
    dump's completion marker. Raises `ChecksumMismatch` or `RestoreRefused`; touches no database."""
    if backup.status != BackupRecord.Status.SUCCESS:
        raise RestoreRefused(
            _("Backup %(name)s is %(status)s, not a successful backup; it cannot be restored.")
            % {"name": backup.name, "status": backup.get_status_display()}
        )
    _refuse_unchecked(backup)
    if backup.encrypted:
        check = _encrypted_check(backup)
    else:
        check = _plain_check(backup)
    if check.sha256 != backup.sha256 or (backup.size_bytes is not None and check.size_bytes != backup.size_bytes):
        raise ChecksumMismatch(
            _("Backup %(name)s does not match its SHA-256 (stored file changed or damaged); refusing it.")
            % {"name": backup.name}
        )
    if not check.stream_complete:
        raise RestoreRefused(
            _("Backup %(name)s is truncated: its compressed stream does not end properly.") % {"name": backup.name}
        )
    if backup.raw_size_bytes is not None and check.raw_size_bytes != backup.raw_size_bytes:
        raise RestoreRefused(_("Backup %(name)s decompresses to an unexpected size.") % {"name": backup.name})
    engine = engine or get_engine(backup.database)
    if not engine.is_complete(check.tail):
        raise RestoreRefused(_("Backup %(name)s lacks the dump's completion marker.") % {"name": backup.name})


# --- Restore --------------------------------------------------------------------------------------
def _require_read_to_the_end(plain: DecompressingReader, backup: BackupRecord) -> None:
    """An engine that returned without reading the checked end did not restore checked bytes."""
    if not plain.verified:
        raise ChecksumMismatch(
            _("The restore stopped reading backup %(name)s before its end, so its bytes were not all "
              "checked.") % {"name": backup.name}
        )


# Entries this long before the backup started are surely inside its dump; later ones may not be.
AUDIT_OVERLAP = timedelta(minutes=5)
AUDIT_BATCH = 1000


def _audit_entries_since(backup: BackupRecord) -> list[AuditEntry]:
    """The audit entries a restore of `backup` into the ops database would erase (and a margin)."""
    since = (backup.started_at or backup.created_at) - AUDIT_OVERLAP
    return list(AuditEntry.objects.filter(created_at__gte=since).order_by("pk"))


def _audit_entries_put_back(entries: list[AuditEntry]) -> int:
    """Re-insert, under their own ids and times, the `entries` the restored ops database lacks.

    An id the restored table already has is the same entry (the backup holds it): ids are never
    reused, because the sequences are moved past every re-inserted id. A user the restored database
    no longer has is dropped from the entry; its `actor` text still names them.
    """
    if not entries:
        return 0
    ids = [entry.pk for entry in entries]
    present = set(
        AuditEntry.objects.filter(pk__gte=min(ids), pk__lte=max(ids)).values_list("pk", flat=True)
    )
    missing = [entry for entry in entries if entry.pk not in present]
    user_model = AuditEntry._meta.get_field("user").related_model
    user_ids = {entry.user_id for entry in missing if entry.user_id}
    users = set(user_model.objects.filter(pk__in=user_ids).values_list("pk", flat=True))
    times = {entry.pk: entry.created_at for entry in missing}
    for entry in missing:
        if entry.user_id not in users:
            entry.user_id = None
    with transaction.atomic():
        # bulk_create stamps auto_now_add's "now" on created_at; bulk_update puts the times back.
        AuditEntry.objects.bulk_create(missing, batch_size=AUDIT_BATCH)
        for entry in missing:
            entry.created_at = times[entry.pk]
        AuditEntry.objects.bulk_update(missing, ["created_at"], batch_size=AUDIT_BATCH)
    return len(missing)


def _sequences_reset(*models) -> None:
    """Move the id sequences past rows inserted with explicit ids (PostgreSQL needs it; others no-op)."""
    connection = connections["default"]
    statements = connection.ops.sequence_reset_sql(no_style(), list(models))
    if statements:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)


def _reattach_after_ops_restore(restore: RestoreRecord, audit_entries: list[AuditEntry]) -> RestoreRecord:
    """The ops database was replaced: rebuild backup records from the manifests, put back the audit
    entries written since the backup, and the restore's own record (the restored tables predate it)."""
    connections["default"].close()
    put_back = _audit_entries_put_back(audit_entries)
    if put_back:
        logger.info("Put back %d audit entries written since the restored backup.", put_back)
    backups_sync()
    from backups_app.services.binlogs import binlog_segments_sync  # binlogs imports this module

    binlog_segments_sync()
    restore.backup = BackupRecord.objects.get(name=restore.backup_name)
    if restore.safety_backup_id is not None:
        restore.safety_backup = BackupRecord.objects.filter(name=restore.safety_backup.name).first()
    if restore.user_id is not None:
        from django.contrib.auth import get_user_model

        if not get_user_model().objects.filter(pk=restore.user_id).exists():
            restore.user = None
    # The restore's record keeps its id (saved again by the caller): whoever queued it (the API's
    # answer, the admin's redirect) still finds it.
    _sequences_reset(AuditEntry, RestoreRecord)
    return restore


def _media_options(engine: DumpEngine, *, media_path: str, delete_extraneous: bool) -> None:
    """Hand the media-only restore options to the media engine; refuse them for a database."""
    if not (media_path or delete_extraneous):
        return
    if engine.vendor != "media":
        raise RestoreRefused(_("--path and --delete-extraneous apply to media backups only."))
    engine.restore_prefix = media_path
    engine.delete_extraneous = delete_extraneous


def backup_restore(
    *,
    backup: BackupRecord,
    database: str | None = None,
    trigger: str,
    user=None,
    safety_backup: bool = True,
    restore: RestoreRecord | None = None,
    progress: Progress | None = None,
    media_path: str = "",
    delete_extraneous: bool = False,
) -> RestoreRecord:
    """Restore `backup` into `database` (default: the database it came from).

    For a media backup, `media_path` restores only the files under that path and
    `delete_extraneous` removes the files the archive does not hold; both are refused for a database.

    Order: lock the database; check the stored file completely (SHA-256, stream end, completion
    marker) before anything else; take a safety backup (kind `safety`) unless `safety_backup=False`;
    restore. A refused restore (`RestoreRefused`, `ChecksumMismatch`, `BackupLocked`) changed nothing;
    a failed one (`RestoreFailed`) names the safety backup to restore. Restoring the ops database
    (`default`) rebuilds the backup records from the manifests afterwards.
    """
    database = database or backup.database
    source = _source(trigger)
    if restore is None:
        restore = RestoreRecord.objects.create(
            backup=backup, backup_name=backup.name, database=database, trigger=trigger, user=user,
            media_path=media_path, delete_extraneous=delete_extraneous,
        )
    clock = time.monotonic()
    engine: DumpEngine | None = None
    touched: list[bool] = []  # whether the engine began a change to the target it could not undo
    # Named now: a restore of the ops database may erase the user, and the entry must still say who.
    actor = _actor(trigger, user) or (user.get_username() if user is not None else "")

    def finish(status: str, message: str = "", outcome: str = "success") -> None:
        restore.status = status
        restore.error_message = message
        restore.finished_at = timezone.now()
        restore.duration_seconds = round(time.monotonic() - clock, 3)
        restore.save()
        detail = message or (f"safety backup {restore.safety_backup.name}" if restore.safety_backup_id else "")
        audit_log(action="restore", source=source, outcome=outcome, user=restore.user, actor=actor,
                  target=f"{backup.name} -> {database}", detail=detail)
        restore_finished.send(sender=RestoreRecord, restore=restore)

    try:
        backup_access_check(database=backup.database, user=user, action="restore")
        restore_target_check(source=backup.database, target=database)
        try:
            engine = get_engine(database)
        except ImproperlyConfigured as error:
            raise RestoreRefused(str(error)) from None
        if engine.vendor != backup.engine:
            raise RestoreRefused(
                _("Backup %(name)s is a %(engine)s dump; database %(database)s is %(vendor)s.")
                % {"name": backup.name, "engine": backup.engine, "database": database, "vendor": engine.vendor}
            )
        _media_options(engine, media_path=media_path, delete_extraneous=delete_extraneous)
        with locks.database_lock(database, "restore"):
            backups_mark_interrupted(database=database, lock_held=True)
            restore.status = RestoreRecord.Status.RUNNING
            restore.owner_host, restore.owner_pid = _host(), os.getpid()
            restore.save(update_fields=["status", "owner_host", "owner_pid"])
            backup_check(backup=backup, engine=engine)
            if engine.vendor == "media":  # every earlier archive of its chain, checked the same way
                media_chain_prepare(backup=backup, engine=engine)
            if safety_backup and is_dirty(database=database):
                # Its content is half a restore: no backup of it may be kept, a safety one neither.
                safety_backup = False
            if safety_backup:
                try:
                    safety = _backup_run(
                        engine=get_engine(database), compression=_check_compression(None),
                        trigger=trigger, user=user, kind=BackupRecord.Kind.SAFETY,
                    )
                except DumpFailed as error:
                    raise RestoreRefused(
                        _("The safety backup taken before the restore failed (%(error)s); nothing was "
                          "restored.") % {"error": error}
                    ) from None
                restore.safety_backup = safety
                restore.save(update_fields=["safety_backup"])

            def before_target_change() -> None:
                dirty_mark(database=database, restore=restore)
                touched.append(True)

            # Restoring the ops database rewinds its audit log too: keep what was written since.
            audit_entries = _audit_entries_since(backup) if database == "default" else []
            plain: DecompressingReader | None = None
            try:
                # The final gate: the very bytes fed to the engine are checked as it reads them.
                with backup_read(backup=backup, engine=engine) as plain:
                    engine.restore(plain, before_target_change=before_target_change)
                    _require_read_to_the_end(plain, backup)
            except Exception as error:  # noqa: BLE001 - reported with the way back
                if database == "default":
                    restore = _reattach_after_ops_restore(restore, audit_entries)
                # The engine may report its stopped tool; the reader knows the real cause.
                cause = plain.error if plain is not None and isinstance(plain.error, ChecksumMismatch) else error
                message = _error_text(cause, engine)
                if not touched:
                    # PostgreSQL rolled back, or MySQL failed while loading its staging database.
                    message = _("%(error)s. Nothing was restored: the database is as it was before.") % {
                        "error": message}
                    if is_dirty(database=database):
                        message += " " + _("It is still marked dirty from an earlier interrupted restore.")
                    raise RestoreFailed(message) from None
                dirty_alert(database=database, reason=message)
                if restore.safety_backup_id:
                    message = _(
                        "%(error)s. The database may be partly restored: restore the safety backup "
                        "%(safety)s to return to the state before this restore."
                    ) % {"error": message, "safety": restore.safety_backup.name}
                else:
                    message = _("%(error)s. The database may be partly restored (no safety backup was taken).") % {
                        "error": message}
                raise RestoreFailed(message) from None
            if database == "default":
                restore = _reattach_after_ops_restore(restore, audit_entries)
            # The database is the backup's now, whatever an earlier interrupted restore left.
            dirty_clear(database=database)
    except RestoreFailed as error:
        finish(RestoreRecord.Status.FAILED, str(error), "failure")
        raise
    except (RestoreRefused, AccessRefused, BackupLocked) as error:
        finish(RestoreRecord.Status.REFUSED, _error_text(error, engine), "refused")
        raise
    except BackupError as error:
        finish(RestoreRecord.Status.FAILED, _error_text(error, engine), "failure")
        raise RestoreFailed(_error_text(error, engine)) from None
    except BaseException as error:  # SIGTERM / Ctrl-C: record it now, then let the process stop
        message = _("Stopped (%(reason)s) before finishing.") % {"reason": error.__class__.__name__}
        if not touched:
            message += " " + _("Nothing was restored: the database is as it was before.")
        elif restore.safety_backup_id:
            message += " " + _("The database may be partly restored: restore the safety backup %(safety)s.") % {
                "safety": restore.safety_backup.name}
        else:
            message += " " + _("The database may be partly restored (no safety backup was taken).")
        finish(RestoreRecord.Status.FAILED, message, "failure")
        raise
    finish(RestoreRecord.Status.SUCCESS)
    return restore


def restore_queue(
    *, backup: BackupRecord, database: str | None = None, trigger: str, user=None, safety_backup: bool = True,
    media_path: str = "", delete_extraneous: bool = False,
) -> RestoreRecord:
    """Create a queued RestoreRecord and run it through Celery (`restore_run`) after commit.

    `media_path` and `delete_extraneous` (media backups only) are kept on the record for the task.

    Raises AccessRefused or RestoreRefused at once (and audits the refusal) when `user` may not
    restore this backup or `database` is not an allowed target; the task would refuse it anyway.
    """
    try:
        backup_access_check(database=backup.database, user=user, action="restore")
        restore_target_check(source=backup.database, target=database or backup.database)
        if (media_path or delete_extraneous) and backup.engine != "media":
            raise RestoreRefused(_("--path and --delete-extraneous apply to media backups only."))
    except (AccessRefused, RestoreRefused) as error:
        audit_log(action="restore", source=_source(trigger), outcome="refused", user=user,
                  actor=_actor(trigger, user), target=f"{backup.name} -> {database or backup.database}",
                  detail=str(error))
        raise
    restore = RestoreRecord.objects.create(
        backup=backup, backup_name=backup.name, database=database or backup.database,
        trigger=trigger, user=user, media_path=media_path, delete_extraneous=delete_extraneous,
    )
    audit_log(action="restore", source=_source(trigger), outcome="started", user=user,
              actor=_actor(trigger, user), target=f"{backup.name} -> {restore.database}", detail=_("queued"))

    def enqueue() -> None:
        from backups_app.jobs import job_enqueue
        from backups_app.tasks import restore_run

        job_enqueue(restore_run, restore.pk, safety_backup)

    transaction.on_commit(enqueue)
    return restore


# --- Delete and sync ------------------------------------------------------------------------------
def backup_delete(*, backup: BackupRecord, user=None, source: str) -> None:
    """Delete every copy of `backup` (local file, manifest, offsite copy) and its record; audited.

    A running or queued backup cannot be deleted. Restore history keeps the backup's name.
    """
    if backup.status in (BackupRecord.Status.RUNNING, BackupRecord.Status.QUEUED):
        audit_log(action="delete", source=source, outcome="refused", user=user, target=backup.name,
                  detail=_("backup still running"))
        raise BackupError(_("Backup %(name)s is still running; it cannot be deleted.") % {"name": backup.name})
    media_delete_check(backup=backup, user=user, source=source)
    storage = backup_storage()
    media_file_list_delete(record=backup, storage=storage)
    for name in filter(None, [backup.storage_name, manifest_name(backup.name)]):
        if storage.exists(name):
            storage.delete(name)
    if backup.offsite_name and "backups_offsite" in settings.STORAGES:
        offsite = storages["backups_offsite"]
        for name in (backup.offsite_name, manifest_name(backup.offsite_name)):
            try:
                offsite.delete(name)
            except Exception:  # noqa: BLE001 - the record goes; the offsite lifecycle rule catches leftovers
                logger.warning("Could not delete offsite copy %s.", name, exc_info=True)
    name = backup.name
    # Restore history keeps the name (RestoreRecord.backup_name); its foreign keys become NULL.
    backup.delete()
    audit_log(action="delete", source=source, outcome="success", user=user, target=name)


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
        audit_log(action="adopt", source=source, outcome="refused", user=user, actor=_actor(source, user),
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
    _delete_quietly(storage, manifest_name(backup.name))
    manifest_write(storage=storage, record=backup)
    backup.save()
    audit_log(action="adopt", source=source, outcome="success", user=user, actor=_actor(source, user),
              target=target, detail=f"{check.size_bytes} bytes, sha256 {check.sha256}")
    return backup


__all__ = [
    "backup_adopt", "backup_check", "backup_chunks", "backup_create", "backup_delete", "backup_open",
    "backup_open_checked", "backup_queue", "backup_read",
    "backup_restore", "backups_mark_interrupted", "backups_sync", "restore_queue",
]
