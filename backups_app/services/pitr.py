"""Point-in-time restore of a MariaDB/MySQL database: a base backup, then the archived binlog.

Order, each step refusing before the database is touched when it can:
1. the target (a time, a binlog position or a GTID) must lie inside a recoverable window: after a
   usable base backup (one that recorded its binlog coordinates) and before the newest archived
   event, with no hole of the archive in between; otherwise `RestoreRefused` with one line;
2. every segment to replay is read and checked against its SHA-256 and rebuilt into binlog files
   in a private temporary folder (the live file's complete events too: the local recovery point);
3. the newest good base backup before the target is restored by the normal restore service
   (checksums first, safety backup, lock, records, audit);
4. only then, as a separate step under the database's lock again, with the restore `running` and
   the database marked dirty until it completes (no backup may take a half-replayed database for a
   good one), `mariadb-binlog` replays the rebuilt files from the base's coordinates up to the
   target into the `mariadb` client.
A failed replay marks the restore failed and names the safety backup.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from backups_app import locks
from backups_app.access import backup_access_check
from backups_app.binlog_events import binlog_sequence, events
from backups_app.conf import app_settings
from backups_app.encryption import required_identities
from backups_app.engines import get_engine
from backups_app.engines.binlog import MySQLBinlogTools
from backups_app.exceptions import BackupError, RestoreFailed, RestoreRefused
from backups_app.jobs import job_enqueue
from backups_app.models import AuditEntry, BackupRecord, BinlogSegment, RestoreRecord
from backups_app.services.audit import audit_log
from backups_app.services.restore import backup_restore
from backups_app.services.dirty import dirty_clear, dirty_mark
from backups_app.services.binlogs import (
    ArchiveRun,
    base_snapshot_second,
    binlog_position_key,
    binlog_window,
    live_directory,
    segment_identities,
    segment_read,
)
from backups_app.services.reading import backup_check, backup_read

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecoveryTarget:
    """Where to stop: the end of second `to_time`, before `to_position`, or after GTID `to_gtid`."""

    to_time: datetime | None = None
    to_position: tuple[str, int] | None = None
    to_gtid: str | None = None

    def __str__(self) -> str:
        if self.to_time is not None:
            return self.to_time.isoformat()
        if self.to_position is not None:
            return f"{self.to_position[0]}:{self.to_position[1]}"
        return f"GTID {self.to_gtid}"


def recovery_target_parse(*, to_time: str | None = None, to_position: str | None = None,
                          to_gtid: str | None = None) -> RecoveryTarget:
    """One target from user input; a naive time is in TIME_ZONE. RestoreRefused on bad input."""
    given = [value for value in (to_time, to_position, to_gtid) if value]
    if len(given) != 1:
        raise RestoreRefused(_("Give exactly one of a time, a binlog position or a GTID to restore to."))
    if to_time:
        moment = parse_datetime(to_time.strip().replace("T", " ", 1) if "T" in to_time else to_time.strip())
        if moment is None:
            raise RestoreRefused(_("%(value)r is not a time (use \"YYYY-MM-DD HH:MM:SS\", optionally with +HH:MM).")
                                 % {"value": to_time})
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment, timezone.get_default_timezone())
        return RecoveryTarget(to_time=moment.replace(microsecond=0))
    if to_position:
        binlog_file, _colon, position = to_position.rpartition(":")
        if not binlog_file or not position.isdigit() or binlog_sequence(binlog_file)[1] < 0:
            raise RestoreRefused(_("%(value)r is not a binlog position (use FILE:POSITION, e.g. binlog.000012:4567).")
                                 % {"value": to_position})
        return RecoveryTarget(to_position=(binlog_file, int(position)))
    parts = to_gtid.strip().split("-")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise RestoreRefused(_("%(value)r is not a GTID (use DOMAIN-SERVER-SEQUENCE, e.g. 0-1-4711).") % {"value": to_gtid})
    return RecoveryTarget(to_gtid=to_gtid.strip())


@dataclass
class RecoveryPlan:
    database: str
    target: RecoveryTarget
    base: BackupRecord
    run: ArchiveRun
    stop_datetime: datetime | None = None
    stop_file: str | None = None  # the last binlog file replayed (a position target's file)
    stop_position: int | None = None

    def segments(self) -> list[BinlogSegment]:
        first = binlog_position_key(self.base.binlog_file, 0)
        last = binlog_position_key(self.stop_file, 1 << 62) if self.stop_file else (1 << 62, 0)
        return [s for s in self.run.segments if first <= binlog_position_key(s.binlog_file, s.start_position) <= last]

    def describe(self) -> str:
        return _("base backup %(base)s (binlog %(file)s:%(position)d), then the archived binlog up to %(target)s") % {
            "base": self.base.name, "file": self.base.binlog_file, "position": self.base.binlog_position,
            "target": self.target,
        }


def _refuse(message: str) -> RestoreRefused:
    return RestoreRefused(message)


def _window_text(status) -> str:
    if not status.windows:
        return _("nothing is recoverable yet")
    return "; ".join(f"{w.start:%Y-%m-%d %H:%M:%S %Z} to {w.end:%Y-%m-%d %H:%M:%S %Z}" for w in status.windows)


def _plan_for_time(database: str, target: RecoveryTarget, status) -> RecoveryPlan:
    moment = target.to_time
    for window in status.windows:
        if window.start <= moment <= window.end:
            bases = [b for b in window.bases if base_snapshot_second(b) <= moment]
            return RecoveryPlan(database=database, target=target, base=bases[-1], run=window.run,
                                stop_datetime=moment + timedelta(seconds=1))
    if status.windows and moment > status.windows[-1].end:
        raise _refuse(_("%(target)s is beyond the recoverable window of %(database)s (%(window)s).")
                      % {"target": target, "database": database, "window": _window_text(status)})
    if len(status.windows) > 1 and status.windows[0].start <= moment:
        raise _refuse(_("%(target)s falls in a gap of the binlog archive of %(database)s (recoverable: %(window)s).")
                      % {"target": target, "database": database, "window": _window_text(status)})
    raise _refuse(_("%(target)s is outside the recoverable window of %(database)s (%(window)s).")
                  % {"target": target, "database": database, "window": _window_text(status)})


def _plan_for_position(database: str, target: RecoveryTarget, status) -> RecoveryPlan:
    binlog_file, position = target.to_position
    for window in status.windows:
        if not window.run.covers(binlog_file, position):
            continue
        bases = [b for b in window.bases
                 if binlog_position_key(b.binlog_file, b.binlog_position) <= binlog_position_key(binlog_file, position)]
        if bases:
            return RecoveryPlan(database=database, target=target, base=bases[-1], run=window.run,
                                stop_file=binlog_file, stop_position=position)
    raise _refuse(_("%(target)s is not inside a recoverable window of %(database)s (%(window)s).")
                  % {"target": target, "database": database, "window": _window_text(status)})


def _gtid_position(database: str, gtid: str, status) -> tuple[str, int] | None:
    """The binlog position right after the transaction `gtid` (where the next one starts)."""
    domain, server, sequence = (int(part) for part in gtid.split("-"))
    for window in status.windows:
        files = {}
        for segment in window.run.segments:
            files.setdefault(segment.binlog_file, []).append(segment)
        for binlog_file, segments in files.items():
            if not any(_gtid_may_hold(s, domain, server, sequence) for s in segments):
                continue
            data = b"".join(_segment_bytes(database, s) for s in segments)
            offset = segments[0].start_position
            found = False
            for event in events(data, start=max(offset, 4), offset=offset):
                if found and event.gtid:
                    return binlog_file, event.position
                found = found or event.gtid == gtid
            if found:
                return binlog_file, offset + len(data)
    return None


def _gtid_may_hold(segment: BinlogSegment, domain: int, server: int, sequence: int) -> bool:
    if getattr(segment, "is_live", False):
        return True  # not summarised yet: look inside
    if not segment.first_gtid:
        return False
    first = [int(p) for p in segment.first_gtid.split("-")]
    last = [int(p) for p in segment.last_gtid.split("-")]
    return first[0] == domain and (first[2] <= sequence <= last[2] or first[1] != server or last[1] != server)


def pitr_plan(*, database: str, target: RecoveryTarget) -> RecoveryPlan:
    """What a restore of `database` to `target` would do; RestoreRefused (one line) when impossible."""
    try:
        engine = get_engine(database)
        MySQLBinlogTools(engine)
    except BackupError as error:
        raise _refuse(str(error)) from None
    status = binlog_window(database=database)
    if not status.windows:
        raise _refuse(_("Database %(database)s has no recoverable window: it needs a base backup taken with "
                        "binary logging on and the binlog archived from there (archive_binlogs).")
                      % {"database": database})
    if target.to_time is not None:
        plan = _plan_for_time(database, target, status)
    elif target.to_gtid is not None:
        # Finding the GTID reads segments: an encrypted archive needs the private key already here.
        segment_identities([s for window in status.windows for s in window.run.segments])
        position = _gtid_position(database, target.to_gtid, status)
        if position is None:
            raise _refuse(_("GTID %(gtid)s is not in the binlog archive of %(database)s.")
                          % {"gtid": target.to_gtid, "database": database})
        plan = _plan_for_position(database, RecoveryTarget(to_position=position), status)
        plan.target = target
    else:
        plan = _plan_for_position(database, target, status)
    _require_keys(plan)
    return plan


def _require_keys(plan: RecoveryPlan) -> None:
    """EncryptionKeyMissing (a refusal, one line) when the base backup or a segment to replay is
    encrypted and this host has no private key: refused when planned, before anything is read."""
    if plan.base.encrypted:
        required_identities(backup_name=plan.base.name)
    segment_identities(plan.segments())


def _live_bytes(database: str, segment: BinlogSegment) -> bytes:
    """The live segment's bytes, read from the file the archiver is writing (complete events only)."""
    start = segment.start_position
    try:
        with (live_directory(database) / segment.binlog_file).open("rb") as handle:
            handle.seek(start)
            data = handle.read()
    except FileNotFoundError:
        data = b""
    end = start
    for event in events(data, start=max(start, 4), offset=start):
        end = event.end_position
    if end < segment.end_position:
        raise RestoreRefused(_("The live binlog file %(file)s changed while the restore was planned; try again.")
                             % {"file": segment.binlog_file})
    return data[:end - start]


