"""Is anything going to run? Worker and scheduler heartbeats, the queue, and one broker connection.

Every Celery worker writes a heartbeat row (ProcessHeartbeat) from a small thread started on
`worker_ready`, every BACKUP_HEARTBEAT_SECONDS, naming the queues it consumes; the scheduler (beat,
backups_app.beat.OpsdeskScheduler) writes one from its own tick loop, so a beat that is alive but
stuck stops ticking and goes stale. A clean stop deletes the row; a killed process leaves a row that
is stale after three intervals (docs/FAULTS.md, "worker or beat not running").

Without a broker there is no worker: each backup or restore runs in a process of its own
(backups_app.jobs), started at once, so `worker_alive()` is true whenever those processes are on.

The admin index, the Periodic tasks page, /health and /metrics read `worker_alive()`,
`scheduler_alive()`, `queue_depth()` and `waiting_jobs()`; nothing here raises for a database or
broker that is down: the answer is then "not alive".
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterator

from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from backups_app.conf import app_settings
from backups_app.models import BackupRecord, ProcessHeartbeat, RestoreRecord

logger = logging.getLogger(__name__)

Component = ProcessHeartbeat.Component

#: Heartbeats older than this many intervals belong to a process that is gone.
STALE_AFTER_INTERVALS = 3


def broker_configured() -> bool:
    return bool(app_settings.CELERY_BROKER_URL)


def queue_name() -> str:
    return app_settings.CELERY_TASK_DEFAULT_QUEUE


def stale_after() -> timedelta:
    return timedelta(seconds=app_settings.BACKUP_HEARTBEAT_SECONDS * STALE_AFTER_INTERVALS)


# --- Writing heartbeats ---------------------------------------------------------------------------
_started_at = timezone.now()


def heartbeat_write(*, component: str, queues: str = "") -> None:
    """Record that this process is alive now (one row per process, updated in place)."""
    now = timezone.now()
    ProcessHeartbeat.objects.update_or_create(
        component=component, host=socket.gethostname(), pid=os.getpid(),
        defaults={"queues": queues[:500], "seen_at": now, "started_at": _started_at},
    )
    # Rows of processes long gone (killed, or on a host that was replaced) are only clutter.
    ProcessHeartbeat.objects.filter(seen_at__lt=now - timedelta(days=1)).delete()


def heartbeat_remove(*, component: str) -> None:
    """A clean stop: the process says it is gone instead of waiting to go stale."""
    ProcessHeartbeat.objects.filter(component=component, host=socket.gethostname(), pid=os.getpid()).delete()


class HeartbeatThread(threading.Thread):
    """Writes the heartbeat of this process every BACKUP_HEARTBEAT_SECONDS until stopped."""

    def __init__(self, *, component: str, queues: str = "") -> None:
        super().__init__(name=f"opsdesk-heartbeat-{component}", daemon=True)
        self.component, self.queues = component, queues
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                heartbeat_write(component=self.component, queues=self.queues)
            except DatabaseError as error:
                # The database is down: the heartbeat goes stale, which is the truth.
                logger.warning("could not write the %s heartbeat: %s", self.component, error)
            finally:
                connection.close()  # this thread's own connection; never kept between beats
            self.stopped.wait(app_settings.BACKUP_HEARTBEAT_SECONDS)

    def stop(self) -> None:
        self.stopped.set()


_worker_heartbeat: HeartbeatThread | None = None


def worker_ready_receiver(sender=None, **kwargs) -> None:
    """celery `worker_ready`: start the worker's heartbeat, naming the queues it consumes."""
    global _worker_heartbeat
    queues = " ".join(sorted(_consumed_queues(sender)))
    _worker_heartbeat = HeartbeatThread(component=Component.WORKER, queues=queues)
    _worker_heartbeat.start()


def _consumed_queues(consumer) -> set[str]:
    try:
        return {queue.name for queue in consumer.task_consumer.queues}
    except AttributeError:
        return set(consumer.app.amqp.queues.consume_from or {queue_name(): None})


def worker_shutdown_receiver(sender=None, **kwargs) -> None:
    """celery `worker_shutdown`: stop the heartbeat and remove this worker's row."""
    if _worker_heartbeat is not None:
        _worker_heartbeat.stop()
    try:
        close_old_connections()
        heartbeat_remove(component=Component.WORKER)
    except DatabaseError as error:
        logger.warning("could not remove the worker heartbeat: %s", error)


# --- Reading them ---------------------------------------------------------------------------------
def _fresh_heartbeats(component: str):
    return ProcessHeartbeat.objects.filter(component=component, seen_at__gte=timezone.now() - stale_after())


def worker_alive() -> bool:
    """A worker consuming this installation's queue gave a sign of life recently.

    Without a broker every job runs in a process of its own started at once (BACKUP_BACKGROUND_JOBS),
    so there is no worker that could be missing.
    """
    if not broker_configured():
        return True
    try:
        return any(queue_name() in row.split() for row in _fresh_heartbeats(Component.WORKER).values_list("queues", flat=True))
    except DatabaseError:
        return False


def scheduler_alive() -> bool:
    """The scheduler (celery beat, or its broker-less form started by `make run`) ticked recently."""
    try:
        return _fresh_heartbeats(Component.SCHEDULER).exists()
    except DatabaseError:
        return False


