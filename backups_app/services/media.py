"""Chains of media archives: which archive an incremental builds on, and what a restore reads.

A media backup (alias ``media`` or ``media:<storage>``) is a full archive, or an incremental one
holding only the files that changed since its parent (backups_app.media). Here:

- `media_backup_prepare` decides, before the dump, between full and incremental: a full one when
  asked (`--full`), for a safety backup, when there is no good parent, when the parent's file list
  is missing or does not match its record, when an archive of the chain failed verification, or
  when the chain has BACKUP_MEDIA_FULL_EVERY
  incrementals or its full archive is BACKUP_MEDIA_FULL_EVERY_DAYS old;
- `media_file_list_store` keeps the new archive's file list beside it (`<name>.files.gz`, paths as
  keyed hashes), its SHA-256 on the record, for the next incremental to compare with;
- `media_chain` and `media_chain_prepare` give a restore or a verification the whole chain, every
  link checked (SHA-256, stream end, completion marker) before anything is written.
"""
from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import BinaryIO

from django.core.files.storage import Storage
from django.utils import timezone
from django.utils.translation import gettext as _

from backups_app import media
from backups_app.conf import app_settings
from backups_app.engines.media import MediaEngine
from backups_app.encryption import EXTENSION as ENCRYPTED_EXTENSION
from backups_app.engines.base import DumpEngine
from backups_app.exceptions import BackupError, ChecksumMismatch, RestoreRefused
from backups_app.manifest import derived_key
from backups_app.models import BackupRecord
from backups_app.pipeline import HashingReader, open_stored, stream_to_storage
from backups_app.services.audit import audit_log
from backups_app.services.reading import backup_check, backup_read

logger = logging.getLogger(__name__)

FILE_LIST_SUFFIX = ".files.gz"
_KEY_PURPOSE = "media file list"


def file_list_name(backup_name: str) -> str:
    """The name of the file list kept beside a media archive in the backup storage."""
    return backup_name + FILE_LIST_SUFFIX


def _file_list_key() -> bytes:
    return derived_key(_KEY_PURPOSE)


def _chain_of(record: BackupRecord) -> list[BackupRecord] | None:
    """`record` and its ancestors, full archive first; None when a link is missing or loops."""
    chain = [record]
    seen = {record.pk}
    while chain[0].media_mode == BackupRecord.MediaMode.INCREMENTAL:
        parent = chain[0].parent
        if parent is None or parent.pk in seen:
            return None
        seen.add(parent.pk)
        chain.insert(0, parent)
    return chain


def _parent_for(alias: str) -> tuple[BackupRecord | None, str]:
    """The archive the next backup of `alias` may build on, or None and why a full one is made."""
    every, every_days = app_settings.BACKUP_MEDIA_FULL_EVERY, app_settings.BACKUP_MEDIA_FULL_EVERY_DAYS
    if every == 0:
        return None, "BACKUP_MEDIA_FULL_EVERY is 0"
    latest = (
        BackupRecord.objects.filter(database=alias, kind=BackupRecord.Kind.REGULAR, engine=MediaEngine.vendor)
        # Not yet run, never run, or not ours: none of them says anything about the chain.
        .exclude(status__in=[BackupRecord.Status.QUEUED, BackupRecord.Status.RUNNING,
                             BackupRecord.Status.CANCELLED, BackupRecord.Status.UNTRUSTED])
        .order_by("-created_at", "-id").first()
    )
    if latest is None:
        return None, "no earlier archive"
    if not latest.is_good:
        # After a failure, a full archive: the next good one then depends on nothing uncertain.
        return None, f"the latest archive {latest.name} is {latest.status}"
    if latest.verification_status == BackupRecord.VerificationStatus.FAILED:
        return None, f"the latest archive {latest.name} failed verification"
    if not latest.media_file_list_sha256:
        return None, f"the latest archive {latest.name} has no file list"
    chain = _chain_of(latest)
    if chain is None:
        return None, f"the chain of {latest.name} is broken"
    if not all(link.is_good for link in chain):
        return None, f"the chain of {latest.name} holds a bad archive"
    if any(link.verification_status == BackupRecord.VerificationStatus.FAILED for link in chain):
        # Unchanged files would be taken from an archive already known bad.
        return None, f"the chain of {latest.name} holds an archive that failed verification"
    if len(chain) - 1 >= every:
        return None, f"the chain has {len(chain) - 1} incrementals (BACKUP_MEDIA_FULL_EVERY={every})"
    if every_days and timezone.now() - chain[0].created_at >= timedelta(days=every_days):
        return None, f"its full archive is {every_days} days old (BACKUP_MEDIA_FULL_EVERY_DAYS)"
    return latest, ""


def _file_list_load(*, storage: Storage, parent: BackupRecord) -> media.FileList:
    """The parent's file list, its bytes checked against the record (ChecksumMismatch, ValueError,
    OSError otherwise)."""
    stored = HashingReader(open_stored(storage, file_list_name(parent.name)),
                           sha256=parent.media_file_list_sha256, size_bytes=None,
                           name=file_list_name(parent.name))
    with stored, gzip.GzipFile(fileobj=stored, mode="rb") as lines:
        file_list = media.FileList.read(lines, _file_list_key())
        try:
            while stored.read(1 << 20):
                pass  # the end of the stored bytes is where the SHA-256 is compared
        except BaseException:
            file_list.close()
            raise
    return file_list


def media_backup_options(*, engine: DumpEngine, full: bool) -> None:
    """Hand `full` to the media engine; refuse it for a database (whose dumps are always full)."""
    if not full:
        return
    if engine.vendor != MediaEngine.vendor:
        raise BackupError(_("A full archive (--full) applies to media backups only."))
    engine.force_full = True


