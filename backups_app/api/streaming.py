"""Streaming a stored backup to the client while checking it against its recorded SHA-256."""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from typing import BinaryIO

from backups_app.exceptions import ChecksumMismatch
from backups_app.models import AuditEntry, BackupRecord
from backups_app.services.audit import audit_log

logger = logging.getLogger("backups_app.api")

CHUNK_SIZE = 1024 * 1024


def verified_chunks(*, backup: BackupRecord, stream: BinaryIO, actor: str) -> Iterator[bytes]:
    """Yield the file's bytes, holding the last chunk back until the whole file hashed right.

    Verifying before sending would read a multi-gigabyte file twice and keep the client waiting; so
    the hash is computed on the way, and on a mismatch (a flipped byte, a lost tail: docs/FAULTS.md
    corrupted-file)
    the final chunk is never sent and the connection is cut. The client then has fewer bytes than
    Content-Length promised, which every HTTP client reports as an error, instead of a corrupt file
    that looks complete.
    """
    digest = hashlib.sha256()
    pending = b""
    try:
        while chunk := stream.read(CHUNK_SIZE):
            digest.update(chunk)
            if pending:
                yield pending
            pending = chunk
        if backup.sha256 and digest.hexdigest() != backup.sha256:
            audit_log(
                action="download",
                source=AuditEntry.Source.API,
                outcome=AuditEntry.Outcome.FAILURE,
                actor=actor,
                target=backup.name,
                detail="SHA-256 mismatch while streaming; download cut short",
            )
            logger.error("Backup %s does not match its recorded SHA-256; download aborted", backup.name)
            raise ChecksumMismatch(f"{backup.name} does not match its recorded SHA-256.")
        if pending:
            yield pending
    finally:
        stream.close()
