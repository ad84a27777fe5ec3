"""Point-in-time recovery: recovery point (what a dead server loses) and recovery time.

    .venv/bin/python benchmarks/pitr_benchmark.py [--seconds 30] [--transactions 36000]

Runs against its own mariadbd (tests/backups/binlog_server.py: temporary data directory, free port,
log_bin on), never the shared server, and an in-memory ops database.

1. Recovery point: a writer commits one chat message per transaction as fast as it can while the
   archiver polls once a second (as `archive_binlogs` does); after `--seconds` the server is killed
   with SIGKILL. Lost = commit time of the last acknowledged message minus that of the newest
   message whose transaction is complete in the archive: locally (closed segments + the live file)
   and offsite (closed segments only, with `--segment-seconds`).
2. Recovery time: a base backup, then `--transactions` single-message transactions (an hour of a
   chat platform at 10 messages/s by default), archived; then `pitr_restore` to the last one,
   timed as base restore plus replay, and compared with the base restore alone.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")


def setup_django(work: Path) -> None:
    import django
    from django.conf import settings

    django.setup()
    settings.BACKUP_DIR = work / "backups"
    settings.BACKUP_LOCK_DIR = work / "locks"
    settings.STORAGES["backups"]["OPTIONS"]["location"] = work / "backups"
    from django.db import connection
    from django.test.utils import setup_test_environment

    setup_test_environment()
    connection.creation.create_test_db(verbosity=0)


def create_chat(server) -> None:
    server.execute("CREATE DATABASE chat CHARACTER SET utf8mb4",
                   "CREATE TABLE chat.message (id INT PRIMARY KEY AUTO_INCREMENT, conversation INT, "
                   "body VARCHAR(400), written_at DATETIME(6)) ENGINE=InnoDB")


def archived_commits(database: str, *, closed_only: bool) -> list[datetime]:
    """Event times of the complete transactions in the archive (closed segments, plus the live file)."""
    from backups_app.binlog_events import XID_EVENT, events
    from backups_app.services.binlogs import archive_runs, segment_read
    from backups_app.services.pitr import _live_bytes

    times = []
    runs, _gaps = archive_runs(database=database)
    files: dict[str, bytes] = {}
    for run in runs:
        for segment in run.segments:
            if getattr(segment, "is_live", False):
                if closed_only:
                    continue
                content = _live_bytes(database, segment)
            else:
                content = segment_read(segment=segment)
            files[segment.binlog_file] = files.get(segment.binlog_file, b"") + content
    for data in files.values():
        times += [event.when for event in events(data) if event.type_code == XID_EVENT]
    return times


def wait_until_streamed(run, file_name: str, position: int) -> None:
    from backups_app.binlog_events import complete_length

    while True:
        path = run.directory / file_name
        if path.exists() and complete_length(path.read_bytes()) >= position:
            return
        time.sleep(0.1)


def recovery_point(seconds: float, segment_seconds: float) -> dict:
    from backups_app.services.binlogs import BinlogArchiverRun
    from tests.backups.binlog_server import BinlogServer
    from tests.conftest import register_alias, unregister_alias

    with BinlogServer() as server:
        create_chat(server)
        register_alias("chat", server.settings_dict("chat"))
        run = BinlogArchiverRun(database="chat", segment_seconds_value=segment_seconds)
        run.start()
        commits: list[float] = []
        stop = threading.Event()

        def writer() -> None:
            connection = server.connect("chat")
            cursor = connection.cursor()
            try:
                while not stop.is_set():
                    cursor.execute("INSERT INTO message (conversation, body, written_at) VALUES (1, %s, NOW(6))",
                                   ["Olá! Mensagem de teste com acentuação e emoji 🎉"])
                    commits.append(time.time())  # acknowledged by the server: committed
            except Exception:  # noqa: BLE001 - the server was killed under it
                pass

        thread = threading.Thread(target=writer)
        thread.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            run.poll()
            time.sleep(1.0)
        server.kill()  # SIGKILL: the machine's database dies
        stop.set()
        thread.join()
        time.sleep(0.5)
        run.poll(force=False)  # what the archiver had on disk when the server died
        local = archived_commits("chat", closed_only=False)
        offsite = archived_commits("chat", closed_only=True)
        try:
            run.stop()
        except Exception:  # noqa: BLE001 - the server is gone; stopping only kills the client
            pass
        unregister_alias("chat")
    last_commit = commits[-1]
    # The last archived transaction is the len(...)-th committed one (transactions are in order).
    local_lost = last_commit - commits[len(local) - 1] if local else seconds
    offsite_lost = last_commit - commits[len(offsite) - 1] if offsite else seconds
    return {"committed": len(commits), "archived_local": len(local), "archived_offsite": len(offsite),
            "local_lost_seconds": max(local_lost, 0.0), "offsite_lost_seconds": max(offsite_lost, 0.0)}


def recovery_time(transactions: int) -> dict:
    from backups_app.models import Trigger
    from backups_app.services.backup import backup_create
    from backups_app.services.restore import backup_restore
    from backups_app.services.binlogs import BinlogArchiverRun
    from backups_app.services.pitr import pitr_restore, recovery_target_parse
    from tests.backups.binlog_server import BinlogServer
    from tests.conftest import register_alias, unregister_alias

    with BinlogServer() as server:
        create_chat(server)
        server.execute("INSERT INTO message (conversation, body, written_at) "
                       "SELECT seq % 1000, CONCAT('mensagem base ', seq), NOW(6) FROM seq_1_to_100000",
                       database="chat")
        register_alias("chat", server.settings_dict("chat"))
        run = BinlogArchiverRun(database="chat", segment_seconds_value=60)
        run.start()
        base = backup_create(database="chat", trigger=Trigger.CLI)
        connection = server.connect("chat")
        cursor = connection.cursor()
        started = time.monotonic()
        for number in range(transactions):
            cursor.execute("INSERT INTO message (conversation, body, written_at) VALUES (%s, %s, NOW(6))",
                           [number % 1000, f"mensagem {number} — com acentuação 🎉"])
            if number % 2000 == 0:
                run.poll()
        write_seconds = time.monotonic() - started
        connection.close()
        (file_name, position, *_rest), = server.execute("SHOW MASTER STATUS")
        wait_until_streamed(run, file_name, int(position))
        run.stop()
        clock = time.monotonic()
        backup_restore(backup=base, database="chat", trigger=Trigger.CLI, safety_backup=False)
        base_seconds = time.monotonic() - clock
        clock = time.monotonic()
        pitr_restore(database="chat", target=recovery_target_parse(to_position=f"{file_name}:{position}"),
                     trigger=Trigger.CLI, safety_backup=False)
        pitr_seconds = time.monotonic() - clock
        (count,), = server.execute("SELECT COUNT(*) FROM chat.message")
        baseline_seconds = shell_pipeline_replay(server, base, f"{file_name}:{position}")
        unregister_alias("chat")
    return {"transactions": transactions, "write_seconds": write_seconds, "base_restore_seconds": base_seconds,
            "pitr_seconds": pitr_seconds, "baseline_seconds": baseline_seconds, "rows_after": count,
            "rows_expected": 100000 + transactions, "base_size_bytes": base.size_bytes}


def shell_pipeline_replay(server, base, position: str) -> float:
    """The baseline: the same base restore, then `mariadb-binlog FILES | mariadb` by hand."""
    import subprocess
    import tempfile

    from backups_app.models import Trigger
    from backups_app.services.restore import backup_restore
    from backups_app.services.pitr import (
        _rebuild_files,
        pitr_plan,
        recovery_target_parse,
    )

    plan = pitr_plan(database="chat", target=recovery_target_parse(to_position=position))
    with tempfile.TemporaryDirectory() as folder:
        files = _rebuild_files(plan, Path(folder))
        clock = time.monotonic()
        backup_restore(backup=base, database="chat", trigger=Trigger.CLI, safety_backup=False)
        reader = subprocess.Popen(
            ["mariadb-binlog", f"--start-position={base.binlog_position}", "--database=chat",
             f"--stop-position={plan.stop_position}", *map(str, files)], stdout=subprocess.PIPE)
        subprocess.run(["mariadb", "-h127.0.0.1", f"-P{server.port}", "-uroot", "--binary-mode", "chat"],
                       stdin=reader.stdout, check=True)
        reader.wait()
        return time.monotonic() - clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--segment-seconds", type=float, default=60)
    parser.add_argument("--transactions", type=int, default=36000)
    parser.add_argument("--skip-recovery-point", action="store_true")
    arguments = parser.parse_args()
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="opsdesk-pitr-bench-"))
    setup_django(work)
    if not arguments.skip_recovery_point:
        report_recovery_point(arguments)
    timing = recovery_time(arguments.transactions)
    print(f"recovery time: base ({timing['base_size_bytes']} bytes compressed) restored in "
          f"{timing['base_restore_seconds']:.1f} s; base + replay of {timing['transactions']} transactions "
          f"(written in {timing['write_seconds']:.1f} s) in {timing['pitr_seconds']:.1f} s; "
          f"rows {timing['rows_after']} of {timing['rows_expected']} expected; baseline restore + "
          f"`mariadb-binlog | mariadb` {timing['baseline_seconds']:.1f} s "
          f"(ratio {timing['pitr_seconds'] / timing['baseline_seconds']:.2f})")
    shutil.rmtree(work, ignore_errors=True)


def report_recovery_point(arguments) -> None:
    point = recovery_point(arguments.seconds, arguments.segment_seconds)
    print(f"recovery point: {point['committed']} committed, {point['archived_local']} archived locally, "
          f"{point['archived_offsite']} in closed segments; lost locally {point['local_lost_seconds']:.3f} s, "
          f"offsite {point['offsite_lost_seconds']:.1f} s (segment {arguments.segment_seconds:g} s)")


if __name__ == "__main__":
    main()
