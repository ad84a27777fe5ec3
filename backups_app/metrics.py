"""Prometheus metrics of backups and restores, computed from the database at scrape time.

Every figure is read from the records when Prometheus scrapes, so any web process answers the same
whatever it did itself: nothing is counted in process memory, nothing resets when gunicorn recycles
a worker. The cost is a handful of grouped queries whatever the number of records (see
tests/cache/test_metrics.py, which counts them for 10 and 10,000 records).

Conventions: times are unix seconds; a database that never had a good backup reports 0 as the time
of its last one (so `time() - opsdesk_backup_last_success_timestamp_seconds` is huge and the
staleness alert fires for it too); every configured database gets every per-database series, with
zero counts, so that a rule never sees a series appear out of nothing.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Count, Max, Min, Q
from django.db.models.functions import Coalesce
from prometheus_client.core import GaugeMetricFamily, Metric

from backups_app.engines.media import is_media_alias
from backups_app.models import BackupRecord, RestoreRecord
from backups_app.selectors import backup_databases, dirty_databases
from backups_app.storage import offsite_enabled

Status = BackupRecord.Status
Verification = BackupRecord.VerificationStatus
Offsite = BackupRecord.OffsiteStatus

# A backup that ended badly: what the "backup failing" alert compares with the last good one.
BAD_STATUSES = (Status.FAILED, Status.INTERRUPTED)


def _seconds(moment: datetime | None) -> float:
    return moment.timestamp() if moment is not None else 0.0


@dataclass
class DatabaseFigures:
    """What one grouped query tells about the backups of one database."""

    counts_by_status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(Status.values, 0))
    verifications: dict[str, int] = field(default_factory=lambda: {Verification.VERIFIED: 0, Verification.FAILED: 0})
    newest_good_created_at: datetime | None = None
    newest_uploaded_created_at: datetime | None = None
    last_failure_at: datetime | None = None
    # Per verification result, when a backup last got it.
    last_verified_at: dict[str, datetime] = field(default_factory=dict)

    def last_verification(self) -> tuple[str, datetime] | None:
        """The newest verification's result and time; a tie counts as failed (the pessimistic side)."""
        if not self.last_verified_at:
            return None
        moment = max(self.last_verified_at.values())
        result = Verification.FAILED if self.last_verified_at.get(Verification.FAILED) == moment else Verification.VERIFIED
        return result, moment


def _later(current: datetime | None, candidate: datetime | None) -> datetime | None:
    if candidate is None:
        return current
    return candidate if current is None or candidate > current else current


def _backup_groups():
    """One query grouped by database, status, verification and offsite status."""
    return (
        BackupRecord.objects.values("database", "status", "verification_status", "offsite_status")
        .annotate(
            count=Count("id"),
            newest_created_at=Max("created_at"),
            newest_ended_at=Max(Coalesce("finished_at", "created_at")),
            newest_verified_at=Max("verified_at"),
        )
        .order_by()
    )


def metric_databases(*, recorded: set[str]) -> list[str]:
    """Every configured database, and the media aliases (`media`, `media:<storage>`) that have
    backups: they are not in DATABASES, yet their backups deserve the same alerts. Records of an
    alias no longer configured are left out."""
    configured = backup_databases()
    return configured + sorted(alias for alias in recorded if is_media_alias(alias) and alias not in configured)


def backup_figures() -> dict[str, DatabaseFigures]:
    """Per database (see metric_databases), what the grouped query says about its backups."""
    groups = list(_backup_groups())
    figures = {alias: DatabaseFigures() for alias in metric_databases(recorded={group["database"] for group in groups})}
    groups = [group for group in groups if group["database"] in figures]
    for group in groups:
        database = figures[group["database"]]
        status, verification = group["status"], group["verification_status"]
        database.counts_by_status[status] = database.counts_by_status.get(status, 0) + group["count"]
        if verification in database.verifications:
            database.verifications[verification] += group["count"]
            database.last_verified_at[verification] = _later(
                database.last_verified_at.get(verification), group["newest_verified_at"]
            )
        if status == Status.SUCCESS:
            database.newest_good_created_at = _later(database.newest_good_created_at, group["newest_created_at"])
            if group["offsite_status"] == Offsite.UPLOADED:
                database.newest_uploaded_created_at = _later(
                    database.newest_uploaded_created_at, group["newest_created_at"]
                )
        elif status in BAD_STATUSES:
            database.last_failure_at = _later(database.last_failure_at, group["newest_ended_at"])
    for database in figures.values():
        database.last_verified_at = {key: value for key, value in database.last_verified_at.items() if value}
    return figures


