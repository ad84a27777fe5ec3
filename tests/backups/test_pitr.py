"""Point-in-time recovery against a private mariadbd with binary logging on (never the shared 3306).

Each test gets its own server (tests/backups/binlog_server.py), a database `chat` on it registered
as the alias `chat`, and drives the archiver step by step (`poll()`), so no test waits on a clock:
"the events arrived" is a condition polled for, never a sleep.
"""
from __future__ import annotations

import itertools
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from backups_app.binlog_events import events
from backups_app.exceptions import RestoreRefused
from backups_app.models import BackupRecord, BinlogArchiver, BinlogSegment, Trigger
from backups_app.services.backup import backup_create
from backups_app.services.binlogs import (
    BinlogArchiverRun,
    binlog_purged_needed,
    binlog_window,
    live_directory,
    segments_check,
)
from backups_app.services.pitr import pitr_restore, recovery_target_parse
from tests.conftest import register_alias, unregister_alias

from .binlog_server import BinlogServer, tools_available

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(bool(tools_available()), reason=f"MariaDB server tools missing: {tools_available()}"),
]


@pytest.fixture
def server():
    with BinlogServer() as running:
        running.execute("CREATE DATABASE chat CHARACTER SET utf8mb4",
                        "CREATE TABLE chat.message (id INT PRIMARY KEY AUTO_INCREMENT, body VARCHAR(100), "
                        "written_at DATETIME(6)) ENGINE=InnoDB")
        register_alias("chat", running.settings_dict("chat"))
        try:
            yield running
        finally:
            unregister_alias("chat")


def write_rows(server: BinlogServer, count: int, prefix: str = "m") -> list[int]:
    connection = server.connect("chat")
    ids = []
    try:
        cursor = connection.cursor()
        for number in range(count):
            cursor.execute("INSERT INTO message (body, written_at) VALUES (%s, NOW(6))", [f"{prefix}{number}"])
            ids.append(cursor.lastrowid)
    finally:
        connection.close()
    return ids


def master_position(server: BinlogServer) -> tuple[str, int]:
    (file_name, position, *_rest), = server.execute("SHOW MASTER STATUS")
    return file_name, int(position)


def wait_until_streamed(run: BinlogArchiverRun, server: BinlogServer, deadline_seconds: float = 30) -> None:
    """Poll until the live file on disk has everything the server has written so far."""
    file_name, position = master_position(server)
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        path = live_directory("chat") / file_name
        if path.exists():
            data = path.read_bytes()
            if any(e.end_position >= position for e in events(data)):
                return
        time.sleep(0.05)
    raise AssertionError(f"the archiver did not receive {file_name}:{position}")


def ids_in(server: BinlogServer) -> set[int]:
    return {row[0] for row in server.execute("SELECT id FROM chat.message")}


def next_second(server: BinlogServer) -> datetime:
    """Wait for the server clock to enter a new second; return that second (UTC)."""
    (start,), = server.execute("SELECT UTC_TIMESTAMP()")
    while True:
        (now,), = server.execute("SELECT UTC_TIMESTAMP()")
        if now > start:
            return now.replace(tzinfo=UTC)
        time.sleep(0.02)


def test_make_run_starts_an_archiver_for_a_database_with_binary_logging(server):
    from ops_project.run import archivable_databases, processes

    assert archivable_databases() == ["chat"]
    commands = processes(broker=False, bind="127.0.0.1", port=8000, binlog_databases=["chat"])
    assert commands["binlogs"].endswith("manage.py archive_binlogs --database chat")
    assert "binlogs" not in processes(broker=False, bind="127.0.0.1", port=8000)


def test_base_backup_records_binlog_coordinates(server):
    write_rows(server, 3)
    record = backup_create(database="chat", trigger=Trigger.CLI)
    file_name, position = master_position(server)
    assert (record.binlog_file, record.binlog_position) == (file_name, position)
    assert record.binlog_gtid  # e.g. "0-1-3"


def test_restore_to_the_second_before_a_drop_table(server):
    # An hour-long segment: nothing is closed, the replay reads the live file (the local recovery point).
    run = BinlogArchiverRun(database="chat", segment_seconds_value=3600)
    run.start()
    try:
        write_rows(server, 5, "before-base")
        backup_create(database="chat", trigger=Trigger.CLI)
        kept = write_rows(server, 20, "after-base")
        boundary = next_second(server)  # every row above was committed before this second
        second_batch = write_rows(server, 5, "in-boundary-second")
        drop_second = next_second(server)
        server.execute("DROP TABLE chat.message")
        wait_until_streamed(run, server)
        run.poll()  # the heartbeat says how far the live file goes
        assert not BinlogSegment.objects.filter(database="chat").exists()
        # The DROP's second is after `boundary`: restore to the second before the drop.
        assert drop_second > boundary
        target = recovery_target_parse(to_time=(drop_second - timedelta(seconds=1)).isoformat())
        restore = pitr_restore(database="chat", target=target, trigger=Trigger.CLI)
    finally:
        run.stop()
    assert restore.status == "success"
    restored = ids_in(server)
    assert set(kept) <= restored and set(second_batch) <= restored
    assert len(restored) == 30


