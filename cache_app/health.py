"""Health checks behind /health, one class per component (the plugin design of django-health-check).

django-health-check itself was not used: its JSON is `{"<Check name>": "working"}` (a string per
plugin), while opsdesk's contract is one boolean per component at the top level, details beside it,
503 only for *required* components, and a shared deadline for all checks. Its design is kept: a
documented base class, one subclass per backend, a registry, `check_status()` raising on failure.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from django.core.cache import caches
from django.core.files.storage import FileSystemStorage, storages
from django.db import connections
from django.utils import timezone

from backups_app.selectors import last_good_backups
from cache_app.conf import app_settings

logger = logging.getLogger("cache_app.health")


class HealthCheckFailed(Exception):
    """A component answered wrongly or not at all. The message is shown: keep it free of secrets."""


@dataclass
class CheckResult:
    """What one check found: whether it works, how long it took, safe-to-publish details."""

    component: str
    ok: bool
    required: bool
    latency_ms: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    error: str = ""


class HealthCheck:
    """One component of /health.

    Subclasses set `component` (the top-level key) and implement `check_status()`, which returns a
    dict of details to publish or raises HealthCheckFailed (any other exception counts as a failure
    too; only its class name is published, the message goes to the log). `is_configured()` says
    whether the deployment uses the component at all, `is_required()` whether its failure makes the
    whole service unhealthy (HTTP 503). Checks run in worker threads with a shared deadline, so they
    must not rely on thread-local state set up by the request.
    """

    component: ClassVar[str]

    def is_configured(self) -> bool:
        return True

    def is_required(self) -> bool:
        return self.is_configured()

    def check_status(self) -> dict[str, Any]:
        raise NotImplementedError

    def not_configured_details(self) -> dict[str, Any]:
        return {"configured": False}

    def failure_details(self) -> dict[str, Any]:
        """Details still worth publishing when the check failed."""
        return {}


class DatabaseCheck(HealthCheck):
    """opsdesk's own database answers `SELECT 1`; also reports the age of the last good backups."""

    component = "database"

    def check_status(self) -> dict[str, Any]:
        connection = connections["default"]
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                if cursor.fetchone() != (1,):
                    raise HealthCheckFailed("unexpected answer to SELECT 1")
            return {"backups": last_good_backup_ages()}
        finally:
            # The check runs in a pool thread: its connection must not outlive the thread.
            connection.close()


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


class RedisCheck(HealthCheck):
    """The Redis behind the default cache answers PING (bypassing the circuit breaker)."""

    component = "redis"

    def is_configured(self) -> bool:
        return bool(app_settings.REDIS_URL)

    def check_status(self) -> dict[str, Any]:
        from cache_app.ratelimit import rate_limit_backend

        cache = caches["default"]
        if not hasattr(cache, "redis_client"):
            raise HealthCheckFailed("the default cache is not Redis")
        try:
            cache.redis_client(write=True).ping()
        except Exception as error:
            # /health doubles as the probe that notices an outage or a recovery quickly.
            cache.breaker.record_failure(error)
            raise
        cache.breaker.record_success()
        return {"rate_limit": rate_limit_backend()}

    def failure_details(self) -> dict[str, Any]:
        from cache_app.ratelimit import rate_limit_backend

        return {"rate_limit": rate_limit_backend()}

    def not_configured_details(self) -> dict[str, Any]:
        from cache_app.ratelimit import rate_limit_backend

        return {"configured": False, "cache": "per-process", "rate_limit": rate_limit_backend()}


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

    def __init__(self, *, timeout_seconds: float = 1.0) -> None:
        self.timeout_seconds = timeout_seconds

    def is_configured(self) -> bool:
        return bool(app_settings.CELERY_BROKER_URL)

    def check_status(self) -> dict[str, Any]:
        from backups_app.liveness import broker_queue_size

        return {"queue": app_settings.CELERY_TASK_DEFAULT_QUEUE,
                "messages": broker_queue_size(timeout_seconds=self.timeout_seconds)}

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
        from backups_app.liveness import queue_depth

        try:
            return queue_depth() > 0
        finally:
            connections["default"].close()

    def read(self) -> dict[str, Any]:
        from backups_app import liveness

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
        from backups_app import liveness

        seen = liveness.last_seen(liveness.Component.SCHEDULER)
        if not liveness.scheduler_alive():
            raise HealthCheckFailed("the scheduler (celery beat) is not running")
        return {"last_tick_at": seen.isoformat() if seen else None}


class DirtyDatabasesCheck(HealthCheck):
    """No database is left dirty by an interrupted restore (backups_app.services.dirty).

    Details: one boolean per database alias, false for a dirty one.
    """

    component = "databases"

    def __init__(self) -> None:
        self.clean: dict[str, bool] = {}

    def check_status(self) -> dict[str, Any]:
        from backups_app.selectors import backup_databases, dirty_databases

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
        from backups_app.services.binlogs import archived_databases

        try:
            return bool(archived_databases())
        finally:
            connections["default"].close()

    def is_required(self) -> bool:
        return False

    def read(self) -> dict[str, Any]:
        from backups_app.services.binlogs import binlog_health_details

        details = binlog_health_details()
        down = [database for database, state in details.items() if not state["archiver_running"]]
        holes = [database for database, state in details.items() if state["gaps"]]
        if down or holes:
            raise HealthCheckFailed(f"binlog archiver down: {down or '-'}; archive with a gap: {holes or '-'}")
        return details

    def failure_details(self) -> dict[str, Any]:
        from backups_app.services.binlogs import binlog_health_details

        try:
            return binlog_health_details()
        finally:
            connections["default"].close()


def health_checks() -> list[HealthCheck]:
    """The registry: every component /health reports, in the order it reports them."""
    return [
        DatabaseCheck(), RedisCheck(), StorageCheck(), BrokerCheck(timeout_seconds=app_settings.HEALTH_CHECK_TIMEOUT),
        WorkerCheck(), SchedulerCheck(), DirtyDatabasesCheck(), BinlogArchiverCheck(),
    ]


class _LogThrottle:
    """One log line per component per interval: load balancers call /health every few seconds."""

    def __init__(self, interval_seconds: float = 60.0) -> None:
        self.interval_seconds = interval_seconds
        self._last: dict[str, float] = {}

    def should_log(self, component: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(component, float("-inf")) < self.interval_seconds:
            return False
        self._last[component] = now
        return True


log_throttle = _LogThrottle()
