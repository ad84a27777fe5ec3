"""Helpers shared by the backup commands: JSON shapes and the terminal progress line."""
from __future__ import annotations

import signal
import sys
import time
from contextlib import contextmanager
from typing import Any

from backups_app.models import BackupRecord


def backup_as_dict(record: BackupRecord) -> dict[str, Any]:
    payload = _backup_fields(record)
    if record.media_mode:  # media archives only: full, or incremental on top of `parent`
        payload["media_mode"] = record.media_mode
        payload["parent"] = record.parent.name if record.parent_id else None
    return payload


def _backup_fields(record: BackupRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "database": record.database,
        "engine": record.engine,
        "kind": record.kind,
        "status": record.status,
        "trigger": record.trigger,
        "compression": record.compression,
        "created_at": record.created_at.isoformat() if record.created_at else None,
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        "duration_seconds": record.duration_seconds,
        "size_bytes": record.size_bytes,
        "raw_size_bytes": record.raw_size_bytes,
        "sha256": record.sha256 or None,
        "encrypted": record.encrypted,
        "encryption_recipients": record.encryption_recipients,
        "error": record.error_message or None,
    }


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TiB"


class ProgressLine:
    """`dumped 1.2 GiB (34.5 MiB/s), written 210.3 MiB`, rewritten in place (for a terminal only)."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.shown = False

    @property
    def enabled(self) -> bool:
        return self.stream.isatty()

    def __call__(self, raw_bytes: int, written_bytes: int) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        self.stream.write(
            f"\r  dumped {human_bytes(raw_bytes)} ({human_bytes(raw_bytes / elapsed)}/s), "
            f"written {human_bytes(written_bytes)}   "
        )
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


class Terminated(SystemExit):
    """SIGTERM arrived (systemd stop, `kill`, Task Scheduler's end task)."""


@contextmanager
def terminate_cleanly():
    """Turn SIGTERM into an exception so the service's cleanup runs: the record ends `failed`
    ("Stopped") at once, the temporary file is removed and the lock released, rather than waiting
    for the next run to find an interrupted backup."""

    def handler(signum, frame):
        raise Terminated(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (call_command from a worker): leave it alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
