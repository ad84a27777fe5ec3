"""Incremental media archives: only what changed since the parent, restored as a whole chain.

A restore of any archive of a chain must give back the tree exactly as it was when that archive
was written (deleted and renamed files included), a broken chain must be refused in one line before
anything is written, and retention must never cut a chain that a kept archive still needs.
"""
from __future__ import annotations

import os
import gzip
import io
import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from backups_app import media
from backups_app.exceptions import BackupError, RestoreRefused
from backups_app.models import BackupRecord, RetentionPolicy, Trigger
from backups_app.services.backup import backup_create
from backups_app.services.delete import backup_delete
from backups_app.services.restore import backup_restore
from backups_app.services.sync import backups_sync
from backups_app.services.media import file_list_name
from backups_app.services.retention import retention_apply, retention_plan
from backups_app.services.verify import backup_verify

from .test_media import LONG_NAME, populate, tree

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def media_root(settings, tmp_path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    storages = {name: dict(config) for name, config in settings.STORAGES.items()}
    storages["default"] = {**storages["default"], "OPTIONS": {"location": root}}
    settings.STORAGES = storages
    settings.MEDIA_ROOT = root
    settings.BACKUP_MEDIA_FULL_EVERY = 7
    settings.BACKUP_MEDIA_FULL_EVERY_DAYS = 7
    return root


def backup(**options) -> BackupRecord:
    return backup_create(database="media", trigger=Trigger.CLI, compression="zstd", **options)


def members(backup_dir: Path, record: BackupRecord) -> list[str]:
    listing = subprocess.run(["tar", "--zstd", "-tf", str(backup_dir / record.name)],
                             capture_output=True, text=True, check=True)
    return listing.stdout.splitlines()


def restore_exactly(record: BackupRecord, **options) -> None:
    backup_restore(backup=record, trigger=Trigger.CLI, safety_backup=False, delete_extraneous=True, **options)


def set_mtime_back(path: Path, stat_before: os.stat_result) -> None:
    os.utime(path, ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns))


def test_an_incremental_holds_only_what_changed_and_restores_the_tree_of_its_time(media_root, backup_dir):
    populate(media_root)
    full = backup()
    state_full = tree(media_root)
    assert full.media_mode == BackupRecord.MediaMode.FULL and full.parent is None

    changed = media_root / "attachments" / "00" / "message-7.bin"
    before = changed.stat()
    changed.write_bytes(bytes(reversed(changed.read_bytes())))  # same size...
    set_mtime_back(changed, before)  # ...and the same mtime: only its content (and ctime) tell
    touched = media_root / "attachments" / "01" / "message-1.bin"
    os.utime(touched, (1_600_000_000, 1_600_000_000))  # mtime only
    (media_root / "deep" / "b" / "c" / LONG_NAME).unlink()  # deleted
    (media_root / "conversas" / "ção ünïcode ✓" / "ficha técnica.pdf").rename(
        media_root / "conversas" / "renomeado ✓.pdf")  # renamed
    (media_root / "new folder").mkdir()
    first = backup()
    state_first = tree(media_root)
    assert first.media_mode == BackupRecord.MediaMode.INCREMENTAL and first.parent == full
    assert first.table_row_counts == {"files": 301, "directories": 15, "links": 1}
    stored = [name for name in members(backup_dir, first) if not name.startswith(".opsdesk")
              and (media_root / name).is_file() and not (media_root / name).is_symlink()]
    assert sorted(stored) == sorted([
        "attachments/00/message-7.bin", "attachments/01/message-1.bin", "conversas/renomeado ✓.pdf"])
    assert media.CHAIN_NAME in members(backup_dir, first)
    listed = subprocess.run(["tar", "--zstd", "-xOf", str(backup_dir / first.name), media.DELETED_NAME],
                            capture_output=True, text=True, check=True).stdout
    assert [json.loads(line) for line in listed.splitlines()] == [
        "conversas/ção ünïcode ✓/ficha técnica.pdf", f"deep/b/c/{LONG_NAME}"]  # deleted, renamed away
    assert first.size_bytes < full.size_bytes

    (media_root / "attachments" / "02" / "message-2.bin").write_bytes(b"second change")
    second = backup()
    state_second = tree(media_root)
    assert second.parent == first

    restore_exactly(first)
    assert tree(media_root) == state_first
    restore_exactly(full)
    assert tree(media_root) == state_full
    restore_exactly(second)
    assert tree(media_root) == state_second

    # Into an empty folder too: everything comes from the three archives.
    for entry in sorted(media_root.iterdir()):
        subprocess.run(["rm", "-rf", str(entry)], check=True)
    restore_exactly(first)
    assert tree(media_root) == state_first


