"""Reading the event headers of a MariaDB/MySQL binary log file (format v4), nothing more.

The archiver cuts the raw binlog that `mariadb-binlog --raw` writes into segments, and must cut
between two events, know each segment's first and last event time, and its GTIDs. That needs only
the 19-byte common header of every event (timestamp, type, length, end position) and the first
bytes of MariaDB's GTID event; everything else is left to `mariadb-binlog` at replay time.
A library such as python-mysql-replication reads events from a server connection, not from a file
being appended to by another process, so these few structs are read here.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

MAGIC = b"\xfebin"
HEADER = struct.Struct("<IBIIIH")  # timestamp, type, server_id, event length, next position, flags
HEADER_BYTES = HEADER.size  # 19

STOP_EVENT = 3
ROTATE_EVENT = 4
FORMAT_DESCRIPTION_EVENT = 15
XID_EVENT = 16
MARIADB_GTID_EVENT = 162
#: Events after which the server writes nothing more into this file.
FILE_END_EVENTS = (STOP_EVENT, ROTATE_EVENT)


class NotABinlog(ValueError):
    """The bytes do not start with the binary log magic number."""


@dataclass(frozen=True)
class Event:
    position: int
    end_position: int
    timestamp: int
    type_code: int
    server_id: int
    gtid: str | None = None

    @property
    def when(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp, UTC)

    @property
    def ends_file(self) -> bool:
        return self.type_code in FILE_END_EVENTS


def _gtid(header: tuple, body: bytes) -> str | None:
    # MariaDB GTID event: seq_no (8 bytes), domain_id (4 bytes), flags...; server id from the header.
    if len(body) < 12:
        return None
    sequence, domain = struct.unpack_from("<QI", body)
    return f"{domain}-{header[2]}-{sequence}"


def events(data: bytes | memoryview, *, start: int = 4, offset: int = 0) -> Iterator[Event]:
    """The complete events from file position `start` on, in `data`: the file's bytes from `offset`.

    Stops at the first incomplete event: the file is still being written, the rest comes later.
    Reading from an offset lets the archiver look at the new bytes only, not the whole file.
    """
    if offset == 0 and len(data) >= 4 and bytes(data[:4]) != MAGIC:
        raise NotABinlog("not a binary log file (bad magic number)")
    position = max(start, 4)
    while position - offset + HEADER_BYTES <= len(data):
        header = HEADER.unpack_from(data, position - offset)
        length = header[3]
        if length < HEADER_BYTES:
            raise NotABinlog(f"event at {position} has an impossible length {length}")
        end = position + length
        if end - offset > len(data):
            return
        gtid = None
        if header[1] == MARIADB_GTID_EVENT:
            body = position - offset + HEADER_BYTES
            gtid = _gtid(header, bytes(data[body:body + 12]))
        yield Event(position=position, end_position=end, timestamp=header[0], type_code=header[1],
                    server_id=header[2], gtid=gtid)
        position = end


def complete_length(data: bytes | memoryview, *, start: int = 4) -> int:
    """Bytes of `data` that hold whole events only (at least the magic number)."""
    end = min(len(data), 4) if start <= 4 else start
    for event in events(data, start=start):
        end = event.end_position
    return end


def binlog_sequence(file_name: str) -> tuple[str, int]:
    """("binlog", 12) for "binlog.000012": the base name and the number the server counts up."""
    base, _dot, number = file_name.rpartition(".")
    return base, int(number) if number.isdigit() else -1


def next_binlog_name(file_name: str) -> str:
    base, number = binlog_sequence(file_name)
    width = len(file_name.rpartition(".")[2])
    return f"{base}.{number + 1:0{width}d}"