def test_archiver_killed_and_restarted_leaves_no_gap_and_no_duplicate(server):
    run = BinlogArchiverRun(database="chat", segment_seconds_value=0)
    run.start()
    backup_create(database="chat", trigger=Trigger.CLI)
    write_rows(server, 10, "first")
    wait_until_streamed(run, server)
    run.poll()
    # kill -9 of the archiver's Python process: the kernel drops its lock, nothing else runs; its
    # streaming client (own process group) lives on as an orphan, still appending to the live file.
    run._lock.close()
    orphan = run.process
    write_rows(server, 10, "while-down")
    server.execute("FLUSH BINARY LOGS")
    written = write_rows(server, 10, "after-rotation")
    second = BinlogArchiverRun(database="chat", segment_seconds_value=0)
    second.start()
    try:
        assert orphan.wait(timeout=30) == -signal.SIGKILL  # the new run stopped the orphan first
        wait_until_streamed(second, server)
        second.poll(force=True)
    finally:
        second.stop()
    runs = binlog_window(database="chat")
    assert not [gap for gap in runs.gaps if "missing" in gap]
    assert len(runs.windows) == 1
    segments = list(BinlogSegment.objects.filter(database="chat").order_by("binlog_file", "start_position"))
    for previous, segment in itertools.pairwise(segments):
        if previous.binlog_file == segment.binlog_file:
            assert segment.start_position == previous.end_position  # no overlap, no hole
    target = recovery_target_parse(to_position=":".join(map(str, master_position(server))))
    pitr_restore(database="chat", target=target, trigger=Trigger.CLI, safety_backup=False)
    assert set(written) <= ids_in(server)
    assert len(ids_in(server)) == 30


def test_purged_binlog_shows_a_gap_and_refuses_a_restore_across_it(server):
    run = BinlogArchiverRun(database="chat", segment_seconds_value=0)
    run.start()
    backup_create(database="chat", trigger=Trigger.CLI)
    write_rows(server, 3)
    wait_until_streamed(run, server)
    run.stop()
    # While the archiver is down, the server rotates and purges the file it was still reading.
    write_rows(server, 3, "lost")
    server.execute("FLUSH BINARY LOGS")
    write_rows(server, 3, "lost-too")
    server.execute("FLUSH BINARY LOGS")
    newest_file, _position = master_position(server)
    server.execute(f"PURGE BINARY LOGS TO '{newest_file}'")
    # The archiver has been down for a while: shown, and so is the binlog it can no longer fetch.
    BinlogArchiver.objects.filter(database="chat").update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    down = binlog_window(database="chat")
    assert not down.archiver_running and any("not running" in gap for gap in down.gaps)
    from backups_app.templatetags.backups_admin import point_in_time_problems

    assert any(database == "chat" and "not running" in problem for database, problem in point_in_time_problems())
    assert binlog_purged_needed(database="chat")
    second = BinlogArchiverRun(database="chat", segment_seconds_value=0)
    second.start()
    try:
        write_rows(server, 3, "after")
        wait_until_streamed(second, server)
        second.poll(force=True)
    finally:
        second.stop()
    status = binlog_window(database="chat")
    assert any("binlog missing between" in gap for gap in status.gaps)
    from django.core import mail

    from backups_app.alerts import binlog_alerts_check

    assert binlog_alerts_check() == ["chat"]  # the hole is mailed to ADMINS, once
    assert "has a gap" in mail.outbox[-1].subject and "binlog missing between" in mail.outbox[-1].body
    assert binlog_alerts_check() == []
    target = recovery_target_parse(to_position=":".join(map(str, master_position(server))))
    before = ids_in(server)
    with pytest.raises(RestoreRefused, match="not inside a recoverable window"):
        pitr_restore(database="chat", target=target, trigger=Trigger.CLI)
    assert ids_in(server) == before  # refused: untouched


