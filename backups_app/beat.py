"""The beat scheduler (CELERY_BEAT_SCHEDULER): django-celery-beat's DatabaseScheduler, plus two things.

1. A heartbeat from the tick loop itself (at most every BACKUP_HEARTBEAT_SECONDS), so that the
   admin and /health know the scheduler runs; a beat that hangs stops ticking and goes stale.
2. Without a broker (the embedded default) a due task is not sent to a queue nobody reads: it is
   started as a background process (`manage.py run_task`, backups_app.jobs), so schedules fire
   with no Celery worker and no Redis. `make run` starts this scheduler in both cases.

The schedule stays django-celery-beat's: its models, admin, last-run bookkeeping and change
detection, so staff edit one thing whichever way the tasks end up running.
"""
from __future__ import annotations

import logging
import time

from django.db import DatabaseError, close_old_connections
from celery.beat import Scheduler
from django_celery_beat.schedulers import DatabaseScheduler

from backups_app import jobs, liveness
from backups_app.conf import app_settings

logger = logging.getLogger(__name__)


class OpsdeskScheduler(DatabaseScheduler):
    """DatabaseScheduler that writes a heartbeat and, without a broker, runs tasks as processes."""

    _last_heartbeat = 0.0

    def tick(self, *args, **kwargs):
        delay = super().tick(*args, **kwargs)
        self._heartbeat()
        return delay

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat < app_settings.BACKUP_HEARTBEAT_SECONDS:
            return
        self._last_heartbeat = now
        try:
            close_old_connections()
            liveness.heartbeat_write(component=liveness.Component.SCHEDULER)
        except DatabaseError as error:
            logger.warning("could not write the scheduler heartbeat: %s", error)

    def close(self):
        try:
            liveness.heartbeat_remove(component=liveness.Component.SCHEDULER)
        except DatabaseError as error:
            logger.warning("could not remove the scheduler heartbeat: %s", error)
        super().close()

    @property
    def producer(self):
        # Without a broker nothing may connect to Celery's default (amqp://localhost): the tasks
        # are started as processes instead, see apply_async.
        if not liveness.broker_configured():
            return None
        return Scheduler.producer.__get__(self, type(self))  # celery's own, cached and closed by close()

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        if liveness.broker_configured():
            return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        entry = self.reserve(entry) if advance else entry
        if entry.task.startswith("celery."):
            return None  # Celery's own housekeeping (result backend cleanup): nothing to clean here
        try:
            jobs.job_spawn(task_name=entry.task, args=list(entry.args or ()), kwargs=dict(entry.kwargs or {}))
        finally:
            self._tasks_since_sync += 1
            if self.should_sync():
                self._do_sync()
        return None
