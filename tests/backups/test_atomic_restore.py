"""A restore is all or nothing: kill -9 of opsdesk half-way leaves the database as it was.

The restore runs in a subprocess (tests/backups/restore_until_halfway.py) that feeds half of a real
dump to the real client tool, then hangs; the test waits until the server has executed what was
sent, kills the subprocess with SIGKILL and compares the database with its state before.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connections

from backups_app.engines import get_engine
from backups_app.engines.client import driver_connection

from .conftest import PROJECT_ROOT

pytestmark = [pytest.mark.services, pytest.mark.django_db]

SCRIPT = Path(__file__).with_name("restore_until_halfway.py")


def wait_for(condition, what: str, attempts: int = 600) -> None:
    """Poll `condition` (a server-side state, not a duration) until it holds."""
    for _attempt in range(attempts):
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"gave up waiting for {what}")


def start_halfway_restore(alias: str, dump_path: Path, stop_at: int) -> subprocess.Popen:
    engine = get_engine(alias)
    engine_path = f"{type(engine).__module__}.{type(engine).__name__}"
    settings_dict = {key: value for key, value in connections[alias].settings_dict.items() if key != "TEST"}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), json.dumps(settings_dict, default=str), engine_path, str(dump_path), str(stop_at)],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )


def kill_when(process: subprocess.Popen, ready) -> None:
    try:
        assert process.stdout.readline().strip() in ("halfway", "touching"), process.stderr.read()
        wait_for(ready, "the server to run what was sent")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


# --- PostgreSQL -----------------------------------------------------------------------------------
def pg_rows(engine, statement: str) -> list[tuple]:
    with driver_connection(engine.settings_dict) as connection:
        return connection.execute(statement).fetchall()


def pg_restore_sessions(engine) -> list[tuple]:
    """Sessions psql opened for the restore (PGAPPNAME=opsdesk) and their state."""
    return pg_rows(engine, (
        "SELECT pid, state || ':' || coalesce(wait_event, '') FROM pg_stat_activity WHERE application_name = 'opsdesk' "
        f"AND datname = '{engine.database_name}' AND pid <> pg_backend_pid()"
    ))


def pg_state(engine) -> dict:
    tables = pg_rows(engine, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
    return {
        "tables": [name for (name,) in tables],
        "messages": pg_rows(engine, "SELECT count(*), sum(id) FROM message"),
        "after": pg_rows(engine, "SELECT note FROM after_backup") if ("after_backup",) in tables else None,
    }


def test_postgresql_restore_killed_half_way_changes_nothing(postgres_database, tmp_path):
    engine = get_engine(postgres_database)
    with driver_connection(engine.settings_dict) as connection:
        connection.execute("CREATE TABLE message (id int PRIMARY KEY, body text)")
        connection.execute("INSERT INTO message SELECT n, repeat(md5(n::text), 3) FROM generate_series(1, 40000) n")
        connection.execute("CREATE TABLE attachment (id int PRIMARY KEY, body text)")
        connection.execute("INSERT INTO attachment SELECT n, repeat(md5(n::text), 3) FROM generate_series(1, 40000) n")
    dump_path = tmp_path / "backup.sql"
    with engine.dump() as stream:
        dump_path.write_bytes(stream.read())
    with driver_connection(engine.settings_dict) as connection:
        connection.execute("DELETE FROM message WHERE id > 100")
        connection.execute("CREATE TABLE after_backup (note text)")
        connection.execute("INSERT INTO after_backup VALUES ('written after the backup')")
    before = pg_state(engine)
    dump = dump_path.read_bytes()
    # Stop inside the second table's data: the schema reset and the whole first table were sent.
    stop_at = dump.index(b"COPY public.message") + (len(dump) - dump.index(b"COPY public.message")) // 2
    assert stop_at > 2 * 1024 * 1024  # beyond the engine's 1 MiB batches, so psql got most of it

    process = start_halfway_restore(postgres_database, dump_path, stop_at)
    # Waiting for more input: idle in the transaction, or inside a COPY waiting to read the client.
    kill_when(process, lambda: [state for _pid, state in pg_restore_sessions(engine)]
              in (["idle in transaction:ClientRead"], ["active:ClientRead"]))
    # psql (its own process group) reads the end of its input and exits; the server ends its session.
    wait_for(lambda: not pg_restore_sessions(engine), "psql's session to end")

    assert pg_state(engine) == before
