"""A restore is all or nothing: kill -9 of opsdesk half-way leaves the database as it was.

The restore runs in a subprocess (tests/backups/restore_until_halfway.py) that feeds half of a real
dump to the real client tool, then hangs; the test waits until the server has executed what was
sent, kills the subprocess with SIGKILL and compares the database with its state before.
"""
from __future__ import annotations

import io
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
        # "halfway", not "touching": no engine calls before_target_change while it is still loading.
        assert process.stdout.readline().strip() == "halfway", process.stderr.read()
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


# --- MariaDB / MySQL ------------------------------------------------------------------------------
def my_rows(engine, statement: str, parameters: list | None = None, *, database: str | None | type(...) = ...) -> list[tuple]:
    with driver_connection(engine.settings_dict, name=database) as connection:
        cursor = connection.cursor()
        cursor.execute(statement, parameters or [])
        return list(cursor.fetchall())


def my_populate(engine, rows: int = 40000) -> None:
    with driver_connection(engine.settings_dict) as connection:
        cursor = connection.cursor()
        cursor.execute("CREATE TABLE room (id INT PRIMARY KEY, name VARCHAR(50)) ENGINE=InnoDB")
        cursor.execute("INSERT INTO room VALUES (1, 'general'), (2, 'random')")
        cursor.execute("CREATE TABLE message (id INT PRIMARY KEY, room_id INT, body TEXT, "
                       "FOREIGN KEY (room_id) REFERENCES room (id)) ENGINE=InnoDB")
        cursor.execute(
            "INSERT INTO message SELECT seq, 1 + seq %% 2, REPEAT(MD5(seq), 3) FROM seq_1_to_%s", [rows])
        cursor.execute("CREATE VIEW busy_rooms AS SELECT room_id, COUNT(*) AS messages FROM message GROUP BY room_id")
        cursor.execute("CREATE TRIGGER message_room BEFORE INSERT ON message FOR EACH ROW "
                       "SET NEW.room_id = COALESCE(NEW.room_id, 1)")
        cursor.execute("CREATE FUNCTION room_label(room INT) RETURNS VARCHAR(60) DETERMINISTIC "
                       "RETURN (SELECT CONCAT('#', name) FROM room WHERE id = room)")


def my_change_after_backup(engine) -> None:
    with driver_connection(engine.settings_dict) as connection:
        cursor = connection.cursor()
        cursor.execute("DELETE FROM message WHERE id > 100")
        cursor.execute("CREATE TABLE after_backup (note TEXT)")
        cursor.execute("INSERT INTO after_backup VALUES ('written after the backup')")
        cursor.execute("DROP TRIGGER message_room")


def my_state(engine) -> dict:
    schema = engine.database_name
    return {
        "tables": my_rows(engine, "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES "
                                  "WHERE TABLE_SCHEMA = %s ORDER BY 1", [schema]),
        "messages": my_rows(engine, "SELECT COUNT(*), SUM(id) FROM message"),
        "triggers": my_rows(engine, "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s",
                            [schema]),
        "routines": my_rows(engine, "SELECT ROUTINE_NAME, ROUTINE_DEFINITION FROM information_schema.ROUTINES "
                                    "WHERE ROUTINE_SCHEMA = %s", [schema]),
    }


def my_client_sessions(engine) -> list[str]:
    """What the restore client's session is doing: it works in the target or in a staging database."""
    return [command for (command,) in my_rows(
        engine, "SELECT COMMAND FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
                "AND (DB = %s OR DB LIKE %s)", [engine.database_name, staging_prefix(engine.database_name) + "%"])]


def work_databases(engine) -> list[str]:
    return [name for (name,) in my_rows(engine, "SHOW DATABASES", database=None) if "__opsdesk_" in name
            and name.startswith(staging_prefix(engine.database_name))]


def staging_prefix(target: str) -> str:
    from backups_app.engines.mysql_staging import work_prefix

    return work_prefix(target)