def test_path_restores_a_subset_of_a_chain(media_root):
    populate(media_root)
    backup()
    (media_root / "attachments" / "03" / "message-3.bin").write_bytes(b"newer")
    incremental = backup()
    for folder in ("attachments", "conversas"):
        subprocess.run(["rm", "-rf", str(media_root / folder)], check=True)

    backup_restore(backup=incremental, trigger=Trigger.CLI, safety_backup=False, media_path="attachments")
    assert (media_root / "attachments" / "03" / "message-3.bin").read_bytes() == b"newer"
    assert len(list((media_root / "attachments").rglob("*.bin"))) == 300
    assert not (media_root / "conversas").exists()


def test_a_missing_link_is_refused_before_anything_is_written(media_root, backup_dir):
    populate(media_root)
    full = backup()
    (media_root / "attachments" / "00" / "message-0.bin").write_bytes(b"changed")
    incremental = backup()
    (media_root / "attachments" / "00" / "message-0.bin").write_bytes(b"the current one")
    state = tree(media_root)
    (backup_dir / full.name).unlink()

    with pytest.raises(RestoreRefused) as refused:
        restore_exactly(incremental)
    assert "chain" in str(refused.value) and full.name in str(refused.value) and "\n" not in str(refused.value)
    assert tree(media_root) == state


