"""Reading a stored backup: open it (locally, else its offsite copy) and check every byte.

Nothing is restored, verified or downloaded from bytes that were not checked against the record:
`backup_read` (what a restore feeds its engine) and `backup_chunks` (a download) check the SHA-256,
size, compressed stream end and completion marker while they read, and raise `ChecksumMismatch`
at the end instead of ending cleanly; `backup_check` reads the whole file once, before a restore
touches anything.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import BinaryIO

from django.utils.translation import gettext as _

from backups_app.encryption import DecryptingReader, required_identities
from backups_app.engines import get_engine
from backups_app.engines.base import DumpEngine
from backups_app.exceptions import BackupError, BackupNotFound, ChecksumMismatch, RestoreRefused
from backups_app.models import BackupRecord
from backups_app.pipeline import (
    CHUNK_SIZE,
    CheckResult,
    DecompressingReader,
    HashingReader,
    UnsafeStoredFile,
    open_stored,
    stream_check,
)
from backups_app.storage import backup_storage, offsite_open


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
    # Retention area: fall back to the offsite copy (boto3 is loaded only then).
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
    if not backup.is_good:
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


__all__ = ["CheckedChunks", "backup_check", "backup_chunks", "backup_open", "backup_open_checked", "backup_read"]
