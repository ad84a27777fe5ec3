"""Restores: a checked backup into a database, with a safety backup first.

A restore locks the database, checks the stored file completely before anything else, takes a
safety backup (kind `safety`) and feeds the engine bytes that are checked again as it reads them.
A refused restore changed nothing; a failed one names the safety backup to go back to. Restoring
the ops database itself (`default`) rebuilds the backup records from the manifests afterwards and
puts back the audit entries written since the backup.
"""
from __future__ import annotations

import logging
import os
import time
from datetime import timedelta

from django.core.exceptions import ImproperlyConfigured
from django.core.management.color import no_style
from django.db import connections, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from backups_app import locks
from backups_app.access import backup_access_check, restore_target_check
from backups_app.engines import get_engine
from backups_app.engines.base import DumpEngine
from backups_app.exceptions import (
    AccessRefused,
    BackupError,
    BackupLocked,
    ChecksumMismatch,
    DumpFailed,
    RestoreFailed,
    RestoreRefused,
)
from backups_app.jobs import job_enqueue
from backups_app.models import AuditEntry, BackupRecord, RestoreRecord
from backups_app.pipeline import DecompressingReader
from backups_app.services.audit import audit_log
from backups_app.services.backup import (
    Progress,
    audit_actor,
    audit_source,
    backup_run_locked,
    check_compression,
    error_text,
)
from backups_app.services.binlogs import binlog_segments_sync
from backups_app.services.dirty import dirty_alert, dirty_clear, dirty_mark, is_dirty
from backups_app.services.media import media_chain_prepare
from backups_app.services.orphans import backups_mark_interrupted, current_host
from backups_app.services.reading import backup_check, backup_read
from backups_app.services.sync import backups_sync
from backups_app.signals import restore_finished

logger = logging.getLogger(__name__)


def _require_read_to_the_end(plain: DecompressingReader, backup: BackupRecord) -> None:
    """An engine that returned without reading the checked end did not restore checked bytes."""
    if not plain.verified:
        raise ChecksumMismatch(
            _("The restore stopped reading backup %(name)s before its end, so its bytes were not all "
              "checked.") % {"name": backup.name}
        )


# Entries this long before the backup started are surely inside its dump; later ones may not be.
AUDIT_OVERLAP = timedelta(minutes=5)


AUDIT_BATCH = 1000


def _audit_entries_since(backup: BackupRecord) -> list[AuditEntry]:
    """The audit entries a restore of `backup` into the ops database would erase (and a margin)."""
    since = (backup.started_at or backup.created_at) - AUDIT_OVERLAP
    return list(AuditEntry.objects.filter(created_at__gte=since).order_by("pk"))


def _audit_entries_put_back(entries: list[AuditEntry]) -> int:
    """Re-insert, under their own ids and times, the `entries` the restored ops database lacks.

    An id the restored table already has is the same entry (the backup holds it): ids are never
    reused, because the sequences are moved past every re-inserted id. A user the restored database
    no longer has is dropped from the entry; its `actor` text still names them.
    """
    if not entries:
        return 0
    ids = [entry.pk for entry in entries]
    present = set(
        AuditEntry.objects.filter(pk__gte=min(ids), pk__lte=max(ids)).values_list("pk", flat=True)
    )
    missing = [entry for entry in entries if entry.pk not in present]
    user_model = AuditEntry._meta.get_field("user").related_model
    user_ids = {entry.user_id for entry in missing if entry.user_id}
    users = set(user_model.objects.filter(pk__in=user_ids).values_list("pk", flat=True))
    times = {entry.pk: entry.created_at for entry in missing}
    for entry in missing:
        if entry.user_id not in users:
            entry.user_id = None
    with transaction.atomic():
        # bulk_create stamps auto_now_add's "now" on created_at; bulk_update puts the times back.
        AuditEntry.objects.bulk_create(missing, batch_size=AUDIT_BATCH)
        for entry in missing:
            entry.created_at = times[entry.pk]
        AuditEntry.objects.bulk_update(missing, ["created_at"], batch_size=AUDIT_BATCH)
    return len(missing)


