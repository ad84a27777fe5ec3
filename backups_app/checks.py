"""System checks of the backup settings (`manage.py check`), registered in BackupsConfig.ready().

A backup holds the whole database (password hashes, tokens, customers' data). Under STATIC_ROOT or
MEDIA_ROOT the web server or WhiteNoise would hand it to anyone who guesses its name, past every
permission check of the download views; an empty BACKUP_DIR resolves to the project root (or the
working directory), where backups would mix with code and be cleaned up with it.
"""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.checks import Error


def _resolved(value) -> Path | None:
    if value in (None, ""):
        return None
    return Path(value).expanduser().resolve()


def _backup_folders() -> list[Path | None]:
    """BACKUP_DIR and the location the `backups` storage really writes to (they may differ)."""
    folders = [_resolved(getattr(settings, "BACKUP_DIR", None))]
    storage = getattr(settings, "STORAGES", {}).get("backups", {})
    if storage.get("BACKEND", "").endswith("FileSystemStorage"):
        folders.append(_resolved(storage.get("OPTIONS", {}).get("location")))
    return folders


def check_backup_dir(app_configs=None, **kwargs) -> list[Error]:
    errors: list[Error] = []
    base_dir = _resolved(getattr(settings, "BASE_DIR", None))
    for folder in dict.fromkeys(_backup_folders()):
        if folder is None or folder == base_dir or folder == Path(folder.anchor):
            errors.append(Error(
                "BACKUP_DIR is empty (it would be the project root or the file system root).",
                hint="Set BACKUP_DIR to a folder of its own, outside STATIC_ROOT and MEDIA_ROOT, e.g. backups.",
                id="backups_app.E001",
            ))
            continue
        for setting_name in ("STATIC_ROOT", "MEDIA_ROOT"):
            served = _resolved(getattr(settings, setting_name, None))
            if served is not None and folder.is_relative_to(served):
                errors.append(Error(
                    f"BACKUP_DIR ({folder}) is inside {setting_name} ({served}), which is served to anyone.",
                    hint=f"Move BACKUP_DIR out of {setting_name}: downloads must go through the "
                         "permission-checked views.",
                    id="backups_app.E002",
                ))
    return errors