def test_corrupt_segment_is_shown_and_refused(server, backup_dir):
    run = BinlogArchiverRun(database="chat", segment_seconds_value=0)
    run.start()
    try:
        backup_create(database="chat", trigger=Trigger.CLI)
        write_rows(server, 5)
        wait_until_streamed(run, server)
        run.poll(force=True)
    finally:
        run.stop()
    segment = BinlogSegment.objects.filter(database="chat").order_by("-end_position").first()
    path = backup_dir / segment.storage_name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    before = ids_in(server)
    target = recovery_target_parse(to_position=f"{segment.binlog_file}:{segment.end_position}")
    with pytest.raises(RestoreRefused, match="does not match its SHA-256"):
        pitr_restore(database="chat", target=target, trigger=Trigger.CLI)
    assert ids_in(server) == before
    assert segments_check(database="chat") == [segment]
    assert any("corrupt" in gap for gap in binlog_window(database="chat").gaps)


def test_target_beyond_the_window_is_refused_with_one_line(server):
    run = BinlogArchiverRun(database="chat", segment_seconds_value=0)
    run.start()
    try:
        backup_create(database="chat", trigger=Trigger.CLI)
        write_rows(server, 2)
        wait_until_streamed(run, server)
        run.poll(force=True)
    finally:
        run.stop()
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with pytest.raises(CommandError, match="beyond the recoverable window") as raised:
        call_command("restore_backup", database="chat", to_time=later, interactive=False)
    assert "\n" not in str(raised.value)


def test_verify_proves_a_point_in_time_restore_in_a_scratch_database(server, capsys):
    run = BinlogArchiverRun(database="chat", segment_seconds_value=0)
    run.start()
    try:
        backup_create(database="chat", trigger=Trigger.CLI)
        write_rows(server, 7)
        wait_until_streamed(run, server)
        run.poll(force=True)
    finally:
        run.stop()
    position = ":".join(map(str, master_position(server)))
    call_command("verify_backup", database="chat", to_position=position)
    assert "1 tables, 7 rows" in capsys.readouterr().out
    assert {row[0] for row in server.execute("SHOW DATABASES")} >= {"chat"}
    assert not [name for (name,) in server.execute("SHOW DATABASES") if name.startswith("opsdesk_verify_")]


def test_without_binary_logging_the_command_says_how_to_turn_it_on(settings, capsys):
    with BinlogServer(log_bin=False) as plain:
        plain.execute("CREATE DATABASE chat")
        register_alias("chat", plain.settings_dict("chat"))
        try:
            with pytest.raises(CommandError, match="No database to archive"):
                call_command("archive_binlogs", databases=["chat"])
            message = capsys.readouterr().err
            assert "point-in-time recovery unavailable: enable log_bin and binlog_format=ROW" in message
            assert "log_bin=mysql-bin, binlog_format=ROW, server_id=1" in message
            assert "the server now has log_bin=OFF" in message
            from ops_project.run import archivable_databases

            assert archivable_databases() == []
            record = backup_create(database="chat", trigger=Trigger.CLI)
        finally:
            unregister_alias("chat")
    assert record.binlog_file == "" and record.binlog_position is None
    assert BackupRecord.objects.get(pk=record.pk).status == "success"


def test_retention_keeps_the_segments_of_kept_bases_and_no_more(server):
    from backups_app.services.binlogs import segments_prune

    run = BinlogArchiverRun(database="chat", segment_seconds_value=0)
    run.start()
    try:
        write_rows(server, 2, "old")
        server.execute("FLUSH BINARY LOGS")
        write_rows(server, 2, "older-base-era")
        wait_until_streamed(run, server)
        run.poll(force=True)
        server.execute("FLUSH BINARY LOGS")
        base = backup_create(database="chat", trigger=Trigger.CLI)
        write_rows(server, 2, "new")
        wait_until_streamed(run, server)
        run.poll(force=True)
    finally:
        run.stop()
    old_files = {s.binlog_file for s in BinlogSegment.objects.filter(database="chat")} - {base.binlog_file}
    assert old_files
    deleted = segments_prune(database="chat", kept_bases=[base])
    remaining = list(BinlogSegment.objects.filter(database="chat"))
    assert deleted and all(s.binlog_file >= base.binlog_file for s in remaining)
    assert binlog_window(database="chat").windows  # what the kept base needs is all there
    assert segments_prune(database="chat", kept_bases=[]) == []  # no base: nothing is provably useless


