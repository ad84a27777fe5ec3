"""Continuous binlog archiving for MariaDB/MySQL, and what it makes recoverable.

`BinlogArchiverRun` is the long-running part of `manage.py archive_binlogs`: `mariadb-binlog --raw
--stop-never` writes the server's binlog files into `BACKUP_DIR/binlogs/<alias>/live/` event by
event (the local recovery point: a restore reads the complete events there too), and every poll
cuts the new complete events into a segment when the file rotated or BINLOG_SEGMENT_SECONDS have
passed. A closed segment is compressed, SHA-256'd, written with a JSON manifest (temporary name,
fsync, rename, like backups), recorded as a BinlogSegment and copied offsite when S3 is configured.

Restarted, the run resumes where the archive ends: the file of the newest segment is streamed again
from its start (binlog files are append-only, so its bytes are the same) and only what lies past
the archived end becomes a new segment: no gap, no duplicate. When the server purged that file in
the meantime, the archive continues with the oldest file the server still has and the hole shows.

`binlog_window()` turns the segments, the base backups' coordinates and the archiver's heartbeat
into the recoverable window(s) of a database and the gaps between them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import socket
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import Storage
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from backups_app import locks
from backups_app.binlog_events import (
    NotABinlog,
    binlog_sequence,
    events,
    next_binlog_name,
)
from backups_app.conf import app_settings
from backups_app.encryption import EXTENSION as ENCRYPTED_EXTENSION
from backups_app.encryption import (
    DecryptingReader,
    EncryptingCompressor,
    EncryptionKeyMissing,
    configured_identities,
    configured_recipient_fingerprints,
    configured_recipients,
    encryption_enabled,
)
from backups_app.engines import get_engine
from backups_app.engines.binlog import (
    BinlogSettings,
    BinlogUnavailable,
    MySQLBinlogTools,
)
from backups_app.exceptions import BackupError
from backups_app.manifest import manifest_is_signed, manifest_sign
from backups_app.models import BackupRecord, BinlogArchiver, BinlogSegment
from backups_app.pipeline import (
    EXTENSIONS,
    DecompressingReader,
    make_compressor,
    stream_to_storage,
    write_small_file,
)
from backups_app.storage import backup_storage

logger = logging.getLogger(__name__)

SEGMENT_MANIFEST_FORMAT = 1
#: In the live folder: the streaming client's pid, so that a run after a kill -9 can stop it.
STREAMER_PID_FILE = ".streamer.pid"
#: An archiver whose heartbeat is older than this is shown as down.
ARCHIVER_DOWN_AFTER_SECONDS = 60
UNAVAILABLE_HELP = gettext_lazy(
    "point-in-time recovery unavailable: enable log_bin and binlog_format=ROW "
    "(add to the server's [mariadbd] section: log_bin=mysql-bin, binlog_format=ROW, server_id=1, "
    "then restart it)"
)


def _segment_folder(database: str) -> str:
    return "binlogs/" + re.sub(r"[^A-Za-z0-9_.-]+", "-", database)


def live_directory(database: str) -> Path:
    return Path(app_settings.BACKUP_DIR) / _segment_folder(database) / "live"


def segment_seconds() -> float:
    return float(app_settings.BINLOG_SEGMENT_SECONDS)


def binlog_tools(database: str) -> MySQLBinlogTools:
    return MySQLBinlogTools(get_engine(database))


def binlog_position_key(binlog_file: str, position: int) -> tuple[int, int]:
    return binlog_sequence(binlog_file)[1], position


# --- Segments -------------------------------------------------------------------------------------
def _segment_summary(content: bytes, start: int) -> dict:
    first = last = None
    first_gtid = last_gtid = ""
    ends_file = False
    for event in events(content, start=max(start, 4), offset=start):
        first = first or event
        last = event
        if event.gtid:
            first_gtid = first_gtid or event.gtid
            last_gtid = event.gtid
        ends_file = event.ends_file and event.end_position == start + len(content)
    return {
        "first_event_at": first.when if first else None, "last_event_at": last.when if last else None,
        "first_gtid": first_gtid, "last_gtid": last_gtid, "ends_file": ends_file,
    }


def segment_close(*, database: str, binlog_file: str, content: bytes, start: int) -> BinlogSegment:
    """Store `content`, the bytes of `binlog_file` from position `start` on, as a segment."""
    end = start + len(content)
    storage = backup_storage()
    compression = app_settings.BACKUP_COMPRESSION
    encrypted = encryption_enabled()
    name = (f"{_segment_folder(database)}/{binlog_file}.{start:012d}-{end:012d}{EXTENSIONS[compression]}"
            + (ENCRYPTED_EXTENSION if encrypted else ""))
    summary = _segment_summary(content, start)
    for stale in (name, name + ".json"):
        # A run killed between writing the file and recording it left these: the same bytes again.
        if storage.exists(stale) and not BinlogSegment.objects.filter(name=name).exists():
            storage.delete(stale)
    # Encrypted in the pipeline, like backups: compress -> encrypt -> SHA-256 -> fsync -> rename.
    compressor = EncryptingCompressor(make_compressor(compression), configured_recipients()) if encrypted else None
    pending = stream_to_storage(BytesIO(content), storage=storage, name=name, compression=compression,
                                is_complete=lambda tail: True, compressor=compressor)
    result = pending.result
    try:
        segment = BinlogSegment(
            database=database, name=name, storage_name=name, binlog_file=binlog_file, start_position=start,
            end_position=end, compression=compression, raw_size_bytes=result.raw_size_bytes,
            size_bytes=result.size_bytes, sha256=result.sha256, encrypted=encrypted,
            encryption_recipients=configured_recipient_fingerprints() if encrypted else [], **summary,
        )
    except BaseException:
        pending.abort()  # the recipients' secret unreadable now, say: no temporary left behind
        raise
    try:
        pending.commit()
        write_small_file(storage, name + ".json", _segment_manifest(segment))
        segment.save()
    except BaseException:
        for leftover in (name, name + ".json"):
            if storage.exists(leftover):
                storage.delete(leftover)
        raise
    _segment_offsite(segment)
    return segment


def _segment_manifest(segment: BinlogSegment) -> bytes:
    data = {
        "format": SEGMENT_MANIFEST_FORMAT, "kind": "binlog_segment", "name": segment.name,
        "database": segment.database, "binlog_file": segment.binlog_file,
        "start_position": segment.start_position, "end_position": segment.end_position,
        "ends_file": segment.ends_file, "first_gtid": segment.first_gtid, "last_gtid": segment.last_gtid,
        "first_event_at": segment.first_event_at.isoformat() if segment.first_event_at else None,
        "last_event_at": segment.last_event_at.isoformat() if segment.last_event_at else None,
        "compression": segment.compression, "raw_size_bytes": segment.raw_size_bytes,
        "size_bytes": segment.size_bytes, "sha256": segment.sha256,
        "encrypted": segment.encrypted, "encryption_recipients": segment.encryption_recipients,
    }
    # Signed like the backups' manifests: a manifest opsdesk did not write is never adopted.
    return json.dumps(manifest_sign(data), indent=2, sort_keys=True).encode()


def _segment_offsite(segment: BinlogSegment) -> None:
    """Copy a closed segment (and its manifest) offsite and read it back; failures are retried."""
    from backups_app.storage import (
        offsite_enabled,
        offsite_object_open,
        offsite_storage,
        sha256_and_size,
    )

    if not offsite_enabled():
        return
    local = backup_storage()
    try:
        storage = offsite_storage()
        with local.open(segment.storage_name, "rb") as stream:
            saved = storage.save(segment.storage_name, File(stream, name=segment.storage_name))
        with offsite_object_open(storage, saved) as stream:
            sha256, size = sha256_and_size(stream)
        if (sha256, size) != (segment.sha256, segment.size_bytes):
            storage.delete(saved)
            raise BackupError(_("the offsite copy does not read back identical"))
        with local.open(segment.storage_name + ".json", "rb") as stream:
            storage.save(segment.storage_name + ".json", File(stream, name=segment.storage_name + ".json"))
    except Exception as error:  # noqa: BLE001 - the local segment is kept; the next poll retries
        segment.offsite_status = BackupRecord.OffsiteStatus.FAILED
        segment.offsite_error = f"{type(error).__name__}: {error}"[:2000]
        logger.warning("offsite copy of binlog segment %s failed: %s", segment.name, segment.offsite_error)
    else:
        segment.offsite_status = BackupRecord.OffsiteStatus.UPLOADED
        segment.offsite_name, segment.offsite_error = saved, ""
    segment.save(update_fields=["offsite_status", "offsite_name", "offsite_error"])


def binlog_segments_sync() -> int:
    """Rebuild the records of stored segments from their manifests; how many were created.

    The segments outlive opsdesk's own database: after it is lost or restored to an older state,
    this finds what the archive holds again (a manifest whose file is missing is skipped).
    """
    storage = backup_storage()
    try:
        folders, _files = storage.listdir("binlogs")
    except (FileNotFoundError, NotImplementedError):
        return 0
    created = 0
    for folder in folders:
        if folder.startswith("."):
            continue
        _subfolders, files = storage.listdir(f"binlogs/{folder}")
        for manifest in sorted(f for f in files if f.endswith(".json") and not f.startswith(".")):
            try:
                with storage.open(f"binlogs/{folder}/{manifest}", "rb") as handle:
                    data = json.loads(handle.read(1 << 20))
                fields = _segment_fields_from_manifest(data, expected_name=f"binlogs/{folder}/{manifest[:-5]}")
            except (ValueError, KeyError, TypeError, OSError) as error:
                logger.warning("Skipping binlog manifest %s/%s: %s", folder, manifest, error)
                continue
            if not storage.exists(fields["name"]) or BinlogSegment.objects.filter(name=fields["name"]).exists():
                continue
            BinlogSegment.objects.create(**fields)
            created += 1
    return created


def _segment_fields_from_manifest(data: dict, *, expected_name: str) -> dict:
    if data.get("format") != SEGMENT_MANIFEST_FORMAT or data.get("kind") != "binlog_segment":
        raise ValueError("not an opsdesk binlog segment manifest")
    if not manifest_is_signed(data):
        raise ValueError("not signed by opsdesk (written or changed by someone else)")
    if data["name"] != expected_name:
        raise ValueError(f"describes another file ({data['name']})")
    fields = {key: data[key] for key in (
        "name", "database", "binlog_file", "start_position", "end_position", "ends_file", "first_gtid",
        "last_gtid", "compression", "raw_size_bytes", "size_bytes", "sha256")}
    for key in ("first_event_at", "last_event_at"):
        fields[key] = datetime.fromisoformat(data[key]) if data.get(key) else None
    # Manifests written before segments were encrypted lack these: such a segment is plain.
    fields["encrypted"] = bool(data.get("encrypted", False))
    fields["encryption_recipients"] = list(data.get("encryption_recipients") or [])
    if fields["encrypted"] != fields["name"].endswith(ENCRYPTED_EXTENSION):
        raise ValueError("its name and its encryption disagree")
    fields["storage_name"] = data["name"]
    return fields


def segment_identities(segments) -> list:
    """The private keys that decrypt `segments` ([] when none is encrypted). EncryptionKeyMissing
    (a refusal, one line) when one is encrypted and this host has no private key, so a restore or a
    check stops before anything is read or changed."""
    encrypted = next((segment for segment in segments if segment.encrypted), None)
    if encrypted is None:
        return []
    identities = configured_identities()
    if not identities:
        raise EncryptionKeyMissing(
            _("Binlog segment %(name)s is encrypted and BACKUP_ENCRYPTION_IDENTITY is not configured on this host.")
            % {"name": encrypted.name}
        )
    return identities


def _segment_stored_bytes(segment: BinlogSegment) -> bytes:
    """The stored file of a segment, read once and checked against its recorded SHA-256 and size."""
    storage = backup_storage()
    try:
        with storage.open(segment.storage_name, "rb") as stored:
            stored_bytes = stored.read()
    except FileNotFoundError:
        raise BackupError(_("binlog segment %(name)s is missing") % {"name": segment.name}) from None
    if hashlib.sha256(stored_bytes).hexdigest() != segment.sha256 or len(stored_bytes) != segment.size_bytes:
        raise BackupError(_("binlog segment %(name)s does not match its SHA-256") % {"name": segment.name})
    return stored_bytes


def segment_read(*, segment: BinlogSegment, identities: list | None = None) -> bytes:
    """The raw bytes of a segment, checked against its SHA-256 and sizes; BackupError otherwise.

    The stored file is read once; the bytes that were hashed are the bytes returned. An encrypted
    segment is decrypted with `identities` (default: BACKUP_ENCRYPTION_IDENTITY): age authenticates
    every chunk, so a wrong key or a damaged file raises, never hands out other bytes. Without a
    key, EncryptionKeyMissing before the file is read.
    """
    if segment.encrypted and not identities:
        identities = segment_identities([segment])
    compressed = BytesIO(_segment_stored_bytes(segment))
    if segment.encrypted:
        with DecryptingReader(compressed, identities) as decrypted:
            try:
                compressed = BytesIO(decrypted.read())
            except BackupError:
                # The bytes are exactly the ones recorded (SHA-256 above), so the key is wrong: a
                # configuration problem to refuse on, not a corrupt segment to mark.
                raise EncryptionKeyMissing(
                    _("BACKUP_ENCRYPTION_IDENTITY does not decrypt binlog segment %(name)s (wrong key?).")
                    % {"name": segment.name}
                ) from None
    with DecompressingReader(compressed, compression=segment.compression) as plain:
        raw = plain.read()
    if len(raw) != segment.raw_size_bytes or len(raw) != segment.end_position - segment.start_position:
        raise BackupError(_("binlog segment %(name)s decompresses to an unexpected size") % {"name": segment.name})
    return raw


def _check_identities() -> list:
    """The configured private keys, or [] (none, or unreadable): the archiver's checks run without."""
    try:
        return configured_identities()
    except BackupError:
        return []