def newest_good_backups(*, figures: dict[str, DatabaseFigures]) -> dict[str, BackupRecord]:
    """The newest good backup of each database, in one query (found by the time the grouping gave)."""
    wanted = Q()
    for alias, database in figures.items():
        if database.newest_good_created_at is not None:
            wanted |= Q(database=alias, created_at=database.newest_good_created_at)
    if not wanted:
        return {}
    newest: dict[str, BackupRecord] = {}
    records = BackupRecord.objects.good().filter(wanted).only(
        "id", "database", "created_at", "finished_at", "duration_seconds", "size_bytes"
    )
    for record in records:
        # Two backups in the same microsecond: the later row wins, as in backup_list's ordering.
        if record.database not in newest or record.id > newest[record.database].id:
            newest[record.database] = record
    return newest


def offsite_behind_since(*, figures: dict[str, DatabaseFigures]) -> dict[str, datetime]:
    """Per database, when the oldest good backup still waiting for its offsite copy ended.

    Only backups newer than the newest confirmed copy count: an old upload that failed for good is
    history once a newer backup reached the bucket. A database missing here is fully copied.
    """
    wanted = Q()
    for alias, database in figures.items():
        if database.newest_uploaded_created_at is None:
            wanted |= Q(database=alias)
        else:
            wanted |= Q(database=alias, created_at__gt=database.newest_uploaded_created_at)
    if not wanted:
        return {}
    rows = (
        BackupRecord.objects.good().filter(wanted, offsite_status__in=[Offsite.PENDING, Offsite.FAILED])
        .values("database")
        .annotate(since=Min(Coalesce("finished_at", "created_at")))
        .order_by()
    )
    return {row["database"]: row["since"] for row in rows}


def restore_counts(*, databases: list[str]) -> dict[str, dict[str, int]]:
    """Restores per target database and status (zero-filled)."""
    counts = {alias: dict.fromkeys(RestoreRecord.Status.values, 0) for alias in databases}
    rows = (
        RestoreRecord.objects.filter(database__in=databases)
        .values("database", "status").annotate(count=Count("id")).order_by()
    )
    for row in rows:
        counts[row["database"]][row["status"]] = row["count"]
    return counts


