"""Fingerprints of secret values: tell versions apart without revealing anything of the value."""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets as secrets_module
from pathlib import Path

from django.views.decorators.debug import sensitive_variables

logger = logging.getLogger("secrets_app")


class Fingerprinter:
    """First 8 hex digits of an HMAC-SHA256 keyed per install (no prefix of the value, no unkeyed
    hash that could be looked up). The key is ``key``, or read from ``key_file`` (created there,
    0600, on first use)."""

    def __init__(self, *, key: bytes | None = None, key_file: str | os.PathLike | None = None) -> None:
        self._key = key
        self.key_file = Path(key_file) if key_file else None

    def key(self) -> bytes:
        if self._key is None:
            self._key = load_fingerprint_key(self.key_file)
        return self._key

    @sensitive_variables()
    def __call__(self, value: str) -> str:
        return hmac.new(self.key(), value.encode("utf-8"), hashlib.sha256).hexdigest()[:8]


def load_fingerprint_key(path: Path | None) -> bytes:
    """The per-install key: read from ``path``, created there (0600) on first use; a per-process
    key when the file cannot be read or written (fingerprints then only compare within a process)."""
    if path is not None:
        try:
            return bytes.fromhex(path.read_text().strip())
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as error:
            logger.warning("Fingerprint key %s is unreadable (%s); using a per-process key.", path, error)
            return secrets_module.token_bytes(32)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            key = secrets_module.token_bytes(32)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(key.hex())
            return key
        except FileExistsError:
            return bytes.fromhex(path.read_text().strip())  # another process created it first
        except OSError as error:
            logger.warning("Fingerprint key %s cannot be created (%s); using a per-process key.", path, error)
    return secrets_module.token_bytes(32)