def segments_check(*, database: str) -> list[BinlogSegment]:
    """Read every segment of `database`; mark the missing and corrupt ones. Returns those.

    The archiver runs this on hosts that only write (no BACKUP_ENCRYPTION_IDENTITY): there an
    encrypted segment is checked against its recorded SHA-256 and size, which proves its stored
    bytes intact; with the key it is also decrypted and decompressed. A key that does not decrypt
    is a configuration problem, logged, never a reason to mark an intact segment corrupt.
    """
    bad = []
    identities = _check_identities()
    for segment in BinlogSegment.objects.filter(database=database):
        try:
            if segment.encrypted and not identities:
                _segment_stored_bytes(segment)
            else:
                segment_read(segment=segment, identities=identities)
            status, message = BinlogSegment.Status.OK, ""
        except EncryptionKeyMissing as error:
            logger.warning("%s", error)
            status, message = BinlogSegment.Status.OK, ""
        except BackupError as error:
            status = BinlogSegment.Status.MISSING if "missing" in str(error) else BinlogSegment.Status.CORRUPT
            message = str(error)
        if (segment.status, segment.status_message) != (status, message):
            segment.status, segment.status_message = status, message
            segment.save(update_fields=["status", "status_message"])
        if status != BinlogSegment.Status.OK:
            bad.append(segment)
    return bad