def test_a_damaged_link_is_refused_before_anything_is_written(media_root, backup_dir):
    populate(media_root)
    full = backup()
    (media_root / "attachments" / "00" / "message-0.bin").write_bytes(b"changed")
    incremental = backup()
    (media_root / "attachments" / "00" / "message-0.bin").write_bytes(b"the current one")
    state = tree(media_root)
    data = bytearray((backup_dir / full.name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (backup_dir / full.name).write_bytes(bytes(data))

    with pytest.raises(RestoreRefused, match="chain"):
        restore_exactly(incremental)
    assert tree(media_root) == state


def test_a_deleted_parent_record_is_a_broken_chain(media_root):
    populate(media_root)
    full = backup()
    (media_root / "x.txt").write_text("x")
    incremental = backup()
    BackupRecord.objects.filter(pk=full.pk).delete()  # behind the service's back (a hand-edited database)
    incremental.refresh_from_db()
    with pytest.raises(CommandError, match="chain of .* is broken"):
        call_command("restore_backup", incremental.name, "--noinput", "--no-safety-backup")


def test_a_periodic_full_after_n_incrementals_or_d_days(media_root, settings):
    settings.BACKUP_MEDIA_FULL_EVERY = 2
    (media_root / "a.txt").write_text("a")
    modes = []
    for number in range(4):
        (media_root / f"file-{number}.txt").write_text(str(number))
        modes.append(backup().media_mode)
    assert modes == ["full", "incremental", "incremental", "full"]

    settings.BACKUP_MEDIA_FULL_EVERY = 7
    latest_full = BackupRecord.objects.get(name=BackupRecord.objects.latest().name)
    assert backup().media_mode == "incremental"
    BackupRecord.objects.filter(pk=latest_full.pk).update(created_at=timezone.now() - timedelta(days=8))
    assert backup().media_mode == "full"

    settings.BACKUP_MEDIA_FULL_EVERY = 0
    assert backup().media_mode == "full"


def test_full_is_forced_from_the_command_line(media_root, capsys):
    (media_root / "a.txt").write_text("a")
    backup()
    call_command("backup_now", "--media", "--full")
    assert BackupRecord.objects.get(name=capsys.readouterr().out.strip()).media_mode == "full"
    with pytest.raises(CommandError, match="--full goes with --media"):
        call_command("backup_now", "--full")


def test_a_missing_or_tampered_file_list_makes_a_full_archive(media_root, backup_dir):
    (media_root / "a.txt").write_text("a")
    first = backup()
    assert (backup_dir / file_list_name(first.name)).is_file()
    (backup_dir / file_list_name(first.name)).write_bytes(b"not the list opsdesk wrote")
    assert backup().media_mode == "full"
    latest = BackupRecord.objects.latest()
    (backup_dir / file_list_name(latest.name)).unlink()
    assert backup().media_mode == "full"


def test_a_safety_backup_is_full_and_never_a_parent(media_root):
    (media_root / "a.txt").write_text("a")
    full = backup()
    (media_root / "a.txt").write_text("b")
    backup_restore(backup=full, trigger=Trigger.CLI)
    safety = BackupRecord.objects.get(kind=BackupRecord.Kind.SAFETY)
    assert safety.media_mode == "full"
    assert backup().parent == full


def test_verification_reads_the_whole_chain_and_rehashes_every_file(media_root, backup_dir):
    populate(media_root)
    full = backup()
    (media_root / "attachments" / "00" / "message-0.bin").write_bytes(b"changed")
    incremental = backup()
    verified = backup_verify(backup=incremental, source="cli")
    assert verified.verification_status == BackupRecord.VerificationStatus.VERIFIED
    assert "2 archives" in verified.verification_message and "302 files" in verified.verification_message

    data = bytearray((backup_dir / full.name).read_bytes())
    data[-100] ^= 0xFF
    (backup_dir / full.name).write_bytes(bytes(data))
    failed = backup_verify(backup=incremental, source="cli")
    assert failed.verification_status == BackupRecord.VerificationStatus.FAILED
    assert full.name in failed.verification_message


def test_tree_problems_rehash_every_file(tmp_path):
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    index = {"a": (media._hash_file(tmp_path / "a"), ""), "b": ("0" * 64, ""), "c": ("1" * 64, "")}
    problems = media.tree_problems(tmp_path, index)
    assert problems == ["b does not match its SHA-256", "c is missing after the restore"]


def test_an_archive_naming_a_source_outside_its_chain_is_refused(media_root, tmp_path):
    (media_root / "a.txt").write_text("a")
    file_list = media.FileListWriter(b"k")
    increment = media.Increment(name="mine", output_list=file_list)
    with media.archive_stream(media_root, increment) as (stream, _summary):
        archive = stream.read()

    with pytest.raises(Exception, match="not an earlier archive"):
        media.extract_archive(io.BytesIO(archive), tmp_path / "restored", own_name="someone else")


def test_deleting_a_link_others_build_on_is_refused(media_root):
    (media_root / "a.txt").write_text("a")
    full = backup()
    (media_root / "b.txt").write_text("b")
    incremental = backup()
    with pytest.raises(BackupError, match="builds on it"):
        backup_delete(backup=full, source="cli")
    backup_delete(backup=incremental, source="cli")
    backup_delete(backup=full, source="cli")
    assert not BackupRecord.objects.exists()


def test_retention_keeps_the_links_a_kept_incremental_needs(media_root, backup_dir, settings):
    settings.BACKUP_MEDIA_FULL_EVERY_DAYS = 0  # the chain is made old below, on purpose
    (media_root / "a.txt").write_text("a")
    records = []
    for number in range(3):
        (media_root / f"file-{number}.txt").write_text(str(number))
        records.append(backup())
    old = timezone.now() - timedelta(days=60)
    for record in records:
        BackupRecord.objects.filter(pk=record.pk).update(created_at=old)
    (media_root / "file-3.txt").write_text("3")
    newest = backup()
    assert [r.media_mode for r in records] + [newest.media_mode] == ["full"] + ["incremental"] * 3
    RetentionPolicy.objects.create(database="media", keep_last=1, keep_days=1)

    plan = retention_plan(database="media")
    assert plan.to_delete == []
    assert all("needed by a kept incremental" in [str(reason) for reason in item.keep_reasons]
               for item in plan.items if item.record.pk != newest.pk)

    # A new full archive: the old chain's newest member expires, and the chain goes as a whole.
    (media_root / "file-4.txt").write_text("4")
    new_full = backup(full=True)
    BackupRecord.objects.filter(pk=newest.pk).update(created_at=old)
    result = retention_apply(database="media")
    assert sorted(result.deleted) == sorted(record.name for record in [*records, newest])
    assert list(BackupRecord.objects.values_list("name", flat=True)) == [new_full.name]
    assert sorted(path.name for path in backup_dir.iterdir() if not path.name.startswith(".")) == sorted(
        [new_full.name, new_full.name + ".json", file_list_name(new_full.name)])


def test_a_rebuilt_record_finds_its_parent_again(media_root):
    (media_root / "a.txt").write_text("a")
    full = backup()
    (media_root / "b.txt").write_text("b")
    incremental = backup()
    BackupRecord.objects.filter(pk=incremental.pk).delete()
    BackupRecord.objects.filter(pk=full.pk).delete()
    backups_sync()
    rebuilt = BackupRecord.objects.get(name=incremental.name)
    assert rebuilt.media_mode == "incremental" and rebuilt.parent.name == full.name
    assert rebuilt.media_file_list_sha256 == incremental.media_file_list_sha256


def test_an_incremental_archive_is_still_a_standard_tar(media_root, backup_dir):
    (media_root / "a.txt").write_text("a")
    backup()
    (media_root / "b.txt").write_text("b")
    incremental = backup()
    names = members(backup_dir, incremental)
    assert "b.txt" in names and "a.txt" not in names
    assert names[-3:] == [media.CHAIN_NAME, media.INDEX_NAME, media.COMPLETE_NAME]


def test_an_earlier_archive_of_a_chain_is_as_hostile_as_any(tmp_path):
    from contextlib import contextmanager

    from backups_app.exceptions import RestoreFailed

    from .test_media import hostile, member

    index = b'{"path": "../escaped.txt", "type": "file", "sha256": "' + b"0" * 64 + b'", "from": "old"}\n'
    newest = hostile((member(media.INDEX_NAME), index), (member(media.COMPLETE_NAME), media.COMPLETE_TEXT))
    earlier = hostile((member("../escaped.txt"), b"evil"), (member(media.INDEX_NAME), b""),
                      (member(media.COMPLETE_NAME), media.COMPLETE_TEXT))

    @contextmanager
    def open_earlier(name):
        yield io.BytesIO(earlier)

    root = tmp_path / "root"
    with pytest.raises(RestoreFailed):
        media.extract_archive(io.BytesIO(newest), root, own_name="new", chain=("old",), open_earlier=open_earlier)
    assert not (tmp_path / "escaped.txt").exists()


def test_a_file_torn_while_read_is_read_again_by_the_next_incremental(media_root, monkeypatch):
    (media_root / "growing.log").write_bytes(b"x" * 100_000)
    (media_root / "steady.txt").write_text("steady")
    real_walk = media.walk

    def walk_then_grow(root):
        entries = list(real_walk(root))
        with open(root / "growing.log", "ab") as handle:
            handle.write(b"more")
        yield from entries

    monkeypatch.setattr(media, "walk", walk_then_grow)
    backup()
    monkeypatch.setattr(media, "walk", real_walk)
    incremental = backup()
    # Its size changed anyway; the torn copy is never taken as current, whatever the metadata says.
    assert incremental.media_mode == "incremental"
    for entry in sorted(media_root.iterdir()):
        entry.unlink()
    restore_exactly(incremental)
    assert (media_root / "growing.log").read_bytes() == b"x" * 100_000 + b"more"
    assert (media_root / "steady.txt").read_text() == "steady"


@pytest.fixture
def write_only_keys(settings):
    """Encryption on, on a host holding only the public key (no private one)."""
    from backups_app.encryption import generate_key_pair
    from secrets_app import default_manager
    from secrets_app.providers.local import LocalProvider

    identity, recipient = generate_key_pair()
    saved = dict(vars(default_manager))
    default_manager.configure(provider=LocalProvider(environ={"BACKUP_ENCRYPTION_RECIPIENTS": recipient}), ttl=0)
    settings.BACKUP_ENCRYPTION = "age"
    yield identity
    default_manager.__dict__.update(saved)


def test_a_host_without_the_private_key_makes_incrementals_and_its_file_list_names_nothing(
        media_root, backup_dir, write_only_keys):
    (media_root / "secret plan.pdf").write_text("a")
    (media_root / "gone.txt").write_text("b")
    full = backup()
    assert full.encrypted and full.media_mode == "full"
    assert "secret plan" not in gzip.decompress((backup_dir / file_list_name(full.name)).read_bytes()).decode()
    (media_root / "gone.txt").unlink()
    (media_root / "new.txt").write_text("c")
    incremental = backup()
    assert incremental.encrypted and incremental.media_mode == "incremental" and incremental.parent == full


def test_retention_keeps_the_chain_of_an_incremental_it_failed_to_delete(media_root, backup_dir, settings):
    settings.BACKUP_MEDIA_FULL_EVERY_DAYS = 0
    (media_root / "a.txt").write_text("a")
    full = backup()
    (media_root / "b.txt").write_text("b")
    incremental = backup()
    (media_root / "c.txt").write_text("c")
    new_full = backup(full=True)
    old = timezone.now() - timedelta(days=60)
    BackupRecord.objects.filter(pk__in=[full.pk, incremental.pk]).update(created_at=old)
    RetentionPolicy.objects.create(database="media", keep_last=1, keep_days=1)
    # The incremental's manifest cannot be removed (a non-empty folder under its name).
    manifest = backup_dir / (incremental.name + ".json")
    manifest.unlink()
    (manifest / "stuck").mkdir(parents=True)

    result = retention_apply(database="media")
    assert result.deleted == [] and result.databases[0].errors
    # The incremental stays, and so does the archive it builds on: it can still be restored.
    incremental.refresh_from_db()
    assert incremental.parent_id == full.pk
    assert (backup_dir / full.name).exists()
    assert sorted(BackupRecord.objects.values_list("name", flat=True)) == sorted(
        [full.name, incremental.name, new_full.name])


def test_a_chain_holding_an_archive_that_failed_verification_gets_a_new_full(media_root):
    (media_root / "a.txt").write_text("a")
    full = backup()
    (media_root / "b.txt").write_text("b")
    assert backup().media_mode == "incremental"
    BackupRecord.objects.filter(pk=full.pk).update(verification_status=BackupRecord.VerificationStatus.FAILED)
    (media_root / "c.txt").write_text("c")
    assert backup().media_mode == "full"


def test_a_killed_media_backup_leaves_no_file_list_behind(media_root, backup_dir):
    import sys

    from backups_app.pipeline import partial_path
    from backups_app.services.orphans import backups_mark_interrupted, current_host

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    name = "backup_media_20260101_000000.tar.zst"
    BackupRecord.objects.create(
        name=name, database="media", engine="media", trigger=Trigger.CLI, compression="zstd",
        status=BackupRecord.Status.RUNNING, owner_host=current_host(), owner_pid=int(finished.stdout),
        created_at=timezone.now(),
    )
    backup_dir.mkdir(parents=True, exist_ok=True)
    # Killed between storing the archive's file list and committing the archive itself.
    (backup_dir / file_list_name(name)).write_bytes(b"list")
    partial_path(backup_dir / name).write_bytes(b"archive")
    assert backups_mark_interrupted(database="media") == 1
    assert BackupRecord.objects.get(name=name).status == "interrupted"
    assert sorted(path.name for path in backup_dir.iterdir()) == []
