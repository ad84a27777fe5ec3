"""SQLite engine: consistent dumps while writers work, and restores that give back exactly the backup."""
from __future__ import annotations

import gzip
import hashlib
import sqlite3
import threading

import pytest
import zstandard

from backups_app.models import BackupRecord, Trigger
from backups_app.services.backup import backup_create
from backups_app.services.restore import backup_restore

from .conftest import snapshot

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_round_trip_gives_back_exactly_the_backup(sqlite_alias, backup_dir, compression):
    before = snapshot(sqlite_alias)
    record = backup_create(database="app", trigger=Trigger.CLI, compression=compression)
    assert record.status == BackupRecord.Status.SUCCESS
    assert record.name.startswith("backup_app_") and record.name.endswith(
        {"gzip": ".sql.gz", "zstd": ".sql.zst", "none": ".sql"}[compression]
    )

    connection = sqlite3.connect(sqlite_alias)
    connection.executescript(
        "CREATE TABLE created_later (x); INSERT INTO created_later VALUES (1);"
        "DELETE FROM book; DROP VIEW author_books; UPDATE author SET name = 'changed';"
    )
    connection.close()

    restore = backup_restore(backup=record, trigger=Trigger.CLI, safety_backup=False)
    assert restore.status == "success"
    assert snapshot(sqlite_alias) == before  # tables created since are gone, views/triggers back


def test_stored_file_is_a_standard_compressed_file_with_the_recorded_checksum(sqlite_alias, backup_dir):
    gz = backup_create(database="app", trigger=Trigger.CLI, compression="gzip")
    zst = backup_create(database="app", trigger=Trigger.CLI, compression="zstd")
    gz_bytes = (backup_dir / gz.name).read_bytes()
    zst_bytes = (backup_dir / zst.name).read_bytes()
    assert hashlib.sha256(gz_bytes).hexdigest() == gz.sha256 and len(gz_bytes) == gz.size_bytes
    assert hashlib.sha256(zst_bytes).hexdigest() == zst.sha256
    plain = gzip.decompress(gz_bytes)
    assert len(plain) == gz.raw_size_bytes
    assert plain.rstrip().endswith(b"-- opsdesk SQLite dump completed")
    assert zstandard.ZstdDecompressor().decompressobj().decompress(zst_bytes) == plain
    assert gz.table_row_counts["author"] == 3 and gz.table_row_counts["audit"] == 3
    assert gz.tool_versions["sqlite"] == sqlite3.sqlite_version
    # The dump restores with the stock sqlite3 client too.
    assert b'CREATE TABLE "\xc3\xa7\xc3\xa0 table \xe2\x9c\x93"' in plain


def test_dump_is_one_consistent_snapshot_while_a_writer_keeps_committing(sqlite_alias, backup_dir):
    """The writer always inserts one row into both tables in one transaction: any consistent
    snapshot has equal counts; a dump reading the tables at different moments would not."""
    setup = sqlite3.connect(sqlite_alias)
    setup.executescript(
        "CREATE TABLE left_side (n INTEGER, pad TEXT); CREATE TABLE right_side (n INTEGER, pad TEXT);"
    )
    setup.executemany("INSERT INTO left_side VALUES (?, ?)", [(i, "x" * 500) for i in range(20000)])
    setup.executemany("INSERT INTO right_side VALUES (?, ?)", [(i, "x" * 500) for i in range(20000)])
    setup.commit()
    setup.close()
    stop = threading.Event()
    commits = []

    def writer():
        connection = sqlite3.connect(sqlite_alias, timeout=30)
        n = 100000
        while not stop.is_set():
            with connection:
                connection.execute("INSERT INTO left_side VALUES (?, 'w')", (n,))
                connection.execute("INSERT INTO right_side VALUES (?, 'w')", (n,))
            commits.append(n)
            n += 1
        connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        record = backup_create(database="app", trigger=Trigger.CLI, compression="gzip")
    finally:
        stop.set()
        thread.join()
    assert commits, "the writer was blocked during the whole dump"
    counts = record.table_row_counts
    assert counts["left_side"] == counts["right_side"] >= 20000
    plain = gzip.decompress((backup_dir / record.name).read_bytes()).decode()
    assert plain.count('INSERT INTO "left_side"') == plain.count('INSERT INTO "right_side"') == counts["left_side"]


def test_backup_of_a_missing_sqlite_file_fails_instead_of_creating_it(tmp_path, backup_dir):
    from tests.conftest import register_alias, unregister_alias

    missing = tmp_path / "nope.sqlite3"
    register_alias("ghost", {"ENGINE": "django.db.backends.sqlite3", "NAME": str(missing)})
    try:
        from backups_app.exceptions import DumpFailed

        with pytest.raises(DumpFailed, match="does not exist"):
            backup_create(database="ghost", trigger=Trigger.CLI)
    finally:
        unregister_alias("ghost")
    assert not missing.exists()
    assert BackupRecord.objects.get().status == "failed"


def test_a_crafted_dump_cannot_attach_other_files_and_leaves_the_database_alone(sqlite_alias, tmp_path):
    import io

    from backups_app.engines import get_engine
    from backups_app.exceptions import RestoreFailed

    before = snapshot(sqlite_alias)
    planted = tmp_path / "planted.db"
    dump = (
        "BEGIN TRANSACTION;\nCREATE TABLE x (a);\n"
        f"ATTACH DATABASE '{planted}' AS evil;\nCREATE TABLE evil.t (a);\nCOMMIT;\n"
    ).encode()
    with pytest.raises(RestoreFailed, match="not authorized"):
        get_engine("app").restore(io.BufferedReader(io.BytesIO(dump)))
    assert not planted.exists()
    assert snapshot(sqlite_alias) == before


def test_a_dump_cut_in_the_middle_of_a_statement_is_not_restored(sqlite_alias):
    import io

    from backups_app.engines import get_engine
    from backups_app.exceptions import RestoreFailed

    before = snapshot(sqlite_alias)
    with pytest.raises(RestoreFailed, match="middle of a statement"):
        get_engine("app").restore(io.BufferedReader(io.BytesIO(b"BEGIN TRANSACTION;\nCREATE TABLE b (x);\nINSERT INTO b VALUES ('half")))
    assert snapshot(sqlite_alias) == before
