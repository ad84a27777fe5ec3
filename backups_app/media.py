"""Uploaded files as one streamed tar archive, and their safe restore.

An archive is a POSIX (pax) tar, so `tar -x` reads it too:

    <every directory, file and symbolic link under the root, in sorted order>
    .opsdesk/index.jsonl     one JSON line per entry: path, type, size, mtime, SHA-256, changed
    .opsdesk/complete        the completion marker: an archive without it was cut short

Backing up reads each file once, hashing what goes into the archive; memory stays flat whatever
the file count (the index is spooled to a temporary file). A file that changes while it is read
is archived with the size it had when its header was written (padded or cut to it) and flagged
`changed` in the index: the archive itself is never corrupt, and the record says which files may
be torn.

Restoring treats the archive as hostile even though its checksum matched: every member goes
through Python's `data` extraction filter (no absolute paths, no `..`, no links out of the root,
no device files), no existing symbolic link inside the target is ever followed (files are written
under a temporary name with O_NOFOLLOW|O_EXCL, then renamed over the old entry), and nothing is
deleted unless asked for (`delete_extraneous`).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from django.utils.translation import gettext as _

from backups_app.exceptions import DumpFailed, RestoreFailed

INDEX_NAME = ".opsdesk/index.jsonl"
COMPLETE_NAME = ".opsdesk/complete"
COMPLETE_TEXT = b"opsdesk media archive complete\n"
_READ_SIZE = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One thing under the root, as seen before it is archived."""

    path: str  # relative, "/"-separated
    kind: str  # "file", "dir" or "symlink"
    size: int = 0
    mtime: float = 0.0
    mode: int = 0o644
    link_target: str = ""


def walk(root: Path) -> Iterator[Entry]:
    """Every directory, regular file and symbolic link below ``root``, sorted, never following a
    link (sockets, FIFOs and devices are not uploads: skipped)."""
    stack = [""]
    while stack:
        relative = stack.pop()
        directory = root / relative if relative else root
        try:
            children = sorted(os.scandir(directory), key=lambda child: child.name)
        except FileNotFoundError:
            continue  # removed while the walk was under way
        subdirectories = []
        for child in children:
            path = f"{relative}/{child.name}" if relative else child.name
            info = child.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                yield Entry(path, "dir", mtime=info.st_mtime, mode=stat.S_IMODE(info.st_mode))
                subdirectories.append(path)
            elif stat.S_ISREG(info.st_mode):
                yield Entry(path, "file", info.st_size, info.st_mtime, stat.S_IMODE(info.st_mode))
            elif stat.S_ISLNK(info.st_mode):
                yield Entry(path, "symlink", mtime=info.st_mtime, link_target=os.readlink(child.path))
        stack.extend(reversed(subdirectories))


