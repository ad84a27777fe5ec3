"""Where a queued backup or restore runs: a Celery worker, or a background process of its own.

With a broker, `job_enqueue` sends the task to the queue as before. Without one (the embedded
default) it starts `manage.py run_task <task> --args ...` as a detached process: the HTTP request
that queued the job returns at once whatever the database size, the job's progress is written to its
record exactly as a worker writes it, and the job outlives the web process (a restart of the web
server does not kill a restore half-way). The scheduler (backups_app.beat) starts its due tasks the
same way. A thread inside the web process was not used: it would die with a worker recycled by
gunicorn, hold the request's process for hours and share its memory limits.

BACKUP_BACKGROUND_JOBS=false runs the task inline instead (the test suite does, and so may a
developer debugging a task).

Jobs are named, never imported: the tasks module calls the services, so a service importing a task
back would close an import circle. The services queue through this module by task name, the tasks
module imports the services, and nothing here imports either.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from django.conf import settings

from backups_app.conf import app_settings

logger = logging.getLogger(__name__)


def _project_root() -> Path:
    # BASE_DIR is Django's convention (opsdesk's settings set it); a host project may not.
    return Path(getattr(settings, "BASE_DIR", None) or Path.cwd())


def job_command(*, task_name: str, args: list | None = None, kwargs: dict | None = None) -> list[str]:
    """The argv of the process that runs one task (ids and plain values only, never secrets)."""
    command = [sys.executable, str(_project_root() / "manage.py"), "run_task", task_name]
    if args:
        command += ["--args", json.dumps(args)]
    if kwargs:
        command += ["--kwargs", json.dumps(kwargs)]
    return command


def job_spawn(*, task_name: str, args: list | None = None, kwargs: dict | None = None) -> int:
    """Start `task_name` in a detached process of its own; return its process id.

    The child gets a session of its own (Ctrl-C in the terminal of `make run` or a web server
    restart does not stop a backup half-way) and this process' environment, so it reads the same
    settings. Its output goes where this process' goes (the `make run` terminal, the service log).
    """
    process = subprocess.Popen(
        job_command(task_name=task_name, args=args, kwargs=kwargs),
        cwd=_project_root(), stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True,
    )
    logger.info("started %s in background process %s", task_name, process.pid)
    return process.pid


def job_task(task_name: str):
    """The Celery task registered as `task_name` (e.g. "backups_app.tasks.backup_run").

    The task modules of the installed apps are imported on first use, as a worker imports them
    when it starts (Celery's autodiscovery).
    """
    from celery import current_app

    if task_name not in current_app.tasks:
        current_app.autodiscover_tasks(force=True)
    return current_app.tasks[task_name]


def job_enqueue(task_name: str, *args) -> None:
    """Run the Celery task `task_name` with `args` the way this installation runs jobs (see above)."""
    if app_settings.CELERY_BROKER_URL or not app_settings.BACKUP_BACKGROUND_JOBS:
        job_task(task_name).delay(*args)  # to the broker, or inline (CELERY_TASK_ALWAYS_EAGER) when there is none
        return
    try:
        job_spawn(task_name=task_name, args=list(args))
    except OSError as error:
        # The record stays queued: shown as waiting, and staff can cancel it.
        logger.error("could not start a background process for %s%r: %s", task_name, args, error)


def job_delay(task_name: str, *args, **kwargs) -> None:
    """`delay()` the Celery task `task_name`: to the broker, or inline when there is none
    (CELERY_TASK_ALWAYS_EAGER), never a background process. For follow-up work (an offsite upload,
    a cleanup) that a later pass retries when it is lost."""
    job_task(task_name).delay(*args, **kwargs)


__all__ = ["job_command", "job_delay", "job_enqueue", "job_spawn", "job_task"]
