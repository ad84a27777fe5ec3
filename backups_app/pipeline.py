"""The streaming compress + hash + store pipeline shared by every engine.

    dump tool stdout --(1 MiB reads, main thread)--> bounded queue --(writer thread)-->
        compress (gzip / zstd / none) -> SHA-256 of the compressed bytes -> temporary file
        -> fsync -> atomic rename to the final name

Memory is bounded (a few chunks in flight whatever the database size). Reading, compressing and
writing overlap: zlib, zstandard, hashlib and file writes release the GIL, so on two cores the dump
tool, the compressor and the disk work at the same time, the way a shell pipeline does. Nothing is
written to disk and read back: the file is written once, already compressed.

A file only ever appears under its final name after it was completely written and fsynced; a failed
or killed run leaves at most a hidden `.<name>.partial` temporary, which the failure path deletes
(and `backups_mark_interrupted` deletes after a kill -9).

The backup folder is writable by others too (docs/FAULTS.md: storage written by someone else):
nothing here follows a symbolic link. Temporary files are created with O_EXCL|O_NOFOLLOW, the final
name must end up being our own inode, and stored files are read through one descriptor opened with
O_NOFOLLOW that must be a regular file. Reading back, `HashingReader` and `DecompressingReader` check
the very bytes handed on: at the end of the file they raise `ChecksumMismatch` *instead of* returning
the final empty read, so a consumer that acts only on a clean end of input never acts on bad bytes.
"""
from __future__ import annotations

import errno
import hashlib
import os
import queue
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from django.core.files import File
from django.core.files.storage import Storage
from django.utils.translation import gettext as _

from backups_app.exceptions import BackupError, ChecksumMismatch, DumpFailed

CHUNK_SIZE = 1 << 20
# Chunks waiting between the reader and the writer: bounds memory at about this many MiB.
QUEUE_DEPTH = 4
# The completion markers are on the dump's last line; keep enough of the tail to find them.
TAIL_SIZE = 8192
try:
    # Intel ISA-L's deflate: a drop-in for zlib writing the same standard gzip format, several times
    # faster. Level 2 of its 0-3: on the benchmark's 340 MB dump level 2 compressed at 449 MB/s to
    # 98.2 MB, level 3 at 175 MB/s to 98.1 MB, level 1 at 492 MB/s to 99.1 MB, where zlib -6 took
    # 25 MB/s for 84.5 MB (docs/BENCHMARKS.md, "gzip with ISA-L").
    #
    # Measured again (2026-11-30, CPU seconds, 1 MiB chunks, that dump; `gzip -6` = 84.5 MB):
    #   ISA-L 1: 512 MB/s, 1.17x   ISA-L 2: 483 MB/s, 1.16x   ISA-L 3: 276 MB/s, 1.16x
    #   zlib-ng 2: 182 MB/s, 1.16x   zlib-ng 3: 145 MB/s, 1.10x   zlib-ng 4: 103 MB/s, 1.05x
    #   libdeflate 2 (gzip members of 4 MiB): 191 MB/s, 1.11x
    # ISA-L level 3 buys nothing here (the same size for 1.75x the CPU), so neither does running it
    # in more threads: on two cores the dump tool and the server already use about one core for
    # the whole dump. Only a zlib-style lazy matcher (zlib-ng 3, libdeflate 2) gets under 1.12x
    # `gzip -6`, at 2.3 to 3.3x ISA-L 2's CPU; in alternating backups on this machine zlib-ng 3 made
    # the backup 9-68 % slower than ISA-L 2. A gzip backup exists to be fast, so the level stays 2.
    from isal import isal_zlib as gzip_zlib

    GZIP_LEVEL = 2
except ImportError:  # pragma: no cover - isal is in requirements.txt; zlib is the fallback
    import zlib as gzip_zlib

    GZIP_LEVEL = 6  # the same default as `gzip`