class _FileReader(io.RawIOBase):
    """Exactly ``size`` bytes of an open file, hashed as they are read; a file that shrank is padded
    with zeros, one that grew is cut, and either is reported as changed."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self.handle = handle
        self.remaining = size
        self.digest = hashlib.sha256()
        self.changed = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.remaining <= 0:
            return 0
        wanted = min(len(buffer), self.remaining)
        data = self.handle.read(wanted)
        if not data:
            self.changed = True  # shrank since its size was taken: pad, keep the archive valid
            data = bytes(wanted)
        buffer[: len(data)] = data
        self.digest.update(data)
        self.remaining -= len(data)
        return len(data)

    def finish(self) -> None:
        if self.handle.read(1):
            self.changed = True  # grew since its size was taken


@dataclass
class ArchiveSummary:
    files: int = 0
    directories: int = 0
    links: int = 0
    bytes: int = 0
    changed: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)


def _tar_info(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path)
    info.mtime = entry.mtime
    info.mode = entry.mode
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, entry.link_target
    else:
        info.size = entry.size
    return info


def _add_bytes(archive: tarfile.TarFile, name: str, payload: BinaryIO, size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    archive.addfile(info, payload)


class _UnpaddedTarFile(tarfile.TarFile):
    """A tar that ends right after its two end-of-archive blocks.

    tarfile pads the end to a 10 KiB record (for tape drives); without the padding the completion
    member stays inside the last 8 KiB that the backup pipeline keeps to check completeness. GNU tar
    and tarfile read such archives as usual.
    """

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if self.mode in ("a", "w", "x"):
                self.fileobj.write(tarfile.NUL * (tarfile.BLOCKSIZE * 2))
                self.offset += tarfile.BLOCKSIZE * 2
        finally:
            if not self._extfileobj:
                self.fileobj.close()


def write_archive(root: Path, output: BinaryIO, summary: ArchiveSummary) -> None:
    """Write the whole archive of ``root`` to ``output`` (a stream: nothing is seeked)."""
    with tempfile.TemporaryFile() as index, _UnpaddedTarFile.open(
        fileobj=output, mode="w|", format=tarfile.PAX_FORMAT
    ) as archive:
        for entry in walk(root):
            line = {"path": entry.path, "type": entry.kind, "mtime": entry.mtime}
            if entry.kind == "file":
                try:
                    handle = open(root / entry.path, "rb", opener=_open_no_follow)  # noqa: SIM115
                except (FileNotFoundError, OSError):
                    summary.vanished.append(entry.path)  # deleted (or replaced by a link) meanwhile
                    continue
                with handle:
                    reader = _FileReader(handle, entry.size)
                    archive.addfile(_tar_info(entry), io.BufferedReader(reader, _READ_SIZE))
                    reader.finish()
                line.update(size=entry.size, sha256=reader.digest.hexdigest(), changed=reader.changed)
                summary.files += 1
                summary.bytes += entry.size
                if reader.changed:
                    summary.changed.append(entry.path)
            else:
                archive.addfile(_tar_info(entry))
                if entry.kind == "dir":
                    summary.directories += 1
                else:
                    line["target"] = entry.link_target
                    summary.links += 1
            index.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")
        size = index.tell()
        index.seek(0)
        _add_bytes(archive, INDEX_NAME, index, size)
        _add_bytes(archive, COMPLETE_NAME, io.BytesIO(COMPLETE_TEXT), len(COMPLETE_TEXT))


def _open_no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


@contextmanager
def archive_stream(root: Path) -> Iterator[tuple[BinaryIO, ArchiveSummary]]:
    """The archive of ``root`` as a readable stream, produced by a thread through a pipe.

    Leaving the context waits for the producer; an error while archiving raises ``DumpFailed``.
    """
    if not root.is_dir():
        raise DumpFailed(_("The media folder %(root)s does not exist.") % {"root": root})
    read_end, write_end = os.pipe()
    summary = ArchiveSummary()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with open(write_end, "wb", buffering=_READ_SIZE) as output:
                write_archive(root, output, summary)
        except BaseException as error:  # noqa: BLE001 - reported when the context exits
            failure.append(error)

    producer = threading.Thread(target=produce, daemon=True, name="media-archive")
    producer.start()
    reader = open(read_end, "rb", buffering=_READ_SIZE)  # noqa: SIM115 - closed below
    try:
        yield reader, summary
    finally:
        reader.close()  # a consumer that stopped early makes the producer fail with EPIPE
        producer.join()
    if failure:
        error = failure[0]
        raise DumpFailed(_("Archiving %(root)s failed: %(error)s") % {
            "root": root, "error": getattr(error, "strerror", None) or error}) from error


def is_complete(tail: bytes) -> bool:
    """Whether the archive's last bytes hold the completion member and the end-of-archive blocks."""
    return tail.endswith(bytes(2 * tarfile.BLOCKSIZE)) and COMPLETE_TEXT in tail[-4 * tarfile.BLOCKSIZE:]


# --- Restore --------------------------------------------------------------------------------------
@dataclass
class RestoreSummary:
    files: int = 0
    directories: int = 0
    links: int = 0
    skipped: int = 0
    deleted: int = 0


def _inside(prefix: str, path: str) -> bool:
    if not prefix:
        return True
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def _safe_directory(root: Path, relative: PurePosixPath) -> Path:
    """Create (or check) every directory of ``relative`` under ``root``, refusing any component
    that exists as a symbolic link or a non-directory: a planted link is never followed."""
    current = root
    for part in relative.parts:
        current = current / part
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            os.mkdir(current, 0o755)
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise RestoreFailed(_("%(path)s is in the way (not a directory); nothing was written there.")
                                % {"path": current.relative_to(root)})
    return current