def _sequences_reset(*models) -> None:
    """Move the id sequences past rows inserted with explicit ids (PostgreSQL needs it; others no-op)."""
    connection = connections["default"]
    statements = connection.ops.sequence_reset_sql(no_style(), list(models))
    if statements:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)


def _reattach_after_ops_restore(restore: RestoreRecord, audit_entries: list[AuditEntry]) -> RestoreRecord:
    """The ops database was replaced: rebuild backup records from the manifests, put back the audit
    entries written since the backup, and the restore's own record (the restored tables predate it)."""
    connections["default"].close()
    put_back = _audit_entries_put_back(audit_entries)
    if put_back:
        logger.info("Put back %d audit entries written since the restored backup.", put_back)
    backups_sync()
    binlog_segments_sync()
    restore.backup = BackupRecord.objects.get(name=restore.backup_name)
    if restore.safety_backup_id is not None:
        restore.safety_backup = BackupRecord.objects.filter(name=restore.safety_backup.name).first()
    if restore.user_id is not None:
        from django.contrib.auth import get_user_model

        if not get_user_model().objects.filter(pk=restore.user_id).exists():
            restore.user = None
    # The restore's record keeps its id (saved again by the caller): whoever queued it (the API's
    # answer, the admin's redirect) still finds it.
    _sequences_reset(AuditEntry, RestoreRecord)
    return restore


def _media_options(engine: DumpEngine, *, media_path: str, delete_extraneous: bool) -> None:
    """Hand the media-only restore options to the media engine; refuse them for a database."""
    if not (media_path or delete_extraneous):
        return
    if engine.vendor != "media":
        raise RestoreRefused(_("--path and --delete-extraneous apply to media backups only."))
    engine.restore_prefix = media_path
    engine.delete_extraneous = delete_extraneous