# --- The archiver ---------------------------------------------------------------------------------
def _ordered_segments(database: str) -> list[BinlogSegment]:
    segments = list(BinlogSegment.objects.filter(database=database))
    segments.sort(key=lambda s: binlog_position_key(s.binlog_file, s.start_position))
    return segments


def _archived_end(database: str, binlog_file: str) -> tuple[int, bool]:
    """(end position, whether the file is finished) of what is archived of `binlog_file`."""
    last = BinlogSegment.objects.filter(database=database, binlog_file=binlog_file).order_by("-end_position").first()
    return (last.end_position, last.ends_file) if last else (0, False)


class BinlogArchiverRun:
    """One run of the archiver of one database alias: `start()`, `poll()` repeatedly, `stop()`.

    The command loops over `poll()`; tests drive it step by step. A kill -9 at any point is safe:
    the next run finds the archive's end in the records and resumes from there.
    """

    def __init__(self, *, database: str, segment_seconds_value: float | None = None) -> None:
        self.database = database
        self.tools = binlog_tools(database)
        self.segment_seconds = segment_seconds() if segment_seconds_value is None else segment_seconds_value
        self.directory = live_directory(database)
        self._stack: ExitStack | None = None
        self._lock: ExitStack | None = None
        self.process = None
        self.last_close = time.monotonic()
        self.first_file = ""

    # --- life cycle ---
    def resume_file(self, server: BinlogSettings) -> str:
        """The server file to stream from: where the archive ends, or the oldest the server has."""
        server_files = [name for name, _size in server.files]
        segments = _ordered_segments(self.database)
        if not segments:
            return server_files[0]
        last = segments[-1]
        wanted = next_binlog_name(last.binlog_file) if last.ends_file else last.binlog_file
        if wanted in server_files:
            return wanted
        later = [name for name in server_files if binlog_sequence(name)[1] > binlog_sequence(wanted)[1]]
        logger.error("binlog %s of %s was purged on the server before it was archived: the archive has a gap",
                     wanted, self.database)
        return later[0] if later else server_files[-1]

    def start(self) -> None:
        """Take the alias's archiver lock, archive what a killed run left, start streaming.

        Raises BackupLocked when another archiver of this alias runs on this machine (two would
        write the same live files), BinlogUnavailable without a usable binlog.
        """
        server = self.tools.server_settings()
        if not server.usable:
            raise BinlogUnavailable(str(UNAVAILABLE_HELP))
        lock, stack = ExitStack(), ExitStack()
        try:
            # Its own lock name: archiving runs beside the backups and restores of the database.
            lock.enter_context(locks._file_lock(f"{self.database}.binlog-archiver", "binlog archiving"))
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._kill_orphan_streamer()
            self.poll(force=True, streaming=False)  # what a killed run left on disk comes first
            self.first_file = self.resume_file(server)
            for leftover in self.directory.iterdir():
                if binlog_sequence(leftover.name)[1] >= binlog_sequence(self.first_file)[1]:
                    leftover.unlink()  # streamed again from its start: no half-old, half-new file
            self.process = stack.enter_context(
                self.tools.stream(first_file=self.first_file, directory=self.directory)
            )
            (self.directory / STREAMER_PID_FILE).write_text(str(self.process.pid))
        except BaseException:
            stack.close()
            lock.close()
            raise
        self._stack, self._lock = stack, lock
        BinlogArchiver.objects.update_or_create(database=self.database, defaults={
            "owner_host": socket.gethostname(), "owner_pid": os.getpid(), "started_at": timezone.now(),
            "heartbeat_at": timezone.now(), "error_message": "",
        })
        self.last_close = time.monotonic()

    def _kill_orphan_streamer(self) -> None:
        """Kill the streaming client of a run whose Python process was killed (kill -9).

        The client runs in its own process group, so it outlives such a run and would keep
        appending to the files the new run is about to stream again.
        """
        pid_file = self.directory / STREAMER_PID_FILE
        try:
            pid = int(pid_file.read_text().strip())
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"--stop-never" in command_line and str(self.directory).encode() in command_line:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            logger.warning("killed the orphaned binlog streamer %d of %s", pid, self.database)
        pid_file.unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop streaming (the tool is killed); the complete events on disk are archived first."""
        if self._stack is not None:
            try:
                self.poll(force=True, streaming=False)
            finally:
                stack, self._stack, self.process = self._stack, None, None
                try:
                    stack.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)
                except KeyboardInterrupt:
                    pass
                self._release_lock()

    def _release_lock(self) -> None:
        (self.directory / STREAMER_PID_FILE).unlink(missing_ok=True)
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.close()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_process(self) -> None:
        """Raise the tool's error (DumpFailed) when the streaming client has exited."""
        if self._stack is not None and self.process is not None and self.process.poll() is not None:
            stack, self._stack, self.process = self._stack, None, None
            try:
                stack.close()  # re-raises the tool's exit status as DumpFailed
            finally:
                self._release_lock()

    # --- polling ---
    def live_files(self) -> list[Path]:
        files = [path for path in self.directory.iterdir() if not path.name.startswith(".")
                 and binlog_sequence(path.name)[1] >= 0] if self.directory.exists() else []
        return sorted(files, key=lambda path: binlog_sequence(path.name)[1])

    def poll(self, *, force: bool = False, streaming: bool = True) -> list[BinlogSegment]:
        """Archive what is due; update the heartbeat. Returns the segments closed."""
        closed = []
        due = force or time.monotonic() - self.last_close >= self.segment_seconds
        files = self.live_files()
        live_file, live_position, live_event_at = "", None, None
        for index, path in enumerate(files):
            archived, finished = _archived_end(self.database, path.name)
            with path.open("rb") as handle:
                handle.seek(archived)
                data = handle.read()  # only what is not archived yet
            try:
                end_events = list(events(data, start=max(archived, 4), offset=archived))
            except NotABinlog as error:
                logger.error("%s: %s", path, error)
                continue
            complete = end_events[-1].end_position if end_events else archived
            file_done = bool(end_events) and end_events[-1].ends_file
            newer = index < len(files) - 1
            if end_events and complete > archived and (due or file_done or newer):
                closed.append(segment_close(database=self.database, binlog_file=path.name,
                                            content=data[:complete - archived], start=archived))
                archived, finished = complete, closed[-1].ends_file
            if finished and (newer or not streaming):
                path.unlink(missing_ok=True)  # every byte is in segments; the next file is live
                continue
            live_file, live_position = path.name, complete
            live_event_at = end_events[-1].when if end_events else live_event_at
        if closed or due:
            self.last_close = time.monotonic()
        self._heartbeat(live_file, live_position, live_event_at)
        self._retry_offsite()
        return closed

    def _heartbeat(self, live_file: str, live_position: int | None, live_event_at: datetime | None) -> None:
        values = {"heartbeat_at": timezone.now(), "owner_host": socket.gethostname(), "owner_pid": os.getpid()}
        if live_file:
            values.update(live_file=live_file, live_position=live_position)
            if live_event_at is not None:
                values["live_event_at"] = live_event_at
        BinlogArchiver.objects.update_or_create(database=self.database, defaults=values)

    def _retry_offsite(self) -> None:
        for segment in BinlogSegment.objects.filter(database=self.database,
                                                    offsite_status=BackupRecord.OffsiteStatus.FAILED)[:5]:
            _segment_offsite(segment)


