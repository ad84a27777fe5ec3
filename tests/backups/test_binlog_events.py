"""The binlog event-header reader, on hand-made bytes (no server needed)."""
import struct

import pytest

from backups_app.binlog_events import (
    HEADER,
    MAGIC,
    MARIADB_GTID_EVENT,
    ROTATE_EVENT,
    NotABinlog,
    complete_length,
    events,
    next_binlog_name,
)


def event(position: int, type_code: int, body: bytes, timestamp: int = 1_800_000_000) -> bytes:
    length = HEADER.size + len(body)
    return HEADER.pack(timestamp, type_code, 7, length, position + length, 0) + body


def sample() -> bytes:
    data = MAGIC
    data += event(len(data), 15, b"\0" * 40)
    data += event(len(data), MARIADB_GTID_EVENT, struct.pack("<QIB", 42, 3, 0))
    data += event(len(data), ROTATE_EVENT, b"\0" * 8 + b"binlog.000002")
    return data


def test_events_give_positions_times_gtids_and_the_end_of_a_file():
    found = list(events(sample()))
    assert [e.position for e in found] == [4, 4 + 59, 4 + 59 + 32]
    assert found[1].gtid == "3-7-42"
    assert found[-1].ends_file and found[-1].end_position == len(sample())


def test_an_incomplete_last_event_is_left_for_later():
    data = sample()
    assert complete_length(data[:-5]) == 4 + 59 + 32


def test_reading_from_an_offset_gives_the_same_events():
    data = sample()
    assert list(events(data[63:], start=63, offset=63)) == list(events(data, start=63))


def test_not_a_binlog_is_refused():
    with pytest.raises(NotABinlog):
        list(events(b"GIF89a" + b"\0" * 40))


def test_next_file_name_keeps_the_width():
    assert next_binlog_name("mysql-bin.000099") == "mysql-bin.000100"