def backup_restore(
    *,
    backup: BackupRecord,
    database: str | None = None,
    trigger: str,
    user=None,
    safety_backup: bool = True,
    restore: RestoreRecord | None = None,
    progress: Progress | None = None,
    media_path: str = "",
    delete_extraneous: bool = False,
) -> RestoreRecord:
    """Restore `backup` into `database` (default: the database it came from).

    For a media backup, `media_path` restores only the files under that path and
    `delete_extraneous` removes the files the archive does not hold; both are refused for a database.

    Order: lock the database; check the stored file completely (SHA-256, stream end, completion
    marker) before anything else; take a safety backup (kind `safety`) unless `safety_backup=False`;
    restore. A refused restore (`RestoreRefused`, `ChecksumMismatch`, `BackupLocked`) changed nothing;
    a failed one (`RestoreFailed`) names the safety backup to restore. Restoring the ops database
    (`default`) rebuilds the backup records from the manifests afterwards.
    """
    database = database or backup.database
    source = audit_source(trigger)
    if restore is None:
        restore = RestoreRecord.objects.create(
            backup=backup, backup_name=backup.name, database=database, trigger=trigger, user=user,
            media_path=media_path, delete_extraneous=delete_extraneous,
        )
    clock = time.monotonic()
    engine: DumpEngine | None = None
    touched: list[bool] = []  # whether the engine began a change to the target it could not undo
    # Named now: a restore of the ops database may erase the user, and the entry must still say who.
    actor = audit_actor(trigger, user) or (user.get_username() if user is not None else "")

    def finish(status: str, message: str = "", outcome: str = "success") -> None:
        restore.status = status
        restore.error_message = message
        restore.finished_at = timezone.now()
        restore.duration_seconds = round(time.monotonic() - clock, 3)
        restore.save()
        detail = message or (f"safety backup {restore.safety_backup.name}" if restore.safety_backup_id else "")
        audit_log(action="restore", source=source, outcome=outcome, user=restore.user, actor=actor,
                  target=f"{backup.name} -> {database}", detail=detail)
        restore_finished.send(sender=RestoreRecord, restore=restore)

    try:
        backup_access_check(database=backup.database, user=user, action="restore")
        restore_target_check(source=backup.database, target=database)
        try:
            engine = get_engine(database)
        except ImproperlyConfigured as error:
            raise RestoreRefused(str(error)) from None
        if engine.vendor != backup.engine:
            raise RestoreRefused(
                _("Backup %(name)s is a %(engine)s dump; database %(database)s is %(vendor)s.")
                % {"name": backup.name, "engine": backup.engine, "database": database, "vendor": engine.vendor}
            )
        _media_options(engine, media_path=media_path, delete_extraneous=delete_extraneous)
        with locks.database_lock(database, "restore"):
            backups_mark_interrupted(database=database, lock_held=True)
            restore.status = RestoreRecord.Status.RUNNING
            restore.owner_host, restore.owner_pid = current_host(), os.getpid()
            restore.save(update_fields=["status", "owner_host", "owner_pid"])
            backup_check(backup=backup, engine=engine)
            if engine.vendor == "media":  # every earlier archive of its chain, checked the same way
                media_chain_prepare(backup=backup, engine=engine)
            if safety_backup and is_dirty(database=database):
                # Its content is half a restore: no backup of it may be kept, a safety one neither.
                safety_backup = False
            if safety_backup:
                try:
                    safety = backup_run_locked(
                        engine=get_engine(database), compression=check_compression(None),
                        trigger=trigger, user=user, kind=BackupRecord.Kind.SAFETY,
                    )
                except DumpFailed as error:
                    raise RestoreRefused(
                        _("The safety backup taken before the restore failed (%(error)s); nothing was "
                          "restored.") % {"error": error}
                    ) from None
                restore.safety_backup = safety
                restore.save(update_fields=["safety_backup"])

            def before_target_change() -> None:
                dirty_mark(database=database, restore=restore)
                touched.append(True)

            # Restoring the ops database rewinds its audit log too: keep what was written since.
            audit_entries = _audit_entries_since(backup) if database == "default" else []
            plain: DecompressingReader | None = None
            try:
                # The final gate: the very bytes fed to the engine are checked as it reads them.
                with backup_read(backup=backup, engine=engine) as plain:
                    engine.restore(plain, before_target_change=before_target_change)
                    _require_read_to_the_end(plain, backup)
            except Exception as error:  # noqa: BLE001 - reported with the way back
                if database == "default":
                    restore = _reattach_after_ops_restore(restore, audit_entries)
                # The engine may report its stopped tool; the reader knows the real cause.
                cause = plain.error if plain is not None and isinstance(plain.error, ChecksumMismatch) else error
                message = error_text(cause, engine)
                if not touched:
                    # PostgreSQL rolled back, or MySQL failed while loading its staging database.
                    message = _("%(error)s. Nothing was restored: the database is as it was before.") % {
                        "error": message}
                    if is_dirty(database=database):
                        message += " " + _("It is still marked dirty from an earlier interrupted restore.")
                    raise RestoreFailed(message) from None
                dirty_alert(database=database, reason=message)
                if restore.safety_backup_id:
                    message = _(
                        "%(error)s. The database may be partly restored: restore the safety backup "
                        "%(safety)s to return to the state before this restore."
                    ) % {"error": message, "safety": restore.safety_backup.name}
                else:
                    message = _("%(error)s. The database may be partly restored (no safety backup was taken).") % {
                        "error": message}
                raise RestoreFailed(message) from None
            if database == "default":
                restore = _reattach_after_ops_restore(restore, audit_entries)
            # The database is the backup's now, whatever an earlier interrupted restore left.
            dirty_clear(database=database)
    except RestoreFailed as error:
        finish(RestoreRecord.Status.FAILED, str(error), "failure")
        raise
    except (RestoreRefused, AccessRefused, BackupLocked) as error:
        finish(RestoreRecord.Status.REFUSED, error_text(error, engine), "refused")
        raise
    except BackupError as error:
        finish(RestoreRecord.Status.FAILED, error_text(error, engine), "failure")
        raise RestoreFailed(error_text(error, engine)) from None
    except BaseException as error:  # SIGTERM / Ctrl-C: record it now, then let the process stop
        message = _("Stopped (%(reason)s) before finishing.") % {"reason": error.__class__.__name__}
        if not touched:
            message += " " + _("Nothing was restored: the database is as it was before.")
        elif restore.safety_backup_id:
            message += " " + _("The database may be partly restored: restore the safety backup %(safety)s.") % {
                "safety": restore.safety_backup.name}
        else:
            message += " " + _("The database may be partly restored (no safety backup was taken).")
        finish(RestoreRecord.Status.FAILED, message, "failure")
        raise
    finish(RestoreRecord.Status.SUCCESS)
    return restore