def archiver_record_error(*, database: str, message: str) -> None:
    BinlogArchiver.objects.update_or_create(database=database, defaults={
        "error_message": message[:4000], "heartbeat_at": timezone.now(),
        "owner_host": socket.gethostname(), "owner_pid": os.getpid(),
    })


# --- The recoverable window -----------------------------------------------------------------------
@dataclass
class ArchiveRun:
    """Contiguous archived binlog, with no hole in between; its last segment may be the live one
    (the complete events on disk that are not in a closed segment yet: `is_live`)."""

    segments: list[BinlogSegment]

    @property
    def first(self) -> BinlogSegment:
        return self.segments[0]

    @property
    def last(self) -> BinlogSegment:
        return self.segments[-1]

    @property
    def end_key(self) -> tuple[int, int]:
        return binlog_position_key(self.last.binlog_file, self.last.end_position)

    @property
    def live_file(self) -> str:
        """The file the archiver writes after this run's end."""
        return next_binlog_name(self.last.binlog_file) if self.last.ends_file else self.last.binlog_file

    @property
    def newest_event_at(self) -> datetime | None:
        times = [s.last_event_at for s in self.segments if s.last_event_at]
        return max(times) if times else None

    def covers(self, binlog_file: str, position: int) -> bool:
        """Whether the run holds `binlog_file` from its start (the format event) through `position`."""
        return (
            self.first.start_position == 0
            and binlog_position_key(self.first.binlog_file, 0) <= binlog_position_key(binlog_file, 0)
            and binlog_position_key(binlog_file, position) <= self.end_key
        )


