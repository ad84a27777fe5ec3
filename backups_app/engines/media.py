"""Uploaded files: the media folder (or another local Django storage) as one tar archive.

Not a database, but backed up through the same pipeline as one: compressed, hashed, stored with a
manifest, retained, copied offsite, verified and restored by the same services. The alias is
``media`` for the ``default`` storage (MEDIA_ROOT) and ``media:<name>`` for another entry of
STORAGES whose files have local paths. The archive format and its safe restore are in
``backups_app.media``.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import storages

from backups_app import media

from .base import DumpEngine

PREFIX = "media"
#: STORAGES entries that are never media: backing them up would copy backups into backups.
NOT_MEDIA = {"backups", "backups_offsite", "staticfiles"}


def is_media_alias(alias: str) -> bool:
    return alias == PREFIX or alias.startswith(PREFIX + ":")


def media_root(alias: str) -> Path:
    """The local folder behind a media alias; ImproperlyConfigured naming what is wrong."""
    storage_name = alias.partition(":")[2] or "default"
    if storage_name in NOT_MEDIA:
        raise ImproperlyConfigured(f"Storage {storage_name!r} holds no uploads and cannot be backed up as media.")
    try:
        storage = storages[storage_name]
    except Exception:  # noqa: BLE001 - InvalidStorageError and import errors of its backend
        raise ImproperlyConfigured(f"Unknown storage {storage_name!r} (see STORAGES).") from None
    try:
        return Path(storage.path(""))
    except NotImplementedError:
        raise ImproperlyConfigured(
            f"Storage {storage_name!r} has no local paths; media backups read local folders only."
        ) from None


class MediaEngine(DumpEngine):
    """Archive and restore the files under one folder.

    ``restore_prefix`` limits a restore to the paths under it; ``delete_extraneous`` makes a restore
    remove what the archive does not hold (off by default: a restore never deletes uploads).

    The media service (backups_app.services.media) sets the rest: ``increment`` (what the next dump
    is compared with), ``force_full``, and for restoring an incremental archive its ``own_name``,
    the ``chain`` of earlier archives and ``open_earlier`` to read them.
    """

    vendor = "media"
    file_extension = ".tar"

    def __init__(self, alias, settings_dict) -> None:
        super().__init__(alias, settings_dict)
        self.root = Path(settings_dict["NAME"])
        self.restore_prefix = ""
        self.delete_extraneous = False
        self.force_full = False
        self.increment: media.Increment | None = None
        self.own_name = ""
        self.chain: tuple[str, ...] = ()
        self.open_earlier: media.OpenEarlier | None = None
        self.last_restore: media.RestoreSummary | None = None
        self._summary: media.ArchiveSummary | None = None

    @classmethod
    def for_alias(cls, alias: str) -> MediaEngine:
        return cls(alias, {"ENGINE": "opsdesk.media", "NAME": str(media_root(alias))})

    @contextmanager
    def dump(self) -> Iterator[BinaryIO]:
        with media.archive_stream(self.root, self.increment) as (stream, summary):
            self._summary = summary
            yield stream

    def is_complete(self, tail: bytes) -> bool:
        return media.is_complete(tail)

    def restore(self, stream: BinaryIO, *, before_target_change: Callable[[], None] = lambda: None) -> None:
        # Files are replaced one by one: not atomic, so the folder is marked dirty while it runs.
        before_target_change()
        self.last_restore = media.extract_archive(
            stream, self.root, prefix=self.restore_prefix, delete_extraneous=self.delete_extraneous,
            own_name=self.own_name, chain=self.chain, open_earlier=self.open_earlier,
        )

    def tool_versions(self) -> dict[str, str]:
        return {"archive": "tar (POSIX pax), Python tarfile"}

    def table_row_counts(self) -> dict[str, int]:
        """What the archive just written holds (or, in a scratch folder after a test restore, what
        the folder holds): compared after a test restore the way tables' rows are."""
        if self._summary is not None:
            return {"files": self._summary.files, "directories": self._summary.directories,
                    "links": self._summary.links}
        counts = {"files": 0, "directories": 0, "links": 0}
        for entry in media.walk(self.root):
            counts[{"file": "files", "dir": "directories", "symlink": "links"}[entry.kind]] += 1
        return counts

    def changed_during_backup(self) -> list[str]:
        return list(self._summary.changed) if self._summary else []

    @property
    def archive_summary(self) -> media.ArchiveSummary | None:
        """What the last dump archived (None before one ran)."""
        return self._summary

    @contextmanager
    def scratch_engine(self) -> Iterator[MediaEngine]:
        """An empty temporary folder beside the media root, removed on exit."""
        parent = self.root.parent if self.root.parent.is_dir() else None
        scratch = Path(tempfile.mkdtemp(prefix=".opsdesk-verify-media-", dir=parent))
        try:
            yield type(self)(f"{self.alias}__verify", {**self.settings_dict, "NAME": str(scratch)})
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
