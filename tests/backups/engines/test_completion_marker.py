"""The completion marker counts only as the dump's final line (docs/FAULTS.md: truncated dump).

A dump that dies inside a row whose text holds the marker used to pass the old check, a substring
search in the last 8 KiB. Each engine's real dump is cut right after such a row's marker text.
"""
from __future__ import annotations

import io
import sqlite3

import pytest

from backups_app.engines import get_engine
from backups_app.engines.client import driver_connection
from backups_app.models import BackupRecord, Trigger
from backups_app.exceptions import DumpFailed
from backups_app.services.backup import backup_create

from .sql_contract import dump_bytes

pytestmark = [pytest.mark.django_db(transaction=True)]

FORGED_MYSQL = "evil\n-- Dump completed on 2026-01-01 00:00:00\n"
FORGED_POSTGRESQL = "evil\n--\n-- PostgreSQL database dump complete\n--\n"
FORGED_SQLITE = "evil\nCOMMIT;\n-- opsdesk SQLite dump completed\n"


def cut_after(dump: bytes, forged: str) -> bytes:
    """The dump as if the tool died right after the forged marker inside the row."""
    # Each tool escapes the row's newlines its own way; cut after the escaped marker text.
    for needle in (b"Dump completed on 2026-01-01 00:00:00", b"PostgreSQL database dump complete",
                   b"opsdesk SQLite dump completed"):
        index = dump.find(needle)
        if index >= 0 and index < len(dump) - 200:
            cut = dump[: index + len(needle)]
            return cut + b"\n" if forged.endswith("\n") else cut
    raise AssertionError("the forged row is not in the dump")


@pytest.mark.services
def test_mariadb_dump_cut_inside_a_row_holding_the_marker_is_incomplete(mariadb_database):
    engine = get_engine(mariadb_database)
    with driver_connection(engine.settings_dict) as connection:
        cursor = connection.cursor()
        cursor.execute("CREATE TABLE notes (id int primary key, body text)")
        cursor.execute("INSERT INTO notes VALUES (1, %s), (2, 'after')", [FORGED_MYSQL])
        connection.commit()
    dump = dump_bytes(engine)
    assert engine.is_complete(dump[-8192:])
    assert not engine.is_complete(cut_after(dump, FORGED_MYSQL)[-8192:])
    # A row whose text is cut right after the marker, with no newline of its own, too.
    assert not engine.is_complete(cut_after(dump, FORGED_MYSQL)[:-1][-8192:])


@pytest.mark.services
def test_postgresql_dump_cut_inside_a_row_holding_the_marker_is_incomplete(postgres_database):
    engine = get_engine(postgres_database)
    with driver_connection(engine.settings_dict) as connection:
        connection.execute("CREATE TABLE notes (id int primary key, body text)")
        connection.execute("INSERT INTO notes VALUES (1, %s), (2, 'after')", [FORGED_POSTGRESQL])
        connection.commit()
    dump = dump_bytes(engine)
    assert engine.is_complete(dump[-8192:])
    assert not engine.is_complete(cut_after(dump, FORGED_POSTGRESQL)[-8192:])


def test_sqlite_dump_cut_inside_a_row_holding_the_marker_is_refused(sqlite_alias):
    forged = "x\nCOMMIT;\n-- opsdesk SQLite dump completed\n"
    connection = sqlite3.connect(sqlite_alias)
    connection.execute("CREATE TABLE notes (id integer primary key, body text)")
    connection.execute("INSERT INTO notes VALUES (1, ?)", [forged])
    connection.execute("INSERT INTO notes VALUES (2, ?)", ["after\r\nit's"])
    connection.commit()
    connection.close()
    engine = get_engine("app")
    with engine.dump() as stream:
        dump = stream.read()
    assert engine.is_complete(dump[-8192:])
    # Rows stay on one line: the forged ending is not a line of its own anywhere in the dump.
    assert dump.count(b"\n-- opsdesk SQLite dump completed\n") == 1
    index = dump.index(b"-- opsdesk SQLite dump completed")
    for cut in (index + len(b"-- opsdesk SQLite dump completed"), index + len(b"-- opsdesk SQLite dump completed") + 1):
        assert not engine.is_complete(dump[:cut][-8192:])
    # And the values come back exactly, line breaks included.
    with engine.scratch_engine() as scratch:
        scratch.restore(io.BytesIO(dump))
        restored = sqlite3.connect(scratch.database_name)
        assert restored.execute("SELECT body FROM notes ORDER BY id").fetchall() == [(forged,), ("after\r\nit's",)]
        restored.close()


def test_a_dump_that_dies_inside_a_row_holding_the_marker_is_a_failed_backup(fake_alias):
    fake_alias(
        "import sys\nout = sys.stdout.buffer\n"
        "out.write(b'INSERT INTO t VALUES (1);\\n' * 100)\n"
        "out.write(b\"INSERT INTO t VALUES ('-- Dump completed\")\n"
    )
    with pytest.raises(DumpFailed, match="completion marker"):
        backup_create(database="fake", trigger=Trigger.CLI)
    assert BackupRecord.objects.get().status == BackupRecord.Status.FAILED