def test_admin_and_api_start_a_point_in_time_restore(server, client, django_user_model):
    from rest_framework.test import APIClient

    from backups_app.models import AuditEntry
    from backups_app.services.tokens import api_token_create

    run = BinlogArchiverRun(database="chat", segment_seconds_value=0)
    run.start()
    try:
        backup_create(database="chat", trigger=Trigger.CLI)
        ids = write_rows(server, 4)
        wait_until_streamed(run, server)
        run.poll(force=True)
    finally:
        run.stop()
    newest = binlog_window(database="chat").windows[-1].end
    user = django_user_model.objects.create_superuser("root-pitr", "r@example.com", "pw")
    client.force_login(user)
    page = client.get("/admin/backups_app/backuprecord/")
    assert b"Point-in-time recovery" in page.content and b"Restore to a point in time" in page.content
    later = (newest + timedelta(days=1)).isoformat()
    refused = client.post("/admin/backups_app/backuprecord/point-in-time/chat/",
                          {"to_time": later, "confirm_database": "chat"})
    assert refused.status_code == 400 and b"beyond the recoverable window" in refused.content
    wrong_name = client.post("/admin/backups_app/backuprecord/point-in-time/chat/",
                             {"to_time": newest.isoformat(), "confirm_database": "chatt"})
    assert wrong_name.status_code == 400
    server.execute("DELETE FROM chat.message")
    started = client.post("/admin/backups_app/backuprecord/point-in-time/chat/",
                          {"to_time": newest.isoformat(), "confirm_database": "chat"})
    assert started.status_code == 302
    assert set(ids) <= ids_in(server)

    api = APIClient()
    token = api_token_create(user=user, source=AuditEntry.Source.CLI).raw_token
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    malformed = api.post("/api/v1/backup/restore", {"database": "chat", "to_time": "yesterday"}, format="json")
    assert malformed.status_code == 400
    answer = api.post("/api/v1/backup/restore", {"database": "chat", "to_time": later}, format="json")
    assert answer.status_code == 409 and "beyond the recoverable window" in answer.json()["detail"]
    server.execute("DELETE FROM chat.message")
    answer = api.post("/api/v1/backup/restore", {"database": "chat", "to_time": newest.isoformat()}, format="json")
    assert answer.status_code == 202, answer.content
    assert set(ids) <= ids_in(server)

    # The archiver stops: the index and /health show it.
    BinlogArchiver.objects.filter(database="chat").update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    index = client.get("/admin/")
    assert b"Point-in-time recovery of chat: the archiver is not running" in index.content
    health = client.get("/health")
    assert health.json()["binlog_archiver"] is False
    assert health.json()["details"]["binlog_archiver"]["chat"]["archiver_running"] is False
    BinlogArchiver.objects.filter(database="chat").update(heartbeat_at=timezone.now())
    health = client.get("/health").json()
    assert health["binlog_archiver"] is True and health["details"]["binlog_archiver"]["chat"]["windows"]


def test_point_in_time_restore_needs_the_restore_permission(server, client, django_user_model):
    from django.contrib.auth.models import Permission
    from rest_framework.test import APIClient

    from backups_app.models import AuditEntry
    from backups_app.services.tokens import api_token_create

    viewer = django_user_model.objects.create_user("viewer-pitr", password="pw", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename__in=["view_backuprecord", "create_backup"]))
    client.force_login(viewer)
    page = client.get("/admin/backups_app/backuprecord/")
    assert page.status_code == 200 and b"Restore to a point in time" not in page.content
    form = {"to_time": "2026-11-29 14:32:05", "confirm_database": "chat"}
    assert client.get("/admin/backups_app/backuprecord/point-in-time/chat/").status_code == 403
    assert client.post("/admin/backups_app/backuprecord/point-in-time/chat/", form).status_code == 403
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=viewer, source=AuditEntry.Source.CLI).raw_token}")
    answer = api.post("/api/v1/backup/restore", {"database": "chat", "to_time": "2026-11-29 14:32:05"}, format="json")
    assert answer.status_code == 403


def test_a_second_archiver_of_the_same_database_is_refused(server):
    from backups_app.exceptions import BackupLocked

    run = BinlogArchiverRun(database="chat", segment_seconds_value=0)
    run.start()
    try:
        with pytest.raises(BackupLocked):
            BinlogArchiverRun(database="chat").start()
    finally:
        run.stop()