def _segment_bytes(database: str, segment: BinlogSegment) -> bytes:
    """A segment's checked bytes: from its stored file, or from the live file for the live one."""
    if getattr(segment, "is_live", False):
        return _live_bytes(database, segment)
    return segment_read(segment=segment)


def _rebuild_files(plan: RecoveryPlan, folder: Path) -> list[Path]:
    """Write the binlog files the replay reads, from checked segments (and the live tail)."""
    paths: dict[str, Path] = {}
    for segment in plan.segments():
        path = paths.setdefault(segment.binlog_file, folder / segment.binlog_file)
        with path.open("ab") as handle:
            handle.write(_segment_bytes(plan.database, segment))
    return sorted(paths.values(), key=lambda p: binlog_sequence(p.name)[1])


class _ReplayFolder:
    """A private temporary folder beside the backups (same disk, mode 0700), removed on exit."""

    def __enter__(self) -> Path:
        root = Path(app_settings.BACKUP_DIR) / "binlogs"
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = Path(tempfile.mkdtemp(prefix=".replay-", dir=root))
        return self.path

    def __exit__(self, *exc_info) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _prepared_files(plan: RecoveryPlan, folder: Path) -> list[Path]:
    try:
        return _rebuild_files(plan, folder)
    except RestoreRefused:
        raise
    except BackupError as error:
        raise RestoreRefused(_("The binlog archive cannot be replayed: %(error)s.") % {"error": error}) from None