def _write_file(directory: Path, name: str, payload: BinaryIO, mode: int, mtime: float) -> str:
    """Write one file under a temporary name, then rename it into place; return its SHA-256."""
    temporary = directory / f".{name}.opsdesk-restore"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    digest = hashlib.sha256()
    try:
        with os.fdopen(descriptor, "wb") as handle:
            while chunk := payload.read(_READ_SIZE):
                digest.update(chunk)
                handle.write(chunk)
            os.fchmod(handle.fileno(), mode)
        os.utime(temporary, (mtime, mtime), follow_symlinks=False)
        os.replace(temporary, directory / name)  # replaces a link at that name, never follows it
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def _restore_member(archive: tarfile.TarFile, member: tarfile.TarInfo, root: Path) -> tuple[str, str]:
    """Restore one member; return its kind and, for a file, the SHA-256 of what was written."""
    try:
        member = tarfile.data_filter(member, str(root))
    except tarfile.FilterError as error:
        raise RestoreFailed(_("The archive holds an unsafe entry (%(error)s); restore stopped.") % {"error": error}) from None
    relative = PurePosixPath(member.name)
    if member.isdir():
        _safe_directory(root, relative)
        return "dir", ""
    directory = _safe_directory(root, relative.parent)
    if member.issym():
        temporary = directory / f".{relative.name}.opsdesk-restore"
        os.symlink(member.linkname, temporary)
        os.replace(temporary, directory / relative.name)
        return "symlink", ""
    if not member.isfile():
        raise RestoreFailed(_("The archive holds an unsupported entry %(name)s; restore stopped.") % {"name": member.name})
    payload = archive.extractfile(member)
    return "file", _write_file(directory, relative.name, payload, member.mode or 0o644, member.mtime)


def _read_index(archive: tarfile.TarFile, member: tarfile.TarInfo) -> dict[str, str]:
    """The archive's own list: path -> SHA-256 ("" for directories and links)."""
    index = {}
    for line in archive.extractfile(member):
        if line.strip():
            entry = json.loads(line)
            index[entry["path"]] = entry.get("sha256", "")
    return index


def _check_against_index(restored: dict[str, str], index: dict[str, str]) -> None:
    for path, sha256 in restored.items():
        if index.get(path) != sha256:
            raise RestoreFailed(_("%(path)s does not match the SHA-256 the archive lists for it.") % {"path": path})


def _delete_extraneous(root: Path, keep: set[str], prefix: str) -> int:
    deleted = 0
    for entry in sorted(walk(root), key=lambda entry: entry.path, reverse=True):
        if entry.path in keep or not _inside(prefix, entry.path) or entry.path.startswith(".opsdesk"):
            continue
        target = root / entry.path
        if entry.kind == "dir":
            try:
                os.rmdir(target)
            except OSError:
                continue  # not empty: it still holds kept files
        else:
            target.unlink()
        deleted += 1
    return deleted


def extract_archive(stream: BinaryIO, root: Path, *, prefix: str = "", delete_extraneous: bool = False) -> RestoreSummary:
    """Restore the archive read from ``stream`` under ``root`` (only paths under ``prefix``).

    Raises ``RestoreFailed`` on an unsafe member or an archive without its completion member; files
    restored before that point stay (they are inside the root). ``delete_extraneous`` removes, once
    the whole archive was read, what is under the root (and the prefix) but not in the archive.
    """
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    prefix = str(PurePosixPath(prefix)) if prefix and prefix not in ("", ".", "/") else ""
    summary = RestoreSummary()
    archived: dict[str, str] | None = None
    restored: dict[str, str] = {}
    complete = False
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                if member.name == INDEX_NAME:
                    archived = _read_index(archive, member)
                    continue
                if member.name == COMPLETE_NAME:
                    complete = True
                    continue
                if not _inside(prefix, member.name):
                    summary.skipped += 1
                    continue
                kind, sha256 = _restore_member(archive, member, root)
                if kind == "file":
                    restored[member.name] = sha256
                    summary.files += 1
                elif kind == "dir":
                    summary.directories += 1
                else:
                    summary.links += 1
        # A checked stream (services.reading.backup_read) proves its bytes are the recorded ones only
        # at its very end: read to it before anything relies on the archive being whole.
        while stream.read(_READ_SIZE):
            pass
    except tarfile.TarError as error:
        raise RestoreFailed(_("The archive is damaged: %(error)s") % {"error": error}) from None
    if not complete or archived is None:
        raise RestoreFailed(_("The archive ends before its completion marker; it was cut short."))
    _check_against_index(restored, archived)
    if delete_extraneous:
        summary.deleted = _delete_extraneous(root, set(archived), prefix)
    return summary
