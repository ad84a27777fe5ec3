"""Every way a backup can go wrong ends `failed`, with the reason, and no file under a final name."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from django.core.files.storage import storages

from backups_app.exceptions import DumpFailed
from backups_app.models import AuditEntry, BackupRecord, Trigger
from backups_app.pipeline import stream_to_storage
from backups_app.services.backup import backup_create

from .conftest import stored_files

pytestmark = pytest.mark.django_db(transaction=True)

HALF_THEN_DIE = (
    "import sys\n"
    "sys.stdout.buffer.write(b'INSERT INTO t VALUES (1);\\n' * 50000)\n"
    "sys.stdout.flush()\n"
    "sys.stderr.write('mysqldump: Error 2013: Lost connection to server during query\\n')\n"
    "sys.exit(2)\n"
)
TRUNCATED_EXIT_0 = "import sys\nsys.stdout.buffer.write(b'INSERT INTO t VALUES (1);\\n' * 1000)\n"
EMPTY_EXIT_0 = "pass\n"
WRONG_PASSWORD = (
    "import os, sys\n"
    "sys.stderr.write('Access denied for user root (using password: %s)\\n' % os.environ['FAKE_PASSWORD'])\n"
    "sys.exit(2)\n"
)
COMPLETE_THEN_EXIT_1 = (
    "import sys\nsys.stdout.buffer.write(b'x;\\n-- Dump completed\\n')\nsys.stderr.write('warning turned error')\nsys.exit(1)\n"
)


def assert_failed_cleanly(backup_dir: Path, match: str) -> BackupRecord:
    record = BackupRecord.objects.get()
    assert record.status == BackupRecord.Status.FAILED
    assert match in record.error_message
    assert record.storage_name == "" and record.sha256 == ""
    assert stored_files(backup_dir) == []  # no final name, no temporary, no manifest
    assert AuditEntry.objects.filter(action="create", outcome="failure").exists()
    return record


def test_tool_dying_half_way_fails_with_its_message_even_though_compression_succeeded(fake_alias, backup_dir):
    fake_alias(HALF_THEN_DIE)
    with pytest.raises(DumpFailed, match="Lost connection"):
        backup_create(database="fake", trigger=Trigger.CLI)
    record = assert_failed_cleanly(backup_dir, "exited with status 2")
    assert record.finished_at is not None


def test_tool_exiting_non_zero_after_a_complete_dump_still_fails(fake_alias, backup_dir):
    fake_alias(COMPLETE_THEN_EXIT_1)
    with pytest.raises(DumpFailed):
        backup_create(database="fake", trigger=Trigger.CLI)
    assert_failed_cleanly(backup_dir, "warning turned error")


def test_truncated_dump_with_exit_status_0_fails_on_the_missing_marker(fake_alias, backup_dir):
    fake_alias(TRUNCATED_EXIT_0)
    with pytest.raises(DumpFailed, match="completion marker"):
        backup_create(database="fake", trigger=Trigger.CLI)
    assert_failed_cleanly(backup_dir, "completion marker")


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_empty_dump_fails_and_leaves_no_20_byte_file(fake_alias, backup_dir, compression):
    fake_alias(EMPTY_EXIT_0)
    with pytest.raises(DumpFailed, match="no data"):
        backup_create(database="fake", trigger=Trigger.CLI, compression=compression)
    assert_failed_cleanly(backup_dir, "no data")


def test_password_is_redacted_from_the_tools_message(fake_alias, backup_dir):
    secret = "pw-;$(id)'\"-x9"
    fake_alias(WRONG_PASSWORD, PASSWORD=secret)
    with pytest.raises(DumpFailed) as caught:
        backup_create(database="fake", trigger=Trigger.CLI)
    record = assert_failed_cleanly(backup_dir, "Access denied")
    assert secret not in str(caught.value) and secret not in record.error_message
    assert "********" in record.error_message
    assert not AuditEntry.objects.filter(detail__contains=secret).exists()


def test_missing_dump_tool_fails_clearly(fake_alias, backup_dir):
    fake_alias(FAKE_TOOL="/nonexistent/bin/mysqldump")
    with pytest.raises(DumpFailed, match="mysqldump: No such file"):
        backup_create(database="fake", trigger=Trigger.CLI)
    assert_failed_cleanly(backup_dir, "No such file")


def test_timeout_kills_the_whole_process_group(fake_alias, backup_dir, settings, tmp_path):
    pid_file = tmp_path / "child.pid"
    fake_alias(
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen(['sleep', '300'])\nopen({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "sys.stdout.buffer.write(b'partial\\n'); sys.stdout.flush()\ntime.sleep(300)\n"
    )
    settings.BACKUP_DUMP_TIMEOUT = 2
    started = time.monotonic()
    with pytest.raises(DumpFailed, match="timed out after 2 seconds"):
        backup_create(database="fake", trigger=Trigger.CLI)
    assert time.monotonic() - started < 30
    assert_failed_cleanly(backup_dir, "timed out")
    child = int(pid_file.read_text())
    for _ in range(50):
        try:
            state = Path(f"/proc/{child}/stat").read_text().split()[2]
        except FileNotFoundError:
            break
        if state == "Z":
            break  # killed; only waiting for its (re)parent to reap it
        time.sleep(0.1)
    else:
        pytest.fail("the dump tool's child survived the timeout")


class ExplodingCompressor:
    """Stands for a compressor that dies part-way (the in-process equivalent of `gzip` killed)."""

    def __init__(self, fail_after: int) -> None:
        self.calls = 0
        self.fail_after = fail_after

    def compress(self, data: bytes) -> bytes:
        self.calls += 1
        if self.calls > self.fail_after:
            raise MemoryError("compressor died")
        return data

    def flush(self) -> bytes:
        return b""


def test_compressor_failing_part_way_fails_and_removes_the_temporary(backup_dir):
    import io

    source = io.BytesIO(b"y" * (5 << 20) + b"\n-- Dump completed\n")
    with pytest.raises(DumpFailed, match="compressor died"):
        stream_to_storage(
            source, storage=storages["backups"], name="backup_x.sql.gz", compression="gzip",
            is_complete=lambda tail: b"-- Dump completed" in tail, compressor=ExplodingCompressor(2),
        )
    assert stored_files(backup_dir) == []


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 1 MiB tmpfs (root only: the test is skipped without the right to mount)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_fails_with_no_space_left_and_deletes_the_partial_file(fake_alias, settings, tiny_filesystem):
    folder = tiny_filesystem / "backups"
    settings.BACKUP_DIR = folder
    settings.STORAGES = {**settings.STORAGES, "backups": {
        **settings.STORAGES["backups"], "OPTIONS": {**settings.STORAGES["backups"]["OPTIONS"], "location": folder},
    }}
    # 4 MiB of incompressible data into a 1 MiB filesystem.
    fake_alias("import os, sys\nsys.stdout.buffer.write(os.urandom(4 << 20))\nsys.stdout.buffer.write(b'\\n-- Dump completed\\n')\n")
    with pytest.raises(DumpFailed, match="No space left on device"):
        backup_create(database="fake", trigger=Trigger.CLI, compression="none")
    record = BackupRecord.objects.get()
    assert record.status == "failed" and record.error_message == "No space left on device"
    assert stored_files(folder) == []
    # The space is free again: a small backup now succeeds.
    fake_alias()
    assert backup_create(database="fake", trigger=Trigger.CLI).status == "success"


def test_older_backups_are_untouched_by_a_failure(fake_alias, backup_dir):
    fake_alias()
    good = backup_create(database="fake", trigger=Trigger.CLI)
    before = (backup_dir / good.name).read_bytes()
    fake_alias(HALF_THEN_DIE)
    with pytest.raises(DumpFailed):
        backup_create(database="fake", trigger=Trigger.CLI)
    assert (backup_dir / good.name).read_bytes() == before
    assert sorted(stored_files(backup_dir)) == sorted([good.name, good.name + ".json"])


def test_progress_is_recorded_and_reported(fake_alias, backup_dir):
    fake_alias("import sys\nsys.stdout.buffer.write(b'x' * (3 << 20) + b'\\n-- Dump completed\\n')\n")
    seen = []
    record = backup_create(database="fake", trigger=Trigger.CLI, compression="none",
                           progress=lambda raw, written: seen.append((raw, written)))
    assert seen and seen[-1] == (record.raw_size_bytes, record.size_bytes)
    assert record.progress_bytes == record.size_bytes


def test_progress_failing_on_its_last_report_fails_and_removes_the_temporary(fake_alias, backup_dir):
    # A SQLite control database in rollback-journal mode refuses the progress write while the dump's
    # read transaction is open ("database is locked"); the last report came after the pipeline's
    # cleanup and left `.backup_*.partial` behind.
    from django.db import OperationalError

    fake_alias()

    def progress(raw, written):
        raise OperationalError("database is locked")

    with pytest.raises(DumpFailed, match="database is locked"):
        backup_create(database="fake", trigger=Trigger.CLI, progress=progress)
    assert_failed_cleanly(backup_dir, "database is locked")


def test_a_control_database_refusing_the_progress_write_does_not_fail_the_backup(fake_alias, backup_dir):
    # The same lock, on the once-a-second progress write: progress is for the dashboard only, so
    # the backup carries on (a SQLite host project in rollback-journal mode backing up itself).
    from django.db import OperationalError, connection

    def locked_progress(execute, sql, params, many, context):
        if re.search(r"SET\s+\W?progress_bytes\W?\s*=\s*%s\s+WHERE", sql):  # that write alone
            raise OperationalError("database is locked")
        return execute(sql, params, many, context)

    fake_alias("import sys\nsys.stdout.buffer.write(b'x' * (3 << 20) + b'\\n-- Dump completed\\n')\n")
    with connection.execute_wrapper(locked_progress):
        record = backup_create(database="fake", trigger=Trigger.CLI, compression="none")
    assert record.status == "success"
    assert sorted(stored_files(backup_dir)) == sorted([record.name, record.name + ".json"])