class BackupCollector:
    """Per-database backup, verification, offsite and restore figures (see the module docstring)."""

    def describe(self) -> list[Metric]:
        # Nothing to declare up front: registering must not run queries (the registry would call
        # collect() otherwise).
        return []

    def collect(self) -> Iterator[Metric]:
        figures = backup_figures()
        databases = list(figures)
        newest = newest_good_backups(figures=figures)
        yield from self._last_good(databases, figures, newest)
        yield from self._counts(databases, figures)
        yield from self._verification(databases, figures)
        if offsite_enabled():
            yield self._offsite_lag(databases, figures)
        yield self._restores(databases)
        yield self._dirty(databases)
        yield from self._recovery_windows()

    def _last_good(self, databases, figures, newest) -> Iterator[Metric]:
        last_success = GaugeMetricFamily(
            "opsdesk_backup_last_success_timestamp_seconds",
            "When the newest good backup of the database finished (unix time); 0 when it never had one.",
            labels=["database"],
        )
        duration = GaugeMetricFamily(
            "opsdesk_backup_last_success_duration_seconds",
            "How long the newest good backup of the database took.", labels=["database"],
        )
        size = GaugeMetricFamily(
            "opsdesk_backup_last_success_size_bytes",
            "Stored (compressed) size of the newest good backup of the database.", labels=["database"],
        )
        last_failure = GaugeMetricFamily(
            "opsdesk_backup_last_failure_timestamp_seconds",
            "When the newest failed or interrupted backup of the database ended (unix time); 0 when none.",
            labels=["database"],
        )
        for alias in databases:
            record = newest.get(alias)
            last_success.add_metric([alias], _seconds(record and (record.finished_at or record.created_at)))
            if record is not None and record.duration_seconds is not None:
                duration.add_metric([alias], record.duration_seconds)
            if record is not None and record.size_bytes is not None:
                size.add_metric([alias], record.size_bytes)
            last_failure.add_metric([alias], _seconds(figures[alias].last_failure_at))
        yield from (last_success, duration, size, last_failure)

    def _counts(self, databases, figures) -> Iterator[Metric]:
        backups = GaugeMetricFamily(
            "opsdesk_backups", "Backup records kept, by database and status.", labels=["database", "status"]
        )
        for alias in databases:
            for status, count in figures[alias].counts_by_status.items():
                backups.add_metric([alias, status], count)
        yield backups

    def _verification(self, databases, figures) -> Iterator[Metric]:
        results = GaugeMetricFamily(
            "opsdesk_backup_verifications", "Backup records kept, by database and verification result.",
            labels=["database", "result"],
        )
        last_success = GaugeMetricFamily(
            "opsdesk_backup_last_verification_success",
            "1 when the newest verification (test restore) of the database passed, 0 when it failed.",
            labels=["database"],
        )
        last_time = GaugeMetricFamily(
            "opsdesk_backup_last_verification_timestamp_seconds",
            "When the newest verification of the database ran (unix time).", labels=["database"],
        )
        for alias in databases:
            for result, count in figures[alias].verifications.items():
                results.add_metric([alias, result], count)
            last = figures[alias].last_verification()
            if last is not None:
                last_success.add_metric([alias], 1.0 if last[0] == Verification.VERIFIED else 0.0)
                last_time.add_metric([alias], _seconds(last[1]))
        yield from (results, last_success, last_time)

    def _offsite_lag(self, databases, figures) -> Metric:
        lag = GaugeMetricFamily(
            "opsdesk_backup_offsite_lag_seconds",
            "Seconds since the oldest good backup newer than the newest confirmed offsite copy ended "
            "(how far the bucket is behind); 0 when every newer good backup is copied.",
            labels=["database"],
        )
        behind_since = offsite_behind_since(figures=figures)
        now = time.time()
        for alias in databases:
            since = behind_since.get(alias)
            lag.add_metric([alias], max(0.0, now - since.timestamp()) if since is not None else 0.0)
        return lag

    def _dirty(self, databases) -> Metric:
        dirty = GaugeMetricFamily(
            "opsdesk_database_dirty",
            "1 while a restore that began changing the database did not finish: its content is neither "
            "the old one nor the backup's, and its backups are refused until it is repaired.",
            labels=["database"],
        )
        marked = dirty_databases()
        for alias in [*databases, *sorted(marked - set(databases))]:
            dirty.add_metric([alias], 1.0 if alias in marked else 0.0)
        return dirty

    def _recovery_windows(self) -> Iterator[Metric]:
        """Point-in-time recovery of the databases that archive their binlog (backups_app.services.binlogs)."""
        from backups_app.services.binlogs import archived_databases, binlog_window

        start = GaugeMetricFamily(
            "opsdesk_pitr_window_start_timestamp_seconds",
            "Oldest moment the newest recoverable window reaches back to (its oldest usable base backup).",
            labels=["database"],
        )
        end = GaugeMetricFamily(
            "opsdesk_pitr_window_end_timestamp_seconds",
            "Newest archived binlog event: the local recovery point (0: no recoverable window).",
            labels=["database"],
        )
        offsite = GaugeMetricFamily(
            "opsdesk_pitr_offsite_recovery_point_timestamp_seconds",
            "Newest binlog event whose segment is confirmed offsite (0: none).", labels=["database"],
        )
        gaps = GaugeMetricFamily(
            "opsdesk_pitr_gaps", "Holes in the binlog archive (archiver down, binlog purged, segment "
            "missing or corrupt); a restore across one is refused.", labels=["database"],
        )
        archiver = GaugeMetricFamily(
            "opsdesk_pitr_archiver_running", "1 while the binlog archiver of the database sends heartbeats.",
            labels=["database"],
        )
        for alias in archived_databases():
            status = binlog_window(database=alias)
            newest = status.windows[-1] if status.windows else None
            start.add_metric([alias], _seconds(newest.start if newest else None))
            end.add_metric([alias], _seconds(newest.end if newest else None))
            offsite.add_metric([alias], _seconds(status.offsite_recovery_point))
            gaps.add_metric([alias], len(status.gaps))
            archiver.add_metric([alias], 1.0 if status.archiver_running else 0.0)
        yield from (start, end, offsite, gaps, archiver)

    def _restores(self, databases) -> Metric:
        restores = GaugeMetricFamily(
            "opsdesk_restores", "Restore records, by target database and status.", labels=["database", "status"]
        )
        for alias, counts in restore_counts(databases=databases).items():
            for status, count in counts.items():
                restores.add_metric([alias, status], count)
        return restores


class ProcessCollector:
    """Whether anything will run: worker and scheduler heartbeats, and the jobs waiting for them.

    Read from backups_app.liveness (the heartbeat rows every worker and beat process writes), the
    same answers as the admin index and /health.
    """

    def describe(self) -> list[Metric]:
        return []  # registering must not query the database

    def collect(self) -> Iterator[Metric]:
        from backups_app.liveness import queue_depth, scheduler_alive, worker_alive

        yield GaugeMetricFamily(
            "opsdesk_worker_alive",
            "1 when a Celery worker consuming opsdesk's queue gave a heartbeat recently (always 1 "
            "without a broker: each job then runs in a process of its own).",
            value=1.0 if worker_alive() else 0.0,
        )
        yield GaugeMetricFamily(
            "opsdesk_scheduler_alive", "1 when the scheduler (celery beat) ticked recently.",
            value=1.0 if scheduler_alive() else 0.0,
        )
        yield GaugeMetricFamily(
            "opsdesk_queue_depth", "Backups and restores queued and not yet taken by a worker.", value=queue_depth(),
        )
