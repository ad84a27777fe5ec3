"""PostgreSQL: `pg_dump` plain SQL out, `psql` back in, in one transaction.

Why plain SQL rather than the custom format: the dump is a stream that opsdesk compresses (gzip or
zstd) while it is written, so pg_dump's own compression would only be done twice; a parallel or
selective `pg_restore` needs a seekable file, which a stream is not; plain SQL is what users expect
to find in a `.sql.gz` and can be read or replayed with psql alone; and it carries the completion
marker ``PostgreSQL database dump complete`` that proves the dump ran to the end.

Dump choices: ``--no-owner`` so that the dump can be restored by the application's user, or into a
scratch database for verification; privileges are kept (they are part of the database's state).

Restore brings back exactly the backup's state, atomically, in one transaction that opsdesk opens
and closes itself: psql runs with ``ON_ERROR_STOP=1`` (and *without* ``--single-transaction``, which
commits whenever psql meets the end of its input, so a killed opsdesk would leave a partial database
committed). The input starts with ``BEGIN``, then a preamble that drops every schema of the database
(objects created after the backup go with them) and every large object and recreates an empty
``public`` schema like a new database has, then the dump; ``COMMIT`` is written only after the
stream has returned its end without raising (a checked reader raises ``ChecksumMismatch`` at the end
instead). Anything else, an error, a mismatch, a kill of opsdesk or of psql, ends the session without
COMMIT and the server rolls all of it back: the database is either the backup's or untouched.
(pg_dump wraps large-object data in its own BEGIN/COMMIT, which would commit half-way; those two
lines are dropped there.)

psql meta-commands (``\\!`` runs a shell) are neutralised, CVE-2025-8714: with a psql that knows
``\\restrict`` the preamble enters restricted mode with a key drawn at restore time, so no
backslash command in the dump can run (pg_dump's own ``\\restrict``/``\\unrestrict`` lines are
removed, since they carry another key). With an older psql, a dump holding any backslash command
outside COPY data is refused before psql sees it.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from secrets import token_hex
from typing import IO, ClassVar

from django.utils.translation import gettext as _

from ..exceptions import RestoreFailed
from .base import final_lines
from .client import (
    CHUNK_BYTES,
    ClientToolEngine,
    child_environment,
    driver_connection,
    tool_output,
)

#: pg_dump's (un)restrict lines: a key of letters and digits.
_RESTRICT_LINE = re.compile(rb"^\\(?:un)?restrict [A-Za-z0-9]+\r?\n?$")
#: The start of COPY data in a plain dump; data runs until a line holding only "\.".
_COPY_LINE = re.compile(rb"^COPY .* FROM stdin;\r?\n$")
_COPY_END = (b"\\.\n", b"\\.\r\n", b"\\.")
#: pg_dump wraps large-object data in its own BEGIN/COMMIT; inside our transaction that COMMIT
#: would commit the restore half-way, so those two lines are dropped (only there).
_LARGE_OBJECT_DATA = re.compile(rb"^-- Data for Name: .*; Type: (?:BLOBS|LARGE OBJECTS?);")
_TRANSACTION_LINES = (b"BEGIN;\n", b"COMMIT;\n", b"BEGIN;\r\n", b"COMMIT;\r\n")
#: Sent after the whole dump (on a line of its own, whatever the dump's last line was).
COMMIT_LINE = b"\nCOMMIT;\n"

#: Every schema of the database goes (pg_catalog, information_schema, pg_toast and temporary
#: schemas excepted: user schemas cannot start with "pg_"), then an empty public schema like a
#: new database's: owned by pg_database_owner with USAGE for everyone since PostgreSQL 15, owned by
#: the restoring user with CREATE and USAGE for everyone before.
RESET_SQL = """
SET client_min_messages = warning;
DO $opsdesk_reset$
DECLARE
    schema_name text;
BEGIN
    FOR schema_name IN
        SELECT nspname FROM pg_catalog.pg_namespace
        WHERE nspname <> 'information_schema' AND nspname NOT LIKE 'pg\\_%'
    LOOP
        EXECUTE format('DROP SCHEMA %I CASCADE', schema_name);
    END LOOP;
    PERFORM pg_catalog.lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata;
    IF current_setting('server_version_num')::int >= 150000 THEN
        EXECUTE 'CREATE SCHEMA public AUTHORIZATION pg_database_owner';
        EXECUTE 'GRANT USAGE ON SCHEMA public TO PUBLIC';
    ELSE
        EXECUTE 'CREATE SCHEMA public';
        EXECUTE 'GRANT CREATE, USAGE ON SCHEMA public TO PUBLIC';
    END IF;
    EXECUTE 'COMMENT ON SCHEMA public IS ''standard public schema''';