def restore_backup_gone(*, restore: RestoreRecord) -> RestoreRecord:
    """End a queued restore whose backup was deleted before it ran: `refused`, audited, never left
    waiting in the queue."""
    return restore_queued_refuse(restore=restore, message=_(
        "Backup %(name)s was deleted before this restore started; nothing was restored.") % {"name": restore.backup_name})


def restore_queued_user_gone(*, restore: RestoreRecord, user_id: int | None) -> bool:
    """True (and the restore ended `refused`) when `user_id`, who queued it, was deleted meanwhile.

    RestoreRecord.user is SET_NULL, and no user is what the access rules read as the host operator
    (backups_app/access.py), with rights the user never had.
    """
    if user_id is None or restore.user_id is not None:
        return False
    restore_queued_refuse(restore=restore, message=_(
        "The user who asked for this restore was deleted before it started; nothing was restored."))
    return True


def restore_queued_refuse(*, restore: RestoreRecord, message: str) -> RestoreRecord:
    """End a claimed, queued restore as `refused` with `message`: audited, its signal sent."""
    restore.status = RestoreRecord.Status.REFUSED
    restore.error_message = message
    restore.finished_at = timezone.now()
    restore.save(update_fields=["status", "error_message", "finished_at"])
    audit_log(action="restore", source=audit_source(restore.trigger), outcome="refused", user=restore.user,
              actor=audit_actor(restore.trigger, restore.user), target=f"{restore.backup_name} -> {restore.database}",
              detail=message)
    restore_finished.send(sender=RestoreRecord, restore=restore)
    return restore


def restore_queue(
    *, backup: BackupRecord, database: str | None = None, trigger: str, user=None, safety_backup: bool = True,
    media_path: str = "", delete_extraneous: bool = False,
) -> RestoreRecord:
    """Create a queued RestoreRecord and run it through Celery (`restore_run`) after commit.

    `media_path` and `delete_extraneous` (media backups only) are kept on the record for the task.

    Raises AccessRefused or RestoreRefused at once (and audits the refusal) when `user` may not
    restore this backup or `database` is not an allowed target; the task would refuse it anyway.
    """
    try:
        backup_access_check(database=backup.database, user=user, action="restore")
        restore_target_check(source=backup.database, target=database or backup.database)
        if (media_path or delete_extraneous) and backup.engine != "media":
            raise RestoreRefused(_("--path and --delete-extraneous apply to media backups only."))
    except (AccessRefused, RestoreRefused) as error:
        audit_log(action="restore", source=audit_source(trigger), outcome="refused", user=user,
                  actor=audit_actor(trigger, user), target=f"{backup.name} -> {database or backup.database}",
                  detail=str(error))
        raise
    restore = RestoreRecord.objects.create(
        backup=backup, backup_name=backup.name, database=database or backup.database,
        trigger=trigger, user=user, media_path=media_path, delete_extraneous=delete_extraneous,
    )
    audit_log(action="restore", source=audit_source(trigger), outcome="started", user=user,
              actor=audit_actor(trigger, user), target=f"{backup.name} -> {restore.database}", detail=_("queued"))

    def enqueue() -> None:
        job_enqueue("backups_app.tasks.restore_run", restore.pk, safety_backup, restore.user_id)

    transaction.on_commit(enqueue)
    return restore


__all__ = ["backup_restore", "restore_backup_gone", "restore_queue", "restore_queued_user_gone"]
