"""Nothing silently idle, with the real processes: background jobs without a broker, the broker-less
scheduler, worker and beat heartbeats on Redis, and `make run`'s process tree.

Each test runs opsdesk as the user runs it, in child processes with their own settings (a SQLite
ops database in a temporary folder); the test reads that database directly.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.backups.test_celery_schedule import (
    PROJECT_ROOT,
    manage,
    query,
    redis_queue,  # noqa: F401 - fixture
    stop_worker,
)
from tests.conftest import REDIS_HOST, REDIS_PORT

pytestmark = [pytest.mark.slow]


def embedded_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The embedded default: SQLite, no Redis, no broker; an `appdata` SQLite database to back up."""
    appdata = tmp_path / "appdata.sqlite3"
    if not appdata.exists():
        import sqlite3

        connection = sqlite3.connect(appdata)
        connection.executescript("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO item (name) VALUES ('one');")
        connection.commit()
        connection.close()
    environment = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("DATABASE_URL", "CELERY_", "AWS_", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "BACKUP_"))
    }
    environment.update(
        DJANGO_SETTINGS_MODULE="ops_project.settings",
        OPSDESK_ENV="development",
        SECRET_KEY="nothing-idle-test-key-not-a-secret-0123456789",
        DATABASE_URL=f"sqlite:///{tmp_path / 'ops.sqlite3'}",
        DATABASE_URL_APPDATA=f"sqlite:///{appdata}",
        BACKUP_DIR=str(tmp_path / "backups"),
        BACKUP_LOCK_DIR=str(tmp_path / "locks"),
        REDIS_URL="",
        CELERY_BROKER_URL="",
        BACKUP_HEARTBEAT_SECONDS="1",
        PYTHONUNBUFFERED="1",
    )
    environment.update(extra)
    return environment


def wait_until(predicate, *, timeout: float, what: str, log: Path | None = None, process=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}" + (":\n" + log.read_text()[-4000:] if log and log.exists() else ""))