def live_segment(*, database: str, archiver: BinlogArchiver | None) -> BinlogSegment | None:
    """The live file's complete events past the archive's end, as an unsaved segment (`is_live`)."""
    if archiver is None or not archiver.live_file or not archiver.live_position:
        return None
    start, _finished = _archived_end(database, archiver.live_file)
    if archiver.live_position <= start:
        return None
    segment = BinlogSegment(
        database=database, name=f"{archiver.live_file} (live)", binlog_file=archiver.live_file,
        start_position=start, end_position=archiver.live_position, last_event_at=archiver.live_event_at,
        status=BinlogSegment.Status.OK,
    )
    segment.is_live = True
    return segment


@dataclass
class RecoveryWindow:
    start: datetime
    end: datetime
    bases: list[BackupRecord]
    run: ArchiveRun


@dataclass
class BinlogStatus:
    database: str
    windows: list[RecoveryWindow] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    archiver_running: bool = False
    archiver: BinlogArchiver | None = None
    unavailable: str = ""

    @property
    def local_recovery_point(self) -> datetime | None:
        return self.windows[-1].end if self.windows else None

    @property
    def offsite_recovery_point(self) -> datetime | None:
        uploaded = BinlogSegment.objects.filter(database=self.database, status=BinlogSegment.Status.OK,
                                                offsite_status=BackupRecord.OffsiteStatus.UPLOADED)
        newest = uploaded.exclude(last_event_at=None).order_by("-last_event_at").first()
        return newest.last_event_at if newest else None

    def as_dict(self) -> dict:
        return {
            "archiver_running": self.archiver_running,
            "windows": [{"from": w.start.isoformat(), "to": w.end.isoformat()} for w in self.windows],
            "gaps": self.gaps,
            "unavailable": self.unavailable,
        }


