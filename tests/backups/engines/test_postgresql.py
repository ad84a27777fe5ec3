"""PostgreSQLDumpEngine against the machine's real PostgreSQL (pg_dump and psql).

The shared server trusts local connections, so the password cases run against a private cluster
this module starts on a free port with scram-sha-256 authentication.
"""
from __future__ import annotations

import glob
import io
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from backups_app.engines import get_engine
from backups_app.engines.client import driver_connection
from backups_app.engines.postgresql import PostgreSQLDumpEngine, neutralised_dump, passfile_line, split_lines
from backups_app.exceptions import RestoreFailed

from .sql_contract import SQLEngineContract, dump_bytes, odd_name

pytestmark = [pytest.mark.services, pytest.mark.django_db]

NON_ASCII_TABLE = "café_ñandú_日本"
ALL_BYTES = bytes(range(256))
#: Quotes, a shell substitution, and the passfile's own separators ':' and '\'.
HARD_PASSWORD = "-p'a\"s s;$(id)#\\x:`y`"


def run_sql(engine: PostgreSQLDumpEngine, *statements: str | tuple[str, list[Any]]) -> list[tuple]:
    rows: list[tuple] = []
    with driver_connection(engine.settings_dict) as connection:
        for statement in statements:
            cursor = connection.execute(*statement) if isinstance(statement, tuple) else connection.execute(statement)
            rows = cursor.fetchall() if cursor.description else []
    return rows


def identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def password_server() -> Iterator[dict[str, Any]]:
    """A private PostgreSQL cluster that really checks passwords (scram-sha-256)."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not binaries or os.geteuid() != 0 or shutil.which("runuser") is None:
        message = "a private PostgreSQL cluster needs initdb and root (to run it as postgres)"
        if os.environ.get("OPSDESK_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    bin_dir = Path(binaries[-1]).parent
    folder = Path(tempfile.mkdtemp(prefix="opsdesk-pg-"))
    password = HARD_PASSWORD + uuid.uuid4().hex[:6]
    (folder / "pwfile").write_text(password + "\n")
    shutil.chown(folder, "postgres")
    shutil.chown(folder / "pwfile", "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_postgres, str(bin_dir / "initdb"), "-D", str(folder / "data"), "-U", "opsdesk_admin",
         "--auth=scram-sha-256", f"--pwfile={folder / 'pwfile'}", "-E", "UTF8", "--no-sync"],
        check=True, capture_output=True,
    )
    port = free_port()
    server = subprocess.Popen(
        [*as_postgres, str(bin_dir / "postgres"), "-D", str(folder / "data"), "-p", str(port),
         "-k", str(folder), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the private PostgreSQL cluster did not start") from None
                time.sleep(0.1)
        time.sleep(0.3)  # accepting TCP a moment before it accepts logins
        yield {"HOST": "127.0.0.1", "PORT": port, "USER": "opsdesk_admin", "PASSWORD": password}
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


class TestPostgreSQLDumpEngine(SQLEngineContract):
    dump_tool_name = "pg_dump"
    restore_tool_name = "psql"

    @pytest.fixture
    def engine(self, postgres_database) -> PostgreSQLDumpEngine:
        engine = get_engine(postgres_database)
        assert isinstance(engine, PostgreSQLDumpEngine)
        return engine

    @pytest.fixture
    def engine_with_password(self, engine, password_server):
        name = f"opsdesk_t_{uuid.uuid4().hex[:12]}"
        server = self.engine_for(engine, settings={**password_server, "NAME": "postgres"})
        run_sql(server, f"CREATE DATABASE {identifier(name)}")
        try:
            yield self.engine_for(server, settings={"NAME": name}), password_server["PASSWORD"]
        finally:
            run_sql(server, f"DROP DATABASE IF EXISTS {identifier(name)} WITH (FORCE)")

    @pytest.fixture
    def odd_engine(self, engine):
        marker = f"/tmp/oz{uuid.uuid4().hex[:6]}"
        name = odd_name(marker)
        run_sql(engine, f"CREATE DATABASE {identifier(name)}")
        try:
            yield self.engine_for(engine, settings={"NAME": name}), [Path(marker)]
        finally:
            run_sql(engine, f"DROP DATABASE IF EXISTS {identifier(name)} WITH (FORCE)")

    def escaped(self, password: str) -> str:
        return passfile_line(password).strip().removeprefix("*:*:*:*:")

    # --- Hooks ------------------------------------------------------------------------------------

    def populate(self, engine: PostgreSQLDumpEngine) -> None:
        run_sql(
            engine,
            "CREATE SCHEMA billing",
            """CREATE TABLE public.people (
                id serial PRIMARY KEY, name text, profile jsonb, avatar bytea, tags text[],
                scores integer[], balance numeric(20, 6), seen_at timestamptz, born date, note text
            )""",
            ("INSERT INTO public.people (name, profile, avatar, tags, scores, balance, seen_at, born) "
             "VALUES (%s, %s, %s, %s, %s, %s, '2024-02-29 23:59:59.123456+00', '1999-12-31')",
             ["Zoë 😀🚀", '{"emoji": "🎉", "list": [1, 2, null], "nested": {"ok": true}}', ALL_BYTES,
              ["a,b", 'quote"d', "emoji 🎉", None], [1, -2, 3], Decimal("12345678901234.123456")]),
            "INSERT INTO public.people (name) VALUES (NULL)",
            ("INSERT INTO public.people (name, note) VALUES (%s, %s)",
             ["\\! touch /tmp/never-a-command\nsecond line", "tab\there \\. backslash-dot"]),
            "CREATE SEQUENCE billing.invoice_numbers START 1000",
            "SELECT nextval('billing.invoice_numbers'), nextval('billing.invoice_numbers')",
            """CREATE TABLE billing.invoices (
                id bigint DEFAULT nextval('billing.invoice_numbers') PRIMARY KEY,
                person_id integer REFERENCES public.people (id),
                amount numeric(12, 2),
                doubled numeric GENERATED ALWAYS AS (amount * 2) STORED
            )""",
            "INSERT INTO billing.invoices (person_id, amount) VALUES (1, 10.50), (1, NULL)",
            f"CREATE TABLE public.{identifier(NON_ASCII_TABLE)} (id integer PRIMARY KEY, v text)",
            f"INSERT INTO public.{identifier(NON_ASCII_TABLE)} VALUES (1, 'ü'), (2, '😀')",
            "CREATE FUNCTION public.shout(s text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT upper(s) || '!' $$",
            "CREATE FUNCTION public.set_note() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN NEW.note := coalesce(NEW.note, 'via trigger'); RETURN NEW; END $$",
            "CREATE TRIGGER people_note BEFORE INSERT ON public.people FOR EACH ROW EXECUTE FUNCTION public.set_note()",
            "CREATE VIEW public.rich_people AS SELECT id, name FROM public.people WHERE balance > 0",
            "INSERT INTO public.people (name) VALUES (public.shout('after the trigger'))",
            "SELECT pg_catalog.lo_from_bytea(0, '\\x00ff6c6f'::bytea)",
        )

    def snapshot(self, engine: PostgreSQLDumpEngine) -> dict[str, Any]:
        user_schemas = "n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%%'"
        snapshot: dict[str, Any] = {
            "schemas": run_sql(engine, (f"SELECT nspname FROM pg_namespace n WHERE {user_schemas} ORDER BY 1", [])),
            "sequences": run_sql(engine, "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2"),
            "functions": run_sql(engine, (
                "SELECT pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                f"WHERE {user_schemas} ORDER BY 1", [])),
            "views": run_sql(engine, (
                "SELECT c.relname, pg_get_viewdef(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                f"WHERE c.relkind = 'v' AND {user_schemas} ORDER BY 1", [])),
            "triggers": run_sql(engine, "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1"),
            "constraints": run_sql(engine, (
                "SELECT conname, pg_get_constraintdef(c.oid) FROM pg_constraint c JOIN pg_namespace n "
                f"ON n.oid = c.connamespace WHERE {user_schemas} ORDER BY 1", [])),
            "large_objects": run_sql(engine, "SELECT oid, lo_get(oid) FROM pg_largeobject_metadata ORDER BY 1"),
        }
        tables = run_sql(engine, (
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE c.relkind = 'r' AND {user_schemas} ORDER BY 1, 2", []))
        for schema, table in tables:
            snapshot[f"rows {schema}.{table}"] = run_sql(
                engine, f"SELECT * FROM {identifier(schema)}.{identifier(table)} ORDER BY 1"
            )
        return snapshot

    def change_after_backup(self, engine: PostgreSQLDumpEngine) -> None:
        run_sql(
            engine,
            "UPDATE public.people SET name = 'changed', avatar = NULL WHERE id = 1",
            "DELETE FROM billing.invoices",
            "SELECT nextval('billing.invoice_numbers')",
            f"INSERT INTO public.{identifier(NON_ASCII_TABLE)} VALUES (99, 'new')",
            "CREATE TABLE public.created_later (id integer)",
            "CREATE SCHEMA later_schema",
            "CREATE TABLE later_schema.more (id integer)",
            "CREATE FUNCTION public.later_function() RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$",
            "DROP VIEW public.rich_people",
            "DROP FUNCTION public.shout(text)",
            "SELECT pg_catalog.lo_from_bytea(0, '\\x01'::bytea)",
        )

    def inject_hostile_commands(self, dump: bytes, marker: Path) -> bytes:
        anchor = b"SET row_security = off;\n"
        assert anchor in dump
        return dump.replace(anchor, anchor + f"\\! touch {marker}\nSELECT 1; \\! touch {marker}\n".encode(), 1)

    def database_exists(self, engine: PostgreSQLDumpEngine, name: str) -> bool:
        return bool(run_sql(engine, ("SELECT 1 FROM pg_database WHERE datname = %s", [name])))

    def create_bulk_rows(self, engine: PostgreSQLDumpEngine, megabytes: int) -> None:
        run_sql(
            engine,
            "CREATE TABLE bulk (id integer PRIMARY KEY, payload text)",
            f"INSERT INTO bulk SELECT g, repeat('chat message 💬 ', 60) FROM generate_series(1, {megabytes * 1000}) g",
        )

    bulk_table = "public.bulk"

    def add_bulk_row(self, engine: PostgreSQLDumpEngine) -> None:
        run_sql(engine, "INSERT INTO bulk VALUES (-1, 'written while the dump ran')")

    def bulk_rows_in(self, dump: bytes) -> int:
        data = dump.split(b"COPY public.bulk (id, payload) FROM stdin;\n", 1)[1].split(b"\n\\.\n", 1)[0]
        return data.count(b"\n") + 1

    # --- PostgreSQL only --------------------------------------------------------------------------

    def test_a_failed_restore_leaves_the_database_untouched(self, engine):
        self.populate(engine)
        dump = dump_bytes(engine)
        self.change_after_backup(engine)
        changed = self.snapshot(engine)
        broken = dump.replace(b"-- PostgreSQL database dump complete", b"THIS IS NOT SQL;\n-- end")
        with pytest.raises(RestoreFailed) as error:
            engine.restore(io.BytesIO(broken))
        assert "syntax error" in str(error.value)
        assert self.snapshot(engine) == changed

    def test_dump_carries_no_owner_and_psql_restrict_keys_are_replaced(self, engine):
        self.populate(engine)
        dump = dump_bytes(engine)
        assert b"OWNER TO" not in dump
        fed = b"".join(neutralised_dump(io.BytesIO(dump), restrict_key="ourkey"))
        assert fed.startswith(b"\\restrict ourkey\n")
        assert fed.count(b"\\restrict") == 1 and b"\\unrestrict" not in fed


def test_an_old_psql_refuses_meta_commands_outside_copy_data():
    dump = (b"SET x = 1;\n\\restrict abc\nCOPY public.t (a) FROM stdin;\n\\\\! data, not a command\n\\.\n"
            b"\\! touch /tmp/x\n")
    with pytest.raises(RestoreFailed, match=r"\\!"):
        b"".join(neutralised_dump(io.BytesIO(dump), restrict_key=None))
    safe = dump.replace(b"\\! touch /tmp/x\n", b"")
    fed = b"".join(neutralised_dump(io.BytesIO(safe), restrict_key=None))
    assert b"\\\\! data, not a command" in fed and b"\\restrict" not in fed


def test_split_lines_bounds_long_lines():
    pieces = list(split_lines(io.BytesIO(b"a\n" + b"x" * 25 + b"\nb"), limit=10))
    assert b"".join(piece for piece, _start in pieces) == b"a\n" + b"x" * 25 + b"\nb"
    assert all(len(piece) <= 20 for piece, _start in pieces)
    assert [start for _piece, start in pieces][0] is True
    assert (b"\n", False) in pieces or any(not start for _piece, start in pieces)


def test_passfile_escapes_its_separators_and_refuses_line_breaks():
    assert passfile_line("a:b\\c") == "*:*:*:*:a\\:b\\\\c\n"
    with pytest.raises(ValueError):
        passfile_line("two\nlines")


def test_connection_settings_travel_in_the_environment_not_the_command_line():
    engine = PostgreSQLDumpEngine("chat", {
        "ENGINE": "django.db.backends.postgresql", "NAME": "db=name host=evil", "HOST": "db.internal",
        "PORT": "6432", "USER": "-u", "PASSWORD": "secret", "OPTIONS": {"sslmode": "verify-full"},
    })
    environment = engine.tool_environment("/tmp/passfile")
    assert environment["PGDATABASE"] == "db=name host=evil"
    assert environment["PGHOST"] == "db.internal" and environment["PGPORT"] == "6432"
    assert environment["PGUSER"] == "-u" and environment["PGSSLMODE"] == "verify-full"
    assert environment["PGPASSFILE"] == "/tmp/passfile" and "PGPASSWORD" not in environment
    argv = engine.dump_argv("/usr/bin/pg_dump", "/tmp/passfile")
    assert not [argument for argument in argv if "secret" in argument or "db=name" in argument]