def start(command: list[str], environment: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=PROJECT_ROOT, env=environment, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is gone for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


QUEUE_BACKUP = """
import json, os
from backups_app.models import Trigger
from backups_app.services.backup import backup_queue
record = backup_queue(database="appdata", trigger=Trigger.CLI)
record.refresh_from_db()
print(json.dumps({"id": record.pk, "status": record.status, "pid": os.getpid()}))
"""


def test_without_a_broker_a_queued_backup_runs_in_a_background_process(tmp_path):
    environment = embedded_env(tmp_path)
    manage(environment, "migrate", "--noinput", "-v", "0")

    queued = json.loads(manage(environment, "shell", "-c", QUEUE_BACKUP).strip().splitlines()[-1])

    # backup_queue returned before the backup ran: the job is another process's work.
    assert queued["status"] in ("queued", "running")
    ops = tmp_path / "ops.sqlite3"
    sql = "SELECT status, owner_pid, size_bytes FROM backups_app_backuprecord WHERE id = ?"
    row = wait_until(lambda: [r for r in query(ops, sql, queued["id"]) if r[0] not in ("queued", "running")],
                     timeout=60, what="the background backup")[0]
    assert row[0] == "success" and row[1] != queued["pid"] and row[2] > 0


def test_without_a_broker_the_scheduler_fires_schedules_as_background_processes(tmp_path):
    environment = embedded_env(tmp_path)
    manage(environment, "migrate", "--noinput", "-v", "0")
    manage(environment, "shell", "-c", """
from django_celery_beat.models import IntervalSchedule, PeriodicTask
every = IntervalSchedule.objects.create(every=2, period=IntervalSchedule.SECONDS)
PeriodicTask.objects.filter(name__startswith="opsdesk:").update(enabled=False)
PeriodicTask.objects.filter(name="opsdesk: backup appdata").update(crontab=None, interval=every, enabled=True)
""")
    log = tmp_path / "scheduler.log"
    scheduler = start([sys.executable, "-m", "celery", "-A", "ops_project", "beat", "--loglevel", "INFO"],
                      environment, log)
    ops = tmp_path / "ops.sqlite3"
    try:
        wait_until(lambda: query(ops, "SELECT pid FROM backups_app_processheartbeat WHERE component = 'scheduler'"),
                   timeout=60, what="the scheduler heartbeat", log=log, process=scheduler)
        rows = wait_until(
            lambda: query(ops, "SELECT trigger, status, owner_pid FROM backups_app_backuprecord "
                               "WHERE database = 'appdata' AND status = 'success'"),
            timeout=90, what="a scheduled backup", log=log, process=scheduler,
        )
        alive = manage(environment, "shell", "-c",
                       "from backups_app.liveness import scheduler_alive; print(scheduler_alive())")
    finally:
        stop_worker(scheduler)
    assert rows[0][0] == "schedule" and rows[0][2] != scheduler.pid
    assert alive.strip().splitlines()[-1] == "True"
    # A clean stop removes the heartbeat at once: not alive, with no wait for it to go stale.
    assert not query(ops, "SELECT pid FROM backups_app_processheartbeat WHERE component = 'scheduler'")


HEALTH_OF_WORKER = """
import json
from cache_app.services import health_check_run
report = health_check_run(timeout_seconds=5)
worker = next(result for result in report.results if result.component == "worker")
print(json.dumps({"ok": report.ok, "worker": worker.ok, "required": worker.required}))
"""

CANCEL = """
from backups_app.models import BackupRecord
from backups_app.services.queued import backup_cancel
backup_cancel(backup=BackupRecord.objects.get(pk={pk}), source="cli")
"""


@pytest.mark.services
def test_worker_heartbeat_health_and_cancel_with_a_real_worker(tmp_path, redis_queue):
    environment = embedded_env(
        tmp_path, CELERY_BROKER_URL=f"redis://{REDIS_HOST}:{REDIS_PORT}/0", CELERY_TASK_DEFAULT_QUEUE=redis_queue,
    )
    manage(environment, "migrate", "--noinput", "-v", "0")
    waiting = json.loads(manage(environment, "shell", "-c", QUEUE_BACKUP).strip().splitlines()[-1])
    cancelled = json.loads(manage(environment, "shell", "-c", QUEUE_BACKUP).strip().splitlines()[-1])
    manage(environment, "shell", "-c", CANCEL.format(pk=cancelled["id"]))

    # No worker, a job waits: /health's "worker" is false and required (503).
    health = json.loads(manage(environment, "shell", "-c", HEALTH_OF_WORKER).strip().splitlines()[-1])
    assert health == {"ok": False, "worker": False, "required": True}

    log = tmp_path / "worker.log"
    worker = start([sys.executable, "-m", "celery", "-A", "ops_project", "worker", "--pool", "solo",
                    "--loglevel", "INFO", "--hostname", f"{redis_queue}@%h", "--without-mingle",
                    "--without-gossip"], environment, log)
    ops = tmp_path / "ops.sqlite3"
    try:
        beats = wait_until(lambda: query(ops, "SELECT queues FROM backups_app_processheartbeat WHERE component = 'worker'"),
                           timeout=60, what="the worker heartbeat", log=log, process=worker)
        assert redis_queue in beats[0][0].split()
        statuses = dict(wait_until(
            lambda: [row for row in query(ops, "SELECT id, status FROM backups_app_backuprecord") if row[1] not in ("queued", "running")]
            and query(ops, "SELECT id, status FROM backups_app_backuprecord"),
            timeout=90, what="the queued backup", log=log, process=worker,
        ))
        wait_until(lambda: query(ops, "SELECT 1 FROM backups_app_backuprecord WHERE id = ? AND status = 'success'",
                                 waiting["id"]), timeout=90, what="the queued backup to succeed", log=log, process=worker)
        health = json.loads(manage(environment, "shell", "-c", HEALTH_OF_WORKER).strip().splitlines()[-1])
    finally:
        stop_worker(worker)
    assert statuses[cancelled["id"]] == "cancelled"  # the worker got its message and did nothing
    assert query(ops, "SELECT status, started_at FROM backups_app_backuprecord WHERE id = ?", cancelled["id"]) == [("cancelled", None)]
    assert health == {"ok": True, "worker": True, "required": False}
    # Stopped cleanly: its heartbeat is gone, so the console says so at once.
    assert not query(ops, "SELECT 1 FROM backups_app_processheartbeat WHERE component = 'worker'")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("broker", [False, True], ids=["embedded", "redis-broker"])
def test_make_run_starts_web_and_scheduler_and_ctrl_c_stops_the_whole_tree(tmp_path, broker, request):
    extra = {}
    if broker:
        queue = request.getfixturevalue("redis_queue")
        extra = {"CELERY_BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/0", "CELERY_TASK_DEFAULT_QUEUE": queue}
    environment = embedded_env(tmp_path, **extra)
    manage(environment, "migrate", "--noinput", "-v", "0")
    port = free_port()
    log = tmp_path / "run.log"
    runner = start([sys.executable, "-m", "ops_project.run", "--port", str(port)], environment, log)
    ops = tmp_path / "ops.sqlite3"

    def health():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            return json.loads(error.read())
        except OSError:
            return None

    try:
        components = {"scheduler", "worker"} if broker else {"scheduler"}
        wait_until(lambda: {row[0] for row in query(ops, "SELECT component FROM backups_app_processheartbeat")} >= components,
                   timeout=90, what="the scheduler and worker heartbeats", log=log, process=runner)
        body = wait_until(health, timeout=60, what="the web server", log=log, process=runner)
        assert body["scheduler"] is True and body["worker"] is True and body["broker"] is broker
        assert "details" not in body  # anonymous
        children = [int(line.split("pid=")[1].rstrip(")\n")) for line in log.read_text().splitlines() if "started (pid=" in line]
        assert len(children) == (3 if broker else 2)  # web, scheduler, and a worker only with a broker
    finally:
        os.kill(runner.pid, signal.SIGINT)  # what Ctrl-C sends
        runner.wait(timeout=30)
    for pid in children:
        wait_until(lambda pid=pid: not pid_alive(pid), timeout=30, what=f"process {pid} to stop", log=log)
    assert "web stopped" in log.read_text() and "scheduler stopped" in log.read_text()
    # Stopped cleanly, the worker and the scheduler said so: nothing shows as alive any more.
    assert not query(ops, "SELECT component FROM backups_app_processheartbeat")
