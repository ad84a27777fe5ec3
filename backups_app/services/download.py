"""The decrypted download of an encrypted backup: its age-decrypted (still compressed) bytes.

For an operator who needs the dump on a machine without the private key: the server that holds
BACKUP_ENCRYPTION_IDENTITY decrypts, the client receives `backup_....sql.zst`. Nothing decrypted is
written anywhere; the stored file is read once, through one descriptor:

    stored bytes -> SHA-256 and size against the record (HashingReader)
        -> age decryption (every 64 KiB chunk authenticated) -> the response

As in the normal download, the last chunk is held back until the whole file was checked: a flipped
byte, a lost tail or a swapped file raises instead of ending the body, the server cuts the
connection, and the client has fewer bytes than Content-Length promised (an error for every HTTP
client), never a short file that looks complete. Content-Length is the exact plaintext size, worked
out from the age header and the stored size before anything is sent.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from django.utils.translation import gettext as _

from backups_app.encryption import DecryptingReader, required_identities
from backups_app.exceptions import BackupError, ChecksumMismatch, RestoreRefused
from backups_app.models import BackupRecord
from backups_app.pipeline import CHUNK_SIZE, HashingReader
from backups_app.services.reading import backup_open_checked

#: age's payload: a 16-byte nonce, then chunks of 64 KiB of plaintext, each with a 16-byte tag.
AGE_NONCE_BYTES = 16
AGE_CHUNK_BYTES = 64 * 1024
AGE_TAG_BYTES = 16
#: An X25519 header is a few hundred bytes (one stanza per recipient); more is not an opsdesk file.
AGE_HEADER_LIMIT = 64 * 1024


def age_plaintext_size(*, stored_size: int, header_size: int) -> int | None:
    """The plaintext size of an age file of `stored_size` bytes whose header has `header_size`
    (None when the sizes cannot be an age file's)."""
    ciphertext = stored_size - header_size - AGE_NONCE_BYTES
    if ciphertext < AGE_TAG_BYTES:
        return None
    chunks = max(1, -(-ciphertext // (AGE_CHUNK_BYTES + AGE_TAG_BYTES)))
    plaintext = ciphertext - chunks * AGE_TAG_BYTES
    return plaintext if plaintext >= 0 else None


class _Replayed:
    """The bytes already read (the header), then the rest of a stream: what pyrage reads."""

    def __init__(self, prefix: bytes, rest: HashingReader) -> None:
        self.prefix = prefix
        self.rest = rest

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.prefix:
            if size is None or size < 0:
                data, self.prefix = self.prefix + self.rest.read(), b""
                return data
            data, self.prefix = self.prefix[:size], self.prefix[size:]
            return data
        return self.rest.read(size)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self.rest.close()


def _read_header(checked: HashingReader) -> bytes:
    """The age header (through its `---` MAC line), read from the checked stream."""
    header = b""
    while True:
        mac_line = header.find(b"\n--- ")
        if mac_line >= 0 and header.find(b"\n", mac_line + 1) >= 0:
            return header
        if len(header) > AGE_HEADER_LIMIT:
            raise ChecksumMismatch(_("Backup %(name)s does not start with an age header.") % {"name": checked.name})
        chunk = checked.read(4096)  # raises ChecksumMismatch at a short end
        if not chunk:
            raise ChecksumMismatch(_("Backup %(name)s does not start with an age header.") % {"name": checked.name})
        header += chunk


class DecryptedChunks:
    """The decrypted bytes of a checked stored file, chunk by chunk, the last one held back until
    the end matched; closes the file even if never iterated. `on_failure(error)` runs before a
    mismatch or decryption error propagates (the download audits it)."""

    def __init__(self, checked: HashingReader, identities: list,
                 on_failure: Callable[[BackupError], None] | None = None) -> None:
        self.checked = checked
        self.on_failure = on_failure
        header = _read_header(checked)
        self.header_size = header.find(b"\n", header.find(b"\n--- ") + 1) + 1
        self.decrypted = DecryptingReader(_Replayed(header, checked), identities)
        self._chunks = self._generate()

    def _generate(self) -> Iterator[bytes]:
        pending = b""
        try:
            while chunk := self.decrypted.read(CHUNK_SIZE):
                if pending:
                    yield pending
                pending = chunk
            self._require_checked_end()
        except BackupError as error:
            if self.on_failure is not None:
                self.on_failure(error)
            raise
        if pending:
            yield pending

    def _require_checked_end(self) -> None:
        # age may stop reading at its final chunk, before the stored file's end where the SHA-256 is
        # compared: read on to that end (pyrage is done with the stream, this thread owns it now).
        while not self.checked.verified:
            if self.checked.read(CHUNK_SIZE):
                raise ChecksumMismatch(_("Backup %(name)s has bytes after its encrypted stream.")
                                       % {"name": self.checked.name})

    def __iter__(self) -> DecryptedChunks:
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()
        self.decrypted.close()  # closes the stored file too


def backup_decrypted_chunks(
    *, backup: BackupRecord, on_failure: Callable[[BackupError], None] | None = None
) -> DecryptedChunks:
    """The age-decrypted (still compressed) bytes of encrypted `backup`, checked on the way.

    Raised before the first byte, so callers answer them with a status code: RestoreRefused for a
    plain backup, EncryptionKeyMissing (one line) when this host has no BACKUP_ENCRYPTION_IDENTITY,
    BackupNotFound when the file is gone, ChecksumMismatch when the file does not start as recorded.
    A wrong key or a damaged or truncated file raise from the iteration, never end it cleanly.
    """
    if not backup.encrypted:
        raise RestoreRefused(_("Backup %(name)s is not encrypted: download it as it is.") % {"name": backup.name})
    identities = required_identities(backup_name=backup.name)  # before the file is opened
    checked = backup_open_checked(backup=backup)
    try:
        return DecryptedChunks(checked, identities, on_failure)
    except BaseException:
        checked.close()
        raise


def decrypted_name(filename: str) -> str:
    """The download's file name: the stored one without `.age` (`backup_....sql.zst`)."""
    from backups_app.encryption import EXTENSION

    return filename[: -len(EXTENSION)] if filename.endswith(EXTENSION) else filename


__all__ = ["DecryptedChunks", "age_plaintext_size", "backup_decrypted_chunks", "decrypted_name"]