def _follows(previous: BinlogSegment, segment: BinlogSegment) -> bool:
    if segment.binlog_file == previous.binlog_file:
        return segment.start_position == previous.end_position
    return previous.ends_file and segment.start_position == 0 and segment.binlog_file == next_binlog_name(previous.binlog_file)


def archive_runs(*, database: str) -> tuple[list[ArchiveRun], list[str]]:
    """The contiguous runs of good segments (the live part included), and a sentence per hole."""
    runs: list[ArchiveRun] = []
    gaps: list[str] = []
    previous: BinlogSegment | None = None
    segments = _ordered_segments(database)
    live = live_segment(database=database, archiver=BinlogArchiver.objects.filter(database=database).first())
    if live is not None:
        segments.append(live)
    for segment in segments:
        if segment.status != BinlogSegment.Status.OK:
            gaps.append(_("segment %(name)s is %(status)s") % {"name": segment.name, "status": segment.get_status_display()})
            previous = None
            continue
        if previous is not None and _follows(previous, segment):
            runs[-1].segments.append(segment)
        else:
            if previous is not None:
                gaps.append(_("binlog missing between %(end_file)s:%(end)d and %(file)s:%(start)d (purged on the "
                              "server before it was archived?)") % {
                    "end_file": previous.binlog_file, "end": previous.end_position,
                    "file": segment.binlog_file, "start": segment.start_position})
            runs.append(ArchiveRun(segments=[segment]))
        previous = segment
    return runs, gaps