def _replay(plan: RecoveryPlan, files: list[Path], engine) -> None:
    source = get_engine(plan.database).database_name
    MySQLBinlogTools(engine).replay(
        files=files, start_position=plan.base.binlog_position, source_database=source,
        stop_datetime=plan.stop_datetime, stop_position=plan.stop_position,
    )


def _refuse_record(restore: RestoreRecord | None, message: str) -> None:
    if restore is not None:
        restore.status, restore.error_message, restore.finished_at = RestoreRecord.Status.REFUSED, message, timezone.now()
        restore.save(update_fields=["status", "error_message", "finished_at"])


def pitr_restore_queue(*, database: str, target: RecoveryTarget, trigger: str, user=None) -> RestoreRecord:
    """Check the target now (RestoreRefused at once), then run the restore as a job after commit
    (a Celery worker, or a background process without a broker; see backups_app.jobs)."""
    from django.db import transaction

    # The same rule as every restore (a backup of opsdesk's own database needs a superuser), at once.
    backup_access_check(database=database, user=user, action="restore")
    plan = pitr_plan(database=database, target=target)
    restore = RestoreRecord.objects.create(backup=plan.base, backup_name=plan.base.name, database=database,
                                           trigger=trigger, user=user)
    audit_log(action="restore", source=str(trigger), outcome="started", user=user,
              target=f"{database} @ {target}", detail=_("queued: %(plan)s") % {"plan": plan.describe()})

    def enqueue() -> None:
        # Plain strings only: they may travel on a command line (background process) or a broker.
        job_enqueue("backups_app.tasks.pitr_restore_run", restore.pk,
                    target.to_time.isoformat() if target.to_time else "",
                    f"{target.to_position[0]}:{target.to_position[1]}" if target.to_position else "",
                    target.to_gtid or "", restore.user_id)

    transaction.on_commit(enqueue)
    return restore


