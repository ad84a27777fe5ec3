"""MariaDB/MySQL restores that are all or nothing, although MySQL DDL is not transactional.

The dump is loaded into a staging database beside the target (`<db>_<hash>__opsdesk_staging_<random>`,
on the same server), which takes as long as a restore ever took but leaves the target untouched: a
restore killed or failing there changed nothing. Only once the load completed (the client exited 0,
the stream reached its end without raising, so its checksum matched, and the dump's completion marker
was the last thing read) is the staging database swapped in:

1. the schema objects that cannot move between databases are read from the staging database and
   dropped there: views, triggers (a table with triggers cannot be renamed into another database),
   routines and events;
2. the target's own triggers and views are dropped (they go with the old content);
3. ONE ``RENAME TABLE`` statement moves every old table of the target into a trash database and
   every staged table into the target: atomic, and cheap (metadata only, whatever the size);
4. the old routines and events are dropped and the staged views, routines, triggers and events are
   recreated in the target, each with the sql_mode it was created with, from definitions read with
   the staging database as the current one, so they name no database (a qualified reference to the
   staging database, should one appear, is rewritten to the target);
5. the trash and staging databases are dropped.

Steps 2-4 are the only window in which the target is half-changed: the engine calls
``before_target_change`` before step 2, so the services mark the database dirty for that window
(docs/FAULTS.md, "restore killed at any byte"). Leftover staging and trash databases of an
interrupted restore are dropped by the next restore of the same database (it holds its lock).

How the stream reaches the staging database is not this module's business: the engine's
``restore_into(stream, database_name)`` feeds it (the client tool today, a parallel loader may do it).
The server user needs CREATE and DROP on databases (as verification already does); a user denied
CREATE DATABASE restores in place instead (MySQLDumpEngine.restore), marked dirty throughout.
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from secrets import token_hex
from typing import Any, BinaryIO

logger = logging.getLogger(__name__)

#: The part of a work database's name that says what it is (after the target's own prefix).
WORK_MARK = "__opsdesk_"
#: How many bytes of the end of the stream are kept to find the completion marker.
TAIL_BYTES = 8192
#: MySQL: "Table doesn't exist" while creating a view that reads a view not created yet.
_NO_SUCH_TABLE = 1146


def quote_identifier(name: str) -> str:
    """A MySQL identifier, backquoted; a backquote inside the name is doubled."""
    return "`" + name.replace("`", "``") + "`"


def work_prefix(target: str) -> str:
    """The start of every work database name of `target`: readable, and unique to it (hash)."""
    readable = re.sub(r"[^A-Za-z0-9_]", "_", target)[:20]
    return f"{readable}_{hashlib.sha256(target.encode()).hexdigest()[:8]}{WORK_MARK}"


def work_database_name(target: str, purpose: str) -> str:
    """`<db>_<hash>__opsdesk_<purpose>_<random>`: at most 64 characters, like every MySQL name."""
    return f"{work_prefix(target)}{purpose}_{token_hex(4)}"


class TailKeepingReader:
    """A read()-able view of a stream that remembers its last bytes and whether it reached EOF."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.tail = b""
        self.at_end = False

    def read(self, size: int = -1) -> bytes:
        chunk = self.stream.read(size)
        if chunk:
            self.tail = (self.tail + chunk)[-TAIL_BYTES:]
        elif size != 0:
            self.at_end = True
        return chunk


@dataclass(frozen=True)
class SchemaObject:
    """A view, routine, trigger or event, as SQL that recreates it in the current database."""

    kind: str  # VIEW, PROCEDURE, FUNCTION, TRIGGER, EVENT
    name: str
    create_sql: str
    sql_mode: str | None = None
    time_zone: str | None = None


def _rows(cursor, statement: str, parameters: list | None = None) -> list[tuple]:
    cursor.execute(statement, parameters or [])
    return list(cursor.fetchall())


def _show_create(cursor, kind: str, name: str) -> dict[str, Any]:
    cursor.execute(f"SHOW CREATE {kind} {quote_identifier(name)}")
    columns = [column[0] for column in cursor.description]
    return dict(zip(columns, cursor.fetchone()))


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes | bytearray) else str(value)


