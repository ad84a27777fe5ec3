"""Retention: which backups to keep, and the cleanup that removes the others.

Decisions use `BackupRecord.created_at` (UTC) only, never file times, which a restore from tape, a
copy or a changed clock can make meaningless. The rules follow restic's `forget`:

- the newest good backup is always kept, whatever the policy says;
- `keep_last`: the newest N good backups;
- `keep_days`: every good backup younger than N days;
- `keep_daily` / `keep_weekly` / `keep_monthly`: for each of the last N days (ISO weeks, months)
  that have a good backup, the newest good backup of that day (week, month).

Media archives form chains (a full archive, then incrementals each building on the one before):
every archive a kept incremental builds on is kept too, whatever the rules say, so a chain is
deleted as a whole once its newest member expires, newest first.

Only good backups (status success, verification not failed) count toward what is kept: a run of
failed backups can never push the last restorable one out. Failed and interrupted backups have
their files removed at once (their records stay until they are older than `keep_days`, so the
failure stays visible). Queued and running backups are never touched.

Only files that records name are deleted: the backup file, its JSON manifest beside it and their
offsite copies. When a storage cannot be listed, or lists none of the files the records name (an
unmounted volume, a wrong bucket), cleanup deletes nothing for that database and says so.
"""
from __future__ import annotations

import dataclasses
import logging
import posixpath
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone as dt_timezone

from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy

from backups_app import storage as backup_storages
from backups_app.conf import app_settings
from backups_app.manifest import manifest_name
from backups_app.models import AuditEntry, BackupRecord, RetentionPolicy
from backups_app.services.audit import audit_log

logger = logging.getLogger(__name__)

DEFAULT_KEEP_LAST = 7

# Reasons a backup is kept, as shown by `cleanup_backups --dry-run` and the admin preview.
REASON_NEWEST = _lazy("newest good backup")
REASON_LAST = _lazy("last")
REASON_DAYS = _lazy("days")
REASON_DAILY = _lazy("daily")
REASON_WEEKLY = _lazy("weekly")
REASON_MONTHLY = _lazy("monthly")
REASON_ACTIVE = _lazy("queued or running")
REASON_RECENT_FAILURE = _lazy("failed, record kept for keep_days")
REASON_UNTRUSTED = _lazy("untrusted, awaiting a superuser's adoption or deletion")
REASON_CHAIN = _lazy("needed by a kept incremental")


@dataclasses.dataclass
class PlannedBackup:
    """One backup and what retention decided about it."""

    record: BackupRecord
    keep_reasons: list[str] = dataclasses.field(default_factory=list)
    # Failed/interrupted backups whose files go but whose record stays for a while.
    remove_files_only: bool = False

    @property
    def keep(self) -> bool:
        return bool(self.keep_reasons)


@dataclasses.dataclass
class RetentionPlan:
    """What the policy of one database keeps and deletes at `now` (nothing is changed yet)."""

    database: str
    policy: RetentionPolicy
    now: datetime
    items: list[PlannedBackup]

    @property
    def to_delete(self) -> list[BackupRecord]:
        return [item.record for item in self.items if not item.keep and not item.remove_files_only]

    @property
    def to_strip(self) -> list[BackupRecord]:
        """Failed/interrupted backups whose files are removed while the record stays."""
        return [item.record for item in self.items if item.remove_files_only]

    @property
    def kept(self) -> list[PlannedBackup]:
        return [item for item in self.items if item.keep]


@dataclasses.dataclass
class DatabaseCleanup:
    """The outcome of cleanup for one database alias."""

    database: str
    dry_run: bool
    deleted: list[str] = dataclasses.field(default_factory=list)
    files_removed: list[str] = dataclasses.field(default_factory=list)
    kept: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    refused: str = ""
    errors: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refused and not self.errors