def test_mariadb_restore_killed_while_loading_changes_nothing(mariadb_database, tmp_path):
    engine = get_engine(mariadb_database)
    my_populate(engine)
    dump_path = tmp_path / "backup.sql"
    with engine.dump() as stream:
        dump_path.write_bytes(stream.read())
    my_change_after_backup(engine)
    before = my_state(engine)
    dump = dump_path.read_bytes()
    stop_at = len(dump) * 2 // 3  # inside the message rows, after the schema and the first tables

    process = start_halfway_restore(mariadb_database, dump_path, stop_at)
    # Kill once every session of the load (the client, or the parallel loader's connections) has
    # run everything it was sent and waits for more; then wait until the sessions are gone.
    kill_when(process, lambda: set(my_client_sessions(engine)) == {"Sleep"})
    wait_for(lambda: not my_client_sessions(engine), "the client's session to end")
    assert my_state(engine) == before  # the old code dropped every table first: all gone
    leftovers = work_databases(engine)
    assert leftovers  # the killed restore's staging database ...

    # ... is dropped by the next restore of that database, which brings the backup back whole.
    seen_at_swap: list[dict] = []
    with dump_path.open("rb") as stream:
        engine.restore(stream, before_target_change=lambda: seen_at_swap.append(my_state(engine)))
    assert seen_at_swap == [before]  # the target was touched only once the load was complete
    after = my_state(engine)
    assert after["messages"] == [(40000, 40000 * 40001 // 2)]
    assert ("after_backup", "BASE TABLE") not in after["tables"] and ("busy_rooms", "VIEW") in after["tables"]
    assert after["triggers"] == [("message_room",)] and [name for name, _body in after["routines"]] == ["room_label"]
    assert my_rows(engine, "SELECT room_label(2), messages FROM busy_rooms WHERE room_id = 2") == [("#random", 20000)]
    assert work_databases(engine) == []


def test_mariadb_failed_load_leaves_the_target_whole_and_never_touches_it(mariadb_database, tmp_path):
    from backups_app.exceptions import RestoreFailed

    engine = get_engine(mariadb_database)
    my_populate(engine, rows=100)
    with engine.dump() as stream:
        dump = stream.read()
    my_change_after_backup(engine)
    before = my_state(engine)
    broken = dump.replace(b"CREATE TABLE `room`", b"THIS IS NOT SQL;\nCREATE TABLE `room`")
    touched = []
    with pytest.raises(RestoreFailed):
        engine.restore(io.BytesIO(broken), before_target_change=lambda: touched.append(True))
    assert touched == [] and my_state(engine) == before and work_databases(engine) == []


# --- The stream raises at its end (the checked reader's ChecksumMismatch) ---------------------------
class RaisesAtEnd:
    """Every byte of the dump, then ChecksumMismatch instead of the final empty read."""

    def __init__(self, dump: bytes) -> None:
        self.stream = io.BytesIO(dump)

    def read(self, size: int = -1) -> bytes:
        chunk = self.stream.read(size)
        if not chunk:
            from backups_app.exceptions import ChecksumMismatch

            raise ChecksumMismatch("the bytes read do not match the backup's SHA-256")
        return chunk


def test_postgresql_commits_nothing_when_the_stream_raises_at_its_end(postgres_database):
    from backups_app.exceptions import ChecksumMismatch

    engine = get_engine(postgres_database)
    with driver_connection(engine.settings_dict) as connection:
        connection.execute("CREATE TABLE message (id int PRIMARY KEY, body text)")
        connection.execute("INSERT INTO message SELECT n, md5(n::text) FROM generate_series(1, 1000) n")
    with engine.dump() as stream:
        dump = stream.read()
    with driver_connection(engine.settings_dict) as connection:
        connection.execute("DELETE FROM message WHERE id > 10")
        connection.execute("CREATE TABLE after_backup (note text)")
    before = pg_state(engine)
    touched = []
    with pytest.raises(ChecksumMismatch):
        engine.restore(RaisesAtEnd(dump), before_target_change=lambda: touched.append(True))
    wait_for(lambda: not pg_restore_sessions(engine), "psql's session to end")
    assert pg_state(engine) == before and touched == []


def test_mariadb_swaps_nothing_in_when_the_stream_raises_at_its_end(mariadb_database):
    from backups_app.exceptions import ChecksumMismatch

    engine = get_engine(mariadb_database)
    my_populate(engine, rows=1000)
    with engine.dump() as stream:
        dump = stream.read()
    my_change_after_backup(engine)
    before = my_state(engine)
    touched = []
    with pytest.raises(ChecksumMismatch):
        engine.restore(RaisesAtEnd(dump), before_target_change=lambda: touched.append(True))
    assert my_state(engine) == before and touched == [] and work_databases(engine) == []


def test_a_failed_postgresql_restore_says_nothing_was_restored(postgres_database, tmp_path, settings):
    """Issue 18: a rolled-back PostgreSQL restore must not say "may be partly restored"."""
    from backups_app.exceptions import RestoreFailed
    from backups_app.models import RestoreRecord, Trigger
    from backups_app.services.backup import backup_create
    from backups_app.services.restore import backup_restore

    from .engines.sql_contract import write_tool

    engine = get_engine(postgres_database)
    with driver_connection(engine.settings_dict) as connection:
        connection.execute("CREATE TABLE message (id int PRIMARY KEY)")
    backup = backup_create(database=postgres_database, trigger=Trigger.CLI)
    with driver_connection(engine.settings_dict) as connection:
        connection.execute("INSERT INTO message VALUES (1)")
    real_psql = engine.find(engine.restore_tools, RestoreFailed)
    real_pg_dump = engine.find(engine.dump_tools, RestoreFailed)
    # The whole dump reaches the server, then an error where our COMMIT was: ON_ERROR_STOP, rollback.
    write_tool(tmp_path / "bin", "psql", 'sed "s/^COMMIT;$/SELECT 1\\/0;/" | "$REAL" "$@"', real_psql)
    write_tool(tmp_path / "bin", "pg_dump", 'exec "$REAL" "$@"', real_pg_dump)
    settings.BACKUP_POSTGRESQL_BIN_DIR = str(tmp_path / "bin")
    with pytest.raises(RestoreFailed) as failed:
        backup_restore(backup=backup, trigger=Trigger.CLI)
    message = str(failed.value)
    assert "division by zero" in message
    assert "Nothing was restored" in message and "partly restored" not in message
    assert RestoreRecord.objects.get().error_message == message
    assert pg_rows(engine, "SELECT id FROM message") == [(1,)]  # as before the restore


def test_mariadb_user_without_create_database_restores_in_place_marked_dirty(mariadb_database):
    """A user with privileges on its own database only still restores: in place, the whole restore
    inside the dirty window (before_target_change first)."""
    import uuid

    engine = get_engine(mariadb_database)
    my_populate(engine, rows=100)
    # Objects with root's DEFINER need SUPER to be recreated: this user's own data only.
    my_rows(engine, "DROP TRIGGER message_room")
    my_rows(engine, "DROP FUNCTION room_label")
    my_rows(engine, "DROP VIEW busy_rooms")
    with engine.dump() as stream:
        dump = stream.read()
    my_rows(engine, "DELETE FROM message WHERE id > 10")
    my_rows(engine, "CREATE TABLE after_backup (note TEXT)")
    user, password = f"opsdesk_ltd_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    hosts = ("127.0.0.1", "localhost")
    for host in hosts:
        my_rows(engine, "CREATE USER %s@%s IDENTIFIED BY %s", [user, host, password], database=None)
        my_rows(engine, f"GRANT ALL ON `{engine.database_name}`.* TO %s@%s", [user, host], database=None)
    try:
        limited = type(engine)("limited", {**engine.settings_dict, "USER": user, "PASSWORD": password})
        touched = []
        limited.restore(io.BytesIO(dump), before_target_change=lambda: touched.append(my_state(engine)))
        assert len(touched) == 1 and ("after_backup", "BASE TABLE") in touched[0]["tables"]
        after = my_state(engine)
        assert ("after_backup", "BASE TABLE") not in after["tables"] and after["messages"] == [(100, 5050)]
    finally:
        for host in hosts:
            my_rows(engine, "DROP USER IF EXISTS %s@%s", [user, host], database=None)