def media_delete_check(*, backup: BackupRecord, user, source: str) -> None:
    """Refuse to delete an archive a good incremental builds on: that would break its chain.
    Retention deletes a chain whole, newest archive first."""
    dependent = backup.incrementals.good().order_by("created_at").first()
    if dependent is None:
        return
    message = _("Backup %(name)s cannot be deleted: the incremental archive %(dependent)s builds on it. "
                "Delete the chain from its newest archive first.") % {"name": backup.name, "dependent": dependent.name}
    audit_log(action="delete", source=source, outcome="refused", user=user, target=backup.name, detail=message)
    raise BackupError(message)


def media_backup_prepare(*, engine: MediaEngine, record: BackupRecord, storage: Storage) -> None:
    """Decide whether the archive about to be written is full or incremental; set up the engine."""
    parent, reason = None, "a full archive was asked for"
    if record.kind != BackupRecord.Kind.REGULAR:
        reason = "a safety backup is always full"
    elif not (engine.force_full or record.media_mode == BackupRecord.MediaMode.FULL):
        parent, reason = _parent_for(engine.alias)
    parent_list = None
    if parent is not None:
        try:
            parent_list = _file_list_load(storage=storage, parent=parent)
        except Exception as error:  # noqa: BLE001 - any doubt about the list: a full archive, never a failure
            reason = f"the file list of {parent.name} cannot be used ({error})"
            parent = None
    if parent is None:
        logger.info("Media backup %s is a full archive: %s.", record.name, reason)
    record.media_mode = BackupRecord.MediaMode.INCREMENTAL if parent else BackupRecord.MediaMode.FULL
    record.parent = parent
    engine.increment = media.Increment(
        name=record.name, parent=parent_list, parent_name=parent.name if parent else "",
        parent_sha256=parent.sha256 if parent else "",
        # Names only where the archives show them anyway: an encrypted installation's list names nothing.
        output_list=media.FileListWriter(_file_list_key(), keep_names=not record.name.endswith(ENCRYPTED_EXTENSION)),
    )


def media_file_list_store(*, engine: MediaEngine, record: BackupRecord, storage: Storage) -> None:
    """Keep the file list of the archive just written beside it; its SHA-256 goes on the record."""
    increment = engine.increment
    if increment is None or increment.output_list is None:
        return
    if increment.parent is not None:
        increment.parent.close()
    with increment.output_list.finish() as file_list:
        pending = stream_to_storage(
            file_list, storage=storage, name=file_list_name(record.name), compression="gzip",
            is_complete=lambda tail: tail.endswith(media.FILE_LIST_END),
        )
        pending.commit()
    record.media_file_list_sha256 = pending.result.sha256


def media_file_list_delete(*, record: BackupRecord, storage: Storage) -> None:
    """Remove the file list of a media archive (a failed or deleted backup); a missing one is fine."""
    if record.engine != MediaEngine.vendor:
        return
    try:
        storage.delete(file_list_name(record.name))
    except FileNotFoundError:
        pass
    except Exception:  # noqa: BLE001 - an orphan list only costs space; the next full ignores it
        logger.warning("Could not delete the file list of %s.", record.name, exc_info=True)


def media_chain(*, backup: BackupRecord) -> list[BackupRecord]:
    """The archives a restore of `backup` reads before it, full archive first ([] for a full one).

    Raises RestoreRefused, one line, when a link is missing, not a success, or of another alias.
    """
    chain: list[BackupRecord] = []
    current = backup
    seen = {backup.pk}
    while current.media_mode == BackupRecord.MediaMode.INCREMENTAL:
        parent = current.parent
        if parent is None:
            raise RestoreRefused(_(
                "The chain of %(name)s is broken: the archive %(link)s builds on was deleted; nothing "
                "was restored. Restore a full archive or a complete chain instead."
            ) % {"name": backup.name, "link": current.name})
        if parent.pk in seen or parent.database != backup.database:
            raise RestoreRefused(_("The chain of %(name)s is broken at %(link)s; nothing was restored.")
                                 % {"name": backup.name, "link": parent.name})
        if not parent.is_good:
            raise RestoreRefused(_("The chain of %(name)s is broken: %(link)s is %(status)s; nothing was "
                                   "restored.") % {"name": backup.name, "link": parent.name,
                                                    "status": parent.get_status_display()})
        seen.add(parent.pk)
        chain.insert(0, parent)
        current = parent
    return chain


def media_chain_prepare(*, backup: BackupRecord, engine: MediaEngine) -> list[BackupRecord]:
    """Check every earlier archive of `backup`'s chain completely, then let `engine` read them.

    Runs before anything is written: a missing file, a changed byte or a cut-short archive anywhere
    in the chain is one RestoreRefused (or ChecksumMismatch) line naming the chain and the link.
    """
    chain = media_chain(backup=backup)
    for link in chain:
        try:
            backup_check(backup=link, engine=engine)
        except RestoreRefused as error:
            raise type(error)(_("The chain of %(name)s is broken: %(error)s") % {
                "name": backup.name, "error": error}) from None
    records = {link.name: link for link in chain}

    @contextmanager
    def open_earlier(name: str) -> Iterator[BinaryIO]:
        with backup_read(backup=records[name], engine=engine) as plain:
            yield plain
            if not plain.verified:
                raise ChecksumMismatch(_("The restore stopped reading %(name)s before its end.") % {"name": name})

    engine.own_name = backup.name
    engine.chain = tuple(records)
    engine.open_earlier = open_earlier
    return chain
