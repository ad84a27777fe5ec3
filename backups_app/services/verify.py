"""Verification by test restore: prove that a stored backup can actually be restored.

Three steps, each of which fails the verification on its own:
1. the stored bytes match the SHA-256 recorded when the backup was written, and the compressed
   stream decodes to its end and carries the dump tool's completion marker;
   (a full pass before anything else, which refuses a damaged file without creating a database);
2. the dump restores into a scratch database (`engine.scratch_engine()`: a temporary database on
   the same MariaDB/PostgreSQL server, a temporary file for SQLite), which is dropped on exit
   whatever happens; the bytes restored are hashed again as the restore reads them, through one
   descriptor, so a file swapped after step 1 fails here (docs/FAULTS.md: storage written by
   someone else);
3. the scratch database has every table recorded at backup time, with the same row counts.

A media archive restores into a scratch folder instead, with every earlier archive of its chain
(each checked like step 1 first); then every restored file is read again and hashed against the
archive's index, and the counts of files, folders and links are compared with the backup's.

The outcome is stored on the record (`verification_status`, `verified_at`,
`verification_message`) and in the audit log (action `verify`). A backup that fails verification
no longer counts as good for retention.

A test restore takes as long as a restore: the admin queues it (`backup_verify_queue`, run by the
task `backup_verify_run` on a worker or in a background process, like backups and restores);
commands and the schedule run `backup_verify` directly.
"""
from __future__ import annotations

import logging

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from backups_app.access import backup_access_check
from backups_app.engines import get_engine
from backups_app.engines.base import DumpEngine
from backups_app.exceptions import AccessRefused, BackupError, ChecksumMismatch
from backups_app.jobs import job_enqueue
from backups_app.models import AuditEntry, BackupRecord
from backups_app.services.audit import audit_log
from backups_app.selectors import backup_get, last_good_backup
from backups_app.services.reading import backup_check, backup_read

logger = logging.getLogger(__name__)


class VerificationFailed(BackupError):
    """The backup did not pass one of the verification steps."""


def _compare_row_counts(expected: dict[str, int], actual: dict[str, int]) -> list[str]:
    problems = []
    for table, count in sorted(expected.items()):
        if table not in actual:
            problems.append(_("table %(table)s is missing") % {"table": table})
        elif actual[table] != count:
            problems.append(
                _("table %(table)s has %(actual)d rows instead of %(expected)d")
                % {"table": table, "actual": actual[table], "expected": count}
            )
    return problems


def _restore_checked(backup: BackupRecord, engine: DumpEngine, scratch: DumpEngine) -> None:
    """Restore the backup into `scratch`; the bytes restored are the bytes checked (hashed as the
    scratch restore reads them), and a restore that stops before the end of the file fails."""
    with backup_read(backup=backup, engine=engine) as plain:
        try:
            scratch.restore(plain)
        except Exception:
            if isinstance(plain.error, ChecksumMismatch):
                raise plain.error from None
            raise
        if not plain.verified:
            raise VerificationFailed(_("the test restore stopped before the end of the file"))


def _test_restore(backup: BackupRecord, engine: DumpEngine) -> str:
    """Restore into a scratch database and compare row counts; the summary, or VerificationFailed."""
    with engine.scratch_engine() as scratch:
        _restore_checked(backup, engine, scratch)
        actual = scratch.table_row_counts()
    if backup.table_row_counts:
        problems = _compare_row_counts(backup.table_row_counts, actual)
        if problems:
            raise VerificationFailed("; ".join(problems))
        return _("restored into a scratch database: %(tables)d tables, row counts as at backup time") % {
            "tables": len(backup.table_row_counts),
        }
    if not actual:
        raise VerificationFailed(_("the scratch database has no tables after the restore"))
    return _("restored into a scratch database: %(tables)d tables (no row counts recorded)") % {
        "tables": len(actual),
    }


