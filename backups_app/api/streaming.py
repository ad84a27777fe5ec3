"""The one download of a stored backup, for the admin and the API: streamed and checked on the way.

Verifying before sending would read a multi-gigabyte file twice and keep the client waiting; so the
service (`backup_chunks`) hashes the bytes as they go and holds the last chunk back until the whole
file matched its recorded SHA-256 and size. On a mismatch (a flipped byte, a lost tail, a swapped
file: docs/FAULTS.md) the generator raises, the server cuts the connection, and the client has fewer
bytes than Content-Length promised, which every HTTP client reports as an error, instead of a file
that looks complete or a response that never ends. A backup with no recorded checksum is refused
before the first byte.

The decrypted variant (`decrypted_download_response`, `?decrypted=1`) streams the age-decrypted,
still compressed bytes the same way: checked against the recorded SHA-256 and authenticated by age
chunk by chunk, the last chunk held back until both ended cleanly (backups_app/services/download.py).
"""
from __future__ import annotations

import logging

from django.http import HttpRequest, StreamingHttpResponse
from django.utils.http import content_disposition_header

from backups_app.exceptions import BackupError, ChecksumMismatch
from backups_app.models import AuditEntry, BackupRecord
from backups_app.services.audit import audit_log
from backups_app.services.download import age_plaintext_size, backup_decrypted_chunks, decrypted_name
from backups_app.services.reading import backup_chunks

logger = logging.getLogger("backups_app.api")


def download_response(
    *, backup: BackupRecord, source: str, user=None, actor: str = "", request: HttpRequest | None = None,
    filename: str | None = None,
) -> StreamingHttpResponse:
    """A streamed, checked download of `backup`'s stored file.

    Raises `BackupNotFound` (file gone) or `RestoreRefused` (no checksum, a symbolic link or
    another non-regular file in its place) before anything is sent.
    """
    def audit_mismatch(error: ChecksumMismatch) -> None:
        audit_log(action="download", source=source, outcome=AuditEntry.Outcome.FAILURE, user=user,
                  actor=actor, request=request, target=backup.name, detail=f"{error}; download cut short")
        logger.error("Backup %s does not match its recorded SHA-256; download aborted", backup.name)

    # The iterator's close() (called by the server when the response ends) closes the file.
    response = StreamingHttpResponse(
        backup_chunks(backup=backup, on_mismatch=audit_mismatch), content_type="application/octet-stream",
    )
    response["Content-Disposition"] = content_disposition_header(True, filename or backup.name)
    if backup.size_bytes is not None:
        # The recorded size: a shorter file ends the response with an error, not a clean short body.
        response["Content-Length"] = str(backup.size_bytes)
    response["X-Backup-SHA256"] = backup.sha256
    return response


#: The audit action of a decrypted download, told apart from the download of the stored file.
DECRYPTED_DOWNLOAD = "download_decrypted"


def decrypted_download_response(
    *, backup: BackupRecord, source: str, user=None, actor: str = "", request: HttpRequest | None = None,
    filename: str | None = None,
) -> StreamingHttpResponse:
    """A streamed download of `backup`'s age-decrypted (still compressed) bytes, checked on the way.

    Raises before anything is sent: `EncryptionKeyMissing` (no BACKUP_ENCRYPTION_IDENTITY here),
    `RestoreRefused` (a plain backup, no checksum, a symbolic link), `BackupNotFound`. A damaged,
    truncated or swapped file, or a key that does not open it, cuts the response short.
    """
    def audit_failure(error: BackupError) -> None:
        audit_log(action=DECRYPTED_DOWNLOAD, source=source, outcome=AuditEntry.Outcome.FAILURE, user=user,
                  actor=actor, request=request, target=backup.name, detail=f"{error}; download cut short")
        logger.error("Backup %s failed its checks while downloaded decrypted; download aborted", backup.name)

    chunks = backup_decrypted_chunks(backup=backup, on_failure=audit_failure)
    response = StreamingHttpResponse(chunks, content_type="application/octet-stream")
    response["Content-Disposition"] = content_disposition_header(True, decrypted_name(filename or backup.name))
    if backup.size_bytes is not None:
        plaintext = age_plaintext_size(stored_size=backup.size_bytes, header_size=chunks.header_size)
        if plaintext is not None:
            response["Content-Length"] = str(plaintext)
    return response
