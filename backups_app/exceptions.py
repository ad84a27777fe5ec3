"""Errors raised by backups_app. Messages never carry passwords or other secrets."""


class BackupError(Exception):
    """Base class of every backups_app error."""


class DumpFailed(BackupError):
    """The dump tool, the compressor or the storage failed; no file was kept."""


class RestoreFailed(BackupError):
    """The restore did not complete."""


class RestoreRefused(BackupError):
    """The restore was refused before the database was touched."""


class RestoreTargetRefused(RestoreRefused):
    """The backup may not be restored into that alias (BACKUP_RESTORE_TARGETS, never `default`)."""


class ChecksumMismatch(RestoreRefused):
    """The stored file does not match the SHA-256 recorded when it was written."""


class BackupLocked(BackupError):
    """Another backup or restore of the same database is running."""


class LockUnavailable(BackupError):
    """The database server could not be reached to take the per-database lock (down, wrong password).

    Not a refusal: nothing else holds the lock; the operation fails with the server's message.
    """


class BackupNotFound(BackupError):
    """No backup record or no stored file with that name."""


class ApiTokenRejected(BackupError):
    """A Bearer token is unknown, expired, revoked, or belongs to an inactive user.

    `reason` is for the audit log only; callers answer every case with the same 401 so that a
    client cannot tell an expired token from one that never existed.
    """

    def __init__(self, reason: str, *, prefix: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.prefix = prefix


class AccessRefused(BackupError):
    """The acting user may not do this (a superuser-only backup, a token for someone else)."""