@dataclasses.dataclass
class CleanupResult:
    """The outcome of `retention_apply` over one or every database."""

    dry_run: bool
    databases: list[DatabaseCleanup] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(database.ok for database in self.databases)

    @property
    def deleted(self) -> list[str]:
        return [name for database in self.databases for name in database.deleted]

    def as_dict(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "ok": self.ok,
            "databases": [dataclasses.asdict(database) for database in self.databases],
        }


def retention_policy_for(*, database: str) -> RetentionPolicy:
    """The database's policy, or the default (unsaved) one: BACKUP_RETENTION_DAYS and keep_last 7."""
    policy = RetentionPolicy.objects.filter(database=database).first()
    if policy is None:
        policy = RetentionPolicy(
            database=database, keep_days=app_settings.BACKUP_RETENTION_DAYS, keep_last=DEFAULT_KEEP_LAST
        )
    return policy


def _counts_as_good(record: BackupRecord) -> bool:
    return (
        record.is_good
        and record.verification_status != BackupRecord.VerificationStatus.FAILED
    )


def _bucket_keepers(good: list[BackupRecord], count: int | None, bucket_of) -> set[int]:
    """restic semantics: walking newest first, keep the first backup of each new bucket, N buckets."""
    keepers: set[int] = set()
    if not count:
        return keepers
    last_bucket = None
    for record in good:
        bucket = bucket_of(record.created_at.astimezone(dt_timezone.utc))
        if bucket != last_bucket:
            keepers.add(record.pk)
            last_bucket = bucket
            if len(keepers) >= count:
                break
    return keepers


def retention_plan(
    *, database: str, policy: RetentionPolicy | None = None, now: datetime | None = None
) -> RetentionPlan:
    """Decide, without changing anything, which backups of `database` the policy keeps and deletes.

    `policy` defaults to the saved one (or the default policy); the admin passes an unsaved policy
    to preview the effect of an edit.
    """
    policy = policy or retention_policy_for(database=database)
    now = now or timezone.now()
    records = list(BackupRecord.objects.filter(database=database).order_by("-created_at", "-id"))
    good = [record for record in records if _counts_as_good(record)]
    reasons: dict[int, list[str]] = {record.pk: [] for record in records}

    if good:
        reasons[good[0].pk].append(REASON_NEWEST)
    for record in good[: policy.keep_last]:
        reasons[record.pk].append(REASON_LAST)
    # A backup dated in the future (the clock was moved back) is "young" and kept by keep_days.
    cutoff = now - timedelta(days=policy.keep_days)
    for record in good:
        if record.created_at >= cutoff:
            reasons[record.pk].append(REASON_DAYS)
    for reason, count, bucket_of in (
        (REASON_DAILY, policy.keep_daily, lambda moment: moment.date()),
        (REASON_WEEKLY, policy.keep_weekly, lambda moment: moment.isocalendar()[:2]),
        (REASON_MONTHLY, policy.keep_monthly, lambda moment: (moment.year, moment.month)),
    ):
        for pk in _bucket_keepers(good, count, bucket_of):
            reasons[pk].append(reason)

    items = []
    for record in records:
        item = PlannedBackup(record=record, keep_reasons=reasons[record.pk])
        if record.status in (BackupRecord.Status.QUEUED, BackupRecord.Status.RUNNING):
            item.keep_reasons.append(REASON_ACTIVE)
        elif record.status == BackupRecord.Status.UNTRUSTED:
            # It may be a good backup whose manifest lost its signature (a new key): a person decides.
            item.keep_reasons.append(REASON_UNTRUSTED)
        elif record.status in (BackupRecord.Status.FAILED, BackupRecord.Status.INTERRUPTED):
            if record.created_at >= cutoff:
                # The files of a failed backup are never worth keeping; the record is, for a while.
                item.remove_files_only = bool(record.storage_name or record.offsite_name)
                item.keep_reasons.append(REASON_RECENT_FAILURE)
        items.append(item)
    _keep_chains(records, reasons)
    return RetentionPlan(database=database, policy=policy, now=now, items=items)


