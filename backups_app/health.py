"""backups_app's checks for /health: storage, broker, worker, scheduler, dirty databases, binlogs.

Contributed through BackupsConfig.health_checks (see cache_app.health for how /health collects
them); "database" extends cache_app's SELECT 1 with the age of the last good backup of each
database. Also the API-token authenticator that lets a staff user's token see /health's details.
"""
from __future__ import annotations

import os
from typing import Any

from django.core.files.storage import FileSystemStorage, storages
from django.db import connections
from django.http import HttpRequest
from django.utils import timezone

from backups_app import liveness
from backups_app.conf import app_settings
from backups_app.exceptions import ApiTokenRejected
from backups_app.selectors import backup_databases, dirty_databases, last_good_backups
from backups_app.services.binlogs import archived_databases, binlog_health_details
from backups_app.services.tokens import api_token_authenticate
from cache_app.health import DatabaseCheck as OwnDatabaseCheck
from cache_app.health import HealthCheck, HealthCheckFailed, bearer_token


class DatabaseCheck(OwnDatabaseCheck):
    """opsdesk's own database answers `SELECT 1`; also reports the age of the last good backups."""

    def details(self) -> dict[str, Any]:
        return {"backups": last_good_backup_ages()}


def last_good_backup_ages() -> dict[str, dict[str, Any]]:
    """Per database alias: when its newest successful backup finished and how old it is (seconds)."""
    now = timezone.now()
    ages: dict[str, dict[str, Any]] = {}
    for alias, record in last_good_backups().items():
        if record is None:
            ages[alias] = {"last_good_at": None, "age_seconds": None}
            continue
        moment = record.finished_at or record.created_at
        ages[alias] = {"last_good_at": moment.isoformat(), "age_seconds": int((now - moment).total_seconds())}
    return ages




class StorageCheck(HealthCheck):
    """The "backups" storage can be listed (and, on a local disk, written)."""

    component = "storage"

    def check_status(self) -> dict[str, Any]:
        storage = storages["backups"]
        if isinstance(storage, FileSystemStorage):
            location = os.fspath(storage.location)
            if not os.path.isdir(location):
                # Created with the first backup; what matters now is that it can be.
                parent = os.path.dirname(location.rstrip(os.sep)) or os.sep
                if not (os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK)):
                    raise HealthCheckFailed("backup folder missing and cannot be created")
                return {"exists": False}
            if not os.access(location, os.W_OK | os.X_OK):
                raise HealthCheckFailed("backup folder not writable")
            usage = os.statvfs(location)
            return {"free_bytes": usage.f_bavail * usage.f_frsize}
        storage.listdir("")
        return {}


class BrokerCheck(HealthCheck):
    """The Celery broker answers (required only when CELERY_BROKER_URL is set).

    Uses the process' one kept connection (backups_app.liveness.broker_connection): a probe every
    few seconds must not open a new broker connection each time. Every wait on the broker (connect,
    handshake, reads) is bounded by `timeout_seconds`, so a broker that accepts the connection and
    never answers makes this check false, not /health slow.
    """

    component = "broker"

    def __init__(self, *, timeout_seconds: float | None = None) -> None:
        self.timeout_seconds = app_settings.HEALTH_CHECK_TIMEOUT if timeout_seconds is None else timeout_seconds

    def is_configured(self) -> bool:
        return bool(app_settings.CELERY_BROKER_URL)

    def check_status(self) -> dict[str, Any]:
        return {"queue": app_settings.CELERY_TASK_DEFAULT_QUEUE,
                "messages": liveness.broker_queue_size(timeout_seconds=self.timeout_seconds)}

    def not_configured_details(self) -> dict[str, Any]:
        return {"configured": False, "tasks": "background processes"}


class _DatabaseReadingCheck(HealthCheck):
    """A check that reads opsdesk's database from a pool thread, closing that thread's connection."""

    def check_status(self) -> dict[str, Any]:
        try:
            return self.read()
        finally:
            connections["default"].close()

    def read(self) -> dict[str, Any]:
        raise NotImplementedError


class WorkerCheck(_DatabaseReadingCheck):
    """A worker consumes the queue (heartbeat); required, so 503, only while jobs wait in the queue."""

    component = "worker"

    def is_required(self) -> bool:
        try:
            return liveness.queue_depth() > 0
        finally:
            connections["default"].close()

    def read(self) -> dict[str, Any]:
        details = {
            "queue": liveness.queue_name(),
            "mode": "celery" if liveness.broker_configured() else "background processes",
            "queued": liveness.queue_depth(),
            "waiting": liveness.waiting_jobs(),
        }
        if not liveness.worker_alive():
            raise HealthCheckFailed(f"no worker is taking jobs from queue {liveness.queue_name()}")
        return details


class SchedulerCheck(_DatabaseReadingCheck):
    """The scheduler (celery beat or its broker-less form) ticked recently. Reported, never a 503:
    a load balancer must not take the web servers out because beat stopped."""

    component = "scheduler"

    def is_required(self) -> bool:
        return False

    def read(self) -> dict[str, Any]:
        seen = liveness.last_seen(liveness.Component.SCHEDULER)
        if not liveness.scheduler_alive():
            raise HealthCheckFailed("the scheduler (celery beat) is not running")
        return {"last_tick_at": seen.isoformat() if seen else None}


class DirtyDatabasesCheck(HealthCheck):
    """No database is left dirty by an interrupted restore (services/dirty.py).

    Details: one boolean per database alias, false for a dirty one.
    """

    component = "databases"

    def __init__(self) -> None:
        self.clean: dict[str, bool] = {}

    def check_status(self) -> dict[str, Any]:
        try:
            dirty = dirty_databases()
        finally:
            connections["default"].close()  # a pool thread's connection must not outlive it
        self.clean = {**{alias: True for alias in backup_databases()}, **{alias: False for alias in dirty}}
        if dirty:
            raise HealthCheckFailed("dirty after an interrupted restore: " + ", ".join(sorted(dirty)))
        return dict(self.clean)

    def failure_details(self) -> dict[str, Any]:
        return dict(self.clean)


class BinlogArchiverCheck(_DatabaseReadingCheck):
    """Every binlog archive (point-in-time recovery) has a running archiver and no hole.

    Configured once a database archives its binlog; reported, never a 503 (like the scheduler).
    The details give each database's recoverable windows and gaps.
    """

    component = "binlog_archiver"

    def is_configured(self) -> bool:
        try:
            return bool(archived_databases())
        finally:
            connections["default"].close()

    def is_required(self) -> bool:
        return False

    def read(self) -> dict[str, Any]:
        details = binlog_health_details()
        down = [database for database, state in details.items() if not state["archiver_running"]]
        holes = [database for database, state in details.items() if state["gaps"]]
        if down or holes:
            raise HealthCheckFailed(f"binlog archiver down: {down or '-'}; archive with a gap: {holes or '-'}")
        return details

    def failure_details(self) -> dict[str, Any]:
        try:
            return binlog_health_details()
        finally:
            connections["default"].close()


def api_token_of_staff(request: HttpRequest) -> bool:
    """A Bearer API token (backups_app.services.tokens) of an active staff user."""
    presented = bearer_token(request)
    if not presented:
        return False
    try:
        return api_token_authenticate(raw_token=presented).user.is_staff
    except ApiTokenRejected:
        return False