def last_seen(component: str) -> datetime | None:
    try:
        return (ProcessHeartbeat.objects.filter(component=component)
                .order_by("-seen_at").values_list("seen_at", flat=True).first())
    except DatabaseError:
        return None


def queue_depth() -> int:
    """Backups and restores queued and not yet taken by a worker (or a background process)."""
    try:
        return (BackupRecord.objects.filter(status=BackupRecord.Status.QUEUED).count()
                + RestoreRecord.objects.filter(status=RestoreRecord.Status.QUEUED).count())
    except DatabaseError:
        return 0


def wait_threshold() -> timedelta:
    return timedelta(seconds=app_settings.BACKUP_QUEUE_WAIT_SECONDS)


def is_waiting(record: BackupRecord | RestoreRecord) -> bool:
    """Queued for longer than BACKUP_QUEUE_WAIT_SECONDS: nobody is taking it."""
    return (
        record.status == record.Status.QUEUED
        and record.created_at is not None
        and timezone.now() - record.created_at > wait_threshold()
    )


def waiting_jobs() -> int:
    """How many backups and restores have waited in the queue longer than the threshold."""
    since = timezone.now() - wait_threshold()
    try:
        return (
            BackupRecord.objects.filter(status=BackupRecord.Status.QUEUED, created_at__lt=since).count()
            + RestoreRecord.objects.filter(status=RestoreRecord.Status.QUEUED, created_at__lt=since).count()
        )
    except DatabaseError:
        return 0


@dataclass(frozen=True)
class Liveness:
    """What the admin index and the Periodic tasks page show."""

    broker: bool
    queue: str
    worker_alive: bool
    worker_seen_at: datetime | None
    scheduler_alive: bool
    scheduler_seen_at: datetime | None
    queue_depth: int
    waiting: int


def liveness_summary() -> Liveness:
    return Liveness(
        broker=broker_configured(), queue=queue_name(),
        worker_alive=worker_alive(), worker_seen_at=last_seen(Component.WORKER),
        scheduler_alive=scheduler_alive(), scheduler_seen_at=last_seen(Component.SCHEDULER),
        queue_depth=queue_depth(), waiting=waiting_jobs(),
    )


# --- One broker connection per process ------------------------------------------------------------
_broker_lock = threading.Lock()
_broker_connection = None
_broker_url = ""


def _broker_connection_new(timeout_seconds: float):
    from kombu import Connection

    return Connection(
        app_settings.CELERY_BROKER_URL,
        connect_timeout=timeout_seconds,
        transport_options={
            **app_settings.CELERY_BROKER_TRANSPORT_OPTIONS,  # master_name for a Sentinel broker
            # Redis (socket_*) and AMQP (read/write) names: every wait on the broker is bounded.
            "socket_timeout": timeout_seconds,
            "socket_connect_timeout": timeout_seconds,
            "read_timeout": timeout_seconds,
            "write_timeout": timeout_seconds,
            "max_retries": 0,
        },
    )


def broker_connection_reset() -> None:
    """Forget the shared connection (closed quietly); the next use opens a new one."""
    global _broker_connection
    stale, _broker_connection = _broker_connection, None
    if stale is not None:
        try:
            stale.release()
        except Exception:  # noqa: BLE001 - it is broken already
            logger.debug("closing the broken broker connection failed", exc_info=True)


@contextmanager
def broker_connection(*, timeout_seconds: float) -> Iterator:
    """The process' one broker connection, connected, for one caller at a time.

    /health used to open a connection per call; this one is kept and reused, and dropped (to be
    reopened by the next caller) when anything fails on it. Waiting for another caller is bounded
    by `timeout_seconds` too, so a hung broker never stacks up callers.
    """
    global _broker_connection, _broker_url
    if not _broker_lock.acquire(timeout=timeout_seconds):
        raise TimeoutError("the broker connection is busy (a previous check still waits on the broker)")
    try:
        if _broker_connection is not None and _broker_url != app_settings.CELERY_BROKER_URL:
            broker_connection_reset()  # the setting changed (tests, a reload): not the same broker
        if _broker_connection is None:
            _broker_connection = _broker_connection_new(timeout_seconds)
            _broker_url = app_settings.CELERY_BROKER_URL
        try:
            _broker_connection.ensure_connection(max_retries=1, timeout=timeout_seconds)
            yield _broker_connection
        except Exception:
            broker_connection_reset()
            raise
    finally:
        _broker_lock.release()


def broker_queue_size(*, timeout_seconds: float) -> int:
    """Messages waiting in this installation's queue at the broker; raises when it does not answer."""
    from kombu.exceptions import ChannelError

    with broker_connection(timeout_seconds=timeout_seconds) as broker:
        try:
            return broker.default_channel.queue_declare(queue=queue_name(), passive=True).message_count
        except ChannelError:
            # The queue does not exist yet (no worker ever declared it, or Redis dropped the empty
            # list): nothing waits. AMQP closes the channel on that answer, so there the next
            # caller starts from a new connection.
            if broker.transport.driver_type == "amqp":
                broker_connection_reset()
            return 0
