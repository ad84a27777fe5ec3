"""Client-side encryption of backup files in the standard age format (X25519 recipients).

The format and the cryptography come from pyrage, the Python binding of rage (a Rust age
implementation); nothing here is hand-written crypto. A file encrypted here is decrypted by the
`age` command line tool, and the other way round:

    age -d -i key.txt backup_chat_20261129_020000.sql.zst.age | zstd -d | mariadb chat

Where it sits in the pipeline: dump -> compress -> encrypt -> SHA-256 -> fsync -> rename, so the
checksum covers the bytes stored, and nothing unencrypted touches the disk. Reading back is the
mirror: stored bytes -> SHA-256 -> decrypt -> decompress -> restore tool.

Keys come through ``get_secret``: ``BACKUP_ENCRYPTION_RECIPIENTS`` (public keys, one or more, so a
second "break-glass" key kept offline can always decrypt) is all a host needs to write backups;
``BACKUP_ENCRYPTION_IDENTITY`` (the private key) only where backups are restored, verified or
downloaded decrypted. age authenticates every 64 KiB chunk and the end of the stream: a wrong key,
a flipped byte or a truncated file raises, and a reader never hands out unauthenticated bytes.
"""
from __future__ import annotations

import hashlib
import io
import queue
import re
import threading
from collections.abc import Sequence
from typing import BinaryIO

from django.utils.translation import gettext as _

from backups_app.conf import app_settings
from backups_app.exceptions import BackupError, RestoreRefused

#: Suffix of an encrypted backup file, after the compression's (".sql.zst.age").
EXTENSION = ".age"
_RECIPIENT = re.compile(r"^age1[0-9a-z]{58}$")
_IDENTITY = re.compile(r"^AGE-SECRET-KEY-1[0-9A-Z]{58}$")


class EncryptionKeyMissing(RestoreRefused):
    """The key needed for this operation is not configured (never says more about keys)."""


def _pyrage():
    try:
        import pyrage
    except ImportError:  # pragma: no cover - pyrage is a requirement; say what to install
        raise BackupError(_("Backup encryption needs the pyrage package (pip install pyrage).")) from None
    return pyrage


# --- Keys -----------------------------------------------------------------------------------------
def split_keys(text: str) -> list[str]:
    """Keys from a setting or secret: separated by commas, spaces or new lines; `#` comments (the
    way age-keygen writes its file) are skipped."""
    keys = []
    for line in (text or "").splitlines():
        line = line.split("#", 1)[0]
        keys.extend(part for part in re.split(r"[\s,]+", line) if part)
    return keys


def parse_recipients(text: str) -> list:
    """age X25519 recipients (``age1...``) from ``text``; BackupError naming the bad one."""
    pyrage = _pyrage()
    recipients = []
    for key in split_keys(text):
        if not _RECIPIENT.match(key):
            raise BackupError(_("%(key)s… is not an age public key (age1…).") % {"key": key[:8]})
        try:
            recipients.append(pyrage.x25519.Recipient.from_str(key))
        except Exception:  # noqa: BLE001 - pyrage.RecipientError and friends: a malformed key
            raise BackupError(_("%(key)s… is not a valid age public key.") % {"key": key[:12]}) from None
    return recipients


def parse_identities(text: str) -> list:
    """age X25519 identities (``AGE-SECRET-KEY-1...``); the error never echoes key material."""
    pyrage = _pyrage()
    identities = []
    for number, key in enumerate(split_keys(text), start=1):
        if not _IDENTITY.match(key):
            raise BackupError(_("Key number %(number)d is not an age private key.") % {"number": number})
        try:
            identities.append(pyrage.x25519.Identity.from_str(key))
        except Exception:  # noqa: BLE001
            raise BackupError(_("Key number %(number)d is not a valid age private key.") % {"number": number}) from None
    return identities


def recipient_fingerprint(recipient: str) -> str:
    """A short, stable name for a public key, shown beside each encrypted backup."""
    return hashlib.sha256(str(recipient).encode("ascii")).hexdigest()[:16]


def generate_key_pair() -> tuple[str, str]:
    """A new (private identity, public recipient) pair, as strings."""
    identity = _pyrage().x25519.Identity.generate()
    return str(identity), str(identity.to_public())


# --- Streams --------------------------------------------------------------------------------------
_END = object()


class _QueueReader(io.RawIOBase):
    """The readable side of a bounded hand-over between two threads (what pyrage reads from)."""

    def __init__(self, depth: int = 8) -> None:
        self.pieces: queue.Queue = queue.Queue(maxsize=depth)
        self._current = memoryview(b"")
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._current:
            if self._ended:
                return 0
            item = self.pieces.get()
            if item is _END:
                self._ended = True
                return 0
            self._current = memoryview(item)
        size = min(len(buffer), len(self._current))
        buffer[:size] = self._current[:size]
        self._current = self._current[size:]
        return size