def read_schema_objects(cursor, schema: str) -> list[SchemaObject]:
    """Every view, routine, trigger and event of `schema`, read with `schema` as current database
    (so that the definitions name no database), in the order they can be recreated."""
    cursor.execute(f"USE {quote_identifier(schema)}")
    objects = []
    for (name,) in _rows(cursor, "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s "
                                 "ORDER BY TABLE_NAME", [schema]):
        objects.append(SchemaObject("VIEW", name, _text(_show_create(cursor, "VIEW", name)["Create View"])))
    for name, kind in _rows(cursor, "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES "
                                    "WHERE ROUTINE_SCHEMA = %s AND ROUTINE_TYPE IN ('PROCEDURE', 'FUNCTION') "
                                    "ORDER BY ROUTINE_TYPE, ROUTINE_NAME", [schema]):
        shown = _show_create(cursor, kind, name)
        objects.append(SchemaObject(kind, name, _text(shown[f"Create {kind.title()}"]), _text(shown["sql_mode"])))
    for (name,) in _rows(cursor, "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s "
                                 "ORDER BY EVENT_OBJECT_TABLE, ACTION_ORDER", [schema]):
        shown = _show_create(cursor, "TRIGGER", name)
        objects.append(SchemaObject("TRIGGER", name, _text(shown["SQL Original Statement"]), _text(shown["sql_mode"])))
    for (name,) in _rows(cursor, "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s "
                                 "ORDER BY EVENT_NAME", [schema]):
        shown = _show_create(cursor, "EVENT", name)
        objects.append(SchemaObject("EVENT", name, _text(shown["Create Event"]), _text(shown["sql_mode"]),
                                    _text(shown["time_zone"])))
    return objects


def movable_tables(cursor, schema: str) -> list[str]:
    """Tables and sequences of `schema` (what RENAME TABLE can move between databases)."""
    return [name for (name,) in _rows(
        cursor, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                "AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED', 'SEQUENCE') ORDER BY TABLE_NAME", [schema])]


def drop_schema_objects(cursor, schema: str, objects: list[SchemaObject], kinds: tuple[str, ...]) -> None:
    for item in objects:
        if item.kind in kinds:
            cursor.execute(f"DROP {item.kind} IF EXISTS {quote_identifier(schema)}.{quote_identifier(item.name)}")


def rename_statement(*, target: str, staging: str, trash: str, old_tables: list[str], new_tables: list[str]) -> str:
    """The ONE statement that swaps the content: old tables out to trash, staged tables in."""
    q = quote_identifier
    moves = [f"{q(target)}.{q(name)} TO {q(trash)}.{q(name)}" for name in old_tables]
    moves += [f"{q(staging)}.{q(name)} TO {q(target)}.{q(name)}" for name in new_tables]
    return "RENAME TABLE " + ", ".join(moves)


def create_schema_objects(cursor, *, target: str, staging: str, objects: list[SchemaObject]) -> None:
    """Recreate the staged objects in `target`: routines first (views may call functions), then
    views until none is left (one may read another), then triggers and events."""
    cursor.execute(f"USE {quote_identifier(target)}")

    def create(item: SchemaObject) -> None:
        if item.sql_mode is not None:
            cursor.execute("SET SESSION sql_mode = %s", [item.sql_mode])
        if item.time_zone is not None:
            cursor.execute("SET SESSION time_zone = %s", [item.time_zone])
        # Definitions were read with the staging database current; a qualified reference to it
        # (its name holds a random part, so it cannot be anything else) must name the target.
        cursor.execute(item.create_sql.replace(quote_identifier(staging) + ".", quote_identifier(target) + "."))

    for item in objects:
        if item.kind in ("PROCEDURE", "FUNCTION"):
            create(item)
    pending = [item for item in objects if item.kind == "VIEW"]
    while pending:
        postponed = []
        for item in pending:
            try:
                create(item)
            except Exception as error:  # noqa: BLE001 - driver errors carry the MySQL code first
                if getattr(error, "args", [None])[0] != _NO_SUCH_TABLE:
                    raise
                postponed.append((item, error))
        if len(postponed) == len(pending):
            raise postponed[0][1]
        pending = [item for item, _error in postponed]
    for item in objects:
        if item.kind in ("TRIGGER", "EVENT"):
            create(item)


def swap_in(connection, *, target: str, staging: str, trash: str, before_target_change) -> None:
    """Steps 1-4 of the module's docstring on one driver connection (no default database)."""
    cursor = connection.cursor()
    cursor.execute("SET SESSION FOREIGN_KEY_CHECKS = 0")
    staged = read_schema_objects(cursor, staging)
    old = read_schema_objects(cursor, target)
    new_tables, old_tables = movable_tables(cursor, staging), movable_tables(cursor, target)
    cursor.execute("USE information_schema")
    drop_schema_objects(cursor, staging, staged, ("TRIGGER", "VIEW", "EVENT"))
    before_target_change()
    drop_schema_objects(cursor, target, old, ("TRIGGER", "VIEW"))
    if old_tables or new_tables:
        cursor.execute(rename_statement(target=target, staging=staging, trash=trash,
                                        old_tables=old_tables, new_tables=new_tables))
    drop_schema_objects(cursor, target, old, ("PROCEDURE", "FUNCTION", "EVENT"))
    create_schema_objects(cursor, target=target, staging=staging, objects=staged)
    cursor.execute("USE information_schema")


def leftover_work_databases(cursor, target: str) -> list[str]:
    """Staging and trash databases that an interrupted restore of `target` left behind."""
    prefix = work_prefix(target)
    names = _rows(cursor, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s",
                  ["%opsdesk%"])
    return [name for (name,) in names if name.startswith(prefix)]