def _usable_bases(database: str) -> list[BackupRecord]:
    return list(
        BackupRecord.objects.good().filter(database=database)
        .exclude(binlog_file="").exclude(binlog_position=None)
        .exclude(verification_status=BackupRecord.VerificationStatus.FAILED)
        .order_by("created_at")
    )


def base_snapshot_second(base: BackupRecord) -> datetime:
    """The second a base backup's snapshot belongs to (binlog event times have whole seconds).

    Replaying from the base's coordinates to the end of that second gives its state then: events of
    that second before the snapshot are in the dump, the ones after are replayed.
    """
    return (base.started_at or base.created_at).replace(microsecond=0)


def archiver_is_running(archiver: BinlogArchiver | None) -> bool:
    if archiver is None or archiver.heartbeat_at is None:
        return False
    return timezone.now() - archiver.heartbeat_at <= timedelta(seconds=ARCHIVER_DOWN_AFTER_SECONDS)


def binlog_window(*, database: str) -> BinlogStatus:
    """The recoverable windows of `database` (oldest usable base backup to newest archived event),
    split by the gaps in the archive, with the archiver's state."""
    status = BinlogStatus(database=database)
    status.archiver = BinlogArchiver.objects.filter(database=database).first()
    status.archiver_running = archiver_is_running(status.archiver)
    runs, status.gaps = archive_runs(database=database)
    bases = _usable_bases(database)
    for run in runs:
        run_bases = [base for base in bases if run.covers(base.binlog_file, base.binlog_position)]
        if run_bases and run.newest_event_at:
            start = base_snapshot_second(run_bases[0])
            status.windows.append(RecoveryWindow(start=start, end=max(start, run.newest_event_at), bases=run_bases, run=run))
    if status.archiver is not None and not status.archiver_running:
        status.gaps.append(_("the archiver is not running (last heartbeat %(when)s)") % {
            "when": status.archiver.heartbeat_at.isoformat() if status.archiver.heartbeat_at else _("never")})
    if status.archiver is not None and status.archiver.error_message:
        status.gaps.append(status.archiver.error_message)
    return status


