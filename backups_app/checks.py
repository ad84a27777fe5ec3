"""System checks of the backup settings (`manage.py check`), registered in BackupsConfig.ready().

Every setting of backups_app/conf.py is checked here, so that a bad value (a string where a number
belongs, an unknown compression, encryption without keys) stops `manage.py check`, `migrate` and
`runserver` with one line naming the setting, instead of a traceback in the middle of a backup.
Messages never echo a value that may be a secret.

BACKUP_DIR: a backup holds the whole database (password hashes, tokens, customers' data). Under STATIC_ROOT or
MEDIA_ROOT the web server or WhiteNoise would hand it to anyone who guesses its name, past every
permission check of the download views; an empty BACKUP_DIR resolves to the project root (or the
working directory), where backups would mix with code and be cleaned up with it.
"""
from __future__ import annotations

from pathlib import Path

from importlib.util import find_spec
from os import PathLike

from django.conf import settings
from django.core.checks import Error, Warning

from backups_app.conf import app_settings, deprecated_offsite_settings


def _resolved(value) -> Path | None:
    if value in (None, ""):
        return None
    return Path(value).expanduser().resolve()


def _backup_folders() -> list[Path | None]:
    """BACKUP_DIR and the location the `backups` storage really writes to (they may differ)."""
    folders = [_resolved(app_settings.BACKUP_DIR)]
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


# --- Types and ranges -----------------------------------------------------------------------------
COMPRESSIONS = ("gzip", "zstd", "none")
ENCRYPTIONS = ("", "none", "age")
BOOLEANS = ("BACKUP_ENABLED", "BACKUP_BACKGROUND_JOBS", "BACKUP_SCHEDULE_ON_START", "BACKUP_MEDIA_SCHEDULE")
#: Whole numbers and the least value each may take.
INTEGERS = {
    "BACKUP_RETENTION_DAYS": 0,
    "BINLOG_SEGMENT_SECONDS": 1,
    "BACKUP_MEDIA_FULL_EVERY": 0,  # 0: every media backup is a full archive
    "BACKUP_MEDIA_FULL_EVERY_DAYS": 0,
    "BACKUP_DUMP_TIMEOUT": 0,  # 0: no time limit
    "BACKUP_RESTORE_PARALLELISM": 1,
    "BACKUP_API_RATE_LIMIT": 1,
    "BACKUP_API_RATE_LIMIT_PERIOD": 1,
    "BACKUP_API_AUTH_FAILURE_LIMIT": 1,
    "BACKUP_API_AUTH_FAILURE_PERIOD": 1,
    "BACKUP_API_PAGE_SIZE": 1,
    "BACKUP_API_MAX_PAGE_SIZE": 1,
    "BACKUP_OFFSITE_CHUNK_MB": 1,  # below S3's 5 MiB minimum it is raised to 5
    "BACKUP_OFFSITE_RETRY_SECONDS": 1,
    "BACKUP_OFFSITE_MAX_ATTEMPTS": 1,
    "BACKUP_HEARTBEAT_SECONDS": 1,
    "BACKUP_QUEUE_WAIT_SECONDS": 1,
    "BACKUP_ALERT_AFTER_HOURS": 1,
    "BACKUP_DASHBOARD_CACHE_SECONDS": 0,
}
STRINGS = ("BACKUP_OFFSITE_BUCKET", "BACKUP_OFFSITE_ENDPOINT_URL", "BACKUP_OFFSITE_REGION_NAME", "BACKUP_OFFSITE_PREFIX")
PATHS = ("BACKUP_LOCK_DIR", "BACKUP_MYSQL_BIN_DIR", "BACKUP_POSTGRESQL_BIN_DIR")


def _type_error(name: str, expected: str) -> Error:
    return Error(f"{name} must be {expected}.", hint=f"Correct {name} in the settings (or the environment).",
                 id="backups_app.E007")


