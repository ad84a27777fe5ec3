"""MySQLDumpEngine against the machine's real MariaDB (mariadb-dump and the mariadb client)."""
from __future__ import annotations

import datetime
import io
import threading
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

from backups_app.engines import get_engine
from backups_app.engines.client import driver_connection
from backups_app.engines.mysql import MySQLDumpEngine, option_file_value, quote_identifier, tool_flavor
from backups_app.engines.mysql_parallel import load_parallel
from backups_app.exceptions import ChecksumMismatch, RestoreFailed

from .sql_contract import SQLEngineContract, dump_bytes, odd_name

pytestmark = [pytest.mark.services, pytest.mark.django_db]

NON_ASCII_TABLE = "café_ñandú_日本"
ALL_BYTES = bytes(range(256))
#: Quotes, a shell substitution, an option-file comment sign, a backslash, a leading dash.
HARD_PASSWORD = "-p'a\"s s;$(id)#\\x:`y`"


def run_sql(engine: MySQLDumpEngine, *statements: str | tuple[str, list[Any]]) -> list[tuple]:
    """Run statements (optionally with parameters) on the engine's database; rows of the last one."""
    rows: list[tuple] = []
    with driver_connection(engine.settings_dict) as connection:
        cursor = connection.cursor()
        for statement in statements:
            if isinstance(statement, tuple):
                cursor.execute(*statement)
            else:
                cursor.execute(statement)
            rows = list(cursor.fetchall()) if cursor.description else []
    return rows