def archived_databases() -> list[str]:
    """Aliases that archive (or archived) their binlog."""
    archived = set(BinlogArchiver.objects.values_list("database", flat=True))
    archived |= set(BinlogSegment.objects.values_list("database", flat=True).distinct())
    return sorted(archived)


def binlog_health_details() -> dict[str, dict]:
    """Per alias that archives its binlog: archiver running, recoverable windows, gaps (no server call)."""
    return {database: binlog_window(database=database).as_dict() for database in archived_databases()}


def binlog_databases() -> list[str]:
    """Aliases on MySQL/MariaDB (candidates for archiving)."""
    from backups_app.selectors import backup_databases

    return [alias for alias in backup_databases()
            if settings.DATABASES[alias].get("ENGINE") == "django.db.backends.mysql"]


def binlog_availability(*, database: str) -> str:
    """"" when the server keeps a usable binlog, else the sentence telling how to turn it on."""
    try:
        server = binlog_tools(database).server_settings()
    except BinlogUnavailable as error:
        return str(error)
    if server.usable:
        return ""
    return _("%(help)s; the server now has log_bin=%(log_bin)s, binlog_format=%(format)s") % {
        "help": UNAVAILABLE_HELP, "log_bin": "ON" if server.log_bin else "OFF", "format": server.binlog_format}


def binlog_purged_needed(*, database: str) -> list[str]:
    """Binlog files the archive still needs but the server no longer has (archiver behind a purge)."""
    runs, _gaps = archive_runs(database=database)
    if not runs:
        return []
    wanted = runs[-1].live_file
    server_files = [name for name, _size in binlog_tools(database).server_settings().files]
    if wanted in server_files or not server_files:
        return []
    if binlog_sequence(wanted)[1] < binlog_sequence(server_files[0])[1]:
        return [wanted]
    return []


def segments_needed(*, database: str, bases: list[BackupRecord]) -> set[int]:
    """Ids of the segments a restore from any of `bases` may replay: from each base's file onward."""
    needed: set[int] = set()
    runs, _gaps = archive_runs(database=database)
    for run in runs:
        run_bases = [base for base in bases if base.binlog_file and run.covers(base.binlog_file, base.binlog_position)]
        if not run_bases:
            continue
        oldest = min(binlog_position_key(base.binlog_file, 0) for base in run_bases)
        needed.update(s.pk for s in run.segments
                      if s.pk and binlog_position_key(s.binlog_file, s.start_position) >= oldest)
    return needed


def segments_prune(*, database: str, kept_bases: list[BackupRecord], dry_run: bool = False) -> list[str]:
    """Delete the segments no kept base backup needs (older than the oldest kept base's file).

    Segments after the newest base are always kept: they are the recoverable present.
    """
    needed = segments_needed(database=database, bases=kept_bases)
    if not kept_bases:
        return []  # nothing proves which segments are useless: delete none
    oldest = min(binlog_position_key(b.binlog_file, 0) for b in kept_bases if b.binlog_file)
    storage: Storage = backup_storage()
    deleted = []
    for segment in _ordered_segments(database):
        if segment.pk in needed or binlog_position_key(segment.binlog_file, segment.start_position) >= oldest:
            continue
        deleted.append(segment.name)
        if not dry_run:
            for name in (segment.storage_name, segment.storage_name + ".json"):
                if storage.exists(name):
                    storage.delete(name)
            segment.delete()
    return deleted


__all__ = [
    "BinlogArchiverRun", "archive_runs", "binlog_availability", "binlog_window", "segment_identities", "segment_read",
    "segments_check", "segments_prune",
]