def test_restore_to_a_gtid_stops_right_after_that_transaction(server):
    run = BinlogArchiverRun(database="chat", segment_seconds_value=3600)
    run.start()
    try:
        backup_create(database="chat", trigger=Trigger.CLI)
        connection = server.connect("chat")
        cursor = connection.cursor()
        cursor.execute("INSERT INTO message (body) VALUES ('good')")
        good_id = cursor.lastrowid
        cursor.execute("SELECT @@last_gtid")
        (good_gtid,), = cursor.fetchall()
        cursor.execute("INSERT INTO message (body) VALUES ('bad')")
        connection.close()
        wait_until_streamed(run, server)
        run.poll()
        restore = pitr_restore(database="chat", target=recovery_target_parse(to_gtid=good_gtid),
                               trigger=Trigger.CLI, safety_backup=False)
    finally:
        run.stop()
    assert restore.status == "success"
    assert ids_in(server) == {good_id}


def test_the_streaming_client_gets_the_password_neither_on_argv_nor_in_its_environment(server):
    password = "s3cr3t-'$(id)\" #pitr"
    escaped = password.replace("'", "''")
    server.execute(f"CREATE USER 'archiver'@'127.0.0.1' IDENTIFIED BY '{escaped}'",
                   "GRANT SELECT, RELOAD, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'archiver'@'127.0.0.1'")
    unregister_alias("chat")
    register_alias("chat", {**server.settings_dict("chat"), "USER": "archiver", "PASSWORD": password})
    run = BinlogArchiverRun(database="chat", segment_seconds_value=0)
    run.start()
    try:
        write_rows(server, 1)
        wait_until_streamed(run, server)  # it authenticated: the events arrive
        pid = run.process.pid
        command_line = open(f"/proc/{pid}/cmdline", "rb").read()
        environment = open(f"/proc/{pid}/environ", "rb").read()
    finally:
        run.stop()
    assert password.encode() not in command_line and b"s3cr3t" not in command_line
    assert b"s3cr3t" not in environment
    assert b"--defaults-extra-file=/proc/" in command_line  # the in-memory option file


def test_segment_records_are_rebuilt_from_their_manifests(server):
    from backups_app.services.binlogs import binlog_segments_sync

    run = BinlogArchiverRun(database="chat", segment_seconds_value=0)
    run.start()
    try:
        write_rows(server, 3)
        wait_until_streamed(run, server)
        run.poll(force=True)
    finally:
        run.stop()
    before = sorted(BinlogSegment.objects.values_list("name", "sha256", "start_position", "end_position"))
    BinlogSegment.objects.all().delete()  # the ops database lost them (restored to an older state)
    assert binlog_segments_sync() == len(before)
    assert sorted(BinlogSegment.objects.values_list("name", "sha256", "start_position", "end_position")) == before
    assert binlog_segments_sync() == 0


def test_a_failed_replay_fails_the_restore_and_leaves_the_database_dirty(server):
    from backups_app.exceptions import RestoreFailed
    from backups_app.models import DirtyDatabase, RestoreRecord

    # A user that may restore a dump but not replay row events (no BINLOG REPLAY privilege).
    server.execute(
        "CREATE USER 'restorer'@'127.0.0.1' IDENTIFIED BY 'pw'",
        "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, CREATE VIEW, SHOW VIEW, TRIGGER, "
        "EVENT, LOCK TABLES, CREATE ROUTINE, ALTER ROUTINE, REFERENCES, EXECUTE, CREATE TEMPORARY TABLES, "
        "RELOAD, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'restorer'@'127.0.0.1'",
    )
    unregister_alias("chat")
    register_alias("chat", {**server.settings_dict("chat"), "USER": "restorer", "PASSWORD": "pw"})
    run = BinlogArchiverRun(database="chat", segment_seconds_value=0)
    run.start()
    try:
        backup_create(database="chat", trigger=Trigger.CLI)
        write_rows(server, 3)
        wait_until_streamed(run, server)
        run.poll(force=True)
    finally:
        run.stop()
    target = recovery_target_parse(to_position=":".join(map(str, master_position(server))))
    with pytest.raises(RestoreFailed, match="replaying the binlog .* failed: mariadb exited with status 1: "
                                            "ERROR 1227 .*BINLOG REPLAY.*safety backup") as failed:
        pitr_restore(database="chat", target=target, trigger=Trigger.CLI)
    assert "\n" not in str(failed.value) and "BINLOG '" not in str(failed.value)  # one line, no row images
    restore = RestoreRecord.objects.latest("created_at")
    assert restore.status == RestoreRecord.Status.FAILED and restore.safety_backup is not None
    assert DirtyDatabase.objects.filter(database="chat").exists()  # never backed up as good meanwhile
    assert backup_create_refused()


def backup_create_refused() -> bool:
    from backups_app.exceptions import BackupError

    try:
        backup_create(database="chat", trigger=Trigger.CLI)
    except BackupError:
        return True
    return False