def _media_test_restore(backup: BackupRecord, engine: DumpEngine) -> str:
    """Restore the chain of a media archive into a scratch folder, then re-read and re-hash every
    file against the index; the summary, or VerificationFailed."""
    from backups_app import media
    from backups_app.services.media import media_chain_prepare

    with engine.scratch_engine() as scratch:
        chain = media_chain_prepare(backup=backup, engine=scratch)
        _restore_checked(backup, engine, scratch)
        index = scratch.last_restore.index
        problems = media.tree_problems(scratch.root, index)
        actual = scratch.table_row_counts()
    problems += [
        _("%(kind)s: %(actual)d instead of %(expected)d") % {"kind": kind, "actual": actual.get(kind, 0),
                                                             "expected": count}
        for kind, count in sorted(backup.table_row_counts.items()) if actual.get(kind, 0) != count
    ]
    if problems:
        raise VerificationFailed("; ".join(problems))
    return _("restored %(files)d files from %(archives)d archives into a scratch folder; every file read "
             "again matches its SHA-256") % {"files": actual.get("files", 0), "archives": len(chain) + 1}


def backup_to_verify(*, database: str, name: str | None = None) -> BackupRecord | None:
    """The backup named (BackupNotFound when unknown), else the database's newest good backup."""
    if name:
        return backup_get(name=name)
    return last_good_backup(database=database)


def _verify_allowed(*, backup: BackupRecord, user, source: str) -> None:
    """AccessRefused (audited) when `user` may not verify it; BackupError when it is not a good backup."""
    try:
        backup_access_check(database=backup.database, user=user, action="verify")
    except AccessRefused as error:
        audit_log(action="verify", source=source, user=user, target=backup.name, detail=str(error),
                  outcome=AuditEntry.Outcome.REFUSED)
        raise
    if not backup.is_good:
        raise BackupError(
            _("%(name)s is %(status)s; only successful backups can be verified.")
            % {"name": backup.name, "status": backup.get_status_display()}
        )


def backup_verify(
    *, backup: BackupRecord, user=None, source: str, ip_address: str | None = None
) -> BackupRecord:
    """Verify a good backup by checksum, stream check and test restore; record and audit the result.

    Returns the updated record: `verification_status` says verified, failed, or (when its engine
    cannot make a scratch database) unverified with the reason. Raises `BackupError` for a backup
    that is not successful, which has nothing to verify. `ip_address`: where the request came
    from, for a verification queued by a request and run later (see backup_verify_queue).
    """
    _verify_allowed(backup=backup, user=user, source=source)
    status = BackupRecord.VerificationStatus.FAILED
    try:
        engine = get_engine(backup.database)
        # The backup service's own check, the one restore runs: SHA-256, size, stream end, marker.
        backup_check(backup=backup, engine=engine)
        if engine.vendor == "media":
            message = _media_test_restore(backup, engine)
        else:
            message = _test_restore(backup, engine)
        status = BackupRecord.VerificationStatus.VERIFIED
    except (NotImplementedError, ImproperlyConfigured) as error:
        # The file is not at fault: this installation cannot test-restore it.
        status = BackupRecord.VerificationStatus.UNVERIFIED
        message = _("cannot test-restore %(name)s here: %(error)s") % {
            "name": backup.name, "error": str(error) or _("the engine has no scratch database support"),
        }
    except BackupError as error:
        message = str(error)
    except Exception as error:  # noqa: BLE001 - a restore error is a verification failure
        logger.exception("verification of %s failed", backup.name)
        message = f"{type(error).__name__}: {error}"
    backup.verification_status = status
    backup.verified_at = timezone.now()
    backup.verification_message = message[:4000]
    backup.save(update_fields=["verification_status", "verified_at", "verification_message"])
    audit_log(
        action="verify", source=source, user=user, target=backup.name, detail=message, ip_address=ip_address,
        outcome=(
            AuditEntry.Outcome.SUCCESS if status == BackupRecord.VerificationStatus.VERIFIED
            else AuditEntry.Outcome.FAILURE
        ),
    )
    return backup


def backup_verify_queue(
    *, backup: BackupRecord, user=None, source: str, ip_address: str | None = None
) -> BackupRecord:
    """Check that `user` may verify `backup`, then run `backup_verify` through the job queue after commit.

    Raises AccessRefused (audited) or BackupError at once, as `backup_verify` would. The result is
    recorded on the backup and in the audit log (with `user`, `source` and `ip_address`) by the job.
    Without a broker the job runs in a background process of its own (backups_app.jobs).
    """
    _verify_allowed(backup=backup, user=user, source=source)
    user_id = user.pk if user is not None and getattr(user, "is_authenticated", False) else None

    def enqueue() -> None:
        job_enqueue("backups_app.tasks.backup_verify_run", backup.pk, user_id, source, ip_address)

    transaction.on_commit(enqueue)
    return backup