END
$opsdesk_reset$;
RESET client_min_messages;
"""


def passfile_line(password: str) -> str:
    """A ~/.pgpass line matching any host, port, database and user, with ':' and '\\' escaped."""
    if "\n" in password or "\r" in password:
        raise ValueError(_("A PostgreSQL password containing a line break cannot be passed to pg_dump safely."))
    return "*:*:*:*:" + password.replace("\\", "\\\\").replace(":", "\\:") + "\n"


def split_lines(stream: IO[bytes], limit: int = CHUNK_BYTES) -> Iterator[tuple[bytes, bool]]:
    """(piece, starts_a_line) from a stream that may have no readline (zstd readers have none).

    Pieces end at a newline or at ``limit`` bytes, so one huge COPY row never sits whole in memory.
    """
    pending = b""
    at_line_start = True
    while True:
        chunk = stream.read(limit)
        if not chunk:
            break
        pending += chunk
        start = 0
        while True:
            newline = pending.find(b"\n", start)
            if newline < 0:
                break
            yield pending[start:newline + 1], at_line_start
            at_line_start = True
            start = newline + 1
        pending = pending[start:]
        if len(pending) >= limit:
            yield pending, at_line_start
            at_line_start = False
            pending = b""
    if pending:
        yield pending, at_line_start


def neutralised_dump(stream: IO[bytes], *, restrict_key: str | None) -> Iterator[bytes]:
    """The dump for psql, with our preamble and without a way to run meta-commands.

    Only lines outside COPY data are looked at: inside it, a backslash is data.
    """
    preamble = f"\\restrict {restrict_key}\n" if restrict_key else ""
    yield (preamble + "BEGIN;\n" + RESET_SQL).encode()
    in_copy = False
    in_large_objects = False
    batch: list[bytes] = []
    batch_size = 0
    for piece, at_line_start in split_lines(stream):
        if at_line_start:
            if in_copy:
                in_copy = piece not in _COPY_END
            elif piece.startswith(b"\\"):
                if _RESTRICT_LINE.match(piece):
                    continue  # pg_dump's own key: ours is already in force
                if restrict_key is None:
                    command = piece.split(None, 1)[0][:40].decode("utf-8", "replace")
                    raise RestoreFailed(
                        _("The dump contains the psql meta-command %(command)s and this psql cannot be "
                          "restricted (it predates \\restrict): refusing to run it.") % {"command": command}
                    )
                # Otherwise psql, in restricted mode, refuses it and ON_ERROR_STOP rolls back.
            elif _COPY_LINE.match(piece):
                in_copy = True
            elif _LARGE_OBJECT_DATA.match(piece):
                in_large_objects = True
            elif in_large_objects and piece in _TRANSACTION_LINES:
                in_large_objects = not piece.startswith(b"COMMIT")
                continue
        batch.append(piece)
        batch_size += len(piece)
        if batch_size >= CHUNK_BYTES:
            yield b"".join(batch)
            batch, batch_size = [], 0
    if batch:
        yield b"".join(batch)
    if in_copy:
        # psql would take our COMMIT for COPY data, end the COPY at EOF and exit 0 with nothing done.
        raise RestoreFailed(_("The dump ends inside COPY data: it is truncated; nothing was restored."))
    # Only now, the stream having returned its end without raising: the one line that keeps it all.
    yield COMMIT_LINE


class PostgreSQLDumpEngine(ClientToolEngine):
    """Dump and restore a PostgreSQL database with pg_dump and psql."""

    vendor = "postgresql"
    completion_marker = b"PostgreSQL database dump complete"
    credentials_suffix = ".pgpass"
    bin_dir_setting = "BACKUP_POSTGRESQL_BIN_DIR"
    dump_tools: ClassVar[tuple[str, ...]] = ("pg_dump",)
    restore_tools: ClassVar[tuple[str, ...]] = ("psql",)
    #: libpq's TLS and service-file settings, when the deployment sets them in the environment.
    environment_passthrough: ClassVar[tuple[str, ...]] = (
        "PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGSSLCRL", "PGGSSENCMODE",
        "PGSERVICEFILE", "PGSYSCONFDIR",
    )

    def is_complete(self, tail: bytes) -> bool:
        """The dump ends with pg_dump's closing comment block, then at most `\\unrestrict <key>`.

        Newer pg_dump releases (17.6, 16.10, 15.14...) close a plain dump with `\\unrestrict`; older
        ones end with the comment block itself.
        """
        lines = final_lines(tail, 4)
        if lines and lines[-1].startswith(b"\\unrestrict "):
            lines = lines[:-1]
        return [line.strip() for line in lines[-3:]] == [b"--", b"-- " + self.completion_marker, b"--"]

    def secrets(self) -> tuple[str, ...]:
        escaped = self.password.replace("\\", "\\\\").replace(":", "\\:")
        return (self.password, escaped)

    def credentials_content(self) -> str | None:
        return passfile_line(self.password) if self.password else None

    def tool_environment(self, credentials: str | None) -> dict[str, str]:
        """Connection settings as libpq environment variables.

        The environment rather than arguments: a database name holding "=" would be read as a
        connection string on the command line, never from PGDATABASE. Of our own environment only
        the allow-list passes (PGPASSWORD never does): only our passfile speaks for the password.
        """
        settings_dict = self.settings_dict
        options = self.options
        values = {
            "PGDATABASE": self.database_name,
            "PGHOST": str(settings_dict.get("HOST") or ""),
            "PGPORT": str(settings_dict.get("PORT") or ""),
            "PGUSER": str(settings_dict.get("USER") or ""),
            "PGAPPNAME": "opsdesk",
        }
        for option, variable in (
            ("sslmode", "PGSSLMODE"), ("sslrootcert", "PGSSLROOTCERT"), ("sslcert", "PGSSLCERT"),
            ("sslkey", "PGSSLKEY"), ("sslcrl", "PGSSLCRL"), ("service", "PGSERVICE"),
            ("passfile", "PGPASSFILE"), ("connect_timeout", "PGCONNECT_TIMEOUT"),
            ("target_session_attrs", "PGTARGETSESSIONATTRS"),
        ):
            if options.get(option) not in (None, ""):
                values[variable] = str(options[option])
        if credentials:
            values["PGPASSFILE"] = credentials
        return child_environment(
            passthrough=self.environment_passthrough,
            set_={name: value for name, value in values.items() if value},
        )

    def dump_argv(self, tool: str, credentials: str | None, snapshot_id: str | None = None) -> list[str]:
        argv = [tool, "--format=plain", "--no-owner", "--encoding=UTF8", "--no-password"]
        if snapshot_id:
            # The snapshot the row counts are taken in: the counts describe exactly this dump.
            argv.append(f"--snapshot={snapshot_id}")
        # Structure kept, rows left out; "*." because pg_dump runs with an empty search_path.
        argv += [f"--exclude-table-data=*.{table}" for table in self.tables_without_data]
        return argv

    def restore_argv(self, tool: str, credentials: str | None) -> list[str]:
        # No --single-transaction: it commits at the end of the input, even an input cut short by a
        # crash. The transaction is ours (neutralised_dump): BEGIN first, COMMIT after a clean EOF.
        return [tool, "--no-psqlrc", "--no-password", "--quiet", "--set=ON_ERROR_STOP=1", "--file=-"]

    def restore(self, stream: IO[bytes], *, before_target_change: Callable[[], None] = lambda: None) -> None:
        """One transaction: nothing of the restore is kept unless all of it is, so the target is never
        half-done and ``before_target_change`` is never called."""
        self.restore_into(stream, self.database_name)

    def restore_input(self, stream: IO[bytes], tool: str) -> Iterator[bytes]:
        supports_restrict = "\\restrict" in tool_output(tool, "--help=commands")
        return neutralised_dump(stream, restrict_key=token_hex(24) if supports_restrict else None)

    # --- Inspection -------------------------------------------------------------------------------

    def server_version(self, connection) -> str:
        return str(connection.execute("SHOW server_version").fetchone()[0])

    def begin_snapshot(self, connection) -> str | None:
        """A repeatable-read snapshot exported for pg_dump to import."""
        connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return str(connection.execute("SELECT pg_catalog.pg_export_snapshot()").fetchone()[0])

    def count_rows(self, connection) -> dict[str, int]:
        """Exact rows per table, keyed "schema.table"."""
        from psycopg import sql

        tables = connection.execute(
            "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' "
            "AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2"
        ).fetchall()
        counts = {}
        for schema, table in tables:
            query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
            counts[f"{schema}.{table}"] = int(connection.execute(query).fetchone()[0])
        return counts

    # --- Scratch databases ------------------------------------------------------------------------

    def create_scratch_database(self, name: str) -> None:
        """An empty database with the source's encoding and collation, from template0."""
        from psycopg import sql

        with driver_connection(self.settings_dict) as connection:
            encoding, collate, ctype = connection.execute(
                "SELECT pg_catalog.pg_encoding_to_char(encoding), datcollate, datctype "
                "FROM pg_catalog.pg_database WHERE datname = current_database()"
            ).fetchone()
        with driver_connection(self.settings_dict, name=None) as connection:
            connection.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
                    sql.Identifier(name), sql.Literal(encoding), sql.Literal(collate), sql.Literal(ctype)
                )
            )

    def drop_scratch_database(self, name: str) -> None:
        from psycopg import sql

        with driver_connection(self.settings_dict, name=None) as connection:
            force = connection.info.server_version >= 130000
            statement = "DROP DATABASE IF EXISTS {} WITH (FORCE)" if force else "DROP DATABASE IF EXISTS {}"
            connection.execute(sql.SQL(statement).format(sql.Identifier(name)))