class _Collector(io.RawIOBase):
    """The writable side pyrage writes to; the owner takes what accumulated."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        with self._lock:
            self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        with self._lock:
            parts, self._parts = self._parts, []
        return b"".join(parts)


class EncryptingCompressor:
    """A pipeline compressor (``compress``/``flush``) that encrypts what ``inner`` compresses.

    pyrage streams with ``encrypt_io(reader, writer)``, which pulls its input; the pipeline pushes.
    A thread runs ``encrypt_io`` over a bounded queue, so memory stays flat whatever the size.
    """

    def __init__(self, inner, recipients: Sequence) -> None:
        if not recipients:
            raise EncryptionKeyMissing(_("Backup encryption is on but BACKUP_ENCRYPTION_RECIPIENTS is empty."))
        self.inner = inner
        self._input = _QueueReader()
        self._output = _Collector()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._encrypt, args=(list(recipients),), daemon=True,
                                        name="backup-encrypt")
        self._thread.start()

    def _encrypt(self, recipients: list) -> None:
        try:
            _pyrage().encrypt_io(self._input, self._output, recipients)
        except BaseException as error:  # noqa: BLE001 - raised in the pipeline's thread
            self._error = error
            self._drain_input()

    def _drain_input(self) -> None:
        # After a failure nobody reads the queue any more: empty it so that a producer never blocks.
        while True:
            try:
                if self._input.pieces.get_nowait() is _END:
                    return
            except queue.Empty:
                return

    def _check(self) -> None:
        if self._error is not None:
            raise BackupError(_("encryption failed (%(error)s)") % {"error": self._error})

    def compress(self, data: bytes) -> bytes:
        compressed = self.inner.compress(data)
        self._check()
        if compressed:
            self._input.pieces.put(compressed)
        return self._output.take()

    def flush(self) -> bytes:
        tail = self.inner.flush()
        self._check()
        if tail:
            self._input.pieces.put(tail)
        self._input.pieces.put(_END)
        self._thread.join()
        self._check()
        return self._output.take()


class _QueueWriter(io.RawIOBase):
    """The writable side pyrage decrypts into; a reader on the other thread takes the pieces."""

    def __init__(self, pieces: queue.Queue, stop: threading.Event) -> None:
        self.pieces = pieces
        self.stop = stop

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        piece = bytes(data)
        while not self.stop.is_set():
            try:
                self.pieces.put(piece, timeout=0.2)
                return len(piece)
            except queue.Full:
                continue
        raise BrokenPipeError("the reader of the decrypted stream went away")


class DecryptingReader(io.RawIOBase):
    """A readable plain stream over an age-encrypted one (``stored``: the stored bytes, already
    passing through whatever hashes them).

    Only authenticated bytes come out; a wrong key, a damaged chunk or a truncated file raise
    ``BackupError`` from ``read`` — at the latest where the stream would have ended, so a consumer
    that commits only after a clean end of input never commits bad bytes.
    """

    def __init__(self, stored: BinaryIO, identities: Sequence) -> None:
        if not identities:
            raise EncryptionKeyMissing(_(
                "This backup is encrypted and BACKUP_ENCRYPTION_IDENTITY is not configured on this host."
            ))
        self.stored = stored
        self._pieces: queue.Queue = queue.Queue(maxsize=8)
        self._stop = threading.Event()
        self._current = memoryview(b"")
        self._finished = False
        self._clean_end = False
        self._thread = threading.Thread(target=self._decrypt, args=(list(identities),), daemon=True,
                                        name="backup-decrypt")
        self._thread.start()

    def _decrypt(self, identities: list) -> None:
        outcome: object = _END
        try:
            _pyrage().decrypt_io(self.stored, _QueueWriter(self._pieces, self._stop), identities)
        except BackupError as error:
            outcome = error  # the stored bytes' own check (a HashingReader's mismatch) passes as it is
        except BaseException as error:  # noqa: BLE001 - raised to the consumer
            outcome = BackupError(_(
                "the encrypted stream cannot be decrypted: wrong key, damaged or truncated file (%(error)s)"
            ) % {"error": error})
        while not self._stop.is_set():
            try:
                self._pieces.put(outcome, timeout=0.2)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    @property
    def verified(self) -> bool:
        """Every byte was decrypted and authenticated, and the stored bytes passed their own check."""
        return self._clean_end and bool(getattr(self.stored, "verified", True))

    def readinto(self, buffer) -> int:
        while not self._current:
            if self._finished:
                return 0
            item = self._pieces.get()
            if item is _END:
                self._finished = self._clean_end = True
                return 0
            if isinstance(item, BaseException):
                self._finished = True
                raise item
            self._current = memoryview(item)
        size = min(len(buffer), len(self._current))
        buffer[:size] = self._current[:size]
        self._current = self._current[size:]
        return size

    def close(self) -> None:
        if not self.closed:
            self._stop.set()
            self._thread.join(timeout=5)
            self.stored.close()
        super().close()


# --- Configuration --------------------------------------------------------------------------------
def encryption_enabled() -> bool:
    return app_settings.BACKUP_ENCRYPTION == "age"


def configured_recipients() -> list:
    """The public keys new backups are encrypted to (``BACKUP_ENCRYPTION_RECIPIENTS``)."""
    from secrets_app import get_secret

    return parse_recipients(get_secret("BACKUP_ENCRYPTION_RECIPIENTS", default=""))


def configured_recipient_fingerprints() -> list[str]:
    from secrets_app import get_secret

    return [recipient_fingerprint(key) for key in split_keys(get_secret("BACKUP_ENCRYPTION_RECIPIENTS", default=""))]


def configured_identities() -> list:
    """The private keys that decrypt (``BACKUP_ENCRYPTION_IDENTITY``), only where restores run."""
    from secrets_app import get_secret

    return parse_identities(get_secret("BACKUP_ENCRYPTION_IDENTITY", default=""))


def decryption_available() -> bool:
    """Whether this host has a usable private key (offer decrypted downloads only then)."""
    try:
        return bool(configured_identities())
    except BackupError:
        return False


def required_identities(*, backup_name: str) -> list:
    """The private keys that decrypt backup `backup_name`; EncryptionKeyMissing (a refusal, one line)
    when this host has none, so the caller stops before any byte is read or changed."""
    identities = configured_identities()
    if not identities:
        raise EncryptionKeyMissing(
            _("Backup %(name)s is encrypted and BACKUP_ENCRYPTION_IDENTITY is not configured on this host.")
            % {"name": backup_name}
        )
    return identities