def _keep_chains(records: list[BackupRecord], reasons: dict[int, list[str]]) -> None:
    """Keep every archive that a kept media archive builds on, however old (its parent, the parent's
    parent...). Walking newest first, a kept archive's parent is marked before it is reached."""
    by_pk = {record.pk: record for record in records}
    for record in records:  # newest first
        parent = by_pk.get(record.parent_id) if record.parent_id else None
        if (parent is not None and record.is_good and reasons[record.pk]
                and REASON_CHAIN not in reasons[parent.pk]):
            reasons[parent.pk].append(REASON_CHAIN)


def _record_files(storage_name: str) -> list[str]:
    """The backup file and the JSON manifest the backup service writes beside it."""
    return [storage_name, manifest_name(storage_name)] if storage_name else []


def _check_listable(storage, names: Iterable[str], label: str) -> str:
    """An empty string when `storage` lists at least one of `names`; else why cleanup must stop.

    Listing each folder the records point into catches an unmounted volume or a wrong bucket
    before anything is deleted: a storage that lists nothing while records say files exist is
    not trusted.
    """
    names = [name for name in names if name]
    if not names:
        return ""
    listed: set[str] = set()
    for folder in sorted({posixpath.dirname(name) for name in names}):
        try:
            _directories, files = storage.listdir(folder)
        except Exception as error:  # noqa: BLE001 - any failure to list means "do not delete"
            return _("the %(label)s storage cannot be listed (%(error)s)") % {
                "label": label, "error": f"{type(error).__name__}: {error}",
            }
        listed.update(posixpath.join(folder, file) if folder else file for file in files)
    if not listed.intersection(names):
        return _("the %(label)s storage lists none of the %(count)d files the records name") % {
            "label": label, "count": len(names),
        }
    return ""


def _delete_files(record: BackupRecord, local, offsite_storage, cleanup: DatabaseCleanup) -> bool:
    """Remove the record's local and offsite files; False (and an error noted) when one failed."""
    targets = [(local, name) for name in _record_files(record.storage_name)]
    if record.media_file_list_sha256:
        from backups_app.services.media import file_list_name

        targets.append((local, file_list_name(record.name)))
    if offsite_storage is not None:
        targets += [(offsite_storage, name) for name in _record_files(record.offsite_name)]
    ok = True
    for storage, name in targets:
        try:
            storage.delete(name)
        except FileNotFoundError:
            pass
        except Exception as error:  # noqa: BLE001 - reported, and the record is kept to retry
            ok = False
            cleanup.errors.append(f"{record.name}: {name}: {type(error).__name__}: {error}")
    return ok


