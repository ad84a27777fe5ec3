"""Backups of uploaded files: one streamed tar archive through the backup pipeline, restored safely.

The archive must survive what real upload folders hold (many small files, non-ASCII and very long
names, empty folders, sparse files, files changing while they are read) and a restore must treat
the archive as hostile: nothing lands outside the target root, no planted link is followed.
"""
from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from backups_app import media
from backups_app.engines import get_engine
from backups_app.exceptions import RestoreFailed
from backups_app.models import BackupRecord, Trigger
from backups_app.services.backup import backup_create
from backups_app.services.restore import backup_restore
from backups_app.services.verify import backup_verify

pytestmark = pytest.mark.django_db(transaction=True)
LONG_NAME = "a" * 200 + ".txt"


@pytest.fixture
def media_root(settings, tmp_path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    storages = {name: dict(config) for name, config in settings.STORAGES.items()}
    storages["default"] = {**storages["default"], "OPTIONS": {"location": root}}
    settings.STORAGES = storages
    settings.MEDIA_ROOT = root
    return root


def populate(root: Path) -> None:
    for number in range(300):
        folder = root / "attachments" / f"{number % 7:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"message-{number}.bin").write_bytes(os.urandom(number % 50) + b"x" * number)
    (root / "conversas" / "ção ünïcode ✓").mkdir(parents=True)
    (root / "conversas" / "ção ünïcode ✓" / "ficha técnica.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(3000))
    (root / "deep" / "b" / "c").mkdir(parents=True)
    (root / "deep" / "b" / "c" / LONG_NAME).write_text("long names survive")
    (root / "empty folder").mkdir()
    os.symlink("../attachments/00/message-0.bin", root / "deep" / "latest")


def tree(root: Path) -> dict[str, bytes | str | None]:
    """Path -> content (files), link target (links) or None (folders)."""
    found = {}
    for entry in media.walk(root):
        path = root / entry.path
        found[entry.path] = (
            path.read_bytes() if entry.kind == "file" else os.readlink(path) if entry.kind == "symlink" else None
        )
    return found


def test_a_media_backup_round_trips_through_the_backup_services(media_root):
    populate(media_root)
    before = tree(media_root)
    record = backup_create(database="media", trigger=Trigger.CLI, compression="zstd")
    assert record.status == BackupRecord.Status.SUCCESS
    assert record.name.startswith("backup_media_") and record.name.endswith(".tar.zst")
    assert record.table_row_counts == {"files": 302, "directories": 14, "links": 1}

    (media_root / "attachments" / "00" / "message-0.bin").write_bytes(b"changed")
    (media_root / "deep" / "b" / "c" / LONG_NAME).unlink()
    (media_root / "added after the backup.txt").write_text("kept: a restore never deletes by default")
    backup_restore(backup=record, trigger=Trigger.CLI)

    after = tree(media_root)
    assert after.pop("added after the backup.txt") is not None
    assert after == before


def test_the_archive_is_a_standard_tar(media_root, backup_dir):
    populate(media_root)
    record = backup_create(database="media", trigger=Trigger.CLI, compression="gzip")
    listing = subprocess.run(["tar", "-tzf", str(backup_dir / record.name)], capture_output=True, text=True, check=True)
    names = listing.stdout.splitlines()
    assert f"deep/b/c/{LONG_NAME}" in names
    assert "conversas/ção ünïcode ✓/ficha técnica.pdf" in names
    assert names[-2:] == [media.INDEX_NAME, media.COMPLETE_NAME]


def test_verification_restores_every_file_into_a_scratch_folder(media_root):
    populate(media_root)
    record = backup_create(database="media", trigger=Trigger.CLI, compression="zstd")
    verified = backup_verify(backup=record, source="cli")
    assert verified.verification_status == BackupRecord.VerificationStatus.VERIFIED
    assert not [path for path in media_root.parent.iterdir() if path.name.startswith(".opsdesk-verify")]


def test_restore_of_a_subset_and_deletion_only_when_asked(media_root, tmp_path):
    populate(media_root)
    archive = archive_bytes(media_root)
    target = tmp_path / "restored"
    target.mkdir()
    (target / "attachments").mkdir()
    (target / "attachments" / "stray.bin").write_bytes(b"not in the backup")
    (target / "outside the prefix.txt").write_text("untouched")

    summary = media.extract_archive(io.BytesIO(archive), target, prefix="attachments")
    assert summary.files == 300 and not (target / "conversas").exists()
    assert (target / "attachments" / "stray.bin").exists()

    summary = media.extract_archive(io.BytesIO(archive), target, prefix="attachments", delete_extraneous=True)
    assert summary.deleted == 1 and not (target / "attachments" / "stray.bin").exists()
    assert (target / "outside the prefix.txt").read_text() == "untouched"


def test_a_file_that_changes_while_it_is_read_never_corrupts_the_archive(media_root, tmp_path, monkeypatch):
    (media_root / "growing.log").write_bytes(b"x" * 100_000)
    (media_root / "shrinking.bin").write_bytes(b"y" * 100_000)
    real_walk = media.walk

    def walk_then_change(root):
        entries = list(real_walk(root))  # every size is taken; now the files change before they are read
        with open(root / "growing.log", "ab") as handle:
            handle.write(b"more")
        with open(root / "shrinking.bin", "r+b") as handle:
            handle.truncate(10)
        yield from entries

    monkeypatch.setattr(media, "walk", walk_then_change)
    with media.archive_stream(media_root) as (stream, summary):
        archive = stream.read()
    assert sorted(summary.changed) == ["growing.log", "shrinking.bin"]
    monkeypatch.setattr(media, "walk", real_walk)
    media.extract_archive(io.BytesIO(archive), tmp_path / "restored")
    assert (tmp_path / "restored" / "growing.log").stat().st_size == 100_000


@pytest.mark.slow
def test_a_one_gibibyte_sparse_file(media_root):
    with open(media_root / "sparse.img", "wb") as handle:
        handle.truncate(1 << 30)
    record = backup_create(database="media", trigger=Trigger.CLI, compression="zstd")
    assert record.raw_size_bytes > 1 << 30 and record.size_bytes < 1 << 20
    (media_root / "sparse.img").unlink()
    backup_restore(backup=record, trigger=Trigger.CLI, safety_backup=False)
    assert (media_root / "sparse.img").stat().st_size == 1 << 30


# --- Hostile archives -----------------------------------------------------------------------------
def archive_bytes(root: Path) -> bytes:
    with media.archive_stream(root) as (stream, _summary):
        return stream.read()


def hostile(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    output = io.BytesIO()
    with tarfile.open(fileobj=output, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, payload in members:
            info.size = len(payload) if info.isfile() else 0
            archive.addfile(info, io.BytesIO(payload) if info.isfile() else None)
    return output.getvalue()


def member(name: str, *, kind=tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


@pytest.mark.parametrize("members", [
    [(member("../escaped.txt"), b"evil")],
    [(member("/tmp/opsdesk-absolute-escape.txt"), b"evil")],
    [(member("link", kind=tarfile.SYMTYPE, link="/etc"), b""), (member("link/passwd-copy"), b"evil")],
    [(member("up", kind=tarfile.SYMTYPE, link="../.."), b"")],
    [(member("hard", kind=tarfile.LNKTYPE, link="../outside.txt"), b"")],
    [(member("device", kind=tarfile.CHRTYPE), b"")],
], ids=["dot-dot", "absolute", "symlink-then-write-through", "relative-link-out", "hardlink-out", "device"])
def test_a_hostile_archive_writes_nothing_outside_the_root(tmp_path, members):
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(RestoreFailed):
        media.extract_archive(io.BytesIO(hostile(*members)), root)
    outside = {path for path in tmp_path.rglob("*") if root not in path.parents and path != root}
    assert outside == set()
    assert not Path("/tmp/opsdesk-absolute-escape.txt").exists()


def test_a_link_planted_in_the_target_is_never_followed(media_root, tmp_path):
    (media_root / "uploads").mkdir()
    (media_root / "uploads" / "photo.jpg").write_bytes(b"jpeg")
    archive = archive_bytes(media_root)
    target = tmp_path / "target"
    elsewhere = tmp_path / "elsewhere"
    target.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, target / "uploads")  # planted by someone who can write into the target

    with pytest.raises(RestoreFailed):
        media.extract_archive(io.BytesIO(archive), target)
    assert list(elsewhere.iterdir()) == []


def test_a_cut_short_archive_is_refused(media_root, tmp_path):
    populate(media_root)
    archive = archive_bytes(media_root)
    with pytest.raises(RestoreFailed):
        media.extract_archive(io.BytesIO(archive[: len(archive) // 2]), tmp_path / "restored")
    assert media.is_complete(archive[-8192:]) and not media.is_complete(archive[: len(archive) // 2][-8192:])


def test_unknown_media_storages_are_configuration_errors():
    from django.core.exceptions import ImproperlyConfigured

    for alias in ("media:nope", "media:backups", "media:staticfiles"):
        with pytest.raises(ImproperlyConfigured):
            get_engine(alias)


def test_backup_now_media_from_the_command_line(media_root, capsys):
    from django.core.management import call_command

    populate(media_root)
    call_command("backup_now", "--media", "--compression", "zstd")
    name = capsys.readouterr().out.strip()
    assert name.startswith("backup_media_") and BackupRecord.objects.get(name=name).database == "media"


def test_restore_backup_command_restores_a_subset_and_deletes_only_when_asked(media_root):
    from django.core.management import call_command

    populate(media_root)
    record = backup_create(database="media", trigger=Trigger.CLI, compression="zstd")
    (media_root / "attachments" / "00" / "message-0.bin").write_bytes(b"changed")
    (media_root / "conversas" / "ção ünïcode ✓" / "ficha técnica.pdf").write_bytes(b"changed too")
    (media_root / "attachments" / "stray.bin").write_bytes(b"not in the backup")

    call_command("restore_backup", record.name, "--noinput", "--no-safety-backup", "--path", "attachments")
    assert (media_root / "attachments" / "00" / "message-0.bin").read_bytes() != b"changed"
    assert (media_root / "conversas" / "ção ünïcode ✓" / "ficha técnica.pdf").read_bytes() == b"changed too"
    assert (media_root / "attachments" / "stray.bin").exists()

    call_command("restore_backup", record.name, "--noinput", "--no-safety-backup", "--path", "attachments",
                 "--delete-extraneous")
    assert not (media_root / "attachments" / "stray.bin").exists()


def test_media_options_are_refused_for_a_database_backup():
    from django.core.management import CommandError, call_command
    from django.utils import timezone

    record = BackupRecord.objects.create(
        name="backup_20261129_020000.sql.gz", database="default", engine="sqlite", trigger=Trigger.CLI,
        status=BackupRecord.Status.SUCCESS, compression="gzip", sha256="0" * 64, storage_name="x",
        created_at=timezone.now(),
    )
    with pytest.raises(CommandError, match="media backups only"):
        call_command("restore_backup", record.name, "--noinput", "--path", "x")
