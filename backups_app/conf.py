"""The settings backups_app reads, each with its default: ``from backups_app.conf import app_settings``.

``app_settings.BACKUP_DIR`` is ``settings.BACKUP_DIR`` when the project sets it, else the default
below (the same as opsdesk's own project, ops_project/settings.py, uses when the environment says
nothing). Values are read at each access, never copied at import, so ``override_settings`` and
pytest-django's ``settings`` fixture keep working. A host project sets only what it changes; bad
values are reported by ``manage.py check`` (backups_app/checks.py), not by a traceback at first use.

Settings that belong to Django or Celery (CELERY_BROKER_URL, TIME_ZONE...) are read through here too,
with the default that lets the app work without them: no CELERY_BROKER_URL means jobs run inline.

The offsite copy's S3 settings were called AWS_S3_BUCKET, AWS_S3_ENDPOINT_URL, AWS_S3_REGION_NAME and
AWS_S3_PREFIX before they became BACKUP_OFFSITE_*: django-storages reads the global
AWS_S3_ENDPOINT_URL and AWS_S3_REGION_NAME for every S3 storage of a project, so a host project's own
buckets and opsdesk's offsite copies must not share them. The old names still work while
BACKUP_OFFSITE_BUCKET is not set, with a DeprecationWarning (once per process and name) and a
`manage.py check` warning.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from django.conf import settings


def _project_root() -> Path:
    # BASE_DIR is Django's convention (opsdesk's settings set it); a host project may not.
    return Path(getattr(settings, "BASE_DIR", None) or Path.cwd())


def _default_restore_parallelism() -> int:
    return max(2, min(os.cpu_count() or 1, 8))


#: Every setting of the app and its default; a callable is called at each access (paths follow BASE_DIR).
DEFAULTS: dict[str, Any] = {
    "BACKUP_ENABLED": True,
    "BACKUP_DIR": lambda: _project_root() / "backups",
    "BACKUP_COMPRESSION": "gzip",
    "BACKUP_ENCRYPTION": "",
    "BACKUP_RETENTION_DAYS": 30,
    "BINLOG_SEGMENT_SECONDS": 60,
    "BACKUP_MEDIA_FULL_EVERY": 7,
    "BACKUP_MEDIA_FULL_EVERY_DAYS": 7,
    # A host project opts in (opsdesk's own settings turn it on when MEDIA_ROOT is in the environment).
    "BACKUP_MEDIA_SCHEDULE": False,
    "BACKUP_LOCK_DIR": lambda: _project_root() / "var" / "locks",
    "BACKUP_DUMP_TIMEOUT": 6 * 3600,
    "BACKUP_RESTORE_PARALLELISM": _default_restore_parallelism,
    "BACKUP_MYSQL_BIN_DIR": "",
    "BACKUP_POSTGRESQL_BIN_DIR": "",
    "BACKUP_RESTORE_TARGETS": list,
    "BACKUP_API_RATE_LIMIT": 60,
    "BACKUP_API_RATE_LIMIT_PERIOD": 60,
    "BACKUP_API_AUTH_FAILURE_LIMIT": 20,
    "BACKUP_API_AUTH_FAILURE_PERIOD": 60,
    "BACKUP_API_PAGE_SIZE": 50,
    "BACKUP_API_MAX_PAGE_SIZE": 500,
    "BACKUP_OFFSITE_BUCKET": "",
    "BACKUP_OFFSITE_ENDPOINT_URL": "",
    "BACKUP_OFFSITE_REGION_NAME": "",
    "BACKUP_OFFSITE_PREFIX": "opsdesk-backups",
    "BACKUP_OFFSITE_CHUNK_MB": 64,
    "BACKUP_OFFSITE_RETRY_SECONDS": 300,
    "BACKUP_OFFSITE_MAX_ATTEMPTS": 8,
    "BACKUP_HEARTBEAT_SECONDS": 15,
    "BACKUP_QUEUE_WAIT_SECONDS": 120,
    "BACKUP_BACKGROUND_JOBS": True,
    "BACKUP_SCHEDULE_ON_START": True,
    "BACKUP_ALERT_AFTER_HOURS": 26,
    "BACKUP_DASHBOARD_CACHE_SECONDS": 300,
    # cache_app's deadline for /health, also bounding backups_app's broker check (backups_app.health).
    "HEALTH_CHECK_TIMEOUT": 0.8,
    # Owned by Django and Celery: what the app assumes when the project leaves them out.
    "BASE_DIR": _project_root,
    "VAR_DIR": lambda: _project_root() / "var",
    "CELERY_BROKER_URL": "",
    "CELERY_BROKER_TRANSPORT_OPTIONS": dict,
    "CELERY_TASK_DEFAULT_QUEUE": "celery",
}

#: The offsite settings' names before BACKUP_OFFSITE_* (deprecated; read while BACKUP_OFFSITE_BUCKET is unset).
DEPRECATED_OFFSITE_NAMES: dict[str, str] = {
    "BACKUP_OFFSITE_BUCKET": "AWS_S3_BUCKET",
    "BACKUP_OFFSITE_ENDPOINT_URL": "AWS_S3_ENDPOINT_URL",
    "BACKUP_OFFSITE_REGION_NAME": "AWS_S3_REGION_NAME",
    "BACKUP_OFFSITE_PREFIX": "AWS_S3_PREFIX",
}


def deprecated_offsite_settings() -> dict[str, str]:
    """{old name: new name} of the deprecated offsite settings this project still relies on.

    Only while the offsite copy is configured the old way (AWS_S3_BUCKET without
    BACKUP_OFFSITE_BUCKET): a host project's own AWS_S3_ENDPOINT_URL for its media bucket is
    django-storages' setting, not a stale opsdesk one, and is neither read nor reported then.
    """
    if getattr(settings, "BACKUP_OFFSITE_BUCKET", "") or not getattr(settings, "AWS_S3_BUCKET", ""):
        return {}
    return {old: new for new, old in DEPRECATED_OFFSITE_NAMES.items() if hasattr(settings, old)}


#: The deprecated names already warned about in this process: the offsite settings are read for every
#: binlog segment, /metrics scrape and re-encrypted file, and one warning per process says it all.
_warned_deprecated_names: set[str] = set()


class AppSettings:
    """Attribute access to the settings in DEFAULTS, read from django.conf.settings at each access."""

    def __init__(self, defaults: dict[str, Any]):
        self._defaults = defaults

    def __getattr__(self, name: str) -> Any:
        if name not in self._defaults:
            raise AttributeError(f"backups_app has no setting {name}")
        old_name = DEPRECATED_OFFSITE_NAMES.get(name)
        if old_name and old_name in deprecated_offsite_settings():
            if old_name not in _warned_deprecated_names:
                _warned_deprecated_names.add(old_name)
                warnings.warn(
                    f"The setting {old_name} is deprecated: rename it to {name}.", DeprecationWarning, stacklevel=2,
                )
            value = getattr(settings, old_name)
            return value.strip("/") if name == "BACKUP_OFFSITE_PREFIX" and isinstance(value, str) else value
        if hasattr(settings, name):
            return getattr(settings, name)
        default = self._defaults[name]
        return default() if callable(default) else default

    def __dir__(self):
        return [*super().__dir__(), *self._defaults]


app_settings = AppSettings(DEFAULTS)


def backups_storage_settings() -> dict:
    """The STORAGES entry of the local backups folder when the project defines none.

    Owner-only files and folders, and no URL: backups are only reachable through the
    permission-checked download views.
    """
    return {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {
            "location": app_settings.BACKUP_DIR,
            "base_url": None,
            "file_permissions_mode": 0o600,
            "directory_permissions_mode": 0o700,
        },
    }


def offsite_storage_settings() -> dict:
    """The STORAGES entry of the offsite copies, from the BACKUP_OFFSITE_* settings.

    Endpoint and region are always passed (None for "boto3 decides"), so django-storages' global
    AWS_S3_ENDPOINT_URL/AWS_S3_REGION_NAME of a host project never redirect the backups. Credentials
    come from boto3's usual chain (environment, ~/.aws, an instance role), never from settings.
    """
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": app_settings.BACKUP_OFFSITE_BUCKET,
            "endpoint_url": app_settings.BACKUP_OFFSITE_ENDPOINT_URL or None,
            "region_name": app_settings.BACKUP_OFFSITE_REGION_NAME or None,
            "location": app_settings.BACKUP_OFFSITE_PREFIX,
            # Backups are private: no public ACL, no unsigned URLs, and retries overwrite the same
            # key rather than leaving renamed copies behind.
            "default_acl": "private",
            "querystring_auth": True,
            "file_overwrite": True,
            "object_parameters": {"ContentType": "application/octet-stream"},
            # The multipart part size (BACKUP_OFFSITE_CHUNK_MB) is applied by the offsite service:
            # a TransferConfig here would import boto3 into every process at startup.
        },
    }


def storages_setdefault() -> None:
    """Give STORAGES the `backups` (and, with a bucket, `backups_offsite`) entries it lacks.

    Called from BackupsConfig.ready(): a host project that installs the app without naming these
    storages gets the same ones as opsdesk's own project; entries the project defines are kept.
    """
    configured = dict(getattr(settings, "STORAGES", {}))
    missing = {}
    if "backups" not in configured:
        missing["backups"] = backups_storage_settings()
    if "backups_offsite" not in configured and app_settings.BACKUP_OFFSITE_BUCKET:
        missing["backups_offsite"] = offsite_storage_settings()
    if missing:
        # A new dict: without STORAGES in the project, settings.STORAGES is Django's global default.
        settings.STORAGES = {**configured, **missing}