def _cleanup_database(
    *, database: str, dry_run: bool, now: datetime | None, source: str, user
) -> DatabaseCleanup:
    plan = retention_plan(database=database, now=now)
    cleanup = DatabaseCleanup(database=database, dry_run=dry_run)
    cleanup.kept = {item.record.name: [str(reason) for reason in item.keep_reasons] for item in plan.kept}
    to_delete, to_strip = plan.to_delete, plan.to_strip
    if not to_delete and not to_strip:
        if not dry_run:
            # Audited all the same: the log shows that the nightly cleanup ran.
            audit_log(
                action="cleanup", source=source, user=user, target=database,
                outcome=AuditEntry.Outcome.SUCCESS, detail=_("nothing to delete"),
            )
        return cleanup

    # Check the storages before deleting anything: the files of every finished record are expected.
    finished = [item.record for item in plan.items if REASON_ACTIVE not in item.keep_reasons]
    local = backup_storages.backup_storage()
    cleanup.refused = _check_listable(local, [record.storage_name for record in finished], "local")
    offsite_storage = backup_storages.offsite_storage() if backup_storages.offsite_enabled() else None
    if not cleanup.refused and offsite_storage is not None:
        uploaded = [
            record.offsite_name for record in finished
            if record.offsite_status == BackupRecord.OffsiteStatus.UPLOADED
        ]
        cleanup.refused = _check_listable(offsite_storage, uploaded, "offsite")

    if cleanup.refused or dry_run:
        cleanup.deleted = [record.name for record in to_delete]
        cleanup.files_removed = [record.name for record in to_strip]
        if cleanup.refused:
            cleanup.deleted, cleanup.files_removed = [], []
            logger.error("cleanup of %s deleted nothing: %s", database, cleanup.refused)
            audit_log(
                action="cleanup", source=source, outcome=AuditEntry.Outcome.REFUSED, user=user,
                target=database, detail=cleanup.refused,
            )
        return cleanup

    for record in to_strip:
        if _delete_files(record, local, offsite_storage, cleanup):
            record.storage_name = ""
            record.offsite_name = ""
            record.save(update_fields=["storage_name", "offsite_name"])
            cleanup.files_removed.append(record.name)
    still_needed: set[int] = set()  # archives an incremental that could not be deleted builds on
    for record in to_delete:  # newest first: an incremental comes before the archive it builds on
        if record.pk in still_needed:
            cleanup.kept[record.name] = [str(REASON_CHAIN)]
        elif _delete_files(record, local, offsite_storage, cleanup):
            # Restore history survives: RestoreRecord.backup is SET_NULL and keeps backup_name.
            record.delete()
            cleanup.deleted.append(record.name)
            continue
        # It stays (its files could not all be removed): so does the chain it restores from.
        if record.parent_id:
            still_needed.add(record.parent_id)

    lines = [f"deleted: {name}" for name in cleanup.deleted]
    lines += [f"files removed (failed backup): {name}" for name in cleanup.files_removed]
    lines += [f"error: {error}" for error in cleanup.errors]
    audit_log(
        action="cleanup", source=source, user=user, target=database,
        outcome=AuditEntry.Outcome.FAILURE if cleanup.errors else AuditEntry.Outcome.SUCCESS,
        detail="\n".join(lines) or _("nothing to delete"),
    )
    return cleanup


def retention_databases() -> list[str]:
    """Every database alias that has backups or a policy, including aliases no longer configured."""
    aliases = set(BackupRecord.objects.values_list("database", flat=True).distinct())
    aliases |= set(RetentionPolicy.objects.values_list("database", flat=True))
    return sorted(aliases)


def retention_apply(
    *,
    database: str | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    source: str = AuditEntry.Source.SYSTEM,
    user=None,
) -> CleanupResult:
    """Apply the retention policy of `database` (or of every database) and delete what it drops.

    With `dry_run` nothing is deleted and the result lists what would be. A database whose
    storage cannot be trusted is reported (`refused`) and left as it is; the other databases
    are still cleaned. Every real run is audited (action `cleanup`).
    """
    databases = [database] if database else retention_databases()
    result = CleanupResult(dry_run=dry_run)
    for alias in databases:
        cleanup = _cleanup_database(database=alias, dry_run=dry_run, now=now, source=source, user=user)
        result.databases.append(cleanup)
        if cleanup.ok:
            _binlog_segments_prune(cleanup, source=source, user=user)
    return result


def _binlog_segments_prune(cleanup: DatabaseCleanup, *, source: str, user) -> None:
    """Drop the binlog segments that no kept base backup needs any more (point-in-time recovery)."""
    from backups_app.services.binlogs import segments_prune

    kept = [
        record for record in BackupRecord.objects.good().filter(database=cleanup.database)
        .exclude(binlog_file="").exclude(binlog_position=None)
        if record.name not in cleanup.deleted
    ]
    deleted = segments_prune(database=cleanup.database, kept_bases=kept, dry_run=cleanup.dry_run)
    if deleted and not cleanup.dry_run:
        audit_log(action="cleanup", source=source, user=user, target=cleanup.database,
                  outcome=AuditEntry.Outcome.SUCCESS,
                  detail="\n".join(f"binlog segment deleted: {name}" for name in deleted))