class TestMySQLDumpEngine(SQLEngineContract):
    """The contract with BACKUP_RESTORE_PARALLELISM=1: one `mariadb` client replays the dump."""

    dump_tool_name = "mariadb-dump"
    restore_tool_name = "mariadb"
    restore_parallelism = 1

    @pytest.fixture(autouse=True)
    def _restore_parallelism(self, settings):
        settings.BACKUP_RESTORE_PARALLELISM = self.restore_parallelism

    @pytest.fixture
    def engine(self, mariadb_database) -> MySQLDumpEngine:
        engine = get_engine(mariadb_database)
        assert isinstance(engine, MySQLDumpEngine)
        return engine

    @pytest.fixture
    def engine_with_password(self, engine):
        """A real MariaDB user with a hard password, dropped after the test."""
        user = f"opsdesk_pw_{uuid.uuid4().hex[:8]}"
        password = HARD_PASSWORD + uuid.uuid4().hex[:6]
        hosts = ("127.0.0.1", "localhost")
        statements = []
        for host in hosts:
            statements += [
                ("CREATE USER %s@%s IDENTIFIED BY %s", [user, host, password]),
                f"GRANT ALL ON {quote_identifier(engine.database_name)}.* TO '{user}'@'{host}'",
            ]
        run_sql(engine, *statements)
        try:
            yield self.engine_for(engine, settings={"USER": user, "PASSWORD": password}), password
        finally:
            run_sql(engine, *[("DROP USER IF EXISTS %s@%s", [user, host]) for host in hosts])

    @pytest.fixture
    def odd_engine(self, engine):
        marker = f"/tmp/oz{uuid.uuid4().hex[:6]}"
        name = odd_name(marker)
        run_sql(engine, f"CREATE DATABASE {quote_identifier(name)} CHARACTER SET utf8mb4")
        try:
            yield self.engine_for(engine, settings={"NAME": name}), [Path(marker)]
        finally:
            run_sql(engine, f"DROP DATABASE IF EXISTS {quote_identifier(name)}")

    def escaped(self, password: str) -> str:
        return option_file_value(password)

    # --- Hooks ------------------------------------------------------------------------------------

    def populate(self, engine: MySQLDumpEngine) -> None:
        run_sql(
            engine,
            """CREATE TABLE people (
                id INT AUTO_INCREMENT PRIMARY KEY,
                name VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
                bio TEXT,
                avatar LONGBLOB,
                settings JSON,
                balance DECIMAL(20, 6),
                seen_at DATETIME(6),
                name_length INT AS (CHAR_LENGTH(name)) STORED,
                shout_name VARCHAR(100) AS (UPPER(name)) VIRTUAL,
                note VARCHAR(50) NULL
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
            ("INSERT INTO people (name, bio, avatar, settings, balance, seen_at) VALUES (%s, %s, %s, %s, %s, %s)",
             ["Zoë 😀🚀", "line1\nline2\t\\ 'single' \"double\" ; $(id) \0 end", ALL_BYTES,
              '{"emoji": "🎉", "list": [1, 2, null], "nested": {"ok": true}}',
              Decimal("12345678901234.123456"), datetime.datetime(2024, 2, 29, 23, 59, 59, 123456)]),
            "INSERT INTO people (name) VALUES (NULL)",
            ("INSERT INTO people (name, avatar, balance, seen_at) VALUES (%s, %s, %s, %s)",
             ["𝔘𝔫𝔦𝔠𝔬𝔡𝔢 👩‍👩‍👧", b"", Decimal("-0.000001"), datetime.datetime(1970, 1, 1, 0, 0, 0, 1)]),
            "CREATE TABLE legacy_log (id INT PRIMARY KEY, message VARCHAR(200)) ENGINE=MyISAM DEFAULT CHARSET=utf8mb4",
            "INSERT INTO legacy_log VALUES (1, 'myisam ✓'), (2, NULL)",
            f"CREATE TABLE {quote_identifier(NON_ASCII_TABLE)} (id INT PRIMARY KEY, v VARCHAR(10)) DEFAULT CHARSET=utf8mb4",
            f"INSERT INTO {quote_identifier(NON_ASCII_TABLE)} VALUES (1, 'ü'), (2, '😀')",
            "CREATE VIEW rich_people AS SELECT id, name FROM people WHERE balance > 0",
            "CREATE TRIGGER people_note BEFORE INSERT ON people FOR EACH ROW "
            "SET NEW.note = COALESCE(NEW.note, 'via trigger')",
            "CREATE PROCEDURE add_person(IN person_name VARCHAR(100)) "
            "BEGIN INSERT INTO people (name) VALUES (person_name); END",
            "CREATE FUNCTION shout(s VARCHAR(100)) RETURNS VARCHAR(110) DETERMINISTIC RETURN CONCAT(UPPER(s), '!')",
            "CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM legacy_log WHERE id < 0",
            "CALL add_person('added by a procedure 🙂')",
        )

    def populate_with_odd_name(self, engine: MySQLDumpEngine) -> None:
        self.populate(engine)
        # mariadb-dump 10.11 cannot dump the events of a database whose name holds a quote (it
        # selects the escaped name: "Unknown database"). It fails loudly, which is all we can ask.
        run_sql(engine, "DROP EVENT nightly")

    def snapshot(self, engine: MySQLDumpEngine) -> dict[str, Any]:
        schema = engine.database_name
        tables = run_sql(
            engine,
            ("SELECT TABLE_NAME, TABLE_TYPE, ENGINE FROM information_schema.TABLES "
             "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME", [schema]),
        )
        snapshot: dict[str, Any] = {"tables": tables}
        for name, table_type, _engine in tables:
            if table_type == "BASE TABLE":
                snapshot[f"create {name}"] = run_sql(engine, f"SHOW CREATE TABLE {quote_identifier(name)}")
                snapshot[f"rows {name}"] = run_sql(engine, f"SELECT * FROM {quote_identifier(name)} ORDER BY 1")
        snapshot["views"] = run_sql(engine, (
            "SELECT TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s "
            "ORDER BY 1", [schema]))
        snapshot["routines"] = run_sql(engine, (
            "SELECT ROUTINE_NAME, ROUTINE_TYPE, ROUTINE_DEFINITION FROM information_schema.ROUTINES "
            "WHERE ROUTINE_SCHEMA = %s ORDER BY 1", [schema]))
        snapshot["triggers"] = run_sql(engine, (
            "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_STATEMENT FROM information_schema.TRIGGERS "
            "WHERE TRIGGER_SCHEMA = %s ORDER BY 1", [schema]))
        snapshot["events"] = run_sql(engine, (
            "SELECT EVENT_NAME, EVENT_DEFINITION, STATUS FROM information_schema.EVENTS "
            "WHERE EVENT_SCHEMA = %s ORDER BY 1", [schema]))
        # View and routine definitions name their database: a scratch copy differs only there.
        return {
            key: [tuple(value.replace(schema, "<database>") if isinstance(value, str) else value for value in row)
                  for row in rows]
            for key, rows in snapshot.items()
        }

    def change_after_backup(self, engine: MySQLDumpEngine) -> None:
        run_sql(
            engine,
            "UPDATE people SET name = 'changed', avatar = NULL WHERE id = 1",
            "DELETE FROM legacy_log",
            f"INSERT INTO {quote_identifier(NON_ASCII_TABLE)} VALUES (99, 'new')",
            "CREATE TABLE created_later (id INT) ENGINE=InnoDB",
            "CREATE VIEW later_view AS SELECT 1 AS one",
            "CREATE PROCEDURE later_procedure() BEGIN SELECT 1; END",
            "CREATE EVENT later_event ON SCHEDULE EVERY 1 HOUR DISABLE DO SELECT 1",
            "DROP VIEW rich_people",
            "DROP FUNCTION shout",
            "DROP TRIGGER people_note",
        )

    def inject_hostile_commands(self, dump: bytes, marker: Path) -> bytes:
        first_line, rest = dump.split(b"\n", 1)
        # Without mariadb-dump's own sandbox line: the client's flags alone must protect us.
        assert b"sandbox" in first_line
        hostile = f"\\! touch {marker}\nsystem touch {marker}\n".encode()
        return hostile + rest

    def database_exists(self, engine: MySQLDumpEngine, name: str) -> bool:
        return bool(run_sql(engine, ("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", [name])))

    def create_bulk_rows(self, engine: MySQLDumpEngine, megabytes: int) -> None:
        rows = [(index, f"{index:08d} " + "chat message 💬 " * 60) for index in range(megabytes * 1000)]
        with driver_connection(engine.settings_dict) as connection:
            cursor = connection.cursor()
            cursor.execute("CREATE TABLE bulk (id INT PRIMARY KEY, payload TEXT) DEFAULT CHARSET=utf8mb4")
            cursor.executemany("INSERT INTO bulk VALUES (%s, %s)", rows)

    bulk_table = "bulk"

    def add_bulk_row(self, engine: MySQLDumpEngine) -> None:
        run_sql(engine, "INSERT INTO bulk VALUES (-1, 'written while the dump ran')")

    def bulk_rows_in(self, dump: bytes) -> int:
        # mariadb-dump 10.11 writes each row of an extended INSERT on its own line: "(id,'...'),".
        # Only the bulk table has rows in the test that asks.
        return sum(1 for line in dump.split(b"\n") if line.startswith(b"("))

    # --- MySQL only -------------------------------------------------------------------------------

    def test_dump_has_no_create_database_or_use(self, engine):
        self.populate(engine)
        dump = dump_bytes(engine)
        assert b"CREATE DATABASE" not in dump
        assert b"\nUSE " not in dump
        assert b"CREATE TABLE `people`" in dump

    def test_restore_stops_at_the_first_error(self, engine):
        self.populate(engine)
        with pytest.raises(RestoreFailed) as error:
            engine.restore(io.BytesIO(b"CREATE TABLE ok_table (id INT);\nTHIS IS NOT SQL;\nCREATE TABLE never (id INT);\n"))
        assert "ERROR" in str(error.value)
        names = {row[0] for row in run_sql(engine, "SHOW TABLES")}
        assert "never" not in names

    def test_get_engine_uses_the_django_settings(self, mariadb_database):
        engine = get_engine(mariadb_database)
        assert engine.database_name == connections[mariadb_database].settings_dict["NAME"]
        assert "PASSWORD" not in repr(engine)


class TestMySQLParallelRestore(TestMySQLDumpEngine):
    """The same contract, hard data included, restored by mysql_parallel over 3 connections."""

    restore_parallelism = 3

    def test_missing_restore_tool_leaves_the_database_untouched(self, engine, tmp_path):
        # The parallel path talks to the server through the driver: no client tool to miss.
        self.populate(engine)
        empty = tmp_path / "no-tools"
        empty.mkdir()
        self.engine_for(engine, bin_dir=str(empty)).restore(io.BytesIO(dump_bytes(engine)))
        assert {row[0] for row in run_sql(engine, "SHOW TABLES")} >= {"people", "legacy_log"}

    def test_rows_spread_over_connections_come_back_exactly(self, engine):
        """Several INSERT statements per table (mariadb-dump cuts them near 1 MiB), MyISAM keys
        disabled and enabled around them, triggers and views after them."""
        self.populate(engine)
        self.create_bulk_rows(engine, megabytes=4)
        rows = [(index, bytes(range(256)) * 40 + index.to_bytes(4, "big"), f"l'{index};\n\\ \"q\"\n😀")
                for index in range(3000)]
        with driver_connection(engine.settings_dict) as connection:
            cursor = connection.cursor()
            cursor.execute("CREATE TABLE blobs (id INT PRIMARY KEY, data LONGBLOB, note TEXT) ENGINE=MyISAM "
                           "DEFAULT CHARSET=utf8mb4")
            cursor.executemany("INSERT INTO blobs VALUES (%s, %s, %s)", rows)
        before = self.snapshot(engine)
        dump = dump_bytes(engine)
        assert dump.count(b"INSERT INTO `bulk`") >= 3 and dump.count(b"INSERT INTO `blobs`") >= 3
        self.change_after_backup(engine)
        engine.restore(io.BytesIO(dump))
        assert self.snapshot(engine) == before

    def test_no_backslash_escapes_in_a_routine_changes_where_statements_end(self, engine):
        run_sql(
            engine,
            "SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'",
            "CREATE PROCEDURE windows_path() BEGIN SELECT 'C:\\'; SELECT 'second;'; END",
        )
        before = self.snapshot(engine)
        dump = dump_bytes(engine)
        assert b"NO_BACKSLASH_ESCAPES" in dump
        run_sql(engine, "DROP PROCEDURE windows_path")
        engine.restore(io.BytesIO(dump))
        assert self.snapshot(engine) == before

    def test_an_error_of_the_stream_itself_propagates_unchanged(self, engine):
        self.create_bulk_rows(engine, megabytes=2)
        dump = dump_bytes(engine)

        class CheckedReader(io.BytesIO):
            def read(self, size=-1):
                chunk = super().read(size)
                if not chunk:
                    raise ChecksumMismatch("the bytes read do not match the recorded SHA-256")
                return chunk

        threads_before = threading.active_count()
        with pytest.raises(ChecksumMismatch):
            load_parallel(CheckedReader(dump), settings_dict=engine.settings_dict,
                          database=engine.database_name, connections=3)
        assert threading.active_count() == threads_before

    def test_first_error_stops_the_load_and_names_it(self, engine):
        dump = (b"CREATE TABLE t (id INT PRIMARY KEY);\nINSERT INTO `t` VALUES (1),(2);\n"
                b"INSERT INTO `t` VALUES (2);\nCREATE TABLE after_the_error (id INT);\n")
        with pytest.raises(RestoreFailed, match="ERROR 1062: Duplicate entry '2'"):
            load_parallel(io.BytesIO(dump), settings_dict=engine.settings_dict,
                          database=engine.database_name, connections=2)
        assert "after_the_error" not in {row[0] for row in run_sql(engine, "SHOW TABLES")}

    def test_a_load_past_its_deadline_is_stopped(self, engine):
        with pytest.raises(RestoreFailed, match="timed out"):
            load_parallel(io.BytesIO(b"SELECT SLEEP(60);\nCREATE TABLE never (id INT);\n"),
                          settings_dict=engine.settings_dict, database=engine.database_name,
                          connections=2, timeout=1)
        assert "never" not in {row[0] for row in run_sql(engine, "SHOW TABLES")}


def test_option_file_values_keep_every_character():
    assert option_file_value('a"b\\c#d e\n') == '"a\\"b\\\\c#d e\\n"'


def test_tool_flavor_reads_mariadb_and_oracle_version_lines():
    assert tool_flavor("mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for debian-linux-gnu") == ("mariadb", 10)
    assert tool_flavor("mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)") == ("mysql", 8)
    assert tool_flavor("mysqldump  Ver 10.13 Distrib 5.7.44, for Linux (x86_64)") == ("mysql", 5)


def test_connection_arguments_follow_the_databases_entry():
    engine = MySQLDumpEngine("chat", {
        "ENGINE": "django.db.backends.mysql", "NAME": "-chat", "HOST": "db.internal", "PORT": "3307",
        "USER": "-u", "PASSWORD": "secret", "OPTIONS": {"ssl": {"ca": "/etc/ca.pem"}, "ssl_mode": "VERIFY_IDENTITY"},
    })
    tool = engine.find(engine.dump_tools, RestoreFailed)
    argv = engine.dump_argv(tool, "/tmp/credentials.cnf")
    assert argv[1] == "--defaults-extra-file=/tmp/credentials.cnf"
    assert {"--host=db.internal", "--port=3307", "--user=-u", "--ssl-ca=/etc/ca.pem"} <= set(argv)
    assert {"--ssl", "--ssl-verify-server-cert"} <= set(argv)
    assert argv[-2:] == ["--", "-chat"]
    assert not [argument for argument in argv if "secret" in argument]
    socket_engine = MySQLDumpEngine("chat", {"ENGINE": "django.db.backends.mysql", "NAME": "x", "HOST": "/run/mysqld/mysqld.sock"})
    assert "--socket=/run/mysqld/mysqld.sock" in socket_engine.connection_arguments(tool)
