"""Key rotation: re-encrypt stored backups to other age recipients (`manage.py reencrypt_backups`).

Adding a recipient only applies to new backups; to retire a key, every stored file encrypted to it
is rewritten for the new recipients (plain backups become encrypted). Per file:

    stored bytes -> SHA-256 check (HashingReader) -> decrypt (when already encrypted)
        -> encrypt to the new recipients -> SHA-256 -> temporary file (O_EXCL|O_NOFOLLOW) -> fsync
        -> put in place -> manifest -> record

The compressed stream itself passes through unchanged (an identity compressor inside the
encryption), so the dump is never decompressed and nothing unencrypted touches the disk. The read
ends with the recorded SHA-256 check: a damaged or swapped file raises there, before anything is
put in place. Until the record is saved, the previous file and manifest are kept (under a hidden
name when the name does not change), and any failure puts them back: the backup is either wholly
the old one or wholly the new one.

A plain file gains `.age`, and the record's `name` changes with its `storage_name`: the manifest is
named after the file and `sync_backups` finds a backup by its manifest's name, so both stay one.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from django.core.files.storage import Storage
from django.db import transaction
from django.utils.translation import gettext as _

from backups_app import locks
from backups_app.encryption import EXTENSION as ENCRYPTED_EXTENSION
from backups_app.encryption import (
    DecryptingReader,
    EncryptingCompressor,
    parse_recipients,
    recipient_fingerprint,
    required_identities,
    split_keys,
)
from backups_app.exceptions import BackupError, ChecksumMismatch, RestoreRefused
from backups_app.manifest import manifest_name, manifest_write
from backups_app.models import BackupRecord, BinlogSegment
from backups_app.pipeline import (
    HashingReader,
    LocalStorageTarget,
    PendingFile,
    UnsafeStoredFile,
    make_compressor,
    open_stored,
    stream_to_storage,
    write_small_file,
)
from backups_app.services.audit import audit_log
from backups_app.services.offsite import offsite_upload
from backups_app.storage import backup_storage, offsite_enabled, offsite_storage

logger = logging.getLogger(__name__)

#: `--to-recipients @config`: the keys new backups are encrypted to (BACKUP_ENCRYPTION_RECIPIENTS).
CONFIGURED = "@config"
#: The host-wide flock (BACKUP_LOCK_DIR) that keeps two re-encryptions from running at once.
LOCK_NAME = "opsdesk-reencrypt"
#: Suffix of the previous file or manifest kept while a same-name re-encryption is put in place.
PREVIOUS_SUFFIX = ".previous"


class ReencryptFailed(BackupError):
    """The backup could not be re-encrypted; its file, manifest and record are as they were."""


def reencrypt_recipients(text: str) -> list[str]:
    """The public keys named by `--to-recipients`: comma-separated `age1…` keys, or `@config`.

    Raises BackupError naming the bad key (never a private key's text) or an empty list.
    """
    if text.strip() == CONFIGURED:
        from secrets_app import get_secret

        text = get_secret("BACKUP_ENCRYPTION_RECIPIENTS", default="")
    keys = split_keys(text)
    if not keys:
        raise BackupError(_("No recipient given: name at least one age public key (age1…) or @config."))
    parse_recipients(",".join(keys))  # validates each one
    return keys


def backups_to_reencrypt(*, database: str | None = None, names: Sequence[str] = (),
                         recipients: Sequence[str] = ()) -> list[BackupRecord]:
    """Good backups (of `database`, or named) not already encrypted to exactly `recipients`."""
    backups = BackupRecord.objects.good().exclude(storage_name="")
    if database:
        backups = backups.filter(database=database)
    if names:
        backups = backups.filter(name__in=list(names))
    wanted = sorted(recipient_fingerprint(key) for key in recipients)
    return [backup for backup in backups.order_by("created_at", "id")
            if not (backup.encrypted and sorted(backup.encryption_recipients) == wanted)]


class _ReplacingTarget(LocalStorageTarget):
    """The pipeline's temporary file, put in place over an existing name with `os.replace`.

    The caller kept the previous file under another name first (a hard link), so a failure after
    this commit can still put it back.
    """

    def commit(self) -> None:
        os.fsync(self._fd)
        os.replace(self.temporary_path, self.final_path)
        placed = os.lstat(self.final_path)
        if (placed.st_dev, placed.st_ino) != self._identity:
            raise ReencryptFailed(_("%(name)s was replaced while it was being written") % {"name": self.final_path.name})
        os.close(self._fd)
        self._fd = None
        _fsync_directory(self.final_path.parent)


def _fsync_directory(path: Path) -> None:
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@dataclass
class _Swap:
    """What was put in place, and how to undo it until the record is saved."""

    folder: Path
    old_name: str
    new_name: str
    file_in_place: bool = False
    manifest_in_place: bool = False

    @property
    def same_name(self) -> bool:
        return self.old_name == self.new_name

    def kept(self, name: str) -> Path:
        return self.folder / f".{name}{PREVIOUS_SUFFIX}"

    def keep_previous(self) -> None:
        """Same name: hard-link the file and move the manifest aside, so a failure can put them back."""
        if not self.same_name:
            return
        for name in (self.old_name, manifest_name(self.old_name)):
            self.kept(name).unlink(missing_ok=True)
        os.link(self.folder / self.old_name, self.kept(self.old_name), follow_symlinks=False)

    def move_manifest_aside(self) -> None:
        if self.same_name and (self.folder / manifest_name(self.old_name)).exists():
            os.replace(self.folder / manifest_name(self.old_name), self.kept(manifest_name(self.old_name)))

    def undo(self) -> None:
        """Put the previous file and manifest back (never raises: it runs on the failure path)."""
        try:
            if self.same_name:
                for name in (self.old_name, manifest_name(self.old_name)):
                    if self.kept(name).exists():
                        os.replace(self.kept(name), self.folder / name)
                        # A rename onto another link of the same file leaves both names.
                        self.kept(name).unlink(missing_ok=True)
            else:
                if self.manifest_in_place:
                    (self.folder / manifest_name(self.new_name)).unlink(missing_ok=True)
                if self.file_in_place:
                    (self.folder / self.new_name).unlink(missing_ok=True)
            _fsync_directory(self.folder)
        except OSError:
            logger.exception("Could not put back the previous file of %s.", self.old_name)

    def finish(self) -> None:
        """The record is saved: drop what was kept (same name) or the old file and manifest."""
        names = ([self.kept(self.old_name), self.kept(manifest_name(self.old_name))] if self.same_name
                 else [self.folder / self.old_name, self.folder / manifest_name(self.old_name)])
        for path in names:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                logger.warning("Could not remove %s after re-encryption.", path.name, exc_info=True)


def _refuse_unless_possible(backup: BackupRecord, user) -> None:
    if user is not None and not user.is_superuser:
        raise RestoreRefused(_("Only a superuser can re-encrypt backups."))
    if not backup.is_good:
        raise RestoreRefused(_("Backup %(name)s is %(status)s, not a successful backup; it is not re-encrypted.")
                             % {"name": backup.name, "status": backup.get_status_display()})
    if not backup.sha256 or not backup.storage_name:
        raise RestoreRefused(_("Backup %(name)s has no recorded SHA-256 or stored file; it is not re-encrypted.")
                             % {"name": backup.name})


def _local_folder(storage: Storage) -> Path:
    try:
        return Path(storage.path(""))
    except NotImplementedError:
        raise RestoreRefused(_("Re-encryption needs a backup storage with local files (BACKUP_DIR).")) from None


def _new_name(backup: BackupRecord) -> str:
    return backup.storage_name if backup.encrypted else backup.storage_name + ENCRYPTED_EXTENSION


def _checked_source(stored_item: BackupRecord | BinlogSegment, storage: Storage, identities: list, *, missing: str):
    """The compressed stream of a backup's or a binlog segment's file: hashed against its record,
    decrypted if encrypted. `missing` is the refusal when the file is gone (`%(name)s`: its name)."""
    try:
        stored = open_stored(storage, stored_item.storage_name)
    except FileNotFoundError:
        raise RestoreRefused(missing % {"name": stored_item.name}) from None
    except UnsafeStoredFile as error:
        raise RestoreRefused(str(error)) from None
    checked = HashingReader(stored, sha256=stored_item.sha256, size_bytes=stored_item.size_bytes, name=stored_item.name)
    return DecryptingReader(checked, identities) if stored_item.encrypted else checked


def _write_new_file(backup: BackupRecord, *, storage: Storage, new_name: str, recipients: list) -> PendingFile:
    identities: list = []
    if backup.encrypted:
        identities = required_identities(backup_name=backup.name)
    compressor = EncryptingCompressor(make_compressor("none"), recipients)
    source = _checked_source(backup, storage, identities,
                             missing=_("The file of backup %(name)s is missing from the backup folder."))
    try:
        target = _ReplacingTarget(storage, new_name) if new_name == backup.storage_name else None
        # The compressed bytes pass through as they are: `is_complete` has nothing to look for, the
        # read's end is checked against the recorded SHA-256 instead (HashingReader raises there).
        return stream_to_storage(
            source, storage=storage, name=new_name, compression=backup.compression,
            is_complete=lambda tail: True, compressor=compressor,
            target=target,
        )
    finally:
        source.close()


def _updated(backup: BackupRecord, *, new_name: str, pending: PendingFile, fingerprints: list[str]) -> BackupRecord:
    """A copy of `backup` describing the new file (the caller saves it)."""
    updated = BackupRecord.objects.get(pk=backup.pk)
    updated.name = updated.storage_name = new_name
    updated.sha256, updated.size_bytes = pending.result.sha256, pending.result.size_bytes
    updated.encrypted, updated.encryption_recipients = True, fingerprints
    if offsite_enabled():
        updated.offsite_status = BackupRecord.OffsiteStatus.PENDING
        updated.offsite_attempts = 0
        updated.offsite_error = ""
    return updated


def _save_if_unchanged(backup: BackupRecord, updated: BackupRecord) -> None:
    """Save `updated` only if the record still describes the file that was read."""
    with transaction.atomic():
        current = BackupRecord.objects.select_for_update().filter(pk=backup.pk).first()
        if current is None or current.sha256 != backup.sha256 or current.storage_name != backup.storage_name:
            raise ReencryptFailed(_("Backup %(name)s changed or was deleted during re-encryption.")
                                  % {"name": backup.name})
        updated.save()


def _put_in_place(backup: BackupRecord, updated: BackupRecord, *, storage: Storage, pending: PendingFile) -> None:
    """New file and manifest in place, record saved; on any failure, everything as it was."""
    _swap_in(old_name=backup.storage_name, new_name=updated.storage_name, storage=storage, pending=pending,
             name_taken=lambda: BackupRecord.objects.filter(name=updated.storage_name).exists(),
             write_manifest=lambda: manifest_write(storage=storage, record=updated),
             save=lambda: _save_if_unchanged(backup, updated), display_name=backup.name)


def _swap_in(*, old_name: str, new_name: str, storage: Storage, pending: PendingFile, name_taken,
             write_manifest, save, display_name: str) -> None:
    """Put the new file and manifest in place and save the record (`save`); on any failure, the
    previous file and manifest go back (backups and binlog segments alike)."""
    swap = _Swap(folder=_local_folder(storage), old_name=old_name, new_name=new_name)
    try:
        if not swap.same_name and (storage.exists(swap.new_name) or storage.exists(manifest_name(swap.new_name))
                                   or name_taken()):
            raise ReencryptFailed(_("%(name)s already exists; backup %(old)s is not re-encrypted.")
                                  % {"name": swap.new_name, "old": display_name})
        swap.keep_previous()
        pending.commit()
        swap.file_in_place = True  # from here on, undo() removes the new file
        swap.move_manifest_aside()
        write_manifest()
        swap.manifest_in_place = True
        save()
    except BaseException:
        pending.abort()  # the temporary, if it was not put in place
        swap.undo()
        raise
    swap.finish()


def _offsite_replace(updated: BackupRecord, *, previous_offsite_name: str, previous_name: str) -> BackupRecord:
    """Upload the new file offsite (verified read-back); then delete the previous copy if its name
    differs. A failed upload is left to the normal retry path (`offsite_retry`), status failed."""
    if not offsite_enabled():
        return updated
    updated = offsite_upload(backup=updated)
    if updated.offsite_status == BackupRecord.OffsiteStatus.UPLOADED and previous_offsite_name \
            and previous_offsite_name != updated.offsite_name:
        storage = offsite_storage()
        for name in (previous_offsite_name, manifest_name(previous_name)):
            try:
                storage.delete(name)
            except Exception:  # noqa: BLE001 - the record is right; a leftover object is only logged
                logger.warning("Could not delete the previous offsite copy %s.", name, exc_info=True)
    return updated


def backup_reencrypt(*, backup: BackupRecord, recipients: Sequence[str], user=None, source: str) -> BackupRecord:
    """Re-encrypt the stored file of `backup` to `recipients` (age public keys); audited.

    Streamed with flat memory; the stored bytes are checked against the record's SHA-256 on the way
    and the new file is written beside the old one (temporary, fsync, atomic put in place), then the
    signed manifest and the record (SHA-256, size, recipients; a plain file's name gains `.age`).
    The old file goes only after the record is saved. Any failure raises BackupError and leaves the
    file, manifest and record as they were. With offsite copies configured, the new file is
    uploaded (and read back) and a differently named previous copy deleted. `user` None is the host
    operator; any other user must be a superuser.
    """
    target = backup.name
    try:
        _refuse_unless_possible(backup, user)
        parsed = parse_recipients(",".join(recipients))
        if not parsed:
            raise BackupError(_("No recipient given: name at least one age public key (age1…)."))
        # One re-encryption at a time on this host: two would share the temporary and kept names.
        with locks._file_lock(LOCK_NAME, "reencrypt"):
            storage = backup_storage()
            new_name = _new_name(backup)
            _local_folder(storage)
            pending = _write_new_file(backup, storage=storage, new_name=new_name, recipients=parsed)
            try:
                updated = _updated(backup, new_name=new_name, pending=pending,
                                   fingerprints=[recipient_fingerprint(key) for key in recipients])
            except BaseException:
                pending.abort()  # e.g. the record was deleted meanwhile: no temporary left behind
                raise
            _put_in_place(backup, updated, storage=storage, pending=pending)
    except BackupError as error:
        refused = isinstance(error, RestoreRefused) and not isinstance(error, ChecksumMismatch)
        outcome = "refused" if refused else "failure"
        audit_log(action="reencrypt", source=source, outcome=outcome, user=user, target=target, detail=str(error))
        raise
    except Exception as error:
        message = _("Backup %(name)s could not be re-encrypted (%(error)s); it is as it was.") % {
            "name": backup.name, "error": str(error) or error.__class__.__name__}
        audit_log(action="reencrypt", source=source, outcome="failure", user=user, target=target, detail=message)
        raise ReencryptFailed(message) from error
    updated = _offsite_replace(updated, previous_offsite_name=backup.offsite_name, previous_name=backup.name)
    detail = _("%(old)s -> %(new)s, %(size)d bytes, sha256 %(sha)s, for %(recipients)s") % {
        "old": backup.name, "new": updated.name, "size": updated.size_bytes, "sha": updated.sha256,
        "recipients": ", ".join(updated.encryption_recipients)}
    audit_log(action="reencrypt", source=source, outcome="success", user=user, target=target, detail=detail)
    return updated




# --- Binlog segments (the point-in-time archive) ----------------------------------------------------
def segments_to_reencrypt(*, database: str | None = None, names: Sequence[str] = (),
                          recipients: Sequence[str] = ()) -> list[BinlogSegment]:
    """Intact archived binlog segments (of `database`, or named) not already encrypted to exactly
    `recipients`."""
    segments = BinlogSegment.objects.filter(status=BinlogSegment.Status.OK)
    if database:
        segments = segments.filter(database=database)
    if names:
        segments = segments.filter(name__in=list(names))
    wanted = sorted(recipient_fingerprint(key) for key in recipients)
    return [segment for segment in segments.order_by("database", "created_at", "id")
            if not (segment.encrypted and sorted(segment.encryption_recipients) == wanted)]


def _save_segment_if_unchanged(segment: BinlogSegment, updated: BinlogSegment) -> None:
    with transaction.atomic():
        current = BinlogSegment.objects.select_for_update().filter(pk=segment.pk).first()
        if current is None or current.sha256 != segment.sha256 or current.storage_name != segment.storage_name:
            raise ReencryptFailed(_("Binlog segment %(name)s changed or was deleted during re-encryption.")
                                  % {"name": segment.name})
        updated.save()


def segment_reencrypt(*, segment: BinlogSegment, recipients: Sequence[str], user=None,
                      source: str) -> BinlogSegment:
    """Re-encrypt an archived binlog segment to `recipients`, like `backup_reencrypt` (streamed,
    checked against the recorded SHA-256, atomic, audited; a plain segment's name gains `.age`);
    the offsite copy is replaced. Any failure leaves the file, manifest and record as they were."""
    from backups_app.services.binlogs import _segment_manifest, _segment_offsite, segment_identities

    target = segment.name
    try:
        if user is not None and not user.is_superuser:
            raise RestoreRefused(_("Only a superuser can re-encrypt backups."))
        parsed = parse_recipients(",".join(recipients))
        if not parsed:
            raise BackupError(_("No recipient given: name at least one age public key (age1…)."))
        identities = segment_identities([segment])
        with locks._file_lock(LOCK_NAME, "reencrypt"):
            storage = backup_storage()
            _local_folder(storage)
            new_name = segment.storage_name if segment.encrypted else segment.storage_name + ENCRYPTED_EXTENSION
            compressor = EncryptingCompressor(make_compressor("none"), parsed)
            reader = _checked_source(segment, storage, identities,
                                     missing=_("Binlog segment %(name)s is missing from the backup folder."))
            try:
                replacing = _ReplacingTarget(storage, new_name) if new_name == segment.storage_name else None
                pending = stream_to_storage(reader, storage=storage, name=new_name, compression=segment.compression,
                                            is_complete=lambda tail: True, compressor=compressor, target=replacing)
            finally:
                reader.close()
            try:
                updated = BinlogSegment.objects.get(pk=segment.pk)
                updated.name = updated.storage_name = new_name
                updated.sha256, updated.size_bytes = pending.result.sha256, pending.result.size_bytes
                updated.encrypted = True
                updated.encryption_recipients = [recipient_fingerprint(key) for key in recipients]
            except BaseException:
                pending.abort()  # e.g. the segment was pruned meanwhile: no temporary left behind
                raise
            _swap_in(old_name=segment.storage_name, new_name=new_name, storage=storage, pending=pending,
                     name_taken=lambda: BinlogSegment.objects.filter(name=new_name).exists(),
                     write_manifest=lambda: write_small_file(storage, manifest_name(new_name),
                                                             _segment_manifest(updated)),
                     save=lambda: _save_segment_if_unchanged(segment, updated), display_name=segment.name)
    except BackupError as error:
        refused = isinstance(error, RestoreRefused) and not isinstance(error, ChecksumMismatch)
        audit_log(action="reencrypt", source=source, outcome="refused" if refused else "failure", user=user,
                  target=target, detail=str(error))
        raise
    except Exception as error:
        message = _("Backup %(name)s could not be re-encrypted (%(error)s); it is as it was.") % {
            "name": segment.name, "error": str(error) or error.__class__.__name__}
        audit_log(action="reencrypt", source=source, outcome="failure", user=user, target=target, detail=message)
        raise ReencryptFailed(message) from error
    if offsite_enabled():
        previous_offsite = segment.offsite_name
        _segment_offsite(updated)  # uploads and reads back; a failure is retried by the archiver
        if updated.offsite_status == BackupRecord.OffsiteStatus.UPLOADED and previous_offsite \
                and previous_offsite != updated.offsite_name:
            for name in (previous_offsite, manifest_name(segment.name)):
                try:
                    offsite_storage().delete(name)
                except Exception:  # noqa: BLE001 - the record is right; a leftover object is only logged
                    logger.warning("Could not delete the previous offsite copy %s.", name, exc_info=True)
    detail = _("%(old)s -> %(new)s, %(size)d bytes, sha256 %(sha)s, for %(recipients)s") % {
        "old": segment.name, "new": updated.name, "size": updated.size_bytes, "sha": updated.sha256,
        "recipients": ", ".join(updated.encryption_recipients)}
    audit_log(action="reencrypt", source=source, outcome="success", user=user, target=target, detail=detail)
    return updated


__all__ = [
    "CONFIGURED", "ReencryptFailed", "backup_reencrypt", "backups_to_reencrypt", "reencrypt_recipients",
    "segment_reencrypt", "segments_to_reencrypt",
]
