"""Uploaded files as one streamed tar archive, and their safe restore.

An archive is a POSIX (pax) tar, so `tar -x` reads it too:

    <every directory, file and symbolic link under the root, in sorted order>
    .opsdesk/deleted.jsonl   (incremental archives only) the files of the parent gone since, one
                             JSON string a line, when their names are known (see FileList)
    .opsdesk/chain.json      (incremental archives only) the parent archive and what changed
    .opsdesk/index.jsonl     one JSON line per entry: path, type, size, mtime, SHA-256, changed,
                             and for a file the archive holding its content ("from")
    .opsdesk/complete        the completion marker: an archive without it was cut short

A full archive holds every file. An incremental one holds every directory and link, but only the
files that are new or whose size, mtime or content changed since its parent archive; its index
still lists the whole tree, each unchanged file naming the earlier archive of the chain that holds
its bytes, so a path missing from the index was deleted (or renamed) since. Deciding what changed
needs no private key: the parent's file list (`FileList`) is kept beside the backups, its paths
replaced by keyed hashes (HMAC with the manifest signing key). The names themselves are kept in it
only when the archives are not encrypted (they show them anyway), so an encrypted installation's
list reveals no file names, and its incrementals count the deleted files without naming them.

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
import hmac
import io
import json
import os
import sqlite3
import stat
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from django.utils.translation import gettext as _

from backups_app.exceptions import DumpFailed, RestoreFailed

INDEX_NAME = ".opsdesk/index.jsonl"
CHAIN_NAME = ".opsdesk/chain.json"
DELETED_NAME = ".opsdesk/deleted.jsonl"
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
    mtime_ns: int = 0
    ctime_ns: int = 0


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
                yield Entry(path, "file", info.st_size, info.st_mtime, stat.S_IMODE(info.st_mode),
                            mtime_ns=info.st_mtime_ns, ctime_ns=info.st_ctime_ns)
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
    files: int = 0  # files in the tree (archived here or, unchanged, in an earlier archive)
    directories: int = 0
    links: int = 0
    bytes: int = 0
    changed: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    stored: int = 0  # files whose content this archive holds
    unchanged: int = 0  # files left to the earlier archives of the chain
    deleted: int = 0  # files of the parent's list no longer in the tree


# --- File lists: what an incremental compares with ------------------------------------------------
FILE_LIST_FORMAT = 1
FILE_LIST_END = b'{"complete": true}\n'
_FILE_LIST_CHECK = b"opsdesk media file list"


@dataclass(frozen=True)
class FileState:
    """One file as a backup left it: enough to tell, without reading it, whether it changed."""

    size: int
    mtime_ns: int
    ctime_ns: int
    sha256: str
    source: str  # the name of the archive holding these bytes


class FileList:
    """The files of one archive's tree, keyed by a keyed hash of their path.

    Kept in a temporary SQLite file, not in memory: a tree of millions of files costs disk, not RAM.
    """

    def __init__(self, key: bytes) -> None:
        self.key = key
        self._file = tempfile.NamedTemporaryFile(prefix="opsdesk-media-list-", suffix=".sqlite3")  # noqa: SIM115
        self._db = sqlite3.connect(self._file.name, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE files (path_key TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                         "ctime_ns INTEGER, sha256 TEXT, source TEXT, name TEXT, seen INTEGER DEFAULT 0)")
        self.count = 0

    def path_key(self, path: str) -> str:
        return hmac.new(self.key, path.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()

    def get(self, path: str) -> FileState | None:
        """The state the parent recorded for `path` (None: new); marks it as still in the tree."""
        path_key = self.path_key(path)
        row = self._db.execute("SELECT size, mtime_ns, ctime_ns, sha256, source FROM files WHERE path_key = ?",
                               (path_key,)).fetchone()
        if row:
            self._db.execute("UPDATE files SET seen = 1 WHERE path_key = ?", (path_key,))
        return FileState(*row) if row else None

    def unseen_names(self) -> Iterator[str]:
        """The known names of the files no `get` asked about: deleted (or renamed) since."""
        for (name,) in self._db.execute("SELECT name FROM files WHERE seen = 0 AND name IS NOT NULL ORDER BY name"):
            yield name

    def _add(self, path_key: str, state: FileState, name: str | None = None) -> None:
        self._db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
                         (path_key, state.size, state.mtime_ns, state.ctime_ns, state.sha256, state.source, name))
        self.count += 1

    def close(self) -> None:
        self._db.close()
        self._file.close()

    @classmethod
    def read(cls, stream: BinaryIO, key: bytes) -> FileList:
        """Load a list written by `FileListWriter`; ValueError when it is not one, was written with
        another key, or ends early (the caller then makes a full archive instead)."""
        file_list = cls(key)
        try:
            lines = iter(stream)
            header = json.loads(next(lines, b"{}"))
            if header.get("format") != FILE_LIST_FORMAT or not hmac.compare_digest(
                    str(header.get("check", "")), file_list.path_key(_FILE_LIST_CHECK.decode())):
                raise ValueError("not a media file list of this key")
            complete = False
            for line in lines:
                if line == FILE_LIST_END:
                    complete = True
                    continue
                if complete:
                    raise ValueError("data after the end of the file list")
                item = json.loads(line)
                name = item.get("n")
                file_list._add(str(item["k"]), FileState(int(item["s"]), int(item["m"]), int(item["c"]),
                                                         str(item["h"]), str(item["f"])),
                               name if isinstance(name, str) else None)
            if not complete:
                raise ValueError("the file list is cut short")
            file_list._db.commit()
        except BaseException:
            file_list.close()
            raise
        return file_list


class FileListWriter:
    """Writes the file list of the archive being made to a temporary file, one JSON line per file.

    ``keep_names``: the paths themselves are written too (only for archives that are not encrypted).
    """

    def __init__(self, key: bytes, *, keep_names: bool = False) -> None:
        self.key = key
        self.keep_names = keep_names
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the caller, after storing it
        header = {"format": FILE_LIST_FORMAT,
                  "check": hmac.new(key, _FILE_LIST_CHECK, hashlib.sha256).hexdigest()}
        self.file.write(json.dumps(header).encode() + b"\n")

    def add(self, path: str, state: FileState) -> None:
        path_key = hmac.new(self.key, path.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()
        line = {"k": path_key, "s": state.size, "m": state.mtime_ns, "c": state.ctime_ns, "h": state.sha256,
                "f": state.source}
        if self.keep_names:
            line["n"] = path
        self.file.write(json.dumps(line).encode() + b"\n")

    def finish(self) -> BinaryIO:
        self.file.write(FILE_LIST_END)
        self.file.flush()
        self.file.seek(0)
        return self.file


@dataclass
class Increment:
    """What an archive is compared with: its parent's list (None: a full archive), and who it is."""

    name: str  # the name of the archive being written
    parent: FileList | None = None
    parent_name: str = ""
    parent_sha256: str = ""
    output_list: FileListWriter | None = None


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


