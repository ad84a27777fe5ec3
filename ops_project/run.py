"""`make run`: the web server, and the processes that make schedules and queued jobs run, as one.

    python -m ops_project.run [--port 8000] [--bind 127.0.0.1]

With a broker (REDIS_URL or CELERY_BROKER_URL): the web server, a Celery worker and the scheduler
(celery beat with backups_app.beat.OpsdeskScheduler). Every MySQL/MariaDB database whose server
writes a row binlog also gets its binlog archiver (`archive_binlogs`, point-in-time recovery); one
without binary logging is named with the settings to add. Without one (the embedded default): the web
server and the scheduler, which starts each due task as a background process, as the web server
does for "Back up now". One process tree: Ctrl-C (or SIGTERM) stops all of them, and if one of them
exits the others are stopped too, so nothing keeps running half-configured.

honcho (a Python Procfile runner, like foreman) does the supervising: prefixed output per process,
signal forwarding and stopping the group are what it is for, and writing that by hand is where
supervisors usually go wrong (orphans, a lost SIGINT). Background jobs already started run on to
the end in their own session: a restore must not be cut half-way by Ctrl-C.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def processes(*, broker: bool, bind: str, port: int, binlog_databases: list[str] | None = None) -> dict[str, str]:
    """name -> command line, for honcho (which runs each through the shell, as a Procfile does)."""
    python = sys.executable
    commands = {
        "web": f"{python} manage.py runserver {bind}:{port}",
        "scheduler": f"{python} -m celery -A ops_project beat --loglevel INFO",
    }
    if broker:
        commands["worker"] = f"{python} -m celery -A ops_project worker --loglevel INFO"
    if binlog_databases:
        # Point-in-time recovery: one archiver process for every database with binary logging on.
        aliases = " ".join(f"--database {shlex.quote(alias)}" for alias in binlog_databases)
        commands["binlogs"] = f"{python} manage.py archive_binlogs {aliases}"
    return commands


def archivable_databases() -> list[str]:
    """MySQL/MariaDB aliases whose server writes a row binlog; the others are told how, once."""
    from backups_app.services.binlogs import binlog_availability, binlog_databases

    usable = []
    for alias in binlog_databases():
        problem = binlog_availability(database=alias)
        if problem:
            print(f"{alias}: {problem}", file=sys.stderr)
        else:
            usable.append(alias)
    return usable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--bind", default="127.0.0.1")
    options = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ops_project.settings")
    import django
    from django.conf import settings

    django.setup()
    from honcho.manager import Manager

    manager = Manager()
    commands = processes(broker=bool(settings.CELERY_BROKER_URL), bind=options.bind, port=options.port,
                         binlog_databases=archivable_databases())
    for name, command in commands.items():
        # Unbuffered, so that each process' lines reach the terminal as they are written.
        manager.add_process(name, command, cwd=str(PROJECT_ROOT), env={**os.environ, "PYTHONUNBUFFERED": "1"})
    manager.loop()
    return manager.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