ZSTD_LEVEL = 3  # the same default as `zstd`
EXTENSIONS = {"gzip": ".gz", "zstd": ".zst", "none": ""}

ProgressCallback = Callable[[int, int], None]


class Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Identity:
    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


def make_compressor(compression: str) -> Compressor:
    """A streaming compressor writing a standard file (`gunzip` / `zstd -d` read it)."""
    if compression == "gzip":
        # wbits=31: a real gzip header and CRC32/size trailer, not a bare zlib stream.
        return gzip_zlib.compressobj(GZIP_LEVEL, gzip_zlib.DEFLATED, 31)
    if compression == "zstd":
        import zstandard

        # threads=1: libzstd compresses in its own worker thread, overlapping our reads, hashing
        # and writes. 2 MiB jobs with a small overlap keep its buffers near 11 MiB; on
        # mysqldump-like text this came out ~1% smaller than `zstd -3` at about the same CPU,
        # where the single-threaded streaming mode of libzstd 1.5.7 was 0.5% larger
        # (benchmarks/pipeline_overhead.py; the goal is "no larger than the shell pipeline").
        parameters = zstandard.ZstdCompressionParameters.from_level(
            ZSTD_LEVEL, write_checksum=1, threads=1, job_size=2 << 20, overlap_log=4
        )
        return zstandard.ZstdCompressor(compression_params=parameters).compressobj()
    if compression == "none":
        return _Identity()
    raise ValueError(f"Unknown compression {compression!r}")


class Decompressor:
    """Streaming decompression that knows whether the compressed stream was closed properly."""

    def __init__(self, compression: str) -> None:
        self.compression = compression
        if compression == "gzip":
            self._object = gzip_zlib.decompressobj(31)
        elif compression == "zstd":
            import zstandard

            self._object = zstandard.ZstdDecompressor().decompressobj()
        elif compression == "none":
            self._object = None
        else:
            raise ValueError(f"Unknown compression {compression!r}")
        self.trailing_garbage = False

    def decompress(self, data: bytes) -> bytes:
        if self._object is None:
            return data
        if self._object.eof:
            self.trailing_garbage = self.trailing_garbage or bool(data)
            return b""
        try:
            output = self._object.decompress(data)
        except Exception as error:  # noqa: BLE001 - zlib.error, zstandard.ZstdError, isal: corrupt bytes
            raise BackupError(_("the compressed stream is corrupt (%(error)s)") % {"error": error}) from None
        if self._object.eof and self._object.unused_data:
            self.trailing_garbage = True
        return output

    @property
    def complete(self) -> bool:
        """True once the compressed stream's end (and, for gzip/zstd, its checksum) was read."""
        return self._object is None or (self._object.eof and not self.trailing_garbage)


@dataclass
class StreamResult:
    raw_size_bytes: int
    size_bytes: int
    sha256: str
    tail: bytes


# --- Where the bytes go ----------------------------------------------------------------------------
class StorageTarget:
    """A file being written into a storage: nothing is visible under `name` until `commit()`."""

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


def partial_path(final_path: Path) -> Path:
    return final_path.with_name(f".{final_path.name}.partial")


PRIVATE_FILE_MODE = 0o600
PRIVATE_DIRECTORY_MODE = 0o700


def private_directory(path: Path) -> None:
    """Create `path` (and parents) owner-only whatever the umask; an existing one is left as it is."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIRECTORY_MODE)
        os.chmod(path, PRIVATE_DIRECTORY_MODE)


def create_private_file(path: Path) -> int:
    """A new, empty file only we can read, created without following a link; its descriptor.

    Whatever stands at `path` beforehand (a stale temporary of a killed run, or a symlink or file
    planted by whoever else can write into the folder) is unlinked, never written through; if
    something is put there again in between, creating fails (O_EXCL) rather than share the name.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(path, flags, PRIVATE_FILE_MODE)
    except FileExistsError:
        os.unlink(path)  # removes a symlink itself, not its target
        descriptor = os.open(path, flags, PRIVATE_FILE_MODE)
    os.fchmod(descriptor, PRIVATE_FILE_MODE)  # umask-independent
    return descriptor


