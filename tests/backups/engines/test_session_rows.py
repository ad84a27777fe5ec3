"""Backups of opsdesk's own database hold no live session (docs/FAULTS.md: leaked-database).

Each engine dumps django_session's structure without its rows when told to (get_engine does for
`default`), and the dump restores into a database whose django_session exists and is empty.
"""
from __future__ import annotations

import sqlite3

import pytest

from backups_app.engines import CONTROL_TABLES_WITHOUT_DATA, get_engine
from backups_app.engines.sqlite import SQLiteDumpEngine

from . import test_mysql, test_postgresql
from .sql_contract import dump_bytes

SESSION_KEY = "live-session-of-a-superuser-0123456789"
CREATE = {
    "mysql": "CREATE TABLE django_session (session_key varchar(40) PRIMARY KEY, session_data longtext NOT NULL, "
             "expire_date datetime(6) NOT NULL)",
    "postgresql": "CREATE TABLE django_session (session_key varchar(40) PRIMARY KEY, session_data text NOT NULL, "
                  "expire_date timestamptz NOT NULL)",
}
INSERT = {
    "mysql": "INSERT INTO django_session VALUES ('{key}', 'data', '2099-01-01 00:00:00')",
    "postgresql": "INSERT INTO django_session VALUES ('{key}', 'data', '2099-01-01 00:00:00+00')",
}
RUN_SQL = {"mysql": test_mysql.run_sql, "postgresql": test_postgresql.run_sql}


def test_get_engine_leaves_session_rows_out_for_default_only(settings, sqlite_alias):
    assert get_engine("default").tables_without_data == CONTROL_TABLES_WITHOUT_DATA == ("django_session",)
    assert get_engine("app").tables_without_data == ()


def test_row_counts_say_what_the_dump_holds():
    engine = SQLiteDumpEngine("default", {"NAME": ":memory:"})
    engine.tables_without_data = CONTROL_TABLES_WITHOUT_DATA
    counts = {"django_session": 4, "public.django_session": 4, "auth_user": 2, "django_session_extra": 1}
    assert engine.counts_as_dumped(counts) == {
        "django_session": 0, "public.django_session": 0, "auth_user": 2, "django_session_extra": 1,
    }


def test_sqlite_dump_keeps_the_table_and_drops_its_rows(tmp_path):
    path = tmp_path / "ops.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE django_session (session_key text PRIMARY KEY, session_data text)")
        connection.execute("INSERT INTO django_session VALUES (?, 'multi\nline')", (SESSION_KEY,))
        connection.execute("CREATE TABLE note (text text)")
        connection.execute("INSERT INTO note VALUES ('INSERT INTO \"django_session\" kept as data')")
    engine = SQLiteDumpEngine("default", {"NAME": str(path)})
    engine.tables_without_data = CONTROL_TABLES_WITHOUT_DATA
    with engine.dump() as stream:
        dump = stream.read()
    assert SESSION_KEY.encode() not in dump and b"CREATE TABLE django_session" in dump
    assert b"kept as data" in dump

    with engine.scratch_engine() as scratch:
        import io

        scratch.restore(io.BytesIO(dump))
        with sqlite3.connect(scratch.database_name) as connection:
            assert connection.execute("SELECT count(*) FROM django_session").fetchone() == (0,)
            assert connection.execute("SELECT count(*) FROM note").fetchone() == (1,)


@pytest.mark.services
@pytest.mark.django_db
@pytest.mark.parametrize("fixture", ["mariadb_database", "postgres_database"])
def test_server_dump_keeps_the_table_and_drops_its_rows(request, fixture):
    engine = get_engine(request.getfixturevalue(fixture))
    run_sql = RUN_SQL[engine.vendor]
    run_sql(engine, CREATE[engine.vendor], INSERT[engine.vendor].format(key=SESSION_KEY),
            "CREATE TABLE note (id integer PRIMARY KEY)", "INSERT INTO note VALUES (1)")
    engine.tables_without_data = CONTROL_TABLES_WITHOUT_DATA

    dump = dump_bytes(engine)
    assert SESSION_KEY.encode() not in dump
    assert b"django_session" in dump
    counts = engine.counts_as_dumped(engine.table_row_counts())
    assert {name.rsplit(".", 1)[-1]: count for name, count in counts.items()} == {"django_session": 0, "note": 1}

    import io

    with engine.scratch_engine() as scratch:
        scratch.restore(io.BytesIO(dump))
        assert run_sql(scratch, "SELECT count(*) FROM django_session") == [(0,)]
        assert run_sql(scratch, "SELECT count(*) FROM note") == [(1,)]