def _hash_file(path: Path) -> str | None:
    """The SHA-256 of a file (never through a link), None when it cannot be read any more."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb", opener=_open_no_follow) as handle:
            while chunk := handle.read(_READ_SIZE):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _unchanged(root: Path, entry: Entry, previous: FileState | None) -> bool:
    """Whether the parent archive's chain already holds this file's current bytes.

    Same size and mtime and an untouched ctime: unchanged without reading it (restic's rule). Same
    size and mtime but another ctime (content rewritten and its mtime put back, or only its inode
    touched): read and hashed, unchanged only when the hash is the same.
    """
    if previous is None or previous.size != entry.size or previous.mtime_ns != entry.mtime_ns:
        return False
    if previous.ctime_ns == entry.ctime_ns:
        return True
    return _hash_file(root / entry.path) == previous.sha256


def write_archive(root: Path, output: BinaryIO, summary: ArchiveSummary, increment: Increment | None = None) -> None:
    """Write the archive of ``root`` to ``output`` (a stream: nothing is seeked).

    With an ``increment`` whose ``parent`` is set, files unchanged since the parent are listed, not
    archived; with its ``output_list``, the tree's file list is written there for the next archive.
    """
    own_name = increment.name if increment else ""
    parent = increment.parent if increment else None
    output_list = increment.output_list if increment else None
    matched = 0
    with tempfile.TemporaryFile() as index, _UnpaddedTarFile.open(
        fileobj=output, mode="w|", format=tarfile.PAX_FORMAT
    ) as archive:
        for entry in walk(root):
            line = {"path": entry.path, "type": entry.kind, "mtime": entry.mtime}
            if entry.kind == "file":
                previous = parent.get(entry.path) if parent is not None else None
                matched += previous is not None
                if _unchanged(root, entry, previous):
                    line.update(size=entry.size, sha256=previous.sha256, changed=False, **{"from": previous.source})
                    state = FileState(entry.size, entry.mtime_ns, entry.ctime_ns, previous.sha256, previous.source)
                    summary.unchanged += 1
                else:
                    try:
                        handle = open(root / entry.path, "rb", opener=_open_no_follow)  # noqa: SIM115
                    except (FileNotFoundError, OSError):
                        summary.vanished.append(entry.path)  # deleted (or replaced by a link) meanwhile
                        continue
                    with handle:
                        reader = _FileReader(handle, entry.size)
                        archive.addfile(_tar_info(entry), io.BufferedReader(reader, _READ_SIZE))
                        reader.finish()
                    sha256 = reader.digest.hexdigest()
                    line.update(size=entry.size, sha256=sha256, changed=reader.changed, **{"from": own_name})
                    # A file torn while read gets a ctime of 0: the next archive reads it again.
                    state = FileState(entry.size, entry.mtime_ns, 0 if reader.changed else entry.ctime_ns,
                                      sha256, own_name)
                    summary.stored += 1
                    summary.bytes += entry.size
                    if reader.changed:
                        summary.changed.append(entry.path)
                summary.files += 1
                if output_list is not None:
                    output_list.add(entry.path, state)
            else:
                archive.addfile(_tar_info(entry))
                if entry.kind == "dir":
                    summary.directories += 1
                else:
                    line["target"] = entry.link_target
                    summary.links += 1
            index.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")
        if parent is not None:
            summary.deleted = parent.count - matched
            with tempfile.TemporaryFile() as deleted:
                for name in parent.unseen_names():
                    deleted.write(json.dumps(name, ensure_ascii=False).encode("utf-8", "surrogateescape") + b"\n")
                if deleted.tell():
                    size = deleted.tell()
                    deleted.seek(0)
                    _add_bytes(archive, DELETED_NAME, deleted, size)
            chain = json.dumps({
                "format": 1, "kind": "incremental", "parent": increment.parent_name,
                "parent_sha256": increment.parent_sha256, "stored": summary.stored,
                "unchanged": summary.unchanged, "deleted": summary.deleted,
            }, ensure_ascii=False).encode()
            _add_bytes(archive, CHAIN_NAME, io.BytesIO(chain), len(chain))
        size = index.tell()
        index.seek(0)
        _add_bytes(archive, INDEX_NAME, index, size)
        _add_bytes(archive, COMPLETE_NAME, io.BytesIO(COMPLETE_TEXT), len(COMPLETE_TEXT))


def _open_no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


@contextmanager
def archive_stream(root: Path, increment: Increment | None = None) -> Iterator[tuple[BinaryIO, ArchiveSummary]]:
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
                write_archive(root, output, summary, increment)
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
    #: The index of the (newest) archive: path -> (SHA-256, archive holding the bytes).
    index: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)


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


def _read_index(archive: tarfile.TarFile, member: tarfile.TarInfo) -> dict[str, tuple[str, str]]:
    """The archive's own list: path -> (SHA-256, archive holding the bytes); ("", "") for directories
    and links, and "" as the archive for a file of this very archive."""
    index = {}
    for line in archive.extractfile(member):
        if line.strip():
            entry = json.loads(line)
            index[entry["path"]] = (entry.get("sha256", ""), entry.get("from", ""))
    return index


def _check_against_index(restored: dict[str, str], index: dict[str, tuple[str, str]]) -> None:
    for path, sha256 in restored.items():
        if path not in index or index[path][0] != sha256:
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


@dataclass
class _Extraction:
    index: dict[str, tuple[str, str]] | None = None
    restored: dict[str, str] = field(default_factory=dict)
    complete: bool = False


def _extract_one(stream: BinaryIO, root: Path, summary: RestoreSummary, *, prefix: str,
                 wanted: set[str] | None = None) -> _Extraction:
    """Restore the members of one archive under ``prefix`` (only the files in ``wanted``, when given:
    an earlier archive of a chain contributes just the files its successors left unchanged)."""
    found = _Extraction()
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                if member.name == INDEX_NAME:
                    found.index = _read_index(archive, member)
                    continue
                if member.name == COMPLETE_NAME:
                    found.complete = True
                    continue
                if member.name in (CHAIN_NAME, DELETED_NAME):
                    continue
                if wanted is not None and member.name not in wanted:
                    continue
                if not _inside(prefix, member.name):
                    summary.skipped += 1
                    continue
                kind, sha256 = _restore_member(archive, member, root)
                if kind == "file":
                    found.restored[member.name] = sha256
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
    if not found.complete or found.index is None:
        raise RestoreFailed(_("The archive ends before its completion marker; it was cut short."))
    return found


#: Opens the checked stream of an earlier archive of the chain, by name (a context manager).
OpenEarlier = Callable[[str], AbstractContextManager[BinaryIO]]


def extract_archive(stream: BinaryIO, root: Path, *, prefix: str = "", delete_extraneous: bool = False,
                    own_name: str = "", chain: tuple[str, ...] = (), open_earlier: OpenEarlier | None = None,
                    ) -> RestoreSummary:
    """Restore the archive read from ``stream`` under ``root`` (only paths under ``prefix``).

    For an incremental archive (``own_name``), ``chain`` names the earlier archives, full one first,
    and ``open_earlier`` opens each: every file the index says is held by one of them is taken from
    it, so the result is the tree as it was when this archive was written; each file is written
    once, from the archive holding its latest bytes.

    Raises ``RestoreFailed`` on an unsafe member or an archive without its completion member; files
    restored before that point stay (they are inside the root). ``delete_extraneous`` removes, once
    every archive was read, what is under the root (and the prefix) but not in the index.
    """
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    prefix = str(PurePosixPath(prefix)) if prefix and prefix not in ("", ".", "/") else ""
    summary = RestoreSummary()
    newest = _extract_one(stream, root, summary, prefix=prefix)
    index = summary.index = newest.index
    restored = dict(newest.restored)
    wanted: dict[str, set[str]] = {}
    for path, (_sha256, source) in index.items():
        if source and source != own_name and _inside(prefix, path):
            wanted.setdefault(source, set()).add(path)
    unknown = sorted(set(wanted).difference(chain))
    if unknown or (wanted and open_earlier is None):
        raise RestoreFailed(_("The archive lists files held by %(name)s, which is not an earlier archive of "
                              "its chain; restore stopped.") % {"name": (unknown or sorted(wanted))[0]})
    for source in chain:
        if source not in wanted:
            continue
        with open_earlier(source) as earlier:
            found = _extract_one(earlier, root, summary, prefix=prefix, wanted=wanted[source])
        missing = sorted(wanted[source].difference(found.restored))
        if missing:
            raise RestoreFailed(_("%(path)s is missing from %(name)s, the archive that should hold it.")
                                % {"path": missing[0], "name": source})
        restored.update(found.restored)
    _check_against_index(restored, index)
    if delete_extraneous:
        summary.deleted = _delete_extraneous(root, set(index), prefix)
    return summary


def tree_problems(root: Path, index: dict[str, tuple[str, str]], *, limit: int = 5) -> list[str]:
    """Re-read and re-hash every file under ``root`` against an archive's index: what is missing,
    different or not listed (at most ``limit`` paths each)."""
    problems: list[str] = []
    seen: set[str] = set()
    for entry in walk(root):
        seen.add(entry.path)
        if entry.path not in index:
            problems.append(_("%(path)s is not in the backup's index") % {"path": entry.path})
        elif entry.kind == "file" and _hash_file(root / entry.path) != index[entry.path][0]:
            problems.append(_("%(path)s does not match its SHA-256") % {"path": entry.path})
        if len(problems) >= limit:
            return problems
    for path in sorted(set(index).difference(seen))[:limit - len(problems)]:
        problems.append(_("%(path)s is missing after the restore") % {"path": path})
    return problems