class UnsafeStoredFile(BackupError):
    """A stored name is a symbolic link, a device, a FIFO or a directory instead of a regular file."""


def open_regular_file(path: Path | str) -> BinaryIO:
    """Open a stored file for reading through one descriptor, never following a symbolic link.

    O_NONBLOCK keeps a planted FIFO from hanging the open; fstat then proves that this very
    descriptor is a regular file. Raises FileNotFoundError or UnsafeStoredFile.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a symlink
            raise UnsafeStoredFile(
                _("%(name)s is a symbolic link; stored files are never followed") % {"name": Path(path).name}
            ) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise UnsafeStoredFile(_("%(name)s is not a regular file") % {"name": Path(path).name})
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def open_stored(storage: Storage, name: str) -> BinaryIO:
    """Open `name` of a storage for reading; a local one never through a symbolic link."""
    try:
        path = storage.path(name)
    except NotImplementedError:
        return storage.open(name, "rb")
    return open_regular_file(path)


class LocalStorageTarget(StorageTarget):
    """Temporary file beside the final one, fsync, then an atomic link to the final name.

    os.link (then unlink of the temporary) rather than os.replace: it fails instead of silently
    overwriting when a file already has the final name. The temporary is created O_EXCL|O_NOFOLLOW,
    0600, and after the link the final name must be our own inode: a temporary swapped for a
    symlink between our write and the link is caught there.
    """

    def __init__(self, storage: Storage, name: str) -> None:
        self.final_path = Path(storage.path(name))
        self.temporary_path = partial_path(self.final_path)
        private_directory(self.final_path.parent)
        self._fd = create_private_file(self.temporary_path)
        self._identity = _identity(os.fstat(self._fd))

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def commit(self) -> None:
        os.fsync(self._fd)
        os.link(self.temporary_path, self.final_path, follow_symlinks=False)
        try:
            if _identity(os.lstat(self.final_path)) != self._identity:
                raise DumpFailed(
                    _("%(name)s was replaced while it was being written") % {"name": self.final_path.name}
                )
        except BaseException:
            self.final_path.unlink(missing_ok=True)
            raise
        os.close(self._fd)
        self._fd = None
        self.temporary_path.unlink(missing_ok=True)
        directory = os.open(self.final_path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # makes the new directory entry itself durable
        finally:
            os.close(directory)

    def abort(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        self.temporary_path.unlink(missing_ok=True)


def _identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


class SpooledStorageTarget(StorageTarget):
    """For storages without local paths (S3...): spool to a temporary file, then `storage.save()`.

    The storage's own save is the commit; a name change by the storage (file exists) is an error.
    """

    def __init__(self, storage: Storage, name: str) -> None:
        self.storage = storage
        self.name = name
        self._file = tempfile.TemporaryFile()

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def commit(self) -> None:
        self._file.flush()
        self._file.seek(0)
        saved_name = self.storage.save(self.name, File(self._file, name=self.name))
        self._file.close()
        if saved_name != self.name:
            self.storage.delete(saved_name)
            raise DumpFailed(_("%(name)s already exists in the storage") % {"name": self.name})

    def abort(self) -> None:
        self._file.close()


def open_target(storage: Storage, name: str) -> StorageTarget:
    try:
        storage.path(name)
    except NotImplementedError:
        return SpooledStorageTarget(storage, name)
    return LocalStorageTarget(storage, name)


def write_small_file(storage: Storage, name: str, content: bytes) -> None:
    """Write a small file (a manifest) with the same temporary + fsync + rename guarantee."""
    target = open_target(storage, name)
    try:
        target.write(content)
        target.commit()
    except BaseException:
        target.abort()
        raise


# --- The pipeline ---------------------------------------------------------------------------------
_END = object()


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror  # "No space left on device", without the path
    return str(error) or error.__class__.__name__


class _Writer(threading.Thread):
    """Compresses, hashes and writes the chunks the reader hands over."""

    def __init__(self, target: StorageTarget, compressor: Compressor) -> None:
        super().__init__(daemon=True, name="backup-writer")
        self.target = target
        self.compressor = compressor
        self.chunks: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
        self.digest = hashlib.sha256()
        self.size_bytes = 0
        self.error: BaseException | None = None

    def _emit(self, data: bytes) -> None:
        if data:
            self.digest.update(data)
            self.target.write(data)
            self.size_bytes += len(data)

    def run(self) -> None:
        while True:
            chunk = self.chunks.get()
            if chunk is _END:
                break
            if self.error is not None:
                continue  # keep draining so that the reader never blocks on a full queue
            try:
                self._emit(self.compressor.compress(chunk))
            except BaseException as error:  # noqa: BLE001 - handed to the reader thread
                self.error = error
        if self.error is None:
            try:
                self._emit(self.compressor.flush())
            except BaseException as error:  # noqa: BLE001
                self.error = error


class PendingFile:
    """A completely written, checked backup file that is not yet visible under its final name.

    `commit()` (fsync + atomic rename) only once every stage has exited successfully; `abort()`
    removes the temporary. Exactly one of them must be called.
    """

    def __init__(self, target: StorageTarget, result: StreamResult) -> None:
        self.target = target
        self.result = result

    def commit(self) -> None:
        try:
            self.target.commit()
        except OSError as error:
            self.target.abort()
            raise DumpFailed(_describe(error)) from error
        except BaseException:
            self.target.abort()
            raise

    def abort(self) -> None:
        self.target.abort()


def stream_to_storage(
    source: BinaryIO,
    *,
    storage: Storage,
    name: str,
    compression: str,
    is_complete: Callable[[bytes], bool],
    progress: ProgressCallback | None = None,
    progress_interval: float = 1.0,
    compressor: Compressor | None = None,
    target: StorageTarget | None = None,
) -> PendingFile:
    """Stream `source` into a temporary file for `name`, compressed and hashed.

    Returns the PendingFile (sizes, SHA-256, the dump's tail) for the caller to commit once the dump
    tool's exit status is known. Raises DumpFailed, leaving no file at all, when the dump is empty,
    lacks its completion marker, or compressing/writing fails (e.g. "No space left on device").
    Errors raised by `source.read()` propagate unchanged, after the temporary file is removed.
    `compressor` replaces the standard one (tests inject a failing compressor through it).
    `target` replaces the standard temporary file (re-encryption replaces an existing name).
    `progress(raw_bytes_read, compressed_bytes_written)` is called at most every `progress_interval`.
    """
    target = target or open_target(storage, name)
    writer = _Writer(target, compressor or make_compressor(compression))
    writer.start()
    raw_size = 0
    tail = b""
    last_report = time.monotonic()
    try:
        try:
            while chunk := source.read(CHUNK_SIZE):
                raw_size += len(chunk)
                tail = (tail + chunk[-TAIL_SIZE:])[-TAIL_SIZE:]
                writer.chunks.put(chunk)
                if writer.error is not None:
                    break
                if progress is not None and time.monotonic() - last_report >= progress_interval:
                    last_report = time.monotonic()
                    progress(raw_size, writer.size_bytes)
        finally:
            writer.chunks.put(_END)
            writer.join()
        if writer.error is not None:
            raise DumpFailed(_describe(writer.error)) from writer.error
        if raw_size == 0:
            raise DumpFailed(_("the dump produced no data"))
        if not is_complete(tail):
            raise DumpFailed(_("the dump is incomplete: its completion marker is missing"))
        if progress is not None:
            # Inside the try: a failing last report (the control database "locked" while a SQLite
            # dump reads it) must remove the temporary like any other failure.
            progress(raw_size, writer.size_bytes)
    except BaseException:
        target.abort()
        raise
    return PendingFile(target, StreamResult(
        raw_size_bytes=raw_size, size_bytes=writer.size_bytes, sha256=writer.digest.hexdigest(), tail=tail
    ))


# --- Reading back ---------------------------------------------------------------------------------
@dataclass
class CheckResult:
    sha256: str
    size_bytes: int
    raw_size_bytes: int
    stream_complete: bool
    tail: bytes


def stream_check(stored: BinaryIO, *, compression: str) -> CheckResult:
    """Read a stored file once: its SHA-256, size, decompressed size, tail and stream integrity."""
    digest = hashlib.sha256()
    decompressor = Decompressor(compression)
    size = raw_size = 0
    tail = b""
    while chunk := stored.read(CHUNK_SIZE):
        digest.update(chunk)
        size += len(chunk)
        plain = decompressor.decompress(chunk)
        raw_size += len(plain)
        if plain:
            tail = (tail + plain[-TAIL_SIZE:])[-TAIL_SIZE:]
    return CheckResult(
        sha256=digest.hexdigest(), size_bytes=size, raw_size_bytes=raw_size,
        stream_complete=decompressor.complete, tail=tail,
    )


class HashingReader:
    """A stored file read once, its bytes hashed and counted on the way to whoever reads them.

    At the end of the file it compares the SHA-256 and size with those recorded when the backup was
    written and raises `ChecksumMismatch` *instead of* returning the final empty read; it raises as
    soon as more bytes than recorded arrive. So a consumer that acts only after a clean end of
    input (PostgreSQL's COMMIT, MariaDB's RENAME, SQLite's copy, a download's last chunk) never acts
    on bytes other than the ones recorded. `verified` is True once the end was reached and matched.
    An empty recorded checksum never matches: such a file is not trusted.
    """

    def __init__(self, stored: BinaryIO, *, sha256: str, size_bytes: int | None, name: str = "") -> None:
        self.stored = stored
        self.expected_sha256 = sha256
        self.expected_size = size_bytes
        self.name = name
        self.digest = hashlib.sha256()
        self.size_bytes = 0
        self.verified = False

    def _mismatch(self, reason: str) -> ChecksumMismatch:
        return ChecksumMismatch(
            _("Backup %(name)s does not match what was recorded when it was written (%(reason)s); "
              "the stored file changed or is damaged") % {"name": self.name, "reason": reason}
        )

    def read(self, size: int = -1) -> bytes:
        data = self.stored.read(size)
        if data:
            self.digest.update(data)
            self.size_bytes += len(data)
            if self.expected_size is not None and self.size_bytes > self.expected_size:
                raise self._mismatch(_("longer than recorded"))
            return data
        if self.verified:
            return b""
        if self.expected_size is not None and self.size_bytes != self.expected_size:
            raise self._mismatch(_("%(actual)d bytes instead of %(expected)d") % {
                "actual": self.size_bytes, "expected": self.expected_size})
        if not self.expected_sha256 or self.digest.hexdigest() != self.expected_sha256:
            raise self._mismatch(_("SHA-256"))
        self.verified = True
        return b""

    def readable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return getattr(self.stored, "closed", False)

    def close(self) -> None:
        self.stored.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class DecompressingReader:
    """A read()-able plain stream over a stored compressed file (what `engine.restore()` reads).

    A background thread reads and decompresses ahead (zlib and zstandard release the GIL), so
    decompression overlaps with the restore tool consuming the stream, as in `zcat file | mysql`.
    Memory stays bounded: small compressed reads and a short queue of decompressed pieces. A stream
    that ends before its compressed end (or is corrupt) raises BackupError from read().

    With `is_complete` (the engine's completion-marker check) and `raw_size_bytes`, the end of the
    plain stream is checked too: a stream that does not end properly, decompresses to another size
    or lacks its marker raises `ChecksumMismatch` from the read that would have returned the end.
    Whatever `stored` raises at its end (a `HashingReader`'s mismatch) is raised the same way.
    `verified` is True once the consumer has read the end of a stream that passed every check.
    """

    READ_SIZE = 64 * 1024
    QUEUE_DEPTH = 8

    def __init__(
        self,
        stored: BinaryIO,
        *,
        compression: str,
        is_complete: Callable[[bytes], bool] | None = None,
        raw_size_bytes: int | None = None,
        name: str = "",
    ) -> None:
        self.stored = stored
        self.is_complete = is_complete
        self.expected_raw_size = raw_size_bytes
        self.name = name
        self.verified = False
        self.error: BaseException | None = None
        self.decompressor = Decompressor(compression)
        self._pieces: queue.Queue = queue.Queue(maxsize=self.QUEUE_DEPTH)
        self._stop = threading.Event()
        self._current = b""
        self._position = 0
        self._finished = False
        self._thread = threading.Thread(target=self._produce, daemon=True, name="restore-decompress")
        self._thread.start()

    def _abandoned(self) -> bool:
        # Callers may just close the stored file (`with backup_open(...) as stored:`) without
        # closing this reader: the thread must not outlive it.
        return self._stop.is_set() or getattr(self.stored, "closed", False)

    def _put(self, item) -> bool:
        while not self._abandoned():
            try:
                self._pieces.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        raw_size = 0
        tail = b""
        try:
            while not self._abandoned():
                chunk = self.stored.read(self.READ_SIZE)
                if not chunk:
                    if not self.decompressor.complete:
                        raise ChecksumMismatch(_("the compressed stream ended early"))
                    self._check_end(raw_size, tail)
                    break
                plain = self.decompressor.decompress(chunk)
                if plain:
                    raw_size += len(plain)
                    tail = (tail + plain[-TAIL_SIZE:])[-TAIL_SIZE:]
                    if not self._put(plain):
                        return
            self._put(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            self._put(error)

    def _check_end(self, raw_size: int, tail: bytes) -> None:
        if self.expected_raw_size is not None and raw_size != self.expected_raw_size:
            raise ChecksumMismatch(
                _("Backup %(name)s decompresses to %(actual)d bytes instead of %(expected)d")
                % {"name": self.name, "actual": raw_size, "expected": self.expected_raw_size}
            )
        if self.is_complete is not None and not self.is_complete(tail):
            raise ChecksumMismatch(
                _("Backup %(name)s lacks the dump's completion marker on its last line") % {"name": self.name}
            )

    def _advance(self) -> bool:
        """Make the next piece current; False at the end of the stream."""
        if self._finished:
            return False
        item = self._pieces.get()
        if item is _END:
            self._finished = True
            self.verified = bool(getattr(self.stored, "verified", True))
            return False
        if isinstance(item, BaseException):
            self._finished = True
            self.error = item  # kept: an engine may report the stopped tool instead of this
            raise item
        self._current, self._position = item, 0
        return True

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        parts = []
        wanted = size if size is not None and size >= 0 else float("inf")
        while wanted > 0:
            if self._position >= len(self._current) and not self._advance():
                break
            available = len(self._current) - self._position
            if self._position == 0 and available <= wanted:
                piece = self._current  # whole piece: no copy
            else:
                piece = self._current[self._position : self._position + int(min(available, wanted))]
            self._position += len(piece)
            wanted -= len(piece)
            parts.append(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readline(self, size: int = -1) -> bytes:
        parts = []
        while True:
            if self._position >= len(self._current) and not self._advance():
                break
            index = self._current.find(b"\n", self._position)
            end = len(self._current) if index < 0 else index + 1
            parts.append(self._current[self._position : end])
            self._position = end
            if index >= 0:
                break
        return b"".join(parts)

    def __iter__(self):
        while line := self.readline():
            yield line

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.stored.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