def pitr_restore(*, database: str, target: RecoveryTarget, trigger: str, user=None,
                 safety_backup: bool = True, restore: RestoreRecord | None = None) -> RestoreRecord:
    """Restore `database` to `target`: base backup by the normal restore service, then binlog replay.

    Raises RestoreRefused (nothing touched) when the target is outside the window, crosses a gap or
    a segment fails its checksum; RestoreFailed (naming the safety backup) when the replay fails.
    """
    source = str(trigger)
    try:
        plan = pitr_plan(database=database, target=target)
    except RestoreRefused as error:
        audit_log(action="restore", source=source, outcome="refused", user=user,
                  target=f"{database} @ {target}", detail=str(error))
        _refuse_record(restore, str(error))
        raise
    with _ReplayFolder() as folder:
        try:
            files = _prepared_files(plan, folder)
        except RestoreRefused as error:
            audit_log(action="restore", source=source, outcome="refused", user=user,
                      target=f"{database} @ {target}", detail=str(error))
            _refuse_record(restore, str(error))
            raise
        if restore is not None and restore.backup_id != plan.base.pk:
            restore.backup, restore.backup_name = plan.base, plan.base.name
            restore.save(update_fields=["backup", "backup_name"])
        restore = backup_restore(backup=plan.base, database=database, trigger=trigger, user=user,
                                 safety_backup=safety_backup, restore=restore)
        _replay_into_target(plan=plan, files=files, restore=restore, source=source, user=user)
    audit_log(action="restore", source=source, outcome="success", user=user,
              target=f"{database} @ {target}", detail=plan.describe())
    return restore


def _one_line(message: str) -> str:
    """The client's error in one line: it echoes the failing statement (row images in base64)
    between dashed lines before the error itself, which is the line worth keeping."""
    lines = [line.strip() for line in message.splitlines() if line.strip() and not line.strip().startswith("---")]
    if len(lines) <= 1:
        return lines[0] if lines else message
    return f"{lines[0].split(':', 1)[0]}: {lines[-1]}"


def _replay_into_target(*, plan: RecoveryPlan, files: list[Path], restore: RestoreRecord, source: str,
                        user) -> None:
    """The replay after the base restore. Until it completes the restore is `running` again and the
    database marked dirty, so that a replay that fails or is killed is never taken for a finished
    restore, nor the half-replayed database backed up as good (docs/FAULTS.md, "restore killed at
    any byte"); the lock is taken again for the same reason."""
    database = plan.database
    restore.status, restore.finished_at = RestoreRecord.Status.RUNNING, None
    restore.save(update_fields=["status", "finished_at"])
    try:
        with locks.database_lock(database, "restore"):
            dirty_mark(database=database, restore=restore)
            _replay(plan, files, get_engine(database))
    except BaseException as error:
        if isinstance(error, BackupError):
            reason = _("replaying the binlog up to %(target)s failed: %(error)s") % {
                "target": plan.target, "error": _one_line(str(error))}
        else:
            reason = _("the replay of the binlog was stopped (%(reason)s)") % {"reason": type(error).__name__}
        message = _("The base backup %(base)s was restored, but %(reason)s.") % {"base": plan.base.name, "reason": reason}
        if restore.safety_backup_id:
            message += " " + _("Restore the safety backup %(safety)s to return to the state before.") % {
                "safety": restore.safety_backup.name}
        restore.status, restore.error_message = RestoreRecord.Status.FAILED, message[:4000]
        restore.finished_at = timezone.now()
        restore.save(update_fields=["status", "error_message", "finished_at"])
        audit_log(action="restore", source=source, outcome="failure", user=user,
                  target=f"{database} @ {plan.target}", detail=message)
        if isinstance(error, BackupError):
            raise RestoreFailed(message) from None
        raise
    dirty_clear(database=database)
    restore.status, restore.finished_at = RestoreRecord.Status.SUCCESS, timezone.now()
    restore.save(update_fields=["status", "finished_at"])


def pitr_verify(*, database: str, target: RecoveryTarget, user=None, source: str = AuditEntry.Source.CLI) -> str:
    """Prove a point-in-time restore to `target` in a scratch database; the summary, or BackupError.

    The base backup is checked and restored into a scratch database, the binlog replayed into it
    (renamed with --rewrite-db), and the scratch database's tables counted; it is dropped after.
    """
    backup_access_check(database=database, user=user, action="verify")
    plan = pitr_plan(database=database, target=target)
    engine = get_engine(database)
    try:
        with _ReplayFolder() as folder:
            files = _prepared_files(plan, folder)
            backup_check(backup=plan.base, engine=engine)
            with engine.scratch_engine() as scratch:
                # Checked (and, when encrypted, decrypted) on the way, like any restore.
                with backup_read(backup=plan.base, engine=scratch) as plain:
                    scratch.restore(plain)
                _replay(plan, files, scratch)
                counts = scratch.table_row_counts()
    except BackupError as error:
        audit_log(action="verify", source=source, outcome="failure", user=user,
                  target=f"{database} @ {target}", detail=str(error))
        raise
    summary = _("%(plan)s: replayed into a scratch database: %(tables)d tables, %(rows)d rows") % {
        "plan": plan.describe(), "tables": len(counts), "rows": sum(counts.values())}
    audit_log(action="verify", source=source, outcome="success", user=user,
              target=f"{database} @ {target}", detail=summary)
    return summary
