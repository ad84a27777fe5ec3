"""Two workers on two "hosts" contend for one database's lock: count how often both held it at once.

Each worker is its own process reporting its own host name, with its own BACKUP_LOCK_DIR and no
Redis: the only thing the workers share is the database server, so only the server-side lock
(GET_LOCK on MariaDB/MySQL, pg_try_advisory_lock on PostgreSQL) can keep them apart. Inside the lock
a worker creates a marker file with O_EXCL in a folder both see; finding it already there means
both held the lock at the same time (an overlap). Prints one JSON line per worker and a summary;
exits 1 when any overlap was seen.

    .venv/bin/python benchmarks/lock_overlap.py mysql://root@127.0.0.1:3306/chat --attempts 2000
    .venv/bin/python benchmarks/lock_overlap.py postgres://postgres@127.0.0.1:5432/chat
    .venv/bin/python benchmarks/lock_overlap.py sqlite:////tmp/x.sqlite3   # control: file locks on two
                                                   # hosts do NOT exclude each other; overlaps expected
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def worker(settings_json: str, host: str, attempts: int, shared: Path) -> dict:
    """One "host": try the lock `attempts` times; inside it, check nobody else is inside."""
    import socket

    socket.gethostname = lambda: host  # what this worker reports as its machine
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.db import connections

    from backups_app import locks
    from backups_app.exceptions import BackupLocked

    connections.settings["target"] = connections.configure_settings(
        {"default": {"ENGINE": "django.db.backends.dummy"}, "target": json.loads(settings_json)})["target"]
    marker = shared / "inside"
    counts = {"host": host, "acquired": 0, "refused": 0, "overlaps": 0}
    started = time.perf_counter()
    for _attempt in range(attempts):
        try:
            with locks.database_lock("target", "backup"):
                try:
                    descriptor = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                except FileExistsError:
                    counts["overlaps"] += 1
                    continue
                os.close(descriptor)
                counts["acquired"] += 1
                time.sleep(random.uniform(0, 0.002))
                marker.unlink()
        except BackupLocked:
            counts["refused"] += 1
    counts["seconds"] = round(time.perf_counter() - started, 3)
    return counts


def database_settings(url: str) -> dict:
    import environ

    return environ.Env.db_url_config(url)


def run(url: str, attempts: int) -> list[dict]:
    """Start the two workers at once and collect their counts."""
    settings_json = json.dumps(database_settings(url) if "://" in url else json.loads(url))
    with tempfile.TemporaryDirectory() as folder:
        shared = Path(folder)
        processes = []
        for host in ("host-a.example", "host-b.example"):
            lock_dir = shared / f"locks-{host}"  # nothing shared on the file system but the marker
            environment = {**os.environ, "BACKUP_LOCK_DIR": str(lock_dir), "REDIS_URL": "",
                           "PYTHONPATH": str(PROJECT_ROOT)}
            processes.append(subprocess.Popen(
                [sys.executable, __file__, "--worker", settings_json, host, str(attempts), str(shared)],
                cwd=PROJECT_ROOT, env=environment, stdout=subprocess.PIPE, text=True,
            ))
        results = []
        for process in processes:
            output, _errors = process.communicate()
            if process.returncode:
                raise SystemExit(f"worker failed with status {process.returncode}")
            results.append(json.loads(output.strip().splitlines()[-1]))
    return results


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        settings_json, host, attempts, shared = sys.argv[2:6]
        print(json.dumps(worker(settings_json, host, int(attempts), Path(shared))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("database", help="database URL (mysql://, postgres://) or a JSON DATABASES entry")
    parser.add_argument("--attempts", type=int, default=2000, help="lock attempts per worker")
    arguments = parser.parse_args()
    results = run(arguments.database, arguments.attempts)
    for result in results:
        print(json.dumps(result))
    overlaps = sum(result["overlaps"] for result in results)
    acquired = sum(result["acquired"] for result in results)
    print(f"{acquired} acquisitions, {sum(r['refused'] for r in results)} refusals, {overlaps} overlaps")
    sys.exit(1 if overlaps else 0)


if __name__ == "__main__":
    main()
