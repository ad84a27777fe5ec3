"""The beat schedule running through a real Celery worker on the machine's Redis.

Everything runs as the user runs it: `manage.py migrate` installs the default schedule, a test
shortens two of its tasks to a few seconds, and `celery -A ops_project worker -B` (beat embedded,
DatabaseScheduler) runs them in a separate process with its own settings. The ops database is a
SQLite file that the test reads directly; the database backed up is a scratch PostgreSQL database. The broker is the machine's Redis with a queue of this
test's own, so that other test runs sharing the server never see these tasks.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import POSTGRES, REDIS_HOST, REDIS_PORT, require_service

PROJECT_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.services, pytest.mark.slow]


def project_env(tmp_path: Path, queue: str, appdata_url: str) -> dict[str, str]:
    environment = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("DATABASE_URL", "CELERY_", "AWS_", "REDIS_URL", "DJANGO_SETTINGS_MODULE"))
    }
    environment.update(
        DJANGO_SETTINGS_MODULE="ops_project.settings",
        OPSDESK_ENV="development",
        SECRET_KEY="celery-schedule-test-key-not-a-secret-0123456789",
        DATABASE_URL=f"sqlite:///{tmp_path / 'ops.sqlite3'}",
        DATABASE_URL_APPDATA=appdata_url,
        BACKUP_DIR=str(tmp_path / "backups"),
        BACKUP_LOCK_DIR=str(tmp_path / "locks"),
        CELERY_BROKER_URL=f"redis://{REDIS_HOST}:{REDIS_PORT}/0",
        CELERY_TASK_DEFAULT_QUEUE=queue,
        REDIS_URL="",
        BACKUP_RETENTION_DAYS="30",
    )
    return environment


def manage(environment: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=PROJECT_ROOT, env=environment,
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


SHORTEN_SCHEDULE = """
from django_celery_beat.models import IntervalSchedule, PeriodicTask
every = IntervalSchedule.objects.create(every=2, period=IntervalSchedule.SECONDS)
PeriodicTask.objects.filter(name__startswith="opsdesk:").update(enabled=False)
for name in {names!r}:
    PeriodicTask.objects.filter(name=name).update(crontab=None, interval=every, enabled=True)
"""


def query(database: Path, sql: str, *parameters) -> list[tuple]:
    connection = sqlite3.connect(database, timeout=10)
    try:
        return connection.execute(sql, parameters).fetchall()
    finally:
        connection.close()


def wait_for(predicate, *, timeout: float, worker: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if worker.poll() is not None:
            pytest.fail("the worker exited:\n" + log.read_text()[-4000:])
        time.sleep(0.5)
    pytest.fail("timed out; worker log:\n" + log.read_text()[-4000:])


@pytest.fixture
def redis_queue():
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    queue = f"opsdesk-test-{uuid.uuid4().hex[:12]}"
    yield queue
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0)
    # Only this test's keys: its queue and the exchange binding named after it.
    client.delete(queue, f"_kombu.binding.{queue}")
    client.close()


def start_worker(environment: dict[str, str], queue: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "ops_project", "worker", "-B",
            "--pool", "solo", "--loglevel", "INFO", "--hostname", f"{queue}@%h",
            "--without-mingle", "--without-gossip", "--without-heartbeat",
            "--schedule", str(log.parent / "beat-schedule"),
        ],
        cwd=PROJECT_ROOT, env=environment, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_worker(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)


def test_beat_runs_real_backups_cleanup_and_verification_through_a_worker(tmp_path, redis_queue, postgres_database):
    """The product database is a scratch PostgreSQL database, so verification restores it for real."""
    import psycopg
    from django.db import connections

    database_name = connections.settings[postgres_database]["NAME"]
    with psycopg.connect(
        host=POSTGRES["HOST"], port=POSTGRES["PORT"], user=POSTGRES["USER"], dbname=database_name, autocommit=True,
    ) as connection:
        connection.execute("CREATE TABLE item (id serial PRIMARY KEY, name text)")
        connection.execute("INSERT INTO item (name) VALUES ('one'), ('two'), ('three')")
    environment = project_env(
        tmp_path, redis_queue, f"postgres://{POSTGRES['USER']}@{POSTGRES['HOST']}:{POSTGRES['PORT']}/{database_name}"
    )
    manage(environment, "migrate", "--noinput", "-v", "0")
    ops_database = tmp_path / "ops.sqlite3"
    names = {row[0] for row in query(ops_database, "SELECT name FROM django_celery_beat_periodictask")}
    assert {"opsdesk: backup appdata", "opsdesk: cleanup appdata", "opsdesk: verify appdata"} <= names
    manage(environment, "shell", "-c", SHORTEN_SCHEDULE.format(
        names=["opsdesk: backup appdata", "opsdesk: verify appdata"]
    ))

    log = tmp_path / "worker.log"
    worker = start_worker(environment, redis_queue, log)
    try:
        backups = wait_for(
            lambda: query(
                ops_database,
                "SELECT name, trigger, status FROM backups_app_backuprecord "
                "WHERE database = 'appdata' AND status = 'success'",
            ),
            timeout=120, worker=worker, log=log,
        )
        # Cleanup follows each scheduled backup; verification runs on its own schedule.
        cleanups = wait_for(
            lambda: query(
                ops_database,
                "SELECT source, outcome FROM backups_app_auditentry "
                "WHERE action = 'cleanup' AND target = 'appdata'",
            ),
            timeout=60, worker=worker, log=log,
        )
        verified = wait_for(
            lambda: query(
                ops_database,
                "SELECT name, verification_status FROM backups_app_backuprecord "
                "WHERE database = 'appdata' AND verified_at IS NOT NULL",
            ),
            timeout=60, worker=worker, log=log,
        )
    finally:
        stop_worker(worker)
    name, trigger, status = backups[0]
    assert (trigger, status) == ("schedule", "success")
    assert (tmp_path / "backups" / name).is_file()
    assert cleanups[0] == ("schedule", "success")
    assert verified[0][1] == "verified"
    text = log.read_text()
    assert "backups_app.tasks.backup_database" in text and "backups_app.tasks.cleanup_backups" in text