def check_setting_types(app_configs=None, **kwargs) -> list[Error]:
    """Every setting has the type it is used as, and numbers are in range."""
    errors: list[Error] = []
    for name in BOOLEANS:
        if not isinstance(getattr(app_settings, name), bool):
            errors.append(_type_error(name, "True or False"))
    for name, least in INTEGERS.items():
        value = getattr(app_settings, name)
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(_type_error(name, "a whole number"))
        elif value < least:
            errors.append(Error(
                f"{name} must be {'positive' if least == 1 else f'at least {least}'}.",
                hint=f"Set {name} to a whole number of at least {least}.", id="backups_app.E008",
            ))
    for name in STRINGS:
        if not isinstance(getattr(app_settings, name), str):
            errors.append(_type_error(name, "a string"))
    for name in PATHS:
        if not isinstance(getattr(app_settings, name), (str, PathLike)):
            errors.append(_type_error(name, "a path (a string)"))
    lock_dir = app_settings.BACKUP_LOCK_DIR
    if isinstance(lock_dir, str) and not lock_dir.strip():
        errors.append(Error("BACKUP_LOCK_DIR is empty.", hint="Set BACKUP_LOCK_DIR to a folder, e.g. var/locks.",
                            id="backups_app.E011"))
    targets = app_settings.BACKUP_RESTORE_TARGETS
    if isinstance(targets, str) or not isinstance(targets, (list, tuple)) or not all(
            isinstance(entry, str) for entry in targets):
        errors.append(_type_error("BACKUP_RESTORE_TARGETS", 'a list of "SOURCE:TARGET" strings'))
    page_size, max_page_size = app_settings.BACKUP_API_PAGE_SIZE, app_settings.BACKUP_API_MAX_PAGE_SIZE
    if isinstance(page_size, int) and isinstance(max_page_size, int) and page_size > max_page_size:
        errors.append(Error(
            "BACKUP_API_PAGE_SIZE is larger than BACKUP_API_MAX_PAGE_SIZE.",
            hint="Raise BACKUP_API_MAX_PAGE_SIZE or lower BACKUP_API_PAGE_SIZE.", id="backups_app.E009",
        ))
    return errors


# --- Compression and encryption -------------------------------------------------------------------
def check_compression_and_encryption(app_configs=None, **kwargs) -> list[Error]:
    """A known compression whose library is installed; encryption on only with usable public keys."""
    errors: list[Error] = []
    compression = app_settings.BACKUP_COMPRESSION
    if compression not in COMPRESSIONS:
        errors.append(Error(
            f"BACKUP_COMPRESSION must be one of {', '.join(COMPRESSIONS)}.",
            hint="gzip is the default; zstd is faster and smaller (needs the zstandard package).",
            id="backups_app.E003",
        ))
    elif compression == "zstd" and find_spec("zstandard") is None:
        errors.append(Error(
            "BACKUP_COMPRESSION is zstd but the zstandard package is not installed.",
            hint="pip install 'opsdesk[zstd]', or set BACKUP_COMPRESSION to gzip.", id="backups_app.E012",
        ))
    encryption = app_settings.BACKUP_ENCRYPTION
    if encryption not in ENCRYPTIONS:
        errors.append(Error(
            "BACKUP_ENCRYPTION must be age, none or empty.",
            hint="Set BACKUP_ENCRYPTION to age (lower case) to encrypt new backups, or leave it empty.",
            id="backups_app.E004",
        ))
    elif encryption == "age":
        errors += _recipient_errors()
    return errors


def _recipient_errors() -> list[Error]:
    # Imported here: the encryption module is only needed when encryption is on.
    from secrets_app import get_secret

    from backups_app.encryption import parse_recipients
    from backups_app.exceptions import BackupError

    try:
        text = get_secret("BACKUP_ENCRYPTION_RECIPIENTS", default="")
    except Exception:  # noqa: BLE001 - a provider outage is /health's business, not a configuration error
        return []
    if not (text or "").strip():
        return [Error(
            "BACKUP_ENCRYPTION is age but BACKUP_ENCRYPTION_RECIPIENTS is empty: no backup could be written.",
            hint="Create a key pair with `manage.py generate_backup_key` and put the public key in the secret "
                 "BACKUP_ENCRYPTION_RECIPIENTS.",
            id="backups_app.E005",
        )]
    try:
        parse_recipients(text)
    except BackupError as error:  # its message shows at most the first characters of a public key
        return [Error(
            f"BACKUP_ENCRYPTION_RECIPIENTS: {error}",
            hint="List age public keys (age1...), separated by commas.", id="backups_app.E006",
        )]
    return []


# --- Offsite copies -------------------------------------------------------------------------------
def check_offsite(app_configs=None, **kwargs) -> list[Error | Warning]:
    """The offsite copy's libraries are installed; the AWS_S3_* names of earlier versions are renamed."""
    messages: list[Error | Warning] = [
        Warning(
            f"{old_name} is deprecated for opsdesk's offsite copies: rename it to {new_name}.",
            hint=f"django-storages applies a global {old_name} to every S3 storage of the project; "
                 f"{new_name} applies to the backups' offsite copies only.",
            id="backups_app.W001",
        )
        for old_name, new_name in deprecated_offsite_settings().items()
    ]
    storage = getattr(settings, "STORAGES", {}).get("backups_offsite", {})
    if app_settings.BACKUP_OFFSITE_BUCKET and storage.get("BACKEND", "").startswith("storages.backends.s3"):
        missing = [package for package in ("storages", "boto3") if find_spec(package) is None]
        if missing:
            names = " and ".join({"storages": "django-storages", "boto3": "boto3"}[name] for name in missing)
            messages.append(Error(
                f"BACKUP_OFFSITE_BUCKET is set but {names} is not installed.",
                hint="pip install 'opsdesk[s3]', or leave BACKUP_OFFSITE_BUCKET empty.", id="backups_app.E010",
            ))
    return messages
